package twiliotest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Page tokens look like Twilio's: opaque, and deliberately awkward to carry.
// A token is "PT" + base64.StdEncoding(body + mac) + "." + offset, where the
// body starts with bytes that encode as "+/+/" and its length forces "=="
// padding, so every token holds '+', '/', '=' and a ".digits" tail. A client
// that does not keep the token byte-exact (query-escaping it once) breaks the
// MAC and gets a 400.
//
// The body names the position (direction and cursor SID; the offset tail is
// informational), the page number the client must send back as Page, the
// list it was issued for (a hash of kind, service, user and filter), and the
// server's revocation epoch. A token of the service-wide Bindings list, which
// is ordered by user and then by binding, also names the cursor's user; its
// extra 18 bytes keep the "==" padding.
const (
	tokenPrefix = "PT"
	macLen      = 13
	// magic(3) kind(1) dir(1) page(4) cursor prefix(2) cursor(16) scope(8) epoch(4)
	bodyLen = 3 + 1 + 1 + 4 + 2 + 16 + 8 + 4
	// user prefix(2) user(16), after the body of a kindServiceBindings token
	userLen = 2 + 16
)

var tokenMagic = [3]byte{0xfb, 0xff, 0xbf}

// Errors of decodeToken; the server answers both with 400.
var (
	errTokenMalformed = errors.New("malformed page token")
	errTokenForged    = errors.New("page token signature mismatch")
)

// listKind is the list a token pages through.
type listKind byte

const (
	kindUsers           listKind = 1
	kindBindings        listKind = 2
	kindServiceBindings listKind = 3 // the service-wide Bindings list
)

// direction says which side of the cursor a page lies on.
type direction byte

const (
	forward  direction = 0 // items after the cursor SID
	backward direction = 1 // items before the cursor SID
)

// pageToken is the decoded content of a page token.
type pageToken struct {
	kind   listKind
	dir    direction
	page   int
	cursor string // a SID: two letters and 32 lowercase hex digits
	// user is the SID of the cursor's user in a kindServiceBindings token,
	// "" in the others.
	user   string
	offset int
	scope  [8]byte
	epoch  uint32
}

// scopeOf binds a token to one list: a service's users, or one user's
// bindings under one filter.
func scopeOf(kind listKind, serviceSID, userSID, filter string) [8]byte {
	h := sha256.New()
	h.Write([]byte{byte(kind)})
	h.Write([]byte(serviceSID + "\x00" + userSID + "\x00" + filter))
	var s [8]byte
	copy(s[:], h.Sum(nil))
	return s
}

// encodeToken renders t, signed with secret. The cursor (and the user of a
// kindServiceBindings token) must be a SID.
func encodeToken(t pageToken, secret []byte) string {
	n := tokenBodyLen(t.kind)
	raw := make([]byte, n, n+macLen)
	copy(raw, tokenMagic[:])
	raw[3] = byte(t.kind)
	raw[4] = byte(t.dir)
	binary.BigEndian.PutUint32(raw[5:9], uint32(t.page))
	putSID(raw[9:27], t.cursor)
	copy(raw[27:35], t.scope[:])
	binary.BigEndian.PutUint32(raw[35:39], t.epoch)
	if t.kind == kindServiceBindings {
		putSID(raw[bodyLen:], t.user)
	}
	digits := strconv.Itoa(t.offset)
	raw = append(raw, tokenMAC(secret, raw, digits)...)
	return tokenPrefix + base64.StdEncoding.EncodeToString(raw) + "." + digits
}

// decodeToken parses and authenticates a token. It checks only that the
// token is well formed and was signed with secret; the caller checks that it
// fits the request.
func decodeToken(s string, secret []byte) (pageToken, error) {
	rest, ok := strings.CutPrefix(s, tokenPrefix)
	if !ok {
		return pageToken{}, errTokenMalformed
	}
	dot := strings.LastIndexByte(rest, '.')
	if dot < 0 {
		return pageToken{}, errTokenMalformed
	}
	enc, digits := rest[:dot], rest[dot+1:]
	offset, err := strconv.Atoi(digits)
	if err != nil || offset < 0 || strconv.Itoa(offset) != digits {
		return pageToken{}, errTokenMalformed
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(enc)
	if err != nil || len(raw) < bodyLen || len(raw) != tokenBodyLen(listKind(raw[3]))+macLen {
		return pageToken{}, errTokenMalformed
	}
	n := len(raw) - macLen
	body, mac := raw[:n], raw[n:]
	if !hmac.Equal(mac, tokenMAC(secret, body, digits)) {
		return pageToken{}, errTokenForged
	}
	// From here on the body is ours, so its fields were valid when signed.
	t := pageToken{
		kind:   listKind(body[3]),
		dir:    direction(body[4]),
		page:   int(binary.BigEndian.Uint32(body[5:9])),
		cursor: sidAt(body[9:27]),
		offset: offset,
		epoch:  binary.BigEndian.Uint32(body[35:39]),
	}
	copy(t.scope[:], body[27:35])
	if t.kind == kindServiceBindings {
		t.user = sidAt(body[bodyLen:])
	}
	return t, nil
}

// tokenBodyLen is the length of the body of a token of kind.
func tokenBodyLen(kind listKind) int {
	if kind == kindServiceBindings {
		return bodyLen + userLen
	}
	return bodyLen
}

// putSID writes sid into the 18 bytes of dst: its two letters, then its 32
// hex digits as 16 bytes.
func putSID(dst []byte, sid string) {
	if len(sid) != 34 {
		panic(fmt.Sprintf("twiliotest: cursor %q is not a SID", sid))
	}
	copy(dst[:2], sid[:2])
	if _, err := hex.Decode(dst[2:18], []byte(sid[2:])); err != nil {
		panic(fmt.Sprintf("twiliotest: cursor %q is not a SID: %v", sid, err))
	}
}

// sidAt reads the SID putSID wrote.
func sidAt(src []byte) string {
	return string(src[:2]) + hex.EncodeToString(src[2:18])
}

func tokenMAC(secret, body []byte, digits string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	m.Write([]byte("." + digits))
	return m.Sum(nil)[:macLen]
}

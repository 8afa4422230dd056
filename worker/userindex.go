package worker

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/bindsync/bindsync/twilio"
)

// packedSID is a user SID in 20 bytes: the 16 bytes its 32 hexadecimal
// digits encode, and which of those digits are upper-case letters, so
// that the SID comes back byte for byte as Twilio wrote it (user_sid must
// be identical to the per-user walk's).
type packedSID struct {
	bin   [16]byte
	upper uint32
}

// packSID packs a user SID (US and 32 hexadecimal digits); false when sid
// is not one.
func packSID(sid string) (packedSID, bool) {
	var p packedSID
	if !twilio.UserSIDPattern.MatchString(sid) {
		return p, false
	}
	digits := sid[2:]
	for i := 0; i < len(digits); i++ {
		if c := digits[i]; c >= 'A' && c <= 'F' {
			p.upper |= 1 << i
		}
	}
	if _, err := hex.Decode(p.bin[:], []byte(digits)); err != nil {
		return p, false
	}
	return p, true
}

// String is the SID as it was packed.
func (p packedSID) String() string {
	var b [34]byte
	b[0], b[1] = 'U', 'S'
	hex.Encode(b[2:], p.bin[:])
	for i := range 32 {
		if p.upper&(1<<i) != 0 {
			b[2+i] -= 'a' - 'A'
		}
	}
	return string(b[:])
}

func (p packedSID) compare(q packedSID) int {
	if c := bytes.Compare(p.bin[:], q.bin[:]); c != 0 {
		return c
	}
	switch {
	case p.upper < q.upper:
		return -1
	case p.upper > q.upper:
		return 1
	}
	return 0
}

// userIndex maps the identities of a service's users to their SIDs and
// counts the bindings a service walk finds for each. It is built once from
// the Users list and stays compact for a million users: the identities
// lie back to back in one byte arena, and each user costs one 32-byte
// entry plus 4 bytes of the index by SID, plus its identity's bytes: 48
// bytes a user for identities of 12 characters, 48 MB for a million
// users, where a map[string]string from identity to SID holds about 150
// (TestUserIndexBytesPerUser measures both). While the Users list is read,
// append's spare capacity may add up to a quarter.
type userIndex struct {
	arena []byte
	// users are sorted by identity once built; bySID holds their
	// positions sorted by SID.
	users []indexedUser
	bySID []uint32
	built bool
}

type indexedUser struct {
	off, n   uint32 // identity: arena[off : off+n]
	sid      packedSID
	bindings uint32
}

// errIdentities is returned (wrapped) when the identities of one service
// exceed what the arena addresses.
var errIdentities = errors.New("the identities of the service's users exceed 4 GiB")

// add records a listed user; identity is "" for a user without one.
func (x *userIndex) add(sid, identity string) error {
	p, ok := packSID(sid)
	if !ok {
		return fmt.Errorf("%w: a user has SID %q", twilio.ErrBadResponse, sid)
	}
	if uint64(len(x.arena))+uint64(len(identity)) > math.MaxUint32 || len(x.users) == math.MaxUint32 {
		return errIdentities
	}
	x.users = append(x.users, indexedUser{off: uint32(len(x.arena)), n: uint32(len(identity)), sid: p})
	x.arena = append(x.arena, identity...)
	return nil
}

func (x *userIndex) identityOf(u *indexedUser) []byte { return x.arena[u.off : u.off+u.n] }

// build sorts the users, drops a user listed twice, and fails (wrapping
// twilio.ErrBadResponse) when two users share an identity or one SID has
// two identities: the Users list contradicts itself, and bindings could
// not be told apart.
func (x *userIndex) build() error {
	slices.SortFunc(x.users, func(a, b indexedUser) int {
		if c := bytes.Compare(x.identityOf(&a), x.identityOf(&b)); c != 0 {
			return c
		}
		return a.sid.compare(b.sid)
	})
	x.users = slices.CompactFunc(x.users, func(a, b indexedUser) bool {
		return a.sid == b.sid && bytes.Equal(x.identityOf(&a), x.identityOf(&b))
	})
	for i := 1; i < len(x.users); i++ {
		a, b := &x.users[i-1], &x.users[i]
		if a.n > 0 && bytes.Equal(x.identityOf(a), x.identityOf(b)) {
			return fmt.Errorf("%w: users %s and %s both have identity %q", twilio.ErrBadResponse, a.sid, b.sid, x.identityOf(a))
		}
	}
	// What append left spare (up to a quarter for large slices) goes.
	x.users = slices.Clone(x.users)
	x.arena = slices.Clone(x.arena)
	x.bySID = make([]uint32, len(x.users))
	for i := range x.bySID {
		x.bySID[i] = uint32(i)
	}
	slices.SortFunc(x.bySID, func(a, b uint32) int { return x.users[a].sid.compare(x.users[b].sid) })
	for i := 1; i < len(x.bySID); i++ {
		a, b := &x.users[x.bySID[i-1]], &x.users[x.bySID[i]]
		if a.sid == b.sid {
			return fmt.Errorf("%w: user %s has two identities, %q and %q", twilio.ErrBadResponse, a.sid, x.identityOf(a), x.identityOf(b))
		}
	}
	x.built = true
	return nil
}

// len is the number of users.
func (x *userIndex) len() int { return len(x.users) }

// byIdentity returns the user with identity id (not empty).
func (x *userIndex) byIdentity(id string) (*indexedUser, bool) {
	i, ok := slices.BinarySearchFunc(x.users, id, func(u indexedUser, id string) int {
		// Conversions in comparisons do not copy the bytes.
		switch a := x.identityOf(&u); {
		case string(a) < id:
			return -1
		case string(a) > id:
			return 1
		}
		return 0
	})
	if !ok || id == "" {
		return nil, false
	}
	return &x.users[i], true
}

// bySIDOf returns the user with SID p.
func (x *userIndex) bySIDOf(p packedSID) (*indexedUser, bool) {
	i, ok := slices.BinarySearchFunc(x.bySID, p, func(j uint32, p packedSID) int { return x.users[j].sid.compare(p) })
	if !ok {
		return nil, false
	}
	return &x.users[x.bySID[i]], true
}

// resetCounts sets every user's bindings back to 0, when a walk starts
// over from its first page.
func (x *userIndex) resetCounts() {
	for i := range x.users {
		x.users[i].bindings = 0
	}
}

package exporter

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/parquet/file"

	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio"
)

// MinHashKeyBytes is the shortest key the hash treatment accepts. A key of
// 32 random bytes cannot be found by trying keys, which is what keeps a
// hash from being reversed by hashing guessed identities or push tokens.
const MinHashKeyBytes = 32

// Errors of NewPrivacy. They never hold the key.
var (
	// ErrNoHashKey: the policy hashes a column but no key was given.
	ErrNoHashKey = errors.New("the privacy policy hashes a column but no hash key is given")
	// ErrShortHashKey: the key is shorter than MinHashKeyBytes.
	ErrShortHashKey = fmt.Errorf("the hash key is shorter than %d bytes", MinHashKeyBytes)
)

// Privacy applies a privacy policy (schemas.Policy) to the rows written
// into parts, so that a value the policy hashes or drops never reaches a
// part, and so neither staging, the warehouse nor anything derived from the
// parts. It holds the hash key, which it never shows: String and GoString
// name the policy only. A nil *Privacy keeps every column. A Privacy is
// safe for concurrent use; each part writer hashes with its own state.
type Privacy struct {
	policy schemas.Policy
	key    []byte
	// binding and users are the schemas of the parts written under policy.
	binding, users *arrow.Schema
}

// NewPrivacy returns the Privacy of policy p with the hash key key, which
// is copied. The key must be at least MinHashKeyBytes long when p hashes a
// column (ErrNoHashKey, ErrShortHashKey); it is ignored otherwise.
func NewPrivacy(p schemas.Policy, key []byte) (*Privacy, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.Hashes() {
		switch {
		case len(key) == 0:
			return nil, ErrNoHashKey
		case len(key) < MinHashKeyBytes:
			return nil, fmt.Errorf("%w (it has %d)", ErrShortHashKey, len(key))
		}
	} else {
		key = nil
	}
	pr := &Privacy{policy: p, key: append([]byte(nil), key...)}
	pr.binding = withTag(p.BindingSchema(), pr.tag(false))
	pr.users = withTag(p.UsersSchema(), pr.tag(true))
	return pr, nil
}

// PrivacyMetadataKey is the key of the Parquet key-value metadata (and of
// the Arrow schema metadata) that records, in each part written under a
// policy that hashes or drops a column of its table, the treatment of
// those columns and the ID of the hash key:
//
//	user_bindings.endpoint=hash user_bindings.identity=drop key_id=3f1c...
//
// A part without it keeps every column. It lets CheckPrivacy refuse a
// snapshot whose parts were written under another policy or key, and lets
// a reader of the warehouse see what a file holds.
const PrivacyMetadataKey = "bindsync.privacy"

// keyIDMessage is what the key ID is the HMAC of. The ID names a key
// without revealing it: it is one HMAC-SHA-256 output, cut to 64 bits.
const keyIDMessage = "bindsync hash key id"

// keyIDPattern is the form of a key ID.
var keyIDPattern = regexp.MustCompile(`^[0-9a-f]{16}$`)

// KeyID returns the ID of a hash key: the first 16 hexadecimal characters
// of HMAC-SHA-256 of "bindsync hash key id" under key. Two parts hashed
// under the same key carry the same ID, so a key change shows.
func KeyID(key []byte) string { return HashValue(key, keyIDMessage)[:16] }

// tag is the PrivacyMetadataKey value of the parts of one table (the
// users table or user_bindings) written under p; "" when p keeps every
// column of that table.
func (p *Privacy) tag(users bool) string {
	if p == nil {
		return ""
	}
	var cols []schemas.PolicyColumn
	for _, c := range p.policy.Columns() {
		if (c.Table == "users") == users {
			cols = append(cols, c)
		}
	}
	id := ""
	if len(p.key) > 0 {
		id = KeyID(p.key)
	}
	return policyTag(cols, id)
}

// policyTag renders the tag of cols, with keyID when one is hashed.
func policyTag(cols []schemas.PolicyColumn, keyID string) string {
	treated, hashed := false, false
	s := ""
	for i, c := range cols {
		if i > 0 {
			s += " "
		}
		s += c.Table + "." + c.Column + "=" + string(c.Treatment)
		treated = treated || c.Treatment != schemas.Keep
		hashed = hashed || c.Treatment == schemas.Hash
	}
	if !treated {
		return ""
	}
	if hashed {
		s += " key_id=" + keyID
	}
	return s
}

// withTag returns s with the schema metadata PrivacyMetadataKey set to
// tag; s itself when tag is empty.
func withTag(s *arrow.Schema, tag string) *arrow.Schema {
	if tag == "" {
		return s
	}
	md := arrow.NewMetadata([]string{PrivacyMetadataKey}, []string{tag})
	return arrow.NewSchema(s.Fields(), &md)
}

// bindingSchemaOfTag returns the schema of binding parts whose tag is tag,
// for copying such a part as it is (FilterPart). It accepts only the tags
// this package writes.
func bindingSchemaOfTag(tag string) (*arrow.Schema, error) {
	if tag == "" {
		return schemas.Binding(), nil
	}
	var p schemas.Policy
	keyID := ""
	for _, field := range strings.Fields(tag) {
		k, v, _ := strings.Cut(field, "=")
		switch k {
		case "user_bindings." + schemas.ColEndpoint:
			p.Endpoint = schemas.Treatment(v)
		case "user_bindings." + schemas.ColIdentity:
			p.Identity = schemas.Treatment(v)
		case "key_id":
			keyID = v
		default:
			return nil, fmt.Errorf("unknown %s entry %q", PrivacyMetadataKey, field)
		}
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if want := policyTag(p.Columns()[:2], keyID); want != tag || (p.Hashes() && !keyIDPattern.MatchString(keyID)) {
		return nil, fmt.Errorf("malformed %s %q", PrivacyMetadataKey, tag)
	}
	return withTag(p.BindingSchema(), tag), nil
}

// Policy returns the policy applied; a nil Privacy keeps every column.
func (p *Privacy) Policy() schemas.Policy {
	if p == nil {
		return schemas.Policy{}
	}
	return p.policy
}

// String names the policy, never the key.
func (p *Privacy) String() string { return "privacy policy " + p.Policy().String() }

// GoString is String, so that %#v does not print the key either.
func (p *Privacy) GoString() string { return p.String() }

// BindingSchema returns the schema of the binding parts written under p:
// the policy's descriptions, and its PrivacyMetadataKey when it treats a
// column; schemas.Binding() for a nil p.
func (p *Privacy) BindingSchema() *arrow.Schema {
	if p == nil {
		return schemas.Binding()
	}
	return p.binding
}

// UsersSchema returns the schema of the users parts written under p, like
// BindingSchema; schemas.Users() for a nil p.
func (p *Privacy) UsersSchema() *arrow.Schema {
	if p == nil {
		return schemas.Users()
	}
	return p.users
}

// HashValue returns what the hash treatment writes for value under key:
// the lowercase hexadecimal HMAC-SHA-256 of value's bytes with key, 64
// characters. It is the documented format; an analyst computes the same
// with, for example, `printf '%s' "$value" | openssl dgst -sha256 -hmac "$key"`.
func HashValue(key []byte, value string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(value))
	return hex.EncodeToString(m.Sum(nil))
}

// masker applies a Privacy to the rows of one part writer. It reuses one
// HMAC state and is not safe for concurrent use.
type masker struct {
	policy schemas.Policy
	mac    hash.Hash
	sum    [sha256.Size]byte
}

// newMasker returns the masker of p for one writer; nil when p keeps every
// column, so that the common case costs nothing.
func (p *Privacy) newMasker() *masker {
	if p == nil || p.policy.KeepsAll() {
		return nil
	}
	m := &masker{policy: p.policy}
	if p.policy.Hashes() {
		m.mac = hmac.New(sha256.New, p.key)
	}
	return m
}

// apply returns the value to write for s under t.
func (m *masker) apply(t schemas.Treatment, s *string) *string {
	switch {
	case s == nil || t == "" || t == schemas.Keep:
		return s
	case t == schemas.Drop:
		return nil
	}
	m.mac.Reset()
	m.mac.Write([]byte(*s))
	h := hex.EncodeToString(m.mac.Sum(m.sum[:0]))
	return &h
}

// binding returns bd as the policy writes it: a shallow copy with the
// treated columns replaced, or bd itself when m is nil. bd is not changed.
func (m *masker) binding(bd *twilio.Binding) *twilio.Binding {
	if m == nil {
		return bd
	}
	out := *bd
	out.Endpoint = m.apply(m.policy.Endpoint, bd.Endpoint)
	out.Identity = m.apply(m.policy.Identity, bd.Identity)
	return &out
}

// user returns u as the policy writes it, like binding. A dropped user
// becomes empty, which schemas.AppendUser stores as null.
func (m *masker) user(u *schemas.UserRow) *schemas.UserRow {
	if m == nil {
		return u
	}
	out := *u
	if v := m.apply(m.policy.UsersUser, &u.User); v != nil {
		out.User = *v
	} else {
		out.User = ""
	}
	out.Identity = m.apply(m.policy.UsersIdentity, u.Identity)
	return &out
}

// ErrPrivacyMismatch is returned (wrapped, naming the part and both
// policies) by CheckPrivacy for a part written under another privacy
// policy or hash key than the one configured.
var ErrPrivacyMismatch = errors.New("a part was written under another privacy policy")

// partTag reads the PrivacyMetadataKey of the part name from its footer
// ("" when it has none).
func partTag(ctx context.Context, store staging.Store, name string) (string, error) {
	obj, err := store.Open(ctx, name)
	if err != nil {
		return "", err
	}
	defer obj.Close()
	pf, err := file.NewParquetReader(io.NewSectionReader(obj, 0, obj.Size()))
	if err != nil {
		return "", fmt.Errorf("open parquet file: %w", err)
	}
	defer pf.Close()
	if v := pf.MetaData().KeyValueMetadata().FindValue(PrivacyMetadataKey); v != nil {
		return *v, nil
	}
	return "", nil
}

// CheckPrivacy checks, from their footers, that every part of the
// bindings and users tables of s was written under p: the same treatment
// of each column of its table and, where one is hashed, the same key. A
// snapshot read partly before the policy or the key changed would publish
// some rows as the new policy forbids (a value in clear, or hashed under
// another key that joins nothing); it is refused with ErrPrivacyMismatch
// and must be read again under the configured policy. Other tables of s
// are not checked.
func CheckPrivacy(ctx context.Context, s Snapshot, p *Privacy) error {
	for _, t := range s.Tables {
		var want string
		switch t.Name {
		case BindingsTable:
			want = p.tag(false)
		case UsersTable:
			want = p.tag(true)
		default:
			continue
		}
		for _, part := range t.Parts {
			got, err := partTag(ctx, s.Store, part.Name)
			if err != nil {
				return fmt.Errorf("read the privacy policy of part %q: %w", part.Name, err)
			}
			if got != want {
				return fmt.Errorf("%w: part %q of table %s was written under %s, the configuration says %s: read the snapshot again (bindsync run --force) to publish it under the configured policy",
					ErrPrivacyMismatch, part.Name, t.Name, describeTag(got), describeTag(want))
			}
		}
	}
	return nil
}

// describeTag names a tag in messages.
func describeTag(tag string) string {
	if tag == "" {
		return "no privacy policy (every column kept)"
	}
	return "privacy policy " + strconv.Quote(tag)
}

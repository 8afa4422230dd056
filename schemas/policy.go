package schemas

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
)

// Treatment says what the privacy policy does with the values of a column
// that holds personal data before they are written anywhere.
type Treatment string

// Treatments of a column. The empty Treatment means Keep.
const (
	// Keep writes the value as Twilio sent it; it is the default.
	Keep Treatment = "keep"
	// Hash writes, for a value v, the lowercase hexadecimal form (64
	// characters) of HMAC-SHA-256 with the configured key over the UTF-8
	// bytes of v. The same value gives the same hash in every column, table
	// and snapshot written with the same key, so joins and counts work; a
	// null stays null.
	Hash Treatment = "hash"
	// Drop writes null whatever the value.
	Drop Treatment = "drop"
)

// Treatments lists the valid treatments, in the order messages name them.
var Treatments = []Treatment{Keep, Hash, Drop}

// Valid reports whether t is one of Treatments or empty (Keep).
func (t Treatment) Valid() bool {
	return t == "" || t == Keep || t == Hash || t == Drop
}

// or returns t, or Keep when t is empty.
func (t Treatment) or() Treatment {
	if t == "" {
		return Keep
	}
	return t
}

// Policy is the privacy policy of the columns that hold personal data:
// endpoint (a device's push token) and identity (often an e-mail address
// or a customer ID) of user_bindings, and user and identity of the users
// table. The zero value keeps every column as Twilio sent it. A Policy
// holds no key: it describes what is written, and the exporter applies it.
type Policy struct {
	// Endpoint and Identity are the columns of the user_bindings table.
	Endpoint Treatment
	Identity Treatment
	// UsersUser and UsersIdentity are the columns user (a user's SID or
	// configured identity) and identity of the users table.
	UsersUser     Treatment
	UsersIdentity Treatment
}

// PolicyColumn is one column a Policy covers.
type PolicyColumn struct {
	// Table is "user_bindings" or "users", as in the configuration file.
	Table string
	// Column is the column's name in that table.
	Column string
	// Treatment is what the policy does with it (never empty).
	Treatment Treatment
}

// Columns lists the columns of p in a fixed order, each with its
// treatment, Keep for an empty one.
func (p Policy) Columns() []PolicyColumn {
	return []PolicyColumn{
		{"user_bindings", ColEndpoint, p.Endpoint.or()},
		{"user_bindings", ColIdentity, p.Identity.or()},
		{"users", ColUser, p.UsersUser.or()},
		{"users", ColIdentity, p.UsersIdentity.or()},
	}
}

// Validate returns an error naming the first column whose treatment is
// not one of Treatments, or nil.
func (p Policy) Validate() error {
	for i, t := range []Treatment{p.Endpoint, p.Identity, p.UsersUser, p.UsersIdentity} {
		if !t.Valid() {
			c := p.Columns()[i]
			return fmt.Errorf("privacy policy of %s.%s: %q is not a treatment: want one of keep, hash, drop", c.Table, c.Column, string(t))
		}
	}
	return nil
}

// Hashes reports whether p hashes any column, and so needs a key.
func (p Policy) Hashes() bool {
	for _, c := range p.Columns() {
		if c.Treatment == Hash {
			return true
		}
	}
	return false
}

// KeepsAll reports whether p changes nothing (the zero Policy does not).
func (p Policy) KeepsAll() bool {
	for _, c := range p.Columns() {
		if c.Treatment != Keep {
			return false
		}
	}
	return true
}

// String lists the treatment of every column, for logs and messages.
func (p Policy) String() string {
	s := ""
	for i, c := range p.Columns() {
		if i > 0 {
			s += " "
		}
		s += c.Table + "." + c.Column + "=" + string(c.Treatment)
	}
	return s
}

// The notes a treated column's description starts with. They say what the
// column holds and how to compute a hash, and that older partitions are
// not rewritten: a policy applies to the snapshots written under it.
const (
	hashedNote  = "Hashed by bindsync's privacy policy (export.columns): the lowercase hexadecimal HMAC-SHA-256 (64 characters) of the value's UTF-8 bytes, keyed with export.columns.hash_key; null stays null. Partitions written before the policy was set keep what they were written with."
	droppedNote = "Dropped by bindsync's privacy policy (export.columns): always null. Partitions written before the policy was set keep what they were written with."
)

// describe returns the description of a column of description desc
// written under t.
func describe(desc string, t Treatment) string {
	switch t {
	case Hash:
		return hashedNote + " " + desc
	case Drop:
		return droppedNote + " " + desc
	}
	return desc
}

// withTreatments returns cols with the description of every column named
// in treat adjusted, and a dropped column made nullable.
func withTreatments(cols []column, treat map[string]Treatment) []column {
	out := make([]column, len(cols))
	copy(out, cols)
	for i := range out {
		t := treat[out[i].name].or()
		out[i].description = describe(out[i].description, t)
		if t == Drop {
			out[i].nullable = true
		}
	}
	return out
}

// BindingSchema returns the Arrow schema of the binding rows written under
// p: Binding, with the descriptions of hashed and dropped columns saying
// so. It returns Binding itself when p keeps every column.
func (p Policy) BindingSchema() *arrow.Schema {
	if p.Endpoint.or() == Keep && p.Identity.or() == Keep {
		return Binding()
	}
	return buildFrom(withTreatments(columns[:], map[string]Treatment{ColEndpoint: p.Endpoint, ColIdentity: p.Identity}))
}

// UsersSchema returns the Arrow schema of the user rows written under p:
// Users, with the descriptions of hashed and dropped columns saying so,
// and the user column nullable when it is dropped. It returns Users itself
// when p keeps both columns.
func (p Policy) UsersSchema() *arrow.Schema {
	if p.UsersUser.or() == Keep && p.UsersIdentity.or() == Keep {
		return Users()
	}
	return buildFrom(withTreatments(userColumns, map[string]Treatment{ColUser: p.UsersUser, ColIdentity: p.UsersIdentity}))
}

// ChangesSchema returns the Arrow schema of the change rows of bindings
// written under p: Changes, with the descriptions of the binding's hashed
// and dropped columns saying so (the changes are computed from the rows as
// written). It returns Changes itself when p keeps both columns.
func (p Policy) ChangesSchema() *arrow.Schema {
	if p.Endpoint.or() == Keep && p.Identity.or() == Keep {
		return Changes()
	}
	return buildFrom(withTreatments(changeColumns, map[string]Treatment{ColEndpoint: p.Endpoint, ColIdentity: p.Identity}))
}

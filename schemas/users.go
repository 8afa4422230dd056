package schemas

import (
	"fmt"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// Column names of a user row: one row per user a snapshot read, so that
// users without any binding (not reachable by push) can be found.
const (
	ColUser     = "user"
	ColBindings = "bindings"
	ColState    = "state"
)

// User states.
const (
	UserRead = "read" // the user's bindings were read; there may be none
	UserGone = "gone" // the user was deleted while the snapshot was read
	// UserNotFound is a configured user (SID or identity) that Twilio
	// does not know: it never existed, or was deleted before the run.
	UserNotFound = "not_found"
)

var userColumns = []column{
	{ColServiceSID, arrow.BinaryTypes.String, false, "The SID of the Service the User belongs to."},
	{ColUser, arrow.BinaryTypes.String, false, "The User as bindsync addressed it: its SID, or the identity listed in the configuration."},
	{ColUserSID, arrow.BinaryTypes.String, true, "The SID of the User, when known (always for users listed through the Users API)."},
	{ColIdentity, arrow.BinaryTypes.String, true, "The identity of the User, when known."},
	{ColBindings, arrow.PrimitiveTypes.Int64, false, "How many User Bindings the snapshot holds for the User (after the configured binding type filter); 0 means not reachable by push."},
	{ColState, arrow.BinaryTypes.String, false, "read: the User's bindings were read; gone: the User was deleted while the snapshot was read."},
	{ColSnapshotDate, arrow.FixedWidthTypes.Date32, false, "UTC date of the snapshot this row belongs to (partition column)."},
	{ColSyncedAt, timestampUTC, false, "When bindsync started reading the snapshot (UTC)."},
}

var users = buildFrom(userColumns)

func buildFrom(cols []column) *arrow.Schema {
	fields := make([]arrow.Field, len(cols))
	for i, c := range cols {
		fields[i] = arrow.Field{
			Name:     c.name,
			Type:     c.typ,
			Nullable: c.nullable,
			Metadata: arrow.NewMetadata([]string{DescriptionKey}, []string{c.description}),
		}
	}
	return arrow.NewSchema(fields, nil)
}

// Users returns the Arrow schema of a user row. The same value is returned
// on every call and must not be modified.
func Users() *arrow.Schema { return users }

// UserRow is one user of a snapshot.
type UserRow struct {
	ServiceSID string
	// User is the user as bindsync addressed it: a SID or a configured
	// identity. It is empty only where the privacy policy drops the
	// column: an empty User is stored as null, and a null reads back as
	// empty.
	User         string
	UserSID      *string
	Identity     *string
	Bindings     int64
	State        string
	SnapshotDate time.Time
	SyncedAt     time.Time
}

// AppendUser appends one user row to a RecordBuilder of the Users schema
// (or of a Policy's UsersSchema); meta gives snapshot_date and synced_at.
// An empty User is appended as null, which only a schema whose user
// column is dropped (and so nullable) accepts.
func AppendUser(b *array.RecordBuilder, meta RowMeta, u *UserRow) {
	b.Field(0).(*array.StringBuilder).Append(u.ServiceSID)
	if u.User == "" {
		b.Field(1).(*array.StringBuilder).AppendNull()
	} else {
		b.Field(1).(*array.StringBuilder).Append(u.User)
	}
	appendOptString(b.Field(2).(*array.StringBuilder), u.UserSID)
	appendOptString(b.Field(3).(*array.StringBuilder), u.Identity)
	b.Field(4).(*array.Int64Builder).Append(u.Bindings)
	b.Field(5).(*array.StringBuilder).Append(u.State)
	b.Field(6).(*array.Date32Builder).Append(arrow.Date32FromTime(meta.SnapshotDate))
	b.Field(7).(*array.TimestampBuilder).Append(arrow.Timestamp(meta.SyncedAt.UTC().UnixMicro()))
}

// deref returns *s, or "" for nil.
func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func appendOptString(b *array.StringBuilder, s *string) {
	if s == nil {
		b.AppendNull()
		return
	}
	b.Append(*s)
}

// UsersFromRecord decodes user rows, for tests and readers. A null user
// (the privacy policy dropped the column) reads as an empty User.
func UsersFromRecord(rec arrow.RecordBatch) ([]UserRow, error) {
	got := rec.Schema()
	if got.NumFields() != users.NumFields() {
		return nil, fmt.Errorf("record is not a users record: %s", got)
	}
	for i, f := range users.Fields() {
		if g := got.Field(i); g.Name != f.Name || !arrow.TypeEqual(g.Type, f.Type) {
			return nil, fmt.Errorf("record is not a users record: column %d is %s %s, want %s %s", i, g.Name, g.Type, f.Name, f.Type)
		}
	}
	str := func(c int, i int) *string {
		a := rec.Column(c).(*array.String)
		if a.IsNull(i) {
			return nil
		}
		// The string must not share the record's memory, which the caller
		// may release.
		v := strings.Clone(a.Value(i))
		return &v
	}
	out := make([]UserRow, rec.NumRows())
	for c, f := range users.Fields() {
		if !f.Nullable && f.Name != ColUser && rec.Column(c).NullN() > 0 {
			return nil, fmt.Errorf("users record: column %s holds nulls", f.Name)
		}
	}
	for i := range out {
		out[i] = UserRow{
			ServiceSID:   *str(0, i),
			User:         deref(str(1, i)),
			UserSID:      str(2, i),
			Identity:     str(3, i),
			Bindings:     rec.Column(4).(*array.Int64).Value(i),
			State:        *str(5, i),
			SnapshotDate: rec.Column(6).(*array.Date32).Value(i).ToTime(),
			SyncedAt:     time.UnixMicro(int64(rec.Column(7).(*array.Timestamp).Value(i))).UTC(),
		}
	}
	return out, nil
}

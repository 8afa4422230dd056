package schemas

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/bindsync/bindsync/twilio"
)

// RowMeta holds the columns that bindsync adds to every binding it reads.
type RowMeta struct {
	// SnapshotDate is the UTC date of the snapshot (midnight UTC); only its
	// UTC calendar day is stored.
	SnapshotDate time.Time
	// SyncedAt is when the binding was read from Twilio; it is stored in
	// microseconds, UTC.
	SyncedAt time.Time
}

// Row is one binding row as stored: the API record plus the columns that
// bindsync adds. It is what readers of the Parquet parts get back. A null
// in the API stays nil here, binding_type included: bindsync never makes up
// a value.
type Row struct {
	twilio.Binding
	// SnapshotDate is midnight UTC of the snapshot date.
	SnapshotDate time.Time
	// SyncedAt is when bindsync read the row from Twilio, in UTC.
	SyncedAt time.Time
}

// AppendBinding appends one row to b, which must have been made for the
// Binding schema. Timestamps are stored in microseconds, so a finer instant
// (Twilio sends whole seconds) is truncated. A nil MessageTypes is stored as a
// null list and an empty one as an empty list, so the two stay distinct.
func AppendBinding(b *array.RecordBuilder, meta RowMeta, bd *twilio.Binding) {
	appendString(b.Field(idxSID), bd.SID)
	appendString(b.Field(idxAccountSID), bd.AccountSID)
	appendString(b.Field(idxServiceSID), bd.ServiceSID)
	appendTimestamp(b.Field(idxDateCreated), bd.DateCreated)
	appendTimestamp(b.Field(idxDateUpdated), bd.DateUpdated)
	appendString(b.Field(idxEndpoint), bd.Endpoint)
	appendString(b.Field(idxIdentity), bd.Identity)
	appendString(b.Field(idxUserSID), bd.UserSID)
	appendString(b.Field(idxCredentialSID), bd.CredentialSID)
	appendString(b.Field(idxBindingType), bd.BindingType)

	lb := b.Field(idxMessageTypes).(*array.ListBuilder)
	if bd.MessageTypes == nil {
		lb.AppendNull()
	} else {
		lb.Append(true)
		vb := lb.ValueBuilder().(*array.StringBuilder)
		for _, mt := range bd.MessageTypes {
			vb.Append(mt)
		}
	}

	appendString(b.Field(idxURL), bd.URL)
	b.Field(idxSnapshotDate).(*array.Date32Builder).Append(arrow.Date32FromTime(meta.SnapshotDate.UTC()))
	b.Field(idxSyncedAt).(*array.TimestampBuilder).Append(arrow.Timestamp(meta.SyncedAt.UnixMicro()))
}

func appendString(b array.Builder, s *string) {
	sb := b.(*array.StringBuilder)
	if s == nil {
		sb.AppendNull()
		return
	}
	sb.Append(*s)
}

func appendTimestamp(b array.Builder, t *time.Time) {
	tb := b.(*array.TimestampBuilder)
	if t == nil {
		tb.AppendNull()
		return
	}
	tb.Append(arrow.Timestamp(t.UnixMicro()))
}

// BindingsFromRecord decodes every row of rec, which must hold the columns of
// the Binding schema (found by name, so extra columns or another order are
// fine). It is the exact inverse of AppendBinding: nulls stay nil, a null
// list stays nil and an empty list stays empty, and times are in UTC. The
// returned rows do not reference rec's memory, so rec may be released.
func BindingsFromRecord(rec arrow.RecordBatch) ([]Row, error) {
	rows := make([]Row, 0, rec.NumRows())
	err := VisitBindings(rec, func(r *Row) error {
		rows = append(rows, r.Clone())
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rows, nil
}

// VisitBindings calls fn for every row of rec, decoded as by
// BindingsFromRecord, and stops at fn's first error. The row is one value
// reused from row to row, whose strings share rec's memory: it is valid
// only until fn returns. It spares a reader that encodes each row at once
// an allocation per field.
func VisitBindings(rec arrow.RecordBatch, fn func(*Row) error) error {
	c, err := columnsOf(rec)
	if err != nil {
		return err
	}
	var (
		r     Row
		strs  [9]string
		times [2]time.Time
		types = make([]string, 0, 4)
	)
	view := func(a *array.String, i int, slot *string) *string {
		if a.IsNull(i) {
			return nil
		}
		*slot = a.Value(i)
		return slot
	}
	at := func(c timestampColumn, i int, slot *time.Time) *time.Time {
		if c.arr.IsNull(i) {
			return nil
		}
		*slot = c.arr.Value(i).ToTime(c.unit)
		return slot
	}
	for i := range int(rec.NumRows()) {
		r.SID = view(c.sid, i, &strs[0])
		r.AccountSID = view(c.accountSID, i, &strs[1])
		r.ServiceSID = view(c.serviceSID, i, &strs[2])
		r.DateCreated = at(c.dateCreated, i, &times[0])
		r.DateUpdated = at(c.dateUpdated, i, &times[1])
		r.Endpoint = view(c.endpoint, i, &strs[3])
		r.Identity = view(c.identity, i, &strs[4])
		r.UserSID = view(c.userSID, i, &strs[5])
		r.CredentialSID = view(c.credentialSID, i, &strs[6])
		r.URL = view(c.url, i, &strs[7])
		r.BindingType = view(c.bindingType, i, &strs[8])

		r.MessageTypes = nil
		if c.messageTypes.IsValid(i) {
			types = types[:0]
			start, end := c.messageTypes.ValueOffsets(i)
			for j := int(start); j < int(end); j++ {
				if c.messageValues.IsNull(j) {
					return fmt.Errorf("row %d: null element in %s", i, ColMessageTypes)
				}
				types = append(types, c.messageValues.Value(j))
			}
			r.MessageTypes = types
		}

		if c.snapshotDate.IsNull(i) {
			return fmt.Errorf("row %d: %w", i, nullError(ColSnapshotDate))
		}
		r.SnapshotDate = c.snapshotDate.Value(i).ToTime()
		if c.syncedAt.arr.IsNull(i) {
			return fmt.Errorf("row %d: %w", i, nullError(ColSyncedAt))
		}
		r.SyncedAt = c.syncedAt.arr.Value(i).ToTime(c.syncedAt.unit)
		if err := fn(&r); err != nil {
			return err
		}
	}
	return nil
}

// Clone returns a copy of r that shares no memory with it.
func (r *Row) Clone() Row {
	out := Row{SnapshotDate: r.SnapshotDate, SyncedAt: r.SyncedAt}
	str := func(s *string) *string {
		if s == nil {
			return nil
		}
		c := strings.Clone(*s)
		return &c
	}
	tm := func(t *time.Time) *time.Time {
		if t == nil {
			return nil
		}
		c := *t
		return &c
	}
	b, o := &r.Binding, &out.Binding
	o.SID, o.AccountSID, o.ServiceSID = str(b.SID), str(b.AccountSID), str(b.ServiceSID)
	o.DateCreated, o.DateUpdated = tm(b.DateCreated), tm(b.DateUpdated)
	o.Endpoint, o.Identity, o.UserSID = str(b.Endpoint), str(b.Identity), str(b.UserSID)
	o.CredentialSID, o.URL, o.BindingType = str(b.CredentialSID), str(b.URL), str(b.BindingType)
	if b.MessageTypes != nil {
		o.MessageTypes = make([]string, len(b.MessageTypes))
		for i, mt := range b.MessageTypes {
			o.MessageTypes[i] = strings.Clone(mt)
		}
	}
	return out
}

func nullError(col string) error {
	return fmt.Errorf("column %s is null but required", col)
}

// recordColumns are the typed arrays of a record holding binding rows.
type recordColumns struct {
	sid, accountSID, serviceSID, endpoint, identity *array.String
	userSID, credentialSID, bindingType, url        *array.String
	dateCreated, dateUpdated, syncedAt              timestampColumn
	messageTypes                                    *array.List
	messageValues                                   *array.String
	snapshotDate                                    *array.Date32
}

// timestampColumn is a timestamp array with its unit, so files written with
// another unit still decode to the right instant.
type timestampColumn struct {
	arr  *array.Timestamp
	unit arrow.TimeUnit
}

// columnsOf finds the columns of the Binding schema in rec by name and checks
// that their types can be decoded (timestamps of any unit are accepted).
func columnsOf(rec arrow.RecordBatch) (*recordColumns, error) {
	var cols [numColumns]arrow.Array
	for i, c := range columns {
		idx := rec.Schema().FieldIndices(c.name)
		if len(idx) != 1 {
			return nil, fmt.Errorf("record has %d columns named %q, want 1", len(idx), c.name)
		}
		a := rec.Column(idx[0])
		if !decodable(c.typ, a.DataType()) {
			return nil, fmt.Errorf("column %s has type %s, want %s", c.name, a.DataType(), c.typ)
		}
		cols[i] = a
	}
	ts := func(i int) timestampColumn {
		a := cols[i].(*array.Timestamp)
		return timestampColumn{arr: a, unit: a.DataType().(*arrow.TimestampType).Unit}
	}
	list := cols[idxMessageTypes].(*array.List)
	return &recordColumns{
		sid:           cols[idxSID].(*array.String),
		accountSID:    cols[idxAccountSID].(*array.String),
		serviceSID:    cols[idxServiceSID].(*array.String),
		endpoint:      cols[idxEndpoint].(*array.String),
		identity:      cols[idxIdentity].(*array.String),
		userSID:       cols[idxUserSID].(*array.String),
		credentialSID: cols[idxCredentialSID].(*array.String),
		bindingType:   cols[idxBindingType].(*array.String),
		url:           cols[idxURL].(*array.String),
		dateCreated:   ts(idxDateCreated),
		dateUpdated:   ts(idxDateUpdated),
		syncedAt:      ts(idxSyncedAt),
		messageTypes:  list,
		messageValues: list.ListValues().(*array.String),
		snapshotDate:  cols[idxSnapshotDate].(*array.Date32),
	}, nil
}

// decodable reports whether an array of type got can be read as a column of
// type want: same type family, and for lists the same element family.
func decodable(want, got arrow.DataType) bool {
	if want.ID() != got.ID() {
		return false
	}
	if wl, ok := want.(*arrow.ListType); ok {
		return decodable(wl.Elem(), got.(*arrow.ListType).Elem())
	}
	return true
}

// Kinds of contract violations: records that break what the API reference
// promises. They are stored as received and counted per kind in the run's
// summary, metrics and sync_runs.
const (
	// ViolationBindingTypeNull: binding_type is null or missing, although
	// the API reference makes it required.
	ViolationBindingTypeNull = "binding_type_null"
	// ViolationBindingTypeUnknown: binding_type is none of the values the
	// API reference lists (twilio.BindingTypes).
	ViolationBindingTypeUnknown = "binding_type_unknown"
)

// Violations returns the kinds of contract violations of a binding, nil
// when it keeps the contract (the common case, which allocates nothing).
func Violations(bd *twilio.Binding) []string {
	switch {
	case bd.BindingType == nil:
		return []string{ViolationBindingTypeNull}
	case !slices.Contains(twilio.BindingTypes, *bd.BindingType):
		return []string{ViolationBindingTypeUnknown}
	}
	return nil
}

// Violations returns the kinds of contract violations of the row's
// binding; see the package function Violations.
func (r *Row) Violations() []string { return Violations(&r.Binding) }

package schemas

import (
	"fmt"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/bindsync/bindsync/twilio"
)

// Column names of a change row (user_bindings_changes) beyond those of a
// binding row.
const (
	ColChange               = "change"
	ColChangedColumns       = "changed_columns"
	ColPreviousSnapshotDate = "previous_snapshot_date"
)

// Kinds of change (the change column).
const (
	// ChangeAdded is a binding that the previous snapshot did not hold.
	ChangeAdded = "added"
	// ChangeRemoved is a binding of the previous snapshot that this one
	// does not hold; the row has its values in the previous snapshot.
	ChangeRemoved = "removed"
	// ChangeChanged is a binding of both snapshots whose values differ in
	// the columns that changed_columns names.
	ChangeChanged = "changed"
	// ChangeInitial is a binding of a snapshot that has nothing to be
	// compared with: the first snapshot, or one whose predecessor could
	// not be read back. Such a day is a baseline: it says what exists,
	// not what changed.
	ChangeInitial = "initial"
)

// ChangeKinds lists the kinds of change.
var ChangeKinds = []string{ChangeInitial, ChangeAdded, ChangeRemoved, ChangeChanged}

// ComparedColumns are the columns whose values make a binding "changed":
// the fields of the API, in schema order. snapshot_date and synced_at
// differ between any two snapshots and are not compared.
var ComparedColumns = []string{
	ColSID, ColAccountSID, ColServiceSID, ColDateCreated, ColDateUpdated, ColEndpoint,
	ColIdentity, ColUserSID, ColCredentialSID, ColBindingType, ColMessageTypes, ColURL,
}

// changedColumnsType is a list of non-null names; the element is named
// "element" so that the schema stored in a Parquet file reads back equal.
var changedColumnsType = arrow.ListOfField(arrow.Field{Name: "element", Type: arrow.BinaryTypes.String, Nullable: false})

// changeColumns lays out a change row: what happened first, then the
// binding's columns as in the binding schema (same names, types and
// descriptions), then synced_at.
var changeColumns = func() []column {
	cols := []column{
		{ColSnapshotDate, arrow.FixedWidthTypes.Date32, false, "UTC date of the snapshot whose changes the row describes (partition column)."},
		{ColChange, arrow.BinaryTypes.String, false, "What happened to the binding between previous_snapshot_date and snapshot_date: added, removed or changed; initial when the snapshot had nothing to be compared with (the first snapshot, or one whose predecessor could not be read back)."},
		{ColChangedColumns, changedColumnsType, false, "For a changed binding, the columns whose values differ from the previous snapshot, in schema order; empty for the other kinds."},
		{ColPreviousSnapshotDate, arrow.FixedWidthTypes.Date32, true, "The snapshot compared with: the newest published snapshot older than snapshot_date. Null when change is initial."},
	}
	cols = append(cols, columns[idxSID:idxURL+1]...)
	return append(cols, column{ColSyncedAt, timestampUTC, false, "When bindsync read the binding's values from Twilio (UTC); for a removed binding, when it was read for the previous snapshot."})
}()

// Positions of the columns of a change row that AppendChange sets by hand.
const (
	idxChangeSnapshotDate = iota
	idxChangeKind
	idxChangedColumns
	idxPreviousSnapshotDate
	idxChangeFirstBinding // sid; the binding's columns follow in their order
)

var changes = buildFrom(changeColumns)

// Changes returns the Arrow schema of a change row (the
// user_bindings_changes table). The same value is returned on every call
// and must not be modified.
func Changes() *arrow.Schema { return changes }

// ChangeRow is one row of the changes table.
type ChangeRow struct {
	// SnapshotDate is midnight UTC of the snapshot the change leads to.
	SnapshotDate time.Time
	// Change is one of ChangeKinds.
	Change string
	// ChangedColumns names the columns that differ, for ChangeChanged;
	// empty (never nil when read back) otherwise.
	ChangedColumns []string
	// PreviousSnapshotDate is the snapshot compared with; nil for
	// ChangeInitial.
	PreviousSnapshotDate *time.Time
	// Binding holds the binding's values: in SnapshotDate's snapshot, or
	// in the previous one for a removal.
	Binding twilio.Binding
	// SyncedAt is when those values were read from Twilio.
	SyncedAt time.Time
}

// AppendChange appends one row to b, which must have been made for the
// Changes schema.
func AppendChange(b *array.RecordBuilder, c *ChangeRow) {
	b.Field(idxChangeSnapshotDate).(*array.Date32Builder).Append(arrow.Date32FromTime(c.SnapshotDate.UTC()))
	b.Field(idxChangeKind).(*array.StringBuilder).Append(c.Change)
	lb := b.Field(idxChangedColumns).(*array.ListBuilder)
	lb.Append(true)
	vb := lb.ValueBuilder().(*array.StringBuilder)
	for _, col := range c.ChangedColumns {
		vb.Append(col)
	}
	pb := b.Field(idxPreviousSnapshotDate).(*array.Date32Builder)
	if c.PreviousSnapshotDate == nil {
		pb.AppendNull()
	} else {
		pb.Append(arrow.Date32FromTime(c.PreviousSnapshotDate.UTC()))
	}
	// The binding's columns sit in the order of the binding schema, from
	// sid to url.
	bd := &c.Binding
	f := func(idx int) array.Builder { return b.Field(idxChangeFirstBinding + idx - idxSID) }
	appendString(f(idxSID), bd.SID)
	appendString(f(idxAccountSID), bd.AccountSID)
	appendString(f(idxServiceSID), bd.ServiceSID)
	appendTimestamp(f(idxDateCreated), bd.DateCreated)
	appendTimestamp(f(idxDateUpdated), bd.DateUpdated)
	appendString(f(idxEndpoint), bd.Endpoint)
	appendString(f(idxIdentity), bd.Identity)
	appendString(f(idxUserSID), bd.UserSID)
	appendString(f(idxCredentialSID), bd.CredentialSID)
	appendString(f(idxBindingType), bd.BindingType)
	mt := f(idxMessageTypes).(*array.ListBuilder)
	if bd.MessageTypes == nil {
		mt.AppendNull()
	} else {
		mt.Append(true)
		vb := mt.ValueBuilder().(*array.StringBuilder)
		for _, s := range bd.MessageTypes {
			vb.Append(s)
		}
	}
	appendString(f(idxURL), bd.URL)
	b.Field(len(changeColumns) - 1).(*array.TimestampBuilder).Append(arrow.Timestamp(c.SyncedAt.UnixMicro()))
}

// ChangesFromRecord decodes every row of rec, which must hold the columns
// of the Changes schema (found by name). The rows do not reference rec's
// memory.
func ChangesFromRecord(rec arrow.RecordBatch) ([]ChangeRow, error) {
	// The binding's columns, snapshot_date and synced_at have the names
	// and types of a binding row.
	rows, err := BindingsFromRecord(rec)
	if err != nil {
		return nil, err
	}
	col := func(name string) (arrow.Array, error) {
		idx := rec.Schema().FieldIndices(name)
		if len(idx) != 1 {
			return nil, fmt.Errorf("record has %d columns named %q, want 1", len(idx), name)
		}
		return rec.Column(idx[0]), nil
	}
	kindCol, err := col(ColChange)
	if err != nil {
		return nil, err
	}
	kinds, ok := kindCol.(*array.String)
	if !ok {
		return nil, fmt.Errorf("column %s has type %s, want string", ColChange, kindCol.DataType())
	}
	listCol, err := col(ColChangedColumns)
	if err != nil {
		return nil, err
	}
	lists, ok := listCol.(*array.List)
	if !ok {
		return nil, fmt.Errorf("column %s has type %s, want a list of strings", ColChangedColumns, listCol.DataType())
	}
	names, ok := lists.ListValues().(*array.String)
	if !ok {
		return nil, fmt.Errorf("column %s has type %s, want a list of strings", ColChangedColumns, listCol.DataType())
	}
	prevCol, err := col(ColPreviousSnapshotDate)
	if err != nil {
		return nil, err
	}
	prevs, ok := prevCol.(*array.Date32)
	if !ok {
		return nil, fmt.Errorf("column %s has type %s, want date32", ColPreviousSnapshotDate, prevCol.DataType())
	}
	out := make([]ChangeRow, len(rows))
	for i := range out {
		if kinds.IsNull(i) {
			return nil, fmt.Errorf("row %d: %w", i, nullError(ColChange))
		}
		if lists.IsNull(i) {
			return nil, fmt.Errorf("row %d: %w", i, nullError(ColChangedColumns))
		}
		c := ChangeRow{
			SnapshotDate:   rows[i].SnapshotDate,
			Change:         strings.Clone(kinds.Value(i)),
			ChangedColumns: []string{},
			Binding:        rows[i].Binding,
			SyncedAt:       rows[i].SyncedAt,
		}
		start, end := lists.ValueOffsets(i)
		for j := int(start); j < int(end); j++ {
			c.ChangedColumns = append(c.ChangedColumns, strings.Clone(names.Value(j)))
		}
		if prevs.IsValid(i) {
			t := prevs.Value(i).ToTime()
			c.PreviousSnapshotDate = &t
		}
		out[i] = c
	}
	return out, nil
}

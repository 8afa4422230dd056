package schemas

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/bindsync/bindsync/internal/golden"
	"github.com/bindsync/bindsync/twilio"
)

func TestGoldenChangesSchemas(t *testing.T) {
	golden.Check(t, "changes.golden", []byte(dumpSchema(Changes())))
}

func TestChangesHoldTheBindingColumns(t *testing.T) {
	// A change row carries every column of a binding row with the same
	// type, nullability and description, so the two tables read alike.
	for _, f := range Binding().Fields() {
		idx := Changes().FieldIndices(f.Name)
		if len(idx) != 1 {
			t.Errorf("changes schema has no column %q", f.Name)
			continue
		}
		g := Changes().Field(idx[0])
		if !arrow.TypeEqual(g.Type, f.Type) || g.Nullable != f.Nullable && f.Name != ColSyncedAt {
			t.Errorf("column %s is %s (nullable %v) in changes, %s (nullable %v) in bindings", f.Name, g.Type, g.Nullable, f.Type, f.Nullable)
		}
		if f.Name != ColSnapshotDate && f.Name != ColSyncedAt && Description(f.Name) != descriptionOf(g) {
			t.Errorf("column %s is described differently in changes: %q", f.Name, descriptionOf(g))
		}
	}
	for _, name := range append([]string{PartitionField}, ClusterFields...) {
		if idx := Changes().FieldIndices(name); len(idx) != 1 {
			t.Errorf("changes schema has no column %q to partition or cluster by", name)
		}
	}
	var compared []string
	for _, f := range Binding().Fields() {
		if f.Name != ColSnapshotDate && f.Name != ColSyncedAt {
			compared = append(compared, f.Name)
		}
	}
	if !slices.Equal(compared, ComparedColumns) {
		t.Errorf("ComparedColumns = %v, want the API columns %v", ComparedColumns, compared)
	}
}

func descriptionOf(f arrow.Field) string {
	if i := f.Metadata.FindKey(DescriptionKey); i >= 0 {
		return f.Metadata.Values()[i]
	}
	return ""
}

func TestChangesRoundTrip(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	b := array.NewRecordBuilder(mem, Changes())
	defer b.Release()
	day := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	prev := day.AddDate(0, 0, -3)
	created := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	synced := time.Date(2026, 11, 26, 2, 0, 1, 500000000, time.UTC)
	full := twilio.Binding{
		SID: ptr("BS1"), AccountSID: ptr("AC1"), ServiceSID: ptr("IS1"), DateCreated: &created, DateUpdated: &created,
		Endpoint: ptr("tok"), Identity: ptr("ünï"), UserSID: ptr("US1"), CredentialSID: ptr("CR1"),
		BindingType: ptr("apn"), MessageTypes: []string{"new_message"}, URL: ptr("https://chat.twilio.com/x"),
	}
	in := []ChangeRow{
		{SnapshotDate: day, Change: ChangeChanged, ChangedColumns: []string{ColDateUpdated, ColEndpoint}, PreviousSnapshotDate: &prev, Binding: full, SyncedAt: synced},
		{SnapshotDate: day, Change: ChangeRemoved, ChangedColumns: []string{}, PreviousSnapshotDate: &prev, Binding: twilio.Binding{SID: ptr("BS2"), MessageTypes: []string{}}, SyncedAt: synced.AddDate(0, 0, -3)},
		{SnapshotDate: day, Change: ChangeInitial, ChangedColumns: []string{}, Binding: twilio.Binding{}, SyncedAt: synced},
	}
	for i := range in {
		AppendChange(b, &in[i])
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	out, err := ChangesFromRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Errorf("round trip:\n got %+v\nwant %+v", out, in)
	}
}

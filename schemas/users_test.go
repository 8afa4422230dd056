package schemas

import (
	"reflect"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/bindsync/bindsync/internal/golden"
)

func TestGoldenUsersSchemas(t *testing.T) {
	golden.Check(t, "users.golden", []byte(dumpSchema(Users())))
}

func TestUsersClusterAndPartitionColumnsExist(t *testing.T) {
	// The users table is partitioned and clustered like user_bindings.
	for _, name := range append([]string{PartitionField}, ClusterFields...) {
		if idx := Users().FieldIndices(name); len(idx) != 1 {
			t.Errorf("users schema has no column %q", name)
		}
	}
}

func TestUsersRoundTrip(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	b := array.NewRecordBuilder(mem, Users())
	defer b.Release()
	meta := RowMeta{SnapshotDate: time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC), SyncedAt: time.Date(2026, 11, 26, 2, 0, 1, 500000000, time.UTC)}
	in := []UserRow{
		{ServiceSID: "IS1", User: "US1", UserSID: ptr("US1"), Identity: ptr("ünï"), Bindings: 3, State: UserRead},
		{ServiceSID: "IS1", User: "a/b", Identity: ptr("a/b"), Bindings: 0, State: UserRead},
		{ServiceSID: "IS2", User: "gone-user", Bindings: 0, State: UserGone},
	}
	for i := range in {
		AppendUser(b, meta, &in[i])
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	out, err := UsersFromRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		in[i].SnapshotDate, in[i].SyncedAt = meta.SnapshotDate, meta.SyncedAt
	}
	if !reflect.DeepEqual(out, in) {
		t.Errorf("round trip:\n got %+v\nwant %+v", out, in)
	}
}

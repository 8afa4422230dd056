package exporter

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging/stagingtest"
)

func TestUsersPartPublished(t *testing.T) {
	ctx := context.Background()
	store := stagingtest.NewDir(t)
	l := LocalWarehouse{Path: t.TempDir()}
	s := stagedSnapshot(t, store, day1, "v1", testBindings(0, 5))
	meta := schemas.RowMeta{SnapshotDate: day1, SyncedAt: day1.Add(2 * 3600e9)}
	w, err := NewUsersPartWriter(ctx, store, "users/users-v1.parquet", meta, PartOptions{BatchRows: 2})
	if err != nil {
		t.Fatal(err)
	}
	sid, id := "US00000000000000000000000000000001", "a/b"
	want := []schemas.UserRow{
		{ServiceSID: "IS1", User: sid, UserSID: &sid, Identity: &id, Bindings: 5, State: schemas.UserRead},
		{ServiceSID: "IS1", User: "nobody", Bindings: 0, State: schemas.UserRead},
		{ServiceSID: "IS1", User: "deleted", Bindings: 0, State: schemas.UserGone},
	}
	for i := range want {
		if err := w.Append(&want[i]); err != nil {
			t.Fatal(err)
		}
	}
	info, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if info.Rows != 3 {
		t.Errorf("rows = %d", info.Rows)
	}
	s.Tables = append(s.Tables, Table{Name: UsersTable, Schema: schemas.Users(), Parts: []PartInfo{info}})
	if err := l.Publish(ctx, s); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(l.UsersSnapshotDir(day1), "*.parquet"))
	if len(files) != 1 {
		t.Fatalf("users files = %v", files)
	}
	f, err := os.Open(files[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	var got []schemas.UserRow
	if err := ReadUsersFile(ctx, f, fi.Size(), func(u schemas.UserRow) error { got = append(got, u); return nil }); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		want[i].SnapshotDate, want[i].SyncedAt = meta.SnapshotDate, meta.SyncedAt.UTC()
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("users read back:\n got %+v\nwant %+v", got, want)
	}
	// The bindings table is there too, untouched by the users.
	if _, rows := readSnapshot(t, l, day1); len(rows) != 5 {
		t.Errorf("bindings rows = %d, want 5", len(rows))
	}
}

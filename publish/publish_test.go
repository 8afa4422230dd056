package publish_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/publish"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio"
)

var day = time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)

// failingDeletes is a store whose Delete fails for the names it holds.
type failingDeletes struct {
	*staging.Dir
	fail map[string]bool
}

func (f failingDeletes) Delete(ctx context.Context, name string) error {
	if f.fail[name] {
		return errors.New("permission denied")
	}
	return f.Dir.Delete(ctx, name)
}

// recorder is a publisher that keeps the snapshots it is given.
type recorder struct{ got []exporter.Snapshot }

func (r *recorder) Publish(_ context.Context, s exporter.Snapshot) error {
	r.got = append(r.got, s)
	return nil
}
func (r *recorder) Describe() string { return "recorder" }

// committed writes parts of one binding each for users, and a checkpoint
// that names them with the users done.
func committed(t *testing.T, store staging.Store, users ...string) *checkpoint.Log {
	t.Helper()
	ctx := context.Background()
	cp, err := checkpoint.Open(ctx, store, day)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Append(ctx, checkpoint.Entry{Kind: checkpoint.KindStart, RunID: "run-1", Time: day.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	e := checkpoint.Entry{Kind: checkpoint.KindCommit, RunID: "run-1"}
	for i, u := range users {
		name := checkpoint.PartName(day, "run-1-"+u+".parquet")
		w, err := exporter.NewPartWriter(ctx, store, name, schemas.RowMeta{SnapshotDate: day, SyncedAt: day}, exporter.PartOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc, sid, user := "IS01", "BS0"+string(rune('a'+i)), u
		if err := w.Append([]twilio.Binding{{SID: &sid, ServiceSID: &svc, Identity: &user}}); err != nil {
			t.Fatal(err)
		}
		info, err := w.Close()
		if err != nil {
			t.Fatal(err)
		}
		e.Parts = append(e.Parts, checkpoint.Part{Name: info.Name, Rows: info.Rows, Bytes: info.Bytes, CRC32C: info.CRC32C})
		e.Done = append(e.Done, checkpoint.UserDone{UserRef: checkpoint.UserRef{Service: svc, User: u}, Bindings: 1, Pages: 1, Identity: u, Parts: []string{name}})
	}
	if err := cp.Append(ctx, e); err != nil {
		t.Fatal(err)
	}
	return cp
}

func TestSnapshotTablesAndCleanup(t *testing.T) {
	ctx := context.Background()
	dir, err := staging.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cp := committed(t, dir, "alice", "bob", "carol")
	parts := cp.State().Parts
	// The first and last parts cannot be removed: every other is still
	// removed, each failure is logged, and they are reported together.
	store := failingDeletes{Dir: dir, fail: map[string]bool{parts[0].Name: true, parts[2].Name: true}}
	core, logs := observer.New(zap.WarnLevel)
	rec := &recorder{}
	published, err := publish.Snapshot(ctx, cp, publish.Options{Store: store, Publishers: []exporter.Publisher{rec}, RunID: "run-2", Logger: zap.New(core)})
	if !errors.Is(err, publish.ErrNotCleaned) {
		t.Fatalf("err = %v, want ErrNotCleaned", err)
	}
	for _, p := range []string{parts[0].Name, parts[2].Name} {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error does not name %s: %v", p, err)
		}
	}
	if len(published) != 1 || published[0] != "recorder" {
		t.Errorf("published = %v", published)
	}
	if n := logs.FilterMessage("remove published part from staging").Len(); n != 2 {
		t.Errorf("%d failed removals logged, want 2", n)
	}
	left, err := dir.List(ctx, checkpoint.Dir(day)+"/parts/")
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 2 || left[0] != parts[0].Name || left[1] != parts[2].Name {
		t.Errorf("parts left in staging = %v, want the two that failed", left)
	}
	if users, _ := dir.List(ctx, checkpoint.Dir(day)+"/users/"); len(users) != 0 {
		t.Errorf("users part left in staging: %v", users)
	}
	st := cp.State()
	if !st.Published || st.Cleaned {
		t.Errorf("published %v cleaned %v, want published and not cleaned", st.Published, st.Cleaned)
	}

	// The publisher saw the snapshot as its tables.
	if len(rec.got) != 1 {
		t.Fatalf("publisher called %d times", len(rec.got))
	}
	s := rec.got[0]
	var names []string
	for _, tb := range s.Tables {
		names = append(names, tb.Name)
	}
	if strings.Join(names, ",") != exporter.BindingsTable+","+exporter.UsersTable+","+exporter.ChangesTable {
		t.Errorf("tables = %v", names)
	}
	b, _ := s.Table(exporter.BindingsTable)
	if len(b.Parts) != 3 || b.Schema != schemas.Binding() {
		t.Errorf("bindings table: %d parts, schema %v", len(b.Parts), b.Schema)
	}
	u, _ := s.Table(exporter.UsersTable)
	if len(u.Parts) != 1 || u.Parts[0].Rows != 3 || u.Schema != schemas.Users() {
		t.Errorf("users table: %+v", u)
	}
	if s.RunID != "run-2" || !s.Date.Equal(day) {
		t.Errorf("snapshot run %q date %v", s.RunID, s.Date)
	}
}

func TestSnapshotAllRemoved(t *testing.T) {
	ctx := context.Background()
	dir, err := staging.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cp := committed(t, dir, "alice")
	// Files no checkpoint names, as a run that stopped between committing
	// a part (or its runs) and recording it leaves them.
	for _, name := range []string{checkpoint.PartName(day, "run-0-00007.parquet"), exporter.RunsName(checkpoint.PartName(day, "run-0-00008.parquet"))} {
		if err := dir.PutIfAbsent(ctx, name, []byte("left over")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := publish.Snapshot(ctx, cp, publish.Options{Store: dir, RunID: "run-1"}); err != nil {
		t.Fatal(err)
	}
	if st := cp.State(); !st.Published || !st.Cleaned {
		t.Errorf("published %v cleaned %v", st.Published, st.Cleaned)
	}
	left, err := dir.List(ctx, checkpoint.Dir(day)+"/parts/")
	if err != nil || len(left) != 0 {
		t.Errorf("parts left: %v (%v)", left, err)
	}
}

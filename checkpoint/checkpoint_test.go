package checkpoint

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bindsync/bindsync/staging"
)

var day = time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)

func newStore(t *testing.T) (*staging.Dir, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := staging.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

func TestReplay(t *testing.T) {
	ctx := context.Background()
	store, _ := newStore(t)
	l, err := Open(ctx, store, day)
	if err != nil {
		t.Fatal(err)
	}
	if st := l.State(); len(st.Parts) != 0 || st.UsersDone != 0 || st.Published {
		t.Fatalf("fresh state = %+v", st)
	}
	alice := UserRef{Service: "IS1", User: "alice"}
	bob := UserRef{Service: "IS1", User: "a/b"}
	carol := UserRef{Service: "IS2", User: "US3"}
	p1 := PartName(day, "r1-00001.parquet")
	p2 := PartName(day, "r1-00002.parquet")
	p1b := PartName(day, "r2-00001.parquet")
	entries := []Entry{
		{Kind: KindStart, RunID: "r1"},
		{Kind: KindCommit, RunID: "r1", Parts: []Part{{Name: p1, Rows: 10, Bytes: 100}},
			Done:     []UserDone{{UserRef: alice, Bindings: 4, Pages: 1}},
			InFlight: []InFlight{{UserRef: bob, Next: "/v2/x?PageToken=a%2Bb", Parts: []string{p1}, Bindings: 6, Pages: 1}}},
		{Kind: KindCommit, RunID: "r1", Parts: []Part{{Name: p2, Rows: 5}},
			InFlight: []InFlight{{UserRef: bob, Next: "/v2/x?PageToken=c", Parts: []string{p1, p2}, Bindings: 11, Pages: 2}},
			Failed:   []UserFailed{{UserRef: carol, Reason: "500 after 6 attempts"}}},
		{Kind: KindFinish, RunID: "r1", Run: &RunSummary{RunID: "r1", Status: "failed", UsersFailed: []UserFailed{{UserRef: carol, Reason: "500 after 6 attempts"}}}},
		{Kind: KindStart, RunID: "r2"},
		{Kind: KindCommit, RunID: "r2", Replaced: []Replace{{Old: p1, New: &Part{Name: p1b, Rows: 4}}}},
	}
	for _, e := range entries {
		if err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	for _, reopen := range []bool{false, true} {
		st, lg := l.State(), l
		if reopen {
			l2, err := Open(ctx, store, day)
			if err != nil {
				t.Fatal(err)
			}
			st, lg = l2.State(), l2
		}
		if !lg.IsDone(alice) || lg.IsDone(bob) || lg.IsDone(carol) {
			t.Errorf("reopen=%v: done alice=%v bob=%v carol=%v", reopen, lg.IsDone(alice), lg.IsDone(bob), lg.IsDone(carol))
		}
		if got := st.InFlight[bob]; got == nil || got.Next != "/v2/x?PageToken=c" || strings.Join(got.Parts, ",") != p1b+","+p2 || got.Bindings != 11 {
			t.Errorf("reopen=%v: in flight bob = %+v", reopen, got)
		}
		if len(st.Parts) != 2 || st.Parts[0].Name != p1b || st.Parts[0].Rows != 4 || st.Rows() != 9 {
			t.Errorf("reopen=%v: parts = %+v", reopen, st.Parts)
		}
		if st.Failed[carol] != "500 after 6 attempts" {
			t.Errorf("reopen=%v: failed = %v", reopen, st.Failed)
		}
		if len(st.Runs) != 2 || st.Runs[0].Status != "failed" || st.Runs[1].Status != "running" {
			t.Errorf("reopen=%v: runs = %+v", reopen, st.Runs)
		}
		if st.UsersDone != 1 || st.BindingsDone != 4 {
			t.Errorf("reopen=%v: done counts %d %d", reopen, st.UsersDone, st.BindingsDone)
		}
	}

	// Finishing bob removes him from the unfinished users and the failures of carol go with a done carol.
	if err := l.Append(ctx, Entry{Kind: KindCommit, Done: []UserDone{{UserRef: bob, Bindings: 12}, {UserRef: carol}}}); err != nil {
		t.Fatal(err)
	}
	st := l.State()
	if len(st.InFlight) != 0 || len(st.Failed) != 0 || !l.IsDone(bob) {
		t.Errorf("after done: in flight %v failed %v", st.InFlight, st.Failed)
	}
}

func TestConcurrentWriterRefused(t *testing.T) {
	ctx := context.Background()
	store, _ := newStore(t)
	a, _ := Open(ctx, store, day)
	b, _ := Open(ctx, store, day)
	if err := a.Append(ctx, Entry{Kind: KindStart, RunID: "a"}); err != nil {
		t.Fatal(err)
	}
	err := b.Append(ctx, Entry{Kind: KindStart, RunID: "b"})
	if !errors.Is(err, ErrConcurrentWriter) {
		t.Fatalf("second writer: err = %v, want ErrConcurrentWriter", err)
	}
	l, _ := Open(ctx, store, day)
	if runs := l.State().Runs; len(runs) != 1 || runs[0].RunID != "a" {
		t.Errorf("runs = %+v", runs)
	}
}

func TestCorruptEntryNamed(t *testing.T) {
	ctx := context.Background()
	store, root := newStore(t)
	l, _ := Open(ctx, store, day)
	if err := l.Append(ctx, Entry{Kind: KindStart, RunID: "a"}); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(root, Dir(day), "_log", "00000000000000000001.json")
	if err := os.WriteFile(name, []byte(`{"seq":1,"kind":`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(ctx, store, day)
	if !errors.Is(err, ErrLogDamaged) || !strings.Contains(err.Error(), "00000000000000000001.json") || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("err = %v", err)
	}
}

func TestReset(t *testing.T) {
	ctx := context.Background()
	store, _ := newStore(t)
	l, _ := Open(ctx, store, day)
	w, err := store.Create(ctx, PartName(day, "p.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("x"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(ctx, Entry{Kind: KindPublished}); err != nil {
		t.Fatal(err)
	}
	if err := Reset(ctx, store, day); err != nil {
		t.Fatal(err)
	}
	l2, err := Open(ctx, store, day)
	if err != nil {
		t.Fatal(err)
	}
	if l2.State().Published {
		t.Error("published survived Reset")
	}
	if names, _ := store.List(ctx, Dir(day)+"/"); len(names) != 0 {
		t.Errorf("left after Reset: %v", names)
	}
}

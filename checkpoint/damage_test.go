package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bindsync/bindsync/staging"
)

// logFile is the path of entry seq of the test day's log under root.
func logFile(root string, seq int64) string {
	return filepath.Join(root, filepath.FromSlash(entryName(Dir(day), seq)))
}

// fourUsers writes the log of the story: four users of three rows
// each, one part per commit, then the end of the run: entries 1 (start),
// 2-5 (one commit per user) and 6 (finish). It returns the users.
func fourUsers(t *testing.T, store staging.Store) []UserRef {
	t.Helper()
	ctx := context.Background()
	l, err := Open(ctx, store, day)
	if err != nil {
		t.Fatal(err)
	}
	var users []UserRef
	entries := []Entry{{Kind: KindStart, RunID: "r1"}}
	for i := range 4 {
		u := UserRef{Service: "IS1", User: fmt.Sprintf("US%d", i+1)}
		users = append(users, u)
		part := PartName(day, fmt.Sprintf("r1-%05d.parquet", i+1))
		entries = append(entries, Entry{Kind: KindCommit, RunID: "r1",
			Parts: []Part{{Name: part, Rows: 3, Bytes: 100}},
			Done:  []UserDone{{UserRef: u, Bindings: 3, Pages: 1, Parts: []string{part}}}})
	}
	entries = append(entries, Entry{Kind: KindFinish, RunID: "r1", Run: &RunSummary{RunID: "r1", Status: "succeeded", Bindings: 12}})
	for _, e := range entries {
		if err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if st := l.State(); st.Rows() != 12 || st.UsersDone != 4 {
		t.Fatalf("story log: %d rows, %d users done", st.Rows(), st.UsersDone)
	}
	return users
}

// moveAway moves entries from..to of the log out of it, into dst.
func moveAway(t *testing.T, root, dst string, from, to int64) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	for seq := from; seq <= to; seq++ {
		if err := os.Rename(logFile(root, seq), filepath.Join(dst, filepath.Base(logFile(root, seq)))); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHoleInLog reproduces the story: entry 3 of the log was
// damaged, the advice of the time was to move it away, and the next run
// replayed entries 4-6 over the hole and published 9 of 12 rows. A hole is
// now an error naming the missing entry, and following its advice gives
// the state before the hole, from which every row is read again.
func TestHoleInLog(t *testing.T) {
	ctx := context.Background()
	store, root := newStore(t)
	users := fourUsers(t, store)

	// The old advice: move the damaged entry away, only it.
	moveAway(t, root, filepath.Join(root, "moved"), 3, 3)
	_, err := Open(ctx, store, day)
	if !errors.Is(err, ErrLogDamaged) {
		t.Fatalf("Open over a hole: err = %v, want ErrLogDamaged", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"entry 3 (00000000000000000003.json) is missing",
		"3 later entries depend on it",
		"move entry 3 and every later entry (00000000000000000004.json, 00000000000000000005.json, 00000000000000000006.json) out of " + store.URI(Dir(day)+"/_log"),
		"`bindsync run --force --snapshot-date 2026-11-26`",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	// Nothing after the hole may be applied by any reader of the log.
	calls := 0
	if err := Each(ctx, store, day, func(*Entry) error { calls++; return nil }); !errors.Is(err, ErrLogDamaged) || calls != 2 {
		t.Errorf("Each: %d entries before err = %v; want the 2 before the hole, then ErrLogDamaged", calls, err)
	}

	// The advice now: move entry 3 and every later one away.
	moveAway(t, root, filepath.Join(root, "moved"), 4, 6)
	l, err := Open(ctx, store, day)
	if err != nil {
		t.Fatalf("Open after following the advice: %v", err)
	}
	st := l.State()
	if st.Rows() != 3 || len(st.Parts) != 1 || st.Parts[0].Name != PartName(day, "r1-00001.parquet") {
		t.Errorf("state after the advice: parts %+v", st.Parts)
	}
	if !l.IsDone(users[0]) || st.UsersDone != 1 || st.BindingsDone != 3 {
		t.Errorf("state after the advice: %d users done, %d bindings", st.UsersDone, st.BindingsDone)
	}
	for _, u := range users[1:] {
		if l.IsDone(u) {
			t.Errorf("%s is done, but its rows are in a part no entry names any more", u)
		}
	}
	if len(st.Runs) != 1 || st.Runs[0].Status != "running" {
		t.Errorf("runs = %+v", st.Runs)
	}
	// The log goes on right after the last entry kept.
	if err := l.Append(ctx, Entry{Kind: KindStart, RunID: "r2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(logFile(root, 3)); err != nil {
		t.Errorf("the next entry was not written as entry 3: %v", err)
	}
	if _, err := Open(ctx, store, day); err != nil {
		t.Errorf("reopen: %v", err)
	}
}

// TestDamagedLog covers the other ways an entry can be damaged; in each
// case the error names it, and moving it and every later entry away (in
// any of the ways an operator might) makes the log usable again.
func TestDamagedLog(t *testing.T) {
	tests := []struct {
		name    string
		seq     int64
		damage  func(t *testing.T, root string)
		wantErr string
	}{
		{"corrupt", 3, func(t *testing.T, root string) {
			os.WriteFile(logFile(root, 3), []byte(`{"seq":3,"kind":"comm`), 0o600)
		}, "entry 3 (00000000000000000003.json) is corrupt"},
		{"empty", 4, func(t *testing.T, root string) {
			os.WriteFile(logFile(root, 4), nil, 0o600)
		}, "entry 4 (00000000000000000004.json) is corrupt"},
		{"wrong seq", 2, func(t *testing.T, root string) {
			os.WriteFile(logFile(root, 2), []byte(`{"seq":5,"kind":"start"}`), 0o600)
		}, "entry 2 (00000000000000000002.json) holds seq 5"},
		{"first missing", 1, func(t *testing.T, root string) {
			os.Remove(logFile(root, 1))
		}, "entry 1 (00000000000000000001.json) is missing, and 5 later entries depend on it"},
		{"last corrupt", 6, func(t *testing.T, root string) {
			os.WriteFile(logFile(root, 6), []byte("\x00\x00"), 0o600)
		}, "entry 6 (00000000000000000006.json) is corrupt"},
	}
	ways := []struct {
		name string
		move func(t *testing.T, root string, from, to int64)
	}{
		{"out of the log", func(t *testing.T, root string, from, to int64) {
			moveAway(t, root, filepath.Join(root, "aside"), from, to)
		}},
		{"into a folder of the log", func(t *testing.T, root string, from, to int64) {
			moveAway(t, root, filepath.Join(filepath.Dir(logFile(root, 1)), "aside"), from, to)
		}},
		{"renamed", func(t *testing.T, root string, from, to int64) {
			for seq := from; seq <= to; seq++ {
				if err := os.Rename(logFile(root, seq), logFile(root, seq)+".bad"); err != nil {
					t.Fatal(err)
				}
			}
		}},
	}
	for _, tt := range tests {
		for _, way := range ways {
			t.Run(tt.name+"/"+way.name, func(t *testing.T) {
				ctx := context.Background()
				store, root := newStore(t)
				fourUsers(t, store)
				tt.damage(t, root)
				_, err := Open(ctx, store, day)
				if !errors.Is(err, ErrLogDamaged) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want ErrLogDamaged with %q", err, tt.wantErr)
				}
				if _, err := os.Stat(logFile(root, tt.seq)); err == nil {
					way.move(t, root, tt.seq, 6)
				} else {
					way.move(t, root, tt.seq+1, 6)
				}
				l, err := Open(ctx, store, day)
				if err != nil {
					t.Fatalf("Open after moving entries %d.. away: %v", tt.seq, err)
				}
				// Entry 1 starts the run; entries 2-5 add a part each.
				if want := max(0, 3*(tt.seq-2)); l.State().Rows() != want {
					t.Errorf("rows = %d, want %d", l.State().Rows(), want)
				}
			})
		}
	}
}

// TestDamagedLogListsFewEntries checks that a long tail of entries is
// summed up rather than listed whole.
func TestDamagedLogListsFewEntries(t *testing.T) {
	ctx := context.Background()
	store, root := newStore(t)
	l, _ := Open(ctx, store, day)
	for range 40 {
		if err := l.Append(ctx, Entry{Kind: KindCommit}); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(logFile(root, 5))
	_, err := Open(ctx, store, day)
	if err == nil {
		t.Fatal("Open over a hole succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, "00000000000000000015.json, ... 25 more, up to 00000000000000000040.json)") || strings.Contains(msg, "00000000000000000016.json") {
		t.Errorf("error does not sum up the tail:\n%s", msg)
	}
}

// TestResetDamagedLog checks the other way out the error offers: --force
// resets the snapshot, which must work on a log that Open refuses.
func TestResetDamagedLog(t *testing.T) {
	ctx := context.Background()
	store, root := newStore(t)
	fourUsers(t, store)
	os.Remove(logFile(root, 2))
	if _, err := Open(ctx, store, day); !errors.Is(err, ErrLogDamaged) {
		t.Fatalf("err = %v, want ErrLogDamaged", err)
	}
	if err := Reset(ctx, store, day); err != nil {
		t.Fatal(err)
	}
	l, err := Open(ctx, store, day)
	if err != nil {
		t.Fatalf("Open after Reset: %v", err)
	}
	if st := l.State(); len(st.Runs) != 0 || st.UsersDone != 0 || len(st.Parts) != 0 {
		t.Errorf("state after Reset: %+v", st)
	}
}

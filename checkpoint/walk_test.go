package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/bindsync/bindsync/staging"
)

// walkUsers returns n users of a walked service: user i has i%3 bindings.
func walkUsers(n int) []WalkUser {
	out := make([]WalkUser, n)
	for i := range out {
		out[i] = WalkUser{SID: fmt.Sprintf("US%032x", i+1), Identity: fmt.Sprintf("user-%d", i), Bindings: int64(i % 3)}
	}
	return out
}

func writeUsersFile(t *testing.T, store staging.Store, file string, users []WalkUser) Part {
	t.Helper()
	f, err := WriteUsersFile(context.Background(), store, WalkUsersName(day, file), slices.Values(users))
	if err != nil {
		t.Fatal(err)
	}
	if f.Rows != int64(len(users)) || f.Bytes == 0 {
		t.Fatalf("users file %+v for %d users", f, len(users))
	}
	return f
}

// walkStory is a log where service IS1 is walked and IS2 read user by
// user: the walk advances over two commits (the second one renaming its
// first part), then finishes with a users file and one gone identity.
type walkStory struct {
	p1, p1b, p2 string
	users       []WalkUser
	file        Part
	entries     []Entry
}

func newWalkStory(t *testing.T, store staging.Store) walkStory {
	s := walkStory{
		p1:    PartName(day, "r1-00001.parquet"),
		p1b:   PartName(day, "r1-00003.parquet"),
		p2:    PartName(day, "r1-00002.parquet"),
		users: walkUsers(10),
	}
	s.file = writeUsersFile(t, store, "r1-IS1.users.jsonl.gz", s.users)
	bob := UserRef{Service: "IS2", User: "US2"}
	s.entries = []Entry{
		{Kind: KindStart, RunID: "r1"},
		{Kind: KindCommit, RunID: "r1", Parts: []Part{{Name: s.p1, Rows: 7, Bytes: 70}},
			Walks:    []Walk{{Service: "IS1", Next: "/v2/Services/IS1/Bindings?PageToken=a%2Bb", Parts: []string{s.p1}, Bindings: 5, Pages: 1}},
			InFlight: []InFlight{{UserRef: bob, Next: "n1", Parts: []string{s.p1}, Bindings: 2, Pages: 1}}},
		{Kind: KindCommit, RunID: "r1", Parts: []Part{{Name: s.p2, Rows: 4, Bytes: 40}},
			Replaced: []Replace{{Old: s.p1, New: &Part{Name: s.p1b, Rows: 5, Bytes: 50}}},
			Walks:    []Walk{{Service: "IS1", End: true, Parts: []string{s.p1b, s.p2}, Bindings: 9, Pages: 2}},
			Failed:   []UserFailed{{UserRef: UserRef{Service: "IS1", User: ServiceWalkUser}, Reason: "429"}}},
		{Kind: KindCommit, RunID: "r1",
			WalksDone: []WalkDone{{Service: "IS1", Parts: []string{s.p1b, s.p2}, Bindings: 9, Pages: 2, UsersFile: s.file}},
			Gone:      []UserRef{{Service: "IS1", User: "deleted meanwhile"}},
			Done:      []UserDone{{UserRef: bob, Bindings: 2, Pages: 1, Parts: []string{s.p1b}}}},
	}
	return s
}

func appendAll(t *testing.T, l *Log, entries []Entry) {
	t.Helper()
	for _, e := range entries {
		if err := l.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWalkReplay follows a walk through the log, live and replayed: the
// walk's record after each commit, its renamed parts, its finish (users
// counted once, from the users file), and the services read user by user.
func TestWalkReplay(t *testing.T) {
	ctx := context.Background()
	store, _ := newStore(t)
	s := newWalkStory(t, store)
	l, err := Open(ctx, store, day)
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, l, s.entries[:2])
	st := l.State()
	want := &Walk{Service: "IS1", Next: "/v2/Services/IS1/Bindings?PageToken=a%2Bb", Parts: []string{s.p1}, Bindings: 5, Pages: 1}
	if !reflect.DeepEqual(st.Walks["IS1"], want) {
		t.Errorf("walk after one commit = %+v, want %+v", st.Walks["IS1"], want)
	}
	if st.Describe() != StateInProgress {
		t.Errorf("state = %s", st.Describe())
	}

	appendAll(t, l, s.entries[2:3])
	if got, _ := l.WalkParts("IS1"); !slices.Equal(got, []string{s.p1b, s.p2}) {
		t.Errorf("walk parts after the rename = %v", got)
	}
	if _, ok := l.WalkParts("IS2"); ok {
		t.Error("IS2 has a walk")
	}

	appendAll(t, l, s.entries[3:])
	for _, reopen := range []bool{false, true} {
		t.Run(fmt.Sprintf("reopen=%v", reopen), func(t *testing.T) {
			l := l
			if reopen {
				var err error
				if l, err = Open(ctx, store, day); err != nil {
					t.Fatal(err)
				}
			}
			st := l.State()
			if len(st.Walks) != 0 || st.WalksDone["IS1"] == nil || !slices.Equal(st.WalksDone["IS1"].Parts, []string{s.p1b, s.p2}) {
				t.Errorf("walks %+v, done %+v", st.Walks, st.WalksDone)
			}
			// Ten users from the file, one from the log.
			if st.UsersDone != 11 || st.BindingsDone != 11 || st.PagesDone != 3 {
				t.Errorf("done: %d users, %d bindings, %d pages; want 11, 11, 3", st.UsersDone, st.BindingsDone, st.PagesDone)
			}
			if !reflect.DeepEqual(st.PerUser, map[string]bool{"IS2": true}) {
				t.Errorf("per-user services = %v, want IS2 only (the gone user of IS1 came with its walk)", st.PerUser)
			}
			if len(st.Failed) != 0 {
				t.Errorf("the walk's failure outlived its finish: %v", st.Failed)
			}
			if !st.Gone[UserRef{Service: "IS1", User: "deleted meanwhile"}] {
				t.Errorf("gone = %v", st.Gone)
			}
			if got := st.UsersFiles(); len(got) != 1 || got[0] != s.file {
				t.Errorf("users files = %+v", got)
			}
		})
	}

	// The users table: the user read one by one, then the walk's users.
	var got []string
	err = EachDone(ctx, store, day, func(d *UserDone) error {
		got = append(got, fmt.Sprintf("%s|%s|%s|%d", d.UserRef, d.UserSID, d.Identity, d.Bindings))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want2 := []string{"IS2/US2||" + "|2"}
	for _, u := range s.users {
		want2 = append(want2, fmt.Sprintf("IS1/%s|%s|%s|%d", u.SID, u.SID, u.Identity, u.Bindings))
	}
	if !slices.Equal(got, want2) {
		t.Errorf("EachDone:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want2, "\n"))
	}
}

// TestWalkEntryReplayedTwice checks that walk records are whole, not
// deltas: an entry applied twice (a copy of it appended later) leaves the
// state as one application does, and a finished walk counts its users
// once.
func TestWalkEntryReplayedTwice(t *testing.T) {
	ctx := context.Background()
	store, _ := newStore(t)
	s := newWalkStory(t, store)
	once := newState(day)
	twice := newState(day)
	for _, e := range s.entries {
		// The walk's own records; parts and users read one by one are
		// the log's older business, kept apart by sequence numbers.
		e := Entry{Kind: e.Kind, Walks: e.Walks, WalksDone: e.WalksDone, Replaced: e.Replaced}
		once.apply(&e)
		twice.apply(&e)
		twice.apply(&e)
	}
	walkOf := func(st *State) string {
		return fmt.Sprintf("walks %+v done %+v users %d bindings %d pages %d", st.Walks["IS1"], st.WalksDone["IS1"], st.UsersDone, st.BindingsDone, st.PagesDone)
	}
	if got, want := walkOf(twice), walkOf(once); got != want || once.WalksDone["IS1"] == nil {
		t.Errorf("applied twice: %s\nonce: %s", got, want)
	}
	// In a log, the copy is caught by its sequence number.
	l, err := Open(ctx, store, day)
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, l, s.entries)
	_, root := store, store.URI("")
	data, err := os.ReadFile(logFile(root, 3))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(logFile(root, 5), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, store, day); !errors.Is(err, ErrLogDamaged) || !strings.Contains(err.Error(), "entry 5 (00000000000000000005.json) holds seq 3") {
		t.Errorf("a copied walk entry: err = %v, want ErrLogDamaged naming it", err)
	}
}

// TestWalkEntryDamaged checks that a damaged entry holding a walk stops
// the replay like any other, and that moving it away resumes the walk
// from the commit before.
func TestWalkEntryDamaged(t *testing.T) {
	ctx := context.Background()
	store, root := newStore(t)
	s := newWalkStory(t, store)
	l, err := Open(ctx, store, day)
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, l, s.entries)
	if err := os.WriteFile(logFile(root, 3), []byte(`{"seq":3,"kind":"commit","walks":[{"service":"IS1","ne`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, store, day); !errors.Is(err, ErrLogDamaged) || !strings.Contains(err.Error(), "entry 3 (00000000000000000003.json) is corrupt") {
		t.Fatalf("err = %v, want ErrLogDamaged naming entry 3", err)
	}
	if err := EachDone(ctx, store, day, func(*UserDone) error { return nil }); !errors.Is(err, ErrLogDamaged) {
		t.Errorf("EachDone over the damaged log: err = %v", err)
	}
	moveAway(t, root, filepath.Join(root, "aside"), 3, 4)
	l, err = Open(ctx, store, day)
	if err != nil {
		t.Fatal(err)
	}
	st := l.State()
	if w := st.Walks["IS1"]; w == nil || w.Next != s.entries[1].Walks[0].Next || len(st.WalksDone) != 0 || st.UsersDone != 0 {
		t.Errorf("state after moving entries 3.. away: walk %+v, done %v, %d users done", w, st.WalksDone, st.UsersDone)
	}
}

// TestWalkInvalidParts checks that a bad part of a walk, or a bad users
// file, sends the walk back to its first page and takes a finished walk's
// users out of the totals, and that a dropped walk leaves the state.
func TestWalkInvalidParts(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name     string
		finished bool
		bad      func(s walkStory) string
	}{
		{"part of a walk in progress", false, func(s walkStory) string { return s.p2 }},
		{"renamed part of a finished walk", true, func(s walkStory) string { return s.p1b }},
		{"users file", true, func(s walkStory) string { return s.file.Name }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			store, _ := newStore(t)
			s := newWalkStory(t, store)
			l, err := Open(ctx, store, day)
			if err != nil {
				t.Fatal(err)
			}
			entries := s.entries[:3]
			if tt.finished {
				entries = s.entries
			}
			appendAll(t, l, entries)
			bad := tt.bad(s)
			before := l.State()
			if got := before.WalksIn([]string{bad}); !slices.Equal(got, []string{"IS1"}) {
				t.Errorf("WalksIn(%s) = %v", bad, got)
			}
			if got := before.WalksIn([]string{s.p1}); len(got) != 0 {
				t.Errorf("WalksIn of a part renamed away = %v", got)
			}
			// The other part of the walk is rewritten without its rows.
			var other string
			for _, p := range []string{s.p1b, s.p2} {
				if p != bad {
					other = p
				}
			}
			e := Entry{Kind: KindCommit, Invalid: []string{bad}, Replaced: []Replace{{Old: other, New: &Part{Name: other + ".new", Rows: 1}}}}
			if bad == s.file.Name {
				e.Replaced = []Replace{{Old: s.p1b, New: &Part{Name: s.p1b + ".new"}}, {Old: s.p2, New: &Part{Name: s.p2 + ".new"}}}
			}
			appendAll(t, l, []Entry{e})
			for _, reopen := range []bool{false, true} {
				l := l
				if reopen {
					if l, err = Open(ctx, store, day); err != nil {
						t.Fatal(err)
					}
				}
				st := l.State()
				if w := st.Walks["IS1"]; w == nil || !reflect.DeepEqual(*w, Walk{Service: "IS1"}) || len(st.WalksDone) != 0 {
					t.Errorf("reopen=%v: walk %+v, done %v; want the walk back at its first page", reopen, w, st.WalksDone)
				}
				wantUsers := int64(0)
				if tt.finished {
					wantUsers = 1 // the user of IS2
				}
				if st.UsersDone != wantUsers || st.PagesDone != wantUsers {
					t.Errorf("reopen=%v: %d users, %d pages done; want %d", reopen, st.UsersDone, st.PagesDone, wantUsers)
				}
				if st.Describe() == StateComplete {
					t.Errorf("reopen=%v: a snapshot with a walk at its first page is complete", reopen)
				}
			}
			// The users table no longer holds the walk's users.
			n := 0
			if err := EachDone(ctx, store, day, func(d *UserDone) error { n++; return nil }); err != nil || n != int(wantDone(tt.finished)) {
				t.Errorf("EachDone: %d users, %v", n, err)
			}

			// Dropping the walk takes it out altogether.
			appendAll(t, l, []Entry{{Kind: KindCommit, DroppedWalks: []string{"IS1"}}})
			if st := l.State(); len(st.Walks)+len(st.WalksDone) != 0 {
				t.Errorf("after the drop: walks %v, done %v", st.Walks, st.WalksDone)
			}
		})
	}
}

func wantDone(finished bool) int64 {
	if finished {
		return 1
	}
	return 0
}

// TestUsersFileDamaged checks that a users file that is missing, cut
// short, changed or holding other users is caught before any of its users
// is handed out, by ReadUsersFile, EachDone and VerifyParts alike.
func TestUsersFileDamaged(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name   string
		damage func(t *testing.T, path string, f *Part)
		want   string
	}{
		{"missing", func(t *testing.T, path string, _ *Part) { os.Remove(path) }, "missing"},
		{"cut short", func(t *testing.T, path string, _ *Part) {
			data, _ := os.ReadFile(path)
			os.WriteFile(path, data[:len(data)/2], 0o600)
		}, "bytes with crc32c"},
		{"a byte changed", func(t *testing.T, path string, _ *Part) {
			data, _ := os.ReadFile(path)
			data[len(data)/2] ^= 0x40
			os.WriteFile(path, data, 0o600)
		}, "bytes with crc32c"},
		{"fewer users than recorded", func(t *testing.T, _ string, f *Part) { f.Rows++ }, "1000 users, 1001 recorded"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			store, root := newStore(t)
			users := walkUsers(1000)
			f := writeUsersFile(t, store, "r1-IS1.users.jsonl.gz", users)
			var got []WalkUser
			if err := ReadUsersFile(ctx, store, f, func(u *WalkUser) error { got = append(got, *u); return nil }); err != nil || !slices.Equal(got, users) {
				t.Fatalf("intact file: %d users, %v", len(got), err)
			}
			tt.damage(t, filepath.Join(root, filepath.FromSlash(f.Name)), &f)
			calls := 0
			err := ReadUsersFile(ctx, store, f, func(*WalkUser) error { calls++; return nil })
			if !errors.Is(err, ErrUsersFileDamaged) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), store.URI(f.Name)) {
				t.Errorf("err = %v, want ErrUsersFileDamaged naming the file and %q", err, tt.want)
			}
			if tt.name != "fewer users than recorded" && calls != 0 {
				t.Errorf("%d users handed out from a damaged file", calls)
			}
			l, err := Open(ctx, store, day)
			if err != nil {
				t.Fatal(err)
			}
			appendAll(t, l, []Entry{{Kind: KindCommit, WalksDone: []WalkDone{{Service: "IS1", UsersFile: f}}}})
			if err := EachDone(ctx, store, day, func(*UserDone) error { return nil }); !errors.Is(err, ErrUsersFileDamaged) {
				t.Errorf("EachDone: err = %v, want ErrUsersFileDamaged", err)
			}
			if tt.name == "fewer users than recorded" {
				return // the bytes are intact: only reading counts the users
			}
			bad, err := VerifyParts(ctx, store, l.State().UsersFiles())
			if err != nil || len(bad) != 1 || bad[0].Name != f.Name {
				t.Errorf("VerifyParts = %v, %v; want the users file", bad, err)
			}
		})
	}
}

// TestUsersFileSize records what a walk's users file costs: about 26 bytes
// a user of 11-character identities, gzipped.
func TestUsersFileSize(t *testing.T) {
	store, _ := newStore(t)
	users := make([]WalkUser, 100_000)
	for i := range users {
		users[i] = WalkUser{SID: fmt.Sprintf("US%032x", uint64(i)*0x9e3779b97f4a7c15), Identity: fmt.Sprintf("user-%06d", i), Bindings: int64(i % 3)}
	}
	f := writeUsersFile(t, store, "big.users.jsonl.gz", users)
	perUser := float64(f.Bytes) / float64(len(users))
	t.Logf("users file: %.1f bytes a user", perUser)
	if perUser > 40 {
		t.Errorf("users file: %.1f bytes a user, want the gzipped size well below the 80 of the plain JSON lines", perUser)
	}
}

package checkpoint

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"hash/crc32"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bindsync/bindsync/staging"
)

// putPart stores content as the part file name and returns its record.
func putPart(t *testing.T, store staging.Store, name, content string) Part {
	t.Helper()
	w, err := store.Create(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(content))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return Part{Name: name, Rows: 1, Bytes: int64(len(content)), CRC32C: crc32.Checksum([]byte(content), staging.CRC32CTable)}
}

func TestVerifyParts(t *testing.T) {
	ctx := context.Background()
	store, _ := newStore(t)
	content := strings.Repeat("PAR1 rows ", 100)
	var parts []Part
	for _, n := range []string{"good", "missing", "short", "flipped", "long", "unrecorded"} {
		parts = append(parts, putPart(t, store, PartName(day, n+".parquet"), content))
	}
	parts[5].CRC32C = 0 // recorded by a bindsync that did not checksum
	path := func(i int) string { return store.URI(parts[i].Name) }
	if err := os.Remove(path(1)); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path(2), 600); err != nil {
		t.Fatal(err)
	}
	flipped := []byte(content)
	flipped[500] ^= 0x20
	if err := os.WriteFile(path(3), flipped, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path(4), []byte(content+"x"), 0o600); err != nil {
		t.Fatal(err)
	}

	bad, err := VerifyParts(ctx, store, parts)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range bad {
		got = append(got, b.String())
	}
	want := []string{
		parts[1].Name + ": missing",
		parts[2].Name + ": short: 600 of 1000 bytes",
		parts[3].Name + ": checksum mismatch: crc32c ",
		parts[4].Name + ": longer than recorded: 1001 bytes, 1000 recorded",
		parts[5].Name + ": checksum mismatch: crc32c ",
	}
	if len(got) != len(want) {
		t.Fatalf("bad parts = %q, want %d of them", got, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) || bad[i].Part != parts[i+1] {
			t.Errorf("bad part %d = %q (%+v), want %q...", i, got[i], bad[i].Part, want[i])
		}
	}

	if bad, err := VerifyParts(ctx, store, parts[:1]); err != nil || len(bad) != 0 {
		t.Errorf("good part: bad = %v, err = %v", bad, err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if bad, err := VerifyParts(canceled, store, parts); !errors.Is(err, context.Canceled) || bad != nil {
		t.Errorf("store failure: bad = %v, err = %v; want no verdict and the error", bad, err)
	}
}

// TestInvalidParts goes through the recovery of a bad part: the users with
// rows in it are found by replaying the log, and one entry removes the
// part, un-finishes its finished users (with their rows in other parts,
// rewritten), and sends its users in flight back to their first page.
func TestInvalidParts(t *testing.T) {
	ctx := context.Background()
	store, _ := newStore(t)
	l, err := Open(ctx, store, day)
	if err != nil {
		t.Fatal(err)
	}
	pa, pb, pc, pd := PartName(day, "r1-a.parquet"), PartName(day, "r1-b.parquet"), PartName(day, "r1-c.parquet"), PartName(day, "r1-d.parquet")
	pb2, pd2 := PartName(day, "r2-b.parquet"), PartName(day, "r2-d.parquet")
	u := func(s string) UserRef { return UserRef{Service: "IS1", User: s} }
	alice, bob, carol, dave, erin, frank := u("alice"), u("bob"), u("carol"), u("dave"), u("erin"), u("frank")
	entries := []Entry{
		{Kind: KindStart, RunID: "r1"},
		{Kind: KindCommit, RunID: "r1", Parts: []Part{{Name: pa, Rows: 4}},
			Done:     []UserDone{{UserRef: alice, Bindings: 2, Pages: 1, Parts: []string{pa}}, {UserRef: carol}},
			InFlight: []InFlight{{UserRef: bob, Next: "p2", Parts: []string{pa}, Bindings: 2, Pages: 1}}},
		{Kind: KindCommit, RunID: "r1", Parts: []Part{{Name: pb, Rows: 5}},
			Done:     []UserDone{{UserRef: bob, Bindings: 5, Pages: 2, Parts: []string{pa, pb}}},
			InFlight: []InFlight{{UserRef: dave, Next: "p2", Parts: []string{pb}, Bindings: 2, Pages: 1}}},
		{Kind: KindCommit, RunID: "r1", Parts: []Part{{Name: pc, Rows: 3}},
			Done:     []UserDone{{UserRef: erin, Bindings: 3, Pages: 1, Parts: []string{pc}}},
			InFlight: []InFlight{{UserRef: dave, Next: "p3", Parts: []string{pb, pc}, Bindings: 3, Pages: 2}}},
		// A part rewritten without another user keeps erin's rows under
		// a new name.
		{Kind: KindCommit, RunID: "r2", Parts: []Part{{Name: pd, Rows: 1}},
			Done: []UserDone{{UserRef: frank, Bindings: 1, Pages: 1, Parts: []string{pd}}}},
		{Kind: KindCommit, RunID: "r2", Replaced: []Replace{{Old: pb, New: &Part{Name: pb2, Rows: 5}}, {Old: pd, New: &Part{Name: pd2, Rows: 1}}}},
	}
	for _, e := range entries {
		if err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}

	// pa turns out to be bad.
	users, err := UsersInParts(ctx, store, day, []string{pa})
	if err != nil {
		t.Fatal(err)
	}
	wantUsers := []UserDone{
		{UserRef: alice, Bindings: 2, Pages: 1, Parts: []string{pa}},
		{UserRef: bob, Bindings: 5, Pages: 2, Parts: []string{pa, pb2}},
	}
	if !reflect.DeepEqual(users, wantUsers) {
		t.Errorf("UsersInParts(pa) = %+v\nwant %+v", users, wantUsers)
	}
	if got := l.State().InFlightIn([]string{pa}); len(got) != 0 {
		t.Errorf("InFlightIn(pa) = %v, want none", got)
	}
	// A renamed part is found under its new name, through the users who
	// finished before the rename.
	if got, err := UsersInParts(ctx, store, day, []string{pb2}); err != nil || len(got) != 1 || got[0].UserRef != bob {
		t.Errorf("UsersInParts(pb2) = %+v, %v; want bob", got, err)
	}
	if got := l.State().InFlightIn([]string{pb2, pc}); !reflect.DeepEqual(got, []UserRef{dave}) {
		t.Errorf("InFlightIn(pb2, pc) = %v, want dave", got)
	}

	// The recovery entry: pa and pc are bad; bob's rows leave pb2.
	usersC, err := UsersInParts(ctx, store, day, []string{pa, pc})
	if err != nil {
		t.Fatal(err)
	}
	if len(usersC) != 3 || usersC[0].UserRef != alice || usersC[1].UserRef != bob || usersC[2].UserRef != erin {
		t.Fatalf("UsersInParts(pa, pc) = %+v", usersC)
	}
	pb3 := PartName(day, "r3-b.parquet")
	before := l.State().UsersDone
	err = l.Append(ctx, Entry{Kind: KindCommit, RunID: "r3",
		Invalid:  []string{pa, pc},
		Undone:   usersC,
		Replaced: []Replace{{Old: pb2, New: &Part{Name: pb3, Rows: 3}}}})
	if err != nil {
		t.Fatal(err)
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
		var names []string
		for _, p := range st.Parts {
			names = append(names, p.Name)
		}
		if want := []string{pb3, pd2}; !slices.Equal(names, want) {
			t.Errorf("reopen=%v: parts = %v, want %v", reopen, names, want)
		}
		for _, x := range []UserRef{alice, bob, erin} {
			if lg.IsDone(x) {
				t.Errorf("reopen=%v: %s is still done", reopen, x)
			}
		}
		if !lg.IsDone(carol) || !lg.IsDone(frank) {
			t.Errorf("reopen=%v: carol or frank no longer done", reopen)
		}
		if st.UsersDone != before-3 || st.BindingsDone != 1 || st.PagesDone != 1 {
			t.Errorf("reopen=%v: done counts %d users (before %d), %d bindings, %d pages", reopen, st.UsersDone, before, st.BindingsDone, st.PagesDone)
		}
		if f := st.InFlight[dave]; f == nil || f.Next != "" || len(f.Parts) != 0 || f.Bindings != 0 || f.Pages != 0 {
			t.Errorf("reopen=%v: dave in flight = %+v, want back at the first page", reopen, f)
		}
	}

	// Un-finishing twice changes nothing more; finishing again counts once.
	if err := l.Append(ctx, Entry{Kind: KindCommit, Undone: []UserDone{{UserRef: alice, Bindings: 2, Pages: 1}}}); err != nil {
		t.Fatal(err)
	}
	pf := PartName(day, "r3-f.parquet")
	if err := l.Append(ctx, Entry{Kind: KindCommit, Parts: []Part{{Name: pf, Rows: 2}}, Done: []UserDone{{UserRef: alice, Bindings: 2, Pages: 1, Parts: []string{pf}}}}); err != nil {
		t.Fatal(err)
	}
	if st := l.State(); !l.IsDone(alice) || st.UsersDone != before-2 || st.BindingsDone != 3 {
		t.Errorf("after alice is read again: done %v, %d users, %d bindings", l.IsDone(alice), st.UsersDone, st.BindingsDone)
	}

	// The users table sees each user's standing record once.
	var done []string
	err = EachDone(ctx, store, day, func(d *UserDone) error {
		done = append(done, d.User+":"+strings.Join(d.Parts, ","))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"carol:", "frank:" + pd, "alice:" + pf}; !slices.Equal(done, want) {
		t.Errorf("EachDone = %q, want %q", done, want)
	}
	if got, err := UsersInParts(ctx, store, day, []string{pf}); err != nil || len(got) != 1 || got[0].UserRef != alice {
		t.Errorf("UsersInParts(pf) = %+v, %v; want alice's new record", got, err)
	}
	if got, err := UsersInParts(ctx, store, day, []string{pb3}); err != nil || len(got) != 0 {
		t.Errorf("UsersInParts(pb3) = %+v, %v; want nobody (bob was un-finished)", got, err)
	}
}

// TestUsersInPartsOlderLog refuses to guess when finished users were
// recorded without their parts.
func TestUsersInPartsOlderLog(t *testing.T) {
	ctx := context.Background()
	store, _ := newStore(t)
	l, _ := Open(ctx, store, day)
	p := PartName(day, "p.parquet")
	err := l.Append(ctx, Entry{Kind: KindCommit, Parts: []Part{{Name: p, Rows: 2}}, Done: []UserDone{{UserRef: UserRef{"IS1", "alice"}, Bindings: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = UsersInParts(ctx, store, day, []string{p})
	if !errors.Is(err, ErrNoPartLists) || !strings.Contains(err.Error(), "IS1/alice") || !strings.Contains(err.Error(), "--force --snapshot-date 2026-11-26") {
		t.Errorf("err = %v, want ErrNoPartLists naming the user and the way out", err)
	}
}

// TestDoneKey checks that the done set tells apart users that a careless
// concatenation would confuse.
func TestDoneKey(t *testing.T) {
	pairs := [][2]UserRef{
		{{"IS1", "ab"}, {"IS1a", "b"}},
		{{"IS1", ""}, {"IS", "1"}},
	}
	for _, p := range pairs {
		if userHash(p[0]) == userHash(p[1]) {
			t.Errorf("%v and %v share a key", p[0], p[1])
		}
	}
	st := newState(day)
	st.apply(&Entry{Done: []UserDone{{UserRef: pairs[0][0]}}})
	if !st.isDone(pairs[0][0]) || st.isDone(pairs[0][1]) {
		t.Error("done set confuses users")
	}
}

// EachDone's first pass decodes entries without their Done lists: every
// other field must come out as a whole decode gives it, and a Done list
// that is not JSON still fails.
func TestDecodeSkippingDoneKeepsEveryOtherField(t *testing.T) {
	u := UserRef{Service: "IS1", User: "US1"}
	e := Entry{
		Seq: 7, Kind: KindCommit, RunID: "r", Time: time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC),
		Parts:    []Part{{Name: "p1", Rows: 3}},
		Replaced: []Replace{{Old: "p0"}},
		Done:     []UserDone{{UserRef: u, Bindings: 3, Pages: 1, Identity: "alice"}},
		Gone:     []UserRef{{Service: "IS1", User: "US2"}},
		NotFound: []UserRef{{Service: "IS1", User: "bob"}},
		Dropped:  []UserRef{{Service: "IS1", User: "US3"}},
		Invalid:  []string{"p9"},
		Undone:   []UserDone{{UserRef: u, Bindings: 1}},
		Walks:    []Walk{{Service: "IS2", Next: "n", Parts: []string{"p1"}, Bindings: 4}},
		Publish:  map[string]string{"k": "v"},
	}
	data, err := json.Marshal(&e)
	if err != nil {
		t.Fatal(err)
	}
	var got Entry
	if err := decodeSkippingDone(data, &got); err != nil {
		t.Fatal(err)
	}
	want := e
	want.Done = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded\n%+v\nwant\n%+v", got, want)
	}
	bad := bytes.Replace(data, []byte(`"done":[`), []byte(`"done":[}`), 1)
	if err := decodeSkippingDone(bad, &got); err == nil {
		t.Error("an entry whose done list is not JSON decoded")
	}
}

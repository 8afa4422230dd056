package worker

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/bindsync/bindsync/twilio"
)

func TestPackSIDKeepsEveryDigit(t *testing.T) {
	for _, sid := range []string{
		"US0123456789abcdef0123456789abcdef",
		"US0123456789ABCDEF0123456789ABCDEF",
		"USaBcDeF0123456789aBcDeF0123456789",
		"USffffffffffffffffffffffffffffffff",
	} {
		p, ok := packSID(sid)
		if !ok || p.String() != sid {
			t.Errorf("packSID(%q) = %q, %v", sid, p.String(), ok)
		}
	}
	a, _ := packSID("USabcdef0123456789abcdef0123456789")
	b, _ := packSID("USABCDEF0123456789abcdef0123456789")
	if a == b || a.compare(b) == 0 {
		t.Error("SIDs differing in case pack alike")
	}
	for _, bad := range []string{"", "US123", "CH0123456789abcdef0123456789abcdef", "US0123456789abcdef0123456789abcdeg"} {
		if _, ok := packSID(bad); ok {
			t.Errorf("packSID(%q) accepted", bad)
		}
	}
}

func sidOf(i int) string { return fmt.Sprintf("US%032x", uint64(i)*0x9e3779b97f4a7c15) }

func TestUserIndex(t *testing.T) {
	var x userIndex
	identities := []string{"a/b", "q?z", "", "ünï", "zed", "alice", "bob"}
	for i, id := range identities {
		if err := x.add(sidOf(i), id); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.add(sidOf(5), "alice"); err != nil { // listed twice
		t.Fatal(err)
	}
	if err := x.add(sidOf(9), ""); err != nil { // a second user without identity
		t.Fatal(err)
	}
	if err := x.build(); err != nil {
		t.Fatal(err)
	}
	if x.len() != len(identities)+1 {
		t.Errorf("%d users, want %d (one listed twice, two without identity)", x.len(), len(identities)+1)
	}
	for i, id := range identities {
		u, ok := x.byIdentity(id)
		if id == "" {
			if ok {
				t.Errorf("the empty identity found %s", u.sid)
			}
			continue
		}
		if !ok || u.sid.String() != sidOf(i) {
			t.Errorf("byIdentity(%q) = %v, %v", id, u, ok)
		}
		p, _ := packSID(sidOf(i))
		if v, ok := x.bySIDOf(p); !ok || v != u {
			t.Errorf("bySIDOf(%s) = %v, %v", sidOf(i), v, ok)
		}
	}
	if _, ok := x.byIdentity("carol"); ok {
		t.Error("an unknown identity was found")
	}
	for _, tt := range []struct {
		name string
		add  [][2]string
		want string
	}{
		{"one identity, two users", [][2]string{{sidOf(1), "alice"}, {sidOf(2), "alice"}}, `both have identity "alice"`},
		{"one user, two identities", [][2]string{{sidOf(1), "alice"}, {sidOf(1), "alicia"}}, `has two identities, "alice" and "alicia"`},
	} {
		var x userIndex
		for _, a := range tt.add {
			if err := x.add(a[0], a[1]); err != nil {
				t.Fatal(err)
			}
		}
		err := x.build()
		if !errors.Is(err, twilio.ErrBadResponse) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want ErrBadResponse saying %q", tt.name, err, tt.want)
		}
	}
}

// TestUserIndexBytesPerUser measures the heap an index of 100,000 users
// holds once built (the cost per user does not depend on their number;
// the test stays sequential, so that no other test's heap is counted),
// with identities of 12 characters: about 48 bytes a user (12 for the
// identity, 32 for its entry, 4 for the index by SID), next to what a
// map[string]string from identity to SID holds for the same users (120 to
// 150 bytes a user, with the map's growth).
func TestUserIndexBytesPerUser(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 users")
	}
	const n = 100_000
	sids := make([]string, n)
	for i := range sids {
		sids[i] = sidOf(i)
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	var x userIndex
	for i, sid := range sids {
		if err := x.add(sid, fmt.Sprintf("user-%07d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.build(); err != nil {
		t.Fatal(err)
	}
	index := float64(heap()-before) / n
	runtime.KeepAlive(&x)
	x = userIndex{}

	before = heap()
	m := make(map[string]string)
	for i := range sids {
		m[fmt.Sprintf("user-%07d", i)] = strings.Clone(sids[i]) // as decoded from a page
	}
	naive := float64(heap()-before) / n
	runtime.KeepAlive(m)
	runtime.KeepAlive(sids)
	t.Logf("users of a service walk: %.1f bytes a user in the index, %.1f in a map of identity to SID", index, naive)
	if index > 56 || index > naive/2 {
		t.Errorf("user index: %.1f bytes a user, want about 48 and under half the map's %.1f", index, naive)
	}
}

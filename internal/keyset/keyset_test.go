package keyset

import (
	"encoding/binary"
	"math/rand/v2"
	"runtime"
	"testing"
)

func key(i uint64) Key {
	var k Key
	binary.BigEndian.PutUint64(k[:8], i*0x9e3779b97f4a7c15)
	binary.BigEndian.PutUint64(k[8:], i)
	return k
}

// TestSetAgreesWithMap runs random adds, removes and lookups on a Set and
// on a map, over few enough keys that each is added, removed and added
// again many times, across several merges of the levels.
func TestSetAgreesWithMap(t *testing.T) {
	for _, universe := range []uint64{3, 700, 5000, 40000} {
		rng := rand.New(rand.NewPCG(universe, 9))
		var s Set
		want := map[Key]bool{}
		for op := 0; op < 200000; op++ {
			k := key(rng.Uint64N(universe))
			switch r := rng.IntN(10); {
			case r < 6:
				if got, w := s.Add(k), !want[k]; got != w {
					t.Fatalf("universe %d, op %d: Add(%x) = %v, want %v", universe, op, k, got, w)
				}
				want[k] = true
			case r < 8:
				if got, w := s.Remove(k), want[k]; got != w {
					t.Fatalf("universe %d, op %d: Remove(%x) = %v, want %v", universe, op, k, got, w)
				}
				delete(want, k)
			default:
				if got := s.Has(k); got != want[k] {
					t.Fatalf("universe %d, op %d: Has(%x) = %v, want %v", universe, op, k, got, want[k])
				}
			}
			if s.Len() != len(want) {
				t.Fatalf("universe %d, op %d: Len() = %d, want %d", universe, op, s.Len(), len(want))
			}
		}
		for i := range universe {
			if k := key(i); s.Has(k) != want[k] {
				t.Fatalf("universe %d: Has(%x) = %v at the end, want %v", universe, k, s.Has(k), want[k])
			}
		}
		if len(s.removed) > s.levelKeys() {
			t.Fatalf("universe %d: %d keys noted removed for %d in the levels", universe, len(s.removed), s.levelKeys())
		}
	}
}

func (s *Set) levelKeys() int {
	n := 0
	for _, l := range s.levels {
		n += len(l)
	}
	return n
}

// TestSetLevels checks the levels stay sorted, disjoint and free of keys
// removed before their merge.
func TestSetLevels(t *testing.T) {
	var s Set
	const n = 10*recentCap + 17
	for i := range uint64(n) {
		s.Add(key(i))
	}
	// Most keys are in the levels now: removing them notes them aside.
	for i := uint64(0); i < n; i += 3 {
		s.Remove(key(i))
	}
	if len(s.removed) < n/4 {
		t.Fatalf("%d keys noted removed, want most of the %d removed", len(s.removed), (n+2)/3)
	}
	// More keys merge every level again, dropping the removed ones.
	for i := uint64(n); i < 2*n; i++ {
		s.Add(key(i))
	}
	seen := map[Key]bool{}
	for i, l := range s.levels {
		for j := range l {
			if j > 0 && compare(l[j-1], l[j]) >= 0 {
				t.Fatalf("level %d not strictly sorted at %d", i, j)
			}
			if seen[l[j]] {
				t.Fatalf("key %x in two levels", l[j])
			}
			seen[l[j]] = true
		}
	}
	for k := range s.recent {
		if seen[k] {
			t.Fatalf("key %x both recent and in a level", k)
		}
	}
	if got, want := s.Len(), 2*n-(n+2)/3; got != want {
		t.Fatalf("Len() = %d, want %d", got, want)
	}
	// Removed keys of merged levels were dropped: only the keys removed
	// since their level was last merged remain noted.
	if len(s.removed) > 2*recentCap {
		t.Fatalf("%d keys noted removed; merges should have dropped most", len(s.removed))
	}
}

// TestSetBytesPerKey measures the heap a large set holds: about 16 bytes
// a key, where a map[Key]struct{} holds about twice that.
func TestSetBytesPerKey(t *testing.T) {
	const n = 300000
	inUse := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := inUse()
	var s Set
	for i := range uint64(n) {
		s.Add(key(i))
	}
	setBytes := float64(inUse()-before) / n
	m := make(map[Key]struct{})
	before = inUse()
	for i := range uint64(n) {
		m[key(i)] = struct{}{}
	}
	mapBytes := float64(inUse()-before) / n
	t.Logf("bytes a key: set %.1f, map %.1f", setBytes, mapBytes)
	if setBytes > 20 {
		t.Errorf("set holds %.1f bytes a key, want at most 20", setBytes)
	}
	runtime.KeepAlive(&s)
	runtime.KeepAlive(m)
}

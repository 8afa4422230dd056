// Package keyset is an exact set of 16-byte keys (user SIDs, hashes of
// user names) that costs 16 bytes a key once it is large, where a Go map
// costs 25 to 40: the sets of users a run keeps grow with the number of
// users, and at a few hundred thousand users they were a fifth of the
// process's live heap.
//
// Keys first go into a small map; when it is full, they are sorted and
// merged into sorted levels, like the digits of a binary counter (level i
// holds about recentCap<<i keys), so a key is copied once a level and a
// lookup is a map lookup and a binary search a level. Removing a key held
// in a level notes it aside until the next merge of that level drops it.
package keyset

import (
	"bytes"
	"slices"
)

// Key is a key of the set.
type Key = [16]byte

// recentCap is how many keys the map takes before they are sorted into
// the levels: about 40 KiB of map.
const recentCap = 1024

// Set is a set of keys. The zero value is an empty set ready to use. It is
// not safe for concurrent use.
type Set struct {
	// recent holds the keys added since the last merge.
	recent map[Key]struct{}
	// levels hold sorted keys, none of them in recent or in another level.
	levels [][]Key
	// removed holds keys of the levels that are no longer in the set.
	removed map[Key]struct{}
	n       int
}

// Len is the number of keys in the set.
func (s *Set) Len() int { return s.n }

// Has reports whether k is in the set.
func (s *Set) Has(k Key) bool {
	if _, ok := s.recent[k]; ok {
		return true
	}
	if !s.inLevels(k) {
		return false
	}
	_, gone := s.removed[k]
	return !gone
}

func (s *Set) inLevels(k Key) bool {
	for _, l := range s.levels {
		if _, ok := slices.BinarySearchFunc(l, k, compare); ok {
			return true
		}
	}
	return false
}

// Add adds k and reports whether it was not in the set.
func (s *Set) Add(k Key) bool {
	if _, ok := s.recent[k]; ok {
		return false
	}
	if s.inLevels(k) {
		if _, gone := s.removed[k]; !gone {
			return false
		}
		delete(s.removed, k)
		s.n++
		return true
	}
	if s.recent == nil {
		s.recent = make(map[Key]struct{}, recentCap)
	}
	s.recent[k] = struct{}{}
	s.n++
	if len(s.recent) >= recentCap {
		s.flush()
	}
	return true
}

// Remove takes k out of the set and reports whether it was there.
func (s *Set) Remove(k Key) bool {
	if _, ok := s.recent[k]; ok {
		delete(s.recent, k)
		s.n--
		return true
	}
	if !s.inLevels(k) {
		return false
	}
	if _, gone := s.removed[k]; gone {
		return false
	}
	if s.removed == nil {
		s.removed = map[Key]struct{}{}
	}
	s.removed[k] = struct{}{}
	s.n--
	return true
}

// flush sorts the recent keys into a level, merging it with every level
// below the first empty one, as a binary counter carries.
func (s *Set) flush() {
	keys := make([]Key, 0, len(s.recent))
	for k := range s.recent {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compare)
	clear(s.recent)
	for i := 0; ; i++ {
		if i == len(s.levels) {
			s.levels = append(s.levels, keys)
			return
		}
		if len(s.levels[i]) == 0 {
			s.levels[i] = keys
			return
		}
		keys = s.merge(s.levels[i], keys)
		s.levels[i] = nil
	}
}

// merge returns the keys of a and b in order, but for removed ones, which
// leave removed as they leave the levels.
func (s *Set) merge(a, b []Key) []Key {
	out := make([]Key, 0, len(a)+len(b))
	add := func(k Key) {
		if _, gone := s.removed[k]; gone {
			delete(s.removed, k)
			return
		}
		out = append(out, k)
	}
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		if compare(a[i], b[j]) < 0 {
			add(a[i])
			i++
		} else {
			add(b[j])
			j++
		}
	}
	for ; i < len(a); i++ {
		add(a[i])
	}
	for ; j < len(b); j++ {
		add(b[j])
	}
	return out
}

func compare(a, b Key) int { return bytes.Compare(a[:], b[:]) }

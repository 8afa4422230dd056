package worker

import (
	"encoding/hex"
	"sync"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/internal/keyset"
)

// userSet is the set of users a run has taken on. Users are keyed exactly,
// by their service and the 16 bytes their SID encodes, in a keyset.Set a
// service, so the set costs about 16 bytes a user and cannot confuse two
// users; a reference that is not a SID (a configured identity Twilio did
// not know) is kept as it is.
type userSet struct {
	mu       sync.Mutex
	services map[string]int
	sids     []keyset.Set
	others   map[checkpoint.UserRef]struct{}
}

func newUserSet(services []Service) *userSet {
	s := &userSet{services: make(map[string]int, len(services)), others: map[checkpoint.UserRef]struct{}{}}
	for _, svc := range services {
		if _, ok := s.services[svc.SID]; !ok {
			s.services[svc.SID] = len(s.services)
		}
	}
	s.sids = make([]keyset.Set, len(s.services))
	return s
}

// key returns the set of u's service and u's key in it, or nil when u is
// not a user SID of a configured service.
func (s *userSet) key(u checkpoint.UserRef) (*keyset.Set, keyset.Key) {
	var k keyset.Key
	svc, ok := s.services[u.Service]
	if !ok || !checkpoint.IsUserSID(u.User) {
		return nil, k
	}
	if _, err := hex.Decode(k[:], []byte(u.User[2:])); err != nil {
		return nil, k
	}
	return &s.sids[svc], k
}

// claim adds u and reports whether it was not there yet.
func (s *userSet) claim(u checkpoint.UserRef) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if set, k := s.key(u); set != nil {
		return set.Add(k)
	}
	if _, dup := s.others[u]; dup {
		return false
	}
	s.others[u] = struct{}{}
	return true
}

// has reports whether u was claimed.
func (s *userSet) has(u checkpoint.UserRef) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if set, k := s.key(u); set != nil {
		return set.Has(k)
	}
	_, in := s.others[u]
	return in
}

package worker

import (
	"encoding/hex"
	"sync"

	"github.com/bindsync/bindsync/checkpoint"
)

// userSet is the set of users a run has taken on. Users are keyed exactly,
// by the index of their service and the 16 bytes their SID encodes, so
// the set costs about 20 bytes a user and cannot confuse two users; a
// reference that is not a SID (a configured identity Twilio did not know)
// is kept as it is.
type userSet struct {
	mu       sync.Mutex
	services map[string]int32
	sids     map[sidKey]struct{}
	others   map[checkpoint.UserRef]struct{}
}

type sidKey struct {
	service int32
	sid     [16]byte
}

func newUserSet(services []Service) *userSet {
	s := &userSet{services: make(map[string]int32, len(services)), sids: map[sidKey]struct{}{}, others: map[checkpoint.UserRef]struct{}{}}
	for i, svc := range services {
		if _, ok := s.services[svc.SID]; !ok {
			s.services[svc.SID] = int32(i)
		}
	}
	return s
}

// key returns the compact key of u, or false when u is not a user SID of
// a configured service.
func (s *userSet) key(u checkpoint.UserRef) (sidKey, bool) {
	svc, ok := s.services[u.Service]
	if !ok || !checkpoint.IsUserSID(u.User) {
		return sidKey{}, false
	}
	k := sidKey{service: svc}
	if _, err := hex.Decode(k.sid[:], []byte(u.User[2:])); err != nil {
		return sidKey{}, false
	}
	return k, true
}

// claim adds u and reports whether it was not there yet.
func (s *userSet) claim(u checkpoint.UserRef) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.key(u); ok {
		if _, dup := s.sids[k]; dup {
			return false
		}
		s.sids[k] = struct{}{}
		return true
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
	if k, ok := s.key(u); ok {
		_, in := s.sids[k]
		return in
	}
	_, in := s.others[u]
	return in
}

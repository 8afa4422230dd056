package worker

import (
	"sync"
	"sync/atomic"
	"time"
)

// Stats are the live counters of a run, safe to read from other goroutines
// (progress display, metrics) while the run goes on.
type Stats struct {
	// Start is when the run began. The run sets it under the lock that
	// Snapshot takes, so read it through Snapshot while a run may start.
	Start time.Time

	Services      atomic.Int64
	UsersTotal    atomic.Int64 // users known so far (grows while users are listed)
	UsersDone     atomic.Int64 // finished in this run
	UsersSkipped  atomic.Int64 // finished by an earlier run of the snapshot
	UsersGone     atomic.Int64
	UsersNotFound atomic.Int64 // configured users that do not exist
	UsersFailed   atomic.Int64
	Listing       atomic.Int64 // services whose users are still being listed
	Bindings      atomic.Int64 // rows read in this run
	Pages         atomic.Int64
	Parts         atomic.Int64
	Retries       atomic.Int64

	// bySID finds a service's counters without a lock on the hot path;
	// mu guards Start and order, which keeps services in the order they
	// were first named (the configuration's order).
	bySID sync.Map // string → *ServiceStats
	mu    sync.Mutex
	order []*ServiceStats
}

// ServiceStats are the live counters of one service of a run, for
// displays that show users done/total per service.
type ServiceStats struct {
	SID           string
	UsersTotal    atomic.Int64 // users known so far
	UsersFinished atomic.Int64 // done now or before, gone, or failed
	Bindings      atomic.Int64 // rows read in this run
	Listing       atomic.Bool  // users are still being listed
}

// Service returns the counters of service sid, creating them on first use.
// It is safe for concurrent use and cheap once the service exists.
func (s *Stats) Service(sid string) *ServiceStats {
	if v, ok := s.bySID.Load(sid); ok {
		return v.(*ServiceStats)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, loaded := s.bySID.LoadOrStore(sid, &ServiceStats{SID: sid})
	ss := v.(*ServiceStats)
	if !loaded {
		s.order = append(s.order, ss)
	}
	return ss
}

// begin marks the start of a run over services: it sets Start and the
// service count, and registers every service so that displays list them
// all, in the configured order, before their first user is seen.
func (s *Stats) begin(now time.Time, services []Service) {
	s.mu.Lock()
	s.Start = now
	s.mu.Unlock()
	s.Services.Store(int64(len(services)))
	for _, svc := range services {
		s.Service(svc.SID)
	}
}

// StatsSnapshot is a plain copy of the counters at one moment.
type StatsSnapshot struct {
	Elapsed       time.Duration
	Services      int64
	UsersTotal    int64
	UsersDone     int64
	UsersSkipped  int64
	UsersGone     int64
	UsersNotFound int64
	UsersFailed   int64
	Listing       bool
	Bindings      int64
	Pages         int64
	Parts         int64
	Retries       int64
	// PerService holds every service's counters, in the configured order.
	PerService []ServiceSnapshot
}

// ServiceSnapshot is a plain copy of one service's counters.
type ServiceSnapshot struct {
	SID           string
	UsersTotal    int64
	UsersFinished int64
	Bindings      int64
	Listing       bool
}

// Snapshot copies the counters.
func (s *Stats) Snapshot() StatsSnapshot {
	s.mu.Lock()
	start := s.Start
	per := make([]ServiceSnapshot, len(s.order))
	for i, ss := range s.order {
		per[i] = ServiceSnapshot{
			SID:           ss.SID,
			UsersTotal:    ss.UsersTotal.Load(),
			UsersFinished: ss.UsersFinished.Load(),
			Bindings:      ss.Bindings.Load(),
			Listing:       ss.Listing.Load(),
		}
	}
	s.mu.Unlock()
	var elapsed time.Duration
	if !start.IsZero() {
		elapsed = time.Since(start)
	}
	return StatsSnapshot{
		Elapsed:       elapsed,
		Services:      s.Services.Load(),
		UsersTotal:    s.UsersTotal.Load(),
		UsersDone:     s.UsersDone.Load(),
		UsersSkipped:  s.UsersSkipped.Load(),
		UsersGone:     s.UsersGone.Load(),
		UsersNotFound: s.UsersNotFound.Load(),
		UsersFailed:   s.UsersFailed.Load(),
		Listing:       s.Listing.Load() > 0,
		Bindings:      s.Bindings.Load(),
		Pages:         s.Pages.Load(),
		Parts:         s.Parts.Load(),
		Retries:       s.Retries.Load(),
		PerService:    per,
	}
}

// Finished is the number of users no longer waiting: done now or before,
// gone, not found, or failed.
func (s StatsSnapshot) Finished() int64 {
	return s.UsersDone + s.UsersSkipped + s.UsersGone + s.UsersNotFound + s.UsersFailed
}

// Rate is the bindings read per second so far.
func (s StatsSnapshot) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Bindings) / s.Elapsed.Seconds()
}

// ETA estimates the time left from the pace of users so far; zero while
// unknown (users still being listed, or nothing finished yet).
func (s StatsSnapshot) ETA() time.Duration {
	fresh := s.UsersDone + s.UsersGone + s.UsersNotFound + s.UsersFailed
	left := s.UsersTotal - s.Finished()
	if s.Listing || fresh == 0 || left <= 0 {
		return 0
	}
	per := s.Elapsed / time.Duration(fresh)
	return per * time.Duration(left)
}

// restartEnumeration clears the counts of users known and skipped before
// the users are walked again in the same run (after damaged parts sent some
// back to be read), so that no user is counted twice in the totals.
func (s *Stats) restartEnumeration() {
	s.UsersTotal.Store(0)
	s.UsersSkipped.Store(0)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ss := range s.order {
		ss.UsersTotal.Store(0)
		ss.UsersFinished.Store(0)
	}
}

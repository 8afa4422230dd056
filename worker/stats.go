package worker

import (
	"sync/atomic"
	"time"
)

// Stats are the live counters of a run, safe to read from other goroutines
// (progress display, metrics) while the run goes on.
type Stats struct {
	Start time.Time

	Services     atomic.Int64
	UsersTotal   atomic.Int64 // users known so far (grows while users are listed)
	UsersDone    atomic.Int64 // finished in this run
	UsersSkipped atomic.Int64 // finished by an earlier run of the snapshot
	UsersGone    atomic.Int64
	UsersFailed  atomic.Int64
	Listing      atomic.Int64 // services whose users are still being listed
	Bindings     atomic.Int64 // rows read in this run
	Pages        atomic.Int64
	Parts        atomic.Int64
	Retries      atomic.Int64
}

// Snapshot is a plain copy of the counters at one moment.
type StatsSnapshot struct {
	Elapsed      time.Duration
	Services     int64
	UsersTotal   int64
	UsersDone    int64
	UsersSkipped int64
	UsersGone    int64
	UsersFailed  int64
	Listing      bool
	Bindings     int64
	Pages        int64
	Parts        int64
	Retries      int64
}

// Snapshot copies the counters.
func (s *Stats) Snapshot() StatsSnapshot {
	return StatsSnapshot{
		Elapsed:      time.Since(s.Start),
		Services:     s.Services.Load(),
		UsersTotal:   s.UsersTotal.Load(),
		UsersDone:    s.UsersDone.Load(),
		UsersSkipped: s.UsersSkipped.Load(),
		UsersGone:    s.UsersGone.Load(),
		UsersFailed:  s.UsersFailed.Load(),
		Listing:      s.Listing.Load() > 0,
		Bindings:     s.Bindings.Load(),
		Pages:        s.Pages.Load(),
		Parts:        s.Parts.Load(),
		Retries:      s.Retries.Load(),
	}
}

// Finished is the number of users no longer waiting: done now or before,
// gone, or failed.
func (s StatsSnapshot) Finished() int64 {
	return s.UsersDone + s.UsersSkipped + s.UsersGone + s.UsersFailed
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
	fresh := s.UsersDone + s.UsersGone + s.UsersFailed
	left := s.UsersTotal - s.Finished()
	if s.Listing || fresh == 0 || left <= 0 {
		return 0
	}
	per := s.Elapsed / time.Duration(fresh)
	return per * time.Duration(left)
}

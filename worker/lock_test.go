package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

// lossyLocker takes real locks through Locker and hands out leases that
// the test declares lost, as a GCS lease whose renewal found the lock
// object replaced by another process.
type lossyLocker struct {
	staging.Locker
	mu     sync.Mutex
	leases []*lossyLease
}

func (l *lossyLocker) Lock(ctx context.Context, name string) (staging.Lease, error) {
	lease, err := l.Locker.Lock(ctx, name)
	if err != nil {
		return nil, err
	}
	ll := &lossyLease{Lease: lease, name: name, lost: make(chan struct{})}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leases = append(l.leases, ll)
	return ll, nil
}

// loseAll declares every lease handed out so far lost.
func (l *lossyLocker) loseAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ll := range l.leases {
		ll.once.Do(func() { close(ll.lost) })
	}
}

type lossyLease struct {
	staging.Lease
	name string
	lost chan struct{}
	once sync.Once
}

func (l *lossyLease) Lost() <-chan struct{} { return l.lost }

func (l *lossyLease) Err() error {
	select {
	case <-l.lost:
		return fmt.Errorf("lock %q: %w: another process replaced or removed it", l.name, staging.ErrLeaseLost)
	default:
		return nil
	}
}

// Release frees the real lock and, as a lost lease does, reports the loss.
func (l *lossyLease) Release() error {
	err := l.Lease.Release()
	if lost := l.Err(); lost != nil {
		return errors.Join(lost, err)
	}
	return err
}

// losingSource loses the lock after n pages of bindings; every request
// after that waits for the run's context to end, and records its cause, so
// that the test sees the run cancelled by the loss and nothing read after.
type losingSource struct {
	Source
	n      int64
	lose   func()
	pages  atomic.Int64
	mu     sync.Mutex
	causes []error
}

func (s *losingSource) ListBindings(ctx context.Context, q twilio.BindingsQuery) (*twilio.BindingsPage, error) {
	k := s.pages.Add(1)
	if k > s.n {
		<-ctx.Done()
		s.mu.Lock()
		s.causes = append(s.causes, context.Cause(ctx))
		s.mu.Unlock()
		return nil, ctx.Err()
	}
	p, err := s.Source.ListBindings(ctx, q)
	if k == s.n {
		s.lose()
	}
	return p, err
}

// TestLostLockStopsTheRun loses the snapshot's lock in the middle of a
// run: the run must stop at once with the loss named, leave a checkpoint
// that the next run opens and resumes, publish nothing, and the next run
// must publish the snapshot exactly.
func TestLostLockStopsTheRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, twiliotest.WorldSpec{Seed: 21, Services: 2, UsersPerService: 30, MaxBindingsPerUser: 200}, twiliotest.Faults{})
	locker := &lossyLocker{Locker: e.store}
	opts := e.options()
	opts.Locker = locker
	opts.PageSize = 10
	opts.PartRows = 50
	opts.Concurrency = 3
	src := &losingSource{Source: e.client, n: 25, lose: locker.loseAll}
	res, err := Run(context.Background(), src, opts, day)
	if !errors.Is(err, ErrLockLost) || !errors.Is(err, staging.ErrLeaseLost) {
		t.Fatalf("err = %v, want ErrLockLost wrapping staging.ErrLeaseLost", err)
	}
	wantMsg := `lost the lock on snapshot 2026-11-26: lock "` + checkpoint.Dir(day) + `/LOCK": lock lease lost`
	if !strings.HasPrefix(err.Error(), wantMsg) {
		t.Errorf("error %q\ndoes not start with %q", err, wantMsg)
	}
	if res == nil || res.Summary.Status != "interrupted" || !strings.Contains(res.Summary.Error, "lost the lock on snapshot 2026-11-26") {
		t.Fatalf("result = %+v, want an interrupted run naming the lost lock", res)
	}
	if len(res.Published) != 0 {
		t.Errorf("published to %v after losing the lock", res.Published)
	}
	// At once: the requests after the loss saw the run's context ended
	// by it (they would wait for ever otherwise), and the fetchers stopped
	// rather than try every remaining user.
	src.mu.Lock()
	for _, cause := range src.causes {
		if !errors.Is(cause, ErrLockLost) {
			t.Errorf("request cancelled by %v, want the lost lock", cause)
		}
	}
	if len(src.causes) > opts.Concurrency {
		t.Errorf("%d requests after the loss, want at most one per fetcher (%d)", len(src.causes), opts.Concurrency)
	}
	src.mu.Unlock()
	if _, err := os.Stat(e.warehouse.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("warehouse written after losing the lock: %v", err)
	}

	// The checkpoint is whole: it opens, records the run as interrupted
	// and holds committed work for the next run to resume from.
	l, err := checkpoint.Open(context.Background(), e.store, day)
	if err != nil {
		t.Fatalf("checkpoint after the lost lock: %v", err)
	}
	st := l.State()
	if last := st.LastRun(); last == nil || last.Status != "interrupted" || !strings.Contains(last.Error, "lost the lock") {
		t.Fatalf("last run = %+v, want interrupted by the lost lock", last)
	}
	if st.Published || st.UsersDone == 0 {
		t.Errorf("published %v, users done %d; want unpublished work to resume", st.Published, st.UsersDone)
	}

	// The next run takes the lock (the lost one was released), resumes and
	// publishes every binding exactly once.
	opts.Locker = nil // the Dir itself
	res, err = Run(context.Background(), e.client, opts, day)
	if err != nil {
		t.Fatalf("next run: %v", err)
	}
	if res.Summary.Status != "succeeded" {
		t.Errorf("next run status = %q", res.Summary.Status)
	}
	e.checkExact()
}

// TestRunWithoutLocker checks that a store that takes no locks, with no
// Locker given, is refused before anything is written.
func TestRunWithoutLocker(t *testing.T) {
	t.Parallel()
	e := newEnv(t, twiliotest.WorldSpec{Seed: 1, Services: 1, UsersPerService: 3, MaxBindingsPerUser: 3}, twiliotest.Faults{})
	opts := e.options()
	opts.Store = panickingStore{e.store} // hides the Dir's Lock
	opts.Locker = nil
	_, err := Run(context.Background(), e.client, opts, day)
	if err == nil || !strings.Contains(err.Error(), "takes no locks and Options.Locker is not set") {
		t.Fatalf("err = %v, want a missing locker named", err)
	}
	if names, err := e.store.List(context.Background(), ""); err != nil || len(names) != 0 {
		t.Errorf("staging holds %v, %v; want nothing written", names, err)
	}
}

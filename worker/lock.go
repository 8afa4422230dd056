package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/staging"
)

// lockSnapshot takes the lock of the snapshot of date through
// opts.Locker, as lock does. When another run holds it, the error wraps
// ErrLocked and names the lock's real location, its holder where known and
// what to do.
func lockSnapshot(ctx context.Context, opts *Options, date time.Time, log *zap.Logger) (context.Context, func(), error) {
	day := date.Format(time.DateOnly)
	name := checkpoint.Dir(date) + "/LOCK"
	if opts.Locker == nil {
		return nil, nil, fmt.Errorf("lock snapshot %s: the staging store (%T) takes no locks and Options.Locker is not set", day, opts.Store)
	}
	held, release, err := lock(ctx, opts.Locker, name, date, opts.LockWait, log)
	switch {
	case errors.Is(err, staging.ErrLocked):
		after := "when its process ends"
		if ttl := staging.LockTTL(opts.Locker); ttl > 0 {
			after = fmt.Sprintf("at most %s after its process ends", ttl)
		}
		return nil, nil, fmt.Errorf("snapshot %s: %w: lock %s is held (%w); let that run finish (`bindsync status` shows it) and run again, or stop it: its lock is released %s",
			day, ErrLocked, opts.Locker.LockURI(name), err, after)
	case err != nil:
		return nil, nil, fmt.Errorf("lock snapshot %s: %w", day, err)
	}
	return held, release, nil
}

// lock takes the snapshot's lock, waiting up to wait while another run
// holds it. It returns a context derived from ctx that is cancelled, with a
// cause wrapping ErrLockLost and naming the lease's loss, as soon as the
// lease is lost: another run may be writing the snapshot then, so this one
// must stop. release stops watching the lease and releases it, logging a
// failure (a lost lease included) as a warning.
func lock(ctx context.Context, locker staging.Locker, name string, date time.Time, wait time.Duration, log *zap.Logger) (held context.Context, release func(), err error) {
	deadline := time.Now().Add(wait)
	var lease staging.Lease
	for {
		lease, err = locker.Lock(ctx, name)
		if !errors.Is(err, staging.ErrLocked) || !time.Now().Before(deadline) {
			break
		}
		log.Info("snapshot locked by another run; waiting", zap.Error(err), zap.Time("until", deadline))
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(min(time.Second, time.Until(deadline))):
		}
	}
	if err != nil {
		return nil, nil, err
	}
	held, cancel := context.WithCancelCause(ctx)
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-lease.Lost():
			lost := fmt.Errorf("%w on snapshot %s: %w", ErrLockLost, date.Format(time.DateOnly), lease.Err())
			log.Error("snapshot lock lost; stopping the run", zap.Error(lost))
			cancel(lost)
		case <-stop:
		}
	}()
	return held, func() {
		close(stop)
		<-watched
		cancel(nil)
		if err := lease.Release(); err != nil {
			log.Warn("release snapshot lock", zap.Error(err))
		}
	}, nil
}

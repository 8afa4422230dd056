package worker

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/bindsync/bindsync/staging"
)

// lock takes the snapshot's lock, waiting up to wait while another run
// holds it.
func lock(ctx context.Context, store staging.Store, name string, wait time.Duration, log *zap.Logger) (func() error, error) {
	deadline := time.Now().Add(wait)
	for {
		unlock, err := store.Lock(ctx, name)
		if !errors.Is(err, staging.ErrLocked) || !time.Now().Before(deadline) {
			return unlock, err
		}
		log.Info("snapshot locked by another run; waiting", zap.Error(err), zap.Time("until", deadline))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(min(time.Second, time.Until(deadline))):
		}
	}
}

package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/publish"
)

// ErrNotComplete is returned (wrapped, with the snapshot's state) by
// Publish when the snapshot is not completely read, or is published.
var ErrNotComplete = errors.New("snapshot is not complete and unpublished")

// Publish publishes the snapshot of date that earlier runs read completely
// but did not publish (a publisher failed, or the run was stopped while
// publishing), without reading Twilio: it takes the snapshot's lock,
// checks that the checkpoint describes it as complete and that every part
// is intact, and runs the publishing stage. Only opts.Store,
// opts.Publishers, opts.Logger, opts.LockWait, opts.Now, opts.Privacy and
// the part bounds are used. A snapshot in any other state is left as it is and
// gives an error wrapping ErrNotComplete; a damaged part one that says to
// run the snapshot again.
func Publish(ctx context.Context, opts Options, date time.Time) (res *Result, err error) {
	opts.setDefaults()
	date = time.Date(date.Year(), date.Month(), date.Day(), 0, 0, 0, 0, time.UTC)
	day := date.Format(time.DateOnly)
	log := opts.Logger.With(zap.String("snapshot", day))
	store := opts.Store

	ctx, release, err := lockSnapshot(ctx, &opts, date, log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if lost := context.Cause(ctx); err != nil && errors.Is(lost, ErrLockLost) {
			err = lost
		}
		release()
	}()

	cp, err := checkpoint.Open(ctx, store, date)
	if err != nil {
		return nil, err
	}
	st := cp.State()
	if state := st.Describe(); state != checkpoint.StateComplete {
		return nil, fmt.Errorf("snapshot %s: %w: it is %s; `bindsync run --snapshot-date %s` reads and publishes it", day, ErrNotComplete, state, day)
	}
	bad, err := checkpoint.VerifyParts(ctx, store, slices.Concat(st.Parts, st.UsersFiles()))
	if err != nil {
		return nil, err
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("snapshot %s: %d parts are missing or damaged (first: %s: %s); `bindsync run --snapshot-date %s` reads their users again and publishes it",
			day, len(bad), store.URI(bad[0].Name), bad[0].Reason, day)
	}
	id := checkpoint.NewRunID(opts.Now())
	res = &Result{RunID: id, Date: date}
	res.Published, err = publish.Snapshot(ctx, cp, publish.Options{
		Store:       store,
		Publishers:  opts.Publishers,
		RunID:       id,
		PartOptions: exporter.PartOptions{BatchRows: opts.BatchRows, RowGroupRows: opts.RowGroupRows, BatchBytes: opts.BatchBytes, RowGroupBytes: opts.RowGroupBytes, Privacy: opts.Privacy},
		SyncedAt:    opts.Now().UTC(),
		Logger:      log,
	})
	st = cp.State()
	res.Parts, res.Rows = st.Parts, st.Rows()
	if err == nil || errors.Is(err, publish.ErrNotCleaned) {
		removeUsersFiles(context.WithoutCancel(ctx), store, st.UsersFiles(), log)
	}
	return res, err
}

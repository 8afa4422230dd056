package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/staging"
)

// `run --force` starts a snapshot over: the worker deletes its checkpoint
// (checkpoint.Reset), and with it the summaries of every earlier run of
// that date. Before that, bindsync copies those summaries to
// history/<date>/<run id>.json in staging, outside the snapshot's
// directory that Reset empties, and `status` shows them as the earlier
// attempts. The copies are small (one per run) and never read by a run.

// historyPrefix is the staging prefix of the archived runs of date.
func historyPrefix(date time.Time) string { return "history/" + date.Format(time.DateOnly) + "/" }

// archivedRun is one earlier run of a snapshot, kept when --force started
// the snapshot over. Its fields are a contract with status --json.
type archivedRun struct {
	ArchivedAt time.Time `json:"archived_at"`
	// Published tells whether the snapshot was published when it was
	// started over, and when.
	Published   bool                  `json:"published"`
	PublishedAt *time.Time            `json:"published_at,omitempty"`
	Run         checkpoint.RunSummary `json:"run"`
}

// archiveRuns copies the run summaries of the checkpoint of date into the
// history, before --force deletes them. A damaged log gives the runs it
// holds before the damage (that is what --force is the way out of); a
// failure to read or write staging is an error, and the forced run does
// not start, so that no history is lost silently. A run archived before is
// kept as it was, unless it had not ended then and has now.
func archiveRuns(ctx context.Context, store staging.Store, date time.Time, now time.Time, log *zap.Logger) (int, error) {
	var runs []checkpoint.RunSummary
	var publishedAt time.Time
	published := false
	err := checkpoint.Each(ctx, store, date, func(e *checkpoint.Entry) error {
		switch e.Kind {
		case checkpoint.KindStart:
			runs = append(runs, checkpoint.RunSummary{RunID: e.RunID, Start: e.Time, Status: checkpoint.RunRunning})
		case checkpoint.KindFinish:
			if e.Run == nil {
				return nil
			}
			for i := range runs {
				if runs[i].RunID == e.Run.RunID {
					runs[i] = *e.Run
					return nil
				}
			}
			runs = append(runs, *e.Run)
		case checkpoint.KindPublished:
			published, publishedAt = true, e.Time
		}
		return nil
	})
	if errors.Is(err, checkpoint.ErrLogDamaged) {
		log.Warn("the checkpoint is damaged; keeping the history of the runs before the damage", zap.Error(err))
	} else if err != nil {
		return 0, fmt.Errorf("read the runs of snapshot %s: %w", date.Format(time.DateOnly), err)
	}
	kept := 0
	for _, r := range runs {
		a := archivedRun{ArchivedAt: now.UTC(), Published: published, Run: r}
		if published {
			t := publishedAt.UTC()
			a.PublishedAt = &t
		}
		data, err := json.Marshal(a)
		if err != nil {
			return kept, fmt.Errorf("encode run %s: %w", r.RunID, err)
		}
		name := historyPrefix(date) + safeRunID(r.RunID) + ".json"
		err = store.PutIfAbsent(ctx, name, data)
		if errors.Is(err, staging.ErrExists) {
			err = replaceUnended(ctx, store, name, a, data)
		}
		if err != nil {
			return kept, fmt.Errorf("keep the history of run %s in %s: %w", r.RunID, store.URI(name), err)
		}
		kept++
	}
	return kept, nil
}

// replaceUnended replaces the archived run at name with data when the
// archived copy had not ended (archived while it ran, by a --force that
// then found the snapshot locked) and a has.
func replaceUnended(ctx context.Context, store staging.Store, name string, a archivedRun, data []byte) error {
	old, err := store.ReadAll(ctx, name)
	if err != nil {
		return err
	}
	var prev archivedRun
	if json.Unmarshal(old, &prev) == nil && !prev.Run.End.IsZero() || a.Run.End.IsZero() {
		return nil
	}
	w, err := store.Create(ctx, name)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		return err
	}
	return w.Close()
}

// safeRunID keeps a run ID read from the log from naming another object.
func safeRunID(id string) string {
	id = strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '_'
	}, id)
	if id == "" {
		return "_"
	}
	return id
}

// readHistory returns the archived runs of date, oldest first.
func readHistory(ctx context.Context, store staging.Store, date time.Time) ([]archivedRun, error) {
	names, err := store.List(ctx, historyPrefix(date))
	if err != nil {
		return nil, fmt.Errorf("list the earlier runs of snapshot %s: %w", date.Format(time.DateOnly), err)
	}
	var out []archivedRun
	for _, name := range names {
		if path.Ext(name) != ".json" {
			continue
		}
		data, err := store.ReadAll(ctx, name)
		if errors.Is(err, staging.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read earlier run %s: %w", store.URI(name), err)
		}
		var a archivedRun
		if err := json.Unmarshal(data, &a); err != nil {
			return nil, fmt.Errorf("read earlier run %s: %w", store.URI(name), err)
		}
		out = append(out, a)
	}
	// Run IDs begin with their start time, and names list sorted: oldest first.
	return out, nil
}

package checkpoint

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/bindsync/bindsync/staging"
)

// RunStatus is the outcome of a run: in its checkpoint summary, the
// metric bindsync_runs_total{status}, and the sync_runs table.
type RunStatus string

// Run statuses. A run's summary holds one of the first four; the others
// name what a process did instead of a run.
const (
	RunSucceeded   RunStatus = "succeeded"
	RunFailed      RunStatus = "failed"
	RunInterrupted RunStatus = "interrupted"
	// RunRunning is a run that started and has not ended, or died.
	RunRunning RunStatus = "running"
	// RunAlreadyPublished is a run that found its snapshot published and
	// did nothing (sync_runs).
	RunAlreadyPublished RunStatus = "already_published"
	// RunPanicked is a run that ended in a panic; the process went on
	// (metrics).
	RunPanicked RunStatus = "panicked"
	// RunSkipped is a firing of the schedule while the previous run was
	// still going: no run was started (metrics).
	RunSkipped RunStatus = "skipped"
)

// NewRunID returns a new run ID: the UTC start time and 6 random hex
// digits, such as 20261126T020000Z-ab12cd. It sorts by start time, and
// two runs started in the same second still differ.
func NewRunID(now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// SnapshotState classifies a snapshot from its checkpoint alone.
type SnapshotState string

// States of a snapshot. A run that was killed looks like a running one
// (it never wrote its end), so the two share StateInProgress.
const (
	StateNoCheckpoint SnapshotState = "no_checkpoint"
	StateInProgress   SnapshotState = "in_progress"
	StateFailed       SnapshotState = "failed"
	// StateComplete is a snapshot whose every user is read but that is
	// not published yet.
	StateComplete  SnapshotState = "complete"
	StatePublished SnapshotState = "published"
)

// Describe classifies the snapshot s is the state of.
func (s *State) Describe() SnapshotState {
	last := s.LastRun()
	switch {
	case s.Published:
		return StatePublished
	case last == nil && len(s.Parts) == 0 && s.UsersDone == 0 && len(s.Publish) == 0:
		return StateNoCheckpoint
	case last == nil || last.Status == RunRunning || last.Status == RunInterrupted:
		return StateInProgress
	case last.Status == RunSucceeded || s.readComplete():
		return StateComplete
	default:
		return StateFailed
	}
}

// readComplete reports whether every user is read although the snapshot
// is not published: publishing began, or the last run's users are all
// finished with none failed or half read.
func (s *State) readComplete() bool {
	if len(s.Failed) > 0 || len(s.InFlight) > 0 || len(s.Walks) > 0 {
		return false
	}
	if len(s.Publish) > 0 {
		return true
	}
	total := s.LastRun().UsersTotal
	return total > 0 && s.UsersDone+int64(len(s.Gone))+int64(len(s.NotFound)) >= total
}

// UsersTotal is the number of users the newest ended run knew of; runs
// that are still going (or died) have not written theirs. 0: no run ended.
func (s *State) UsersTotal() int64 {
	for i := len(s.Runs) - 1; i >= 0; i-- {
		if !s.Runs[i].End.IsZero() {
			return s.Runs[i].UsersTotal
		}
	}
	return 0
}

// Snapshots returns the dates (YYYY-MM-DD), oldest first, that have a
// checkpoint log in store.
func Snapshots(ctx context.Context, store staging.Store) ([]string, error) {
	names, err := store.List(ctx, "snapshots/")
	if err != nil {
		return nil, fmt.Errorf("list snapshots in staging %s: %w", store.URI("snapshots"), err)
	}
	var dates []string
	for _, name := range names {
		parts := strings.Split(name, "/")
		if len(parts) < 4 || parts[2] != "_log" {
			continue
		}
		if _, err := time.Parse(time.DateOnly, parts[1]); err != nil {
			continue
		}
		if len(dates) == 0 || dates[len(dates)-1] != parts[1] {
			dates = append(dates, parts[1])
		}
	}
	return dates, nil
}

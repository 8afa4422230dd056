package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/staging"
)

// checkPublished answers `status --check`: did the newest expected
// snapshot get published? It returns whether it did and one line saying
// why, for a monitor's log or alert.
//
// Without a date, the check passes when a snapshot was published within
// maxAge of now, counted from the moment it was published, and its date is
// no earlier than the UTC date maxAge ago (so that republishing an old
// date with --force does not hide that last night failed). With a daily
// run, a maxAge of a day plus the usual length of a run (26h) passes
// between runs and fails once tonight's snapshot is late. With a date (not
// zero), the check passes when that snapshot is published, whenever.
//
// store is nil when the staging area does not exist; where names it.
// Errors reading staging fail the check: a monitor must hear of them.
func checkPublished(ctx context.Context, store staging.Store, where string, day, now time.Time, maxAge time.Duration) (bool, string) {
	if store == nil {
		return false, fmt.Sprintf("FAILED: staging %s does not exist: no snapshot was ever read", where)
	}
	if !day.IsZero() {
		st, err := openState(ctx, store, day)
		if err != nil {
			return false, fmt.Sprintf("FAILED: snapshot %s: %v", day.Format(time.DateOnly), err)
		}
		if st.Published {
			return true, fmt.Sprintf("OK: snapshot %s published at %s (%s)", day.Format(time.DateOnly),
				st.PublishedTime.UTC().Format(time.RFC3339), plural(st.Rows(), "row", "rows"))
		}
		return false, fmt.Sprintf("FAILED: snapshot %s is not published: %s", day.Format(time.DateOnly), describeState(st))
	}
	dates, err := checkpoint.Snapshots(ctx, store)
	if err != nil {
		return false, fmt.Sprintf("FAILED: %v", err)
	}
	today, _ := snapshotDate("", now)
	oldest, _ := snapshotDate("", now.Add(-maxAge))
	newest := "" // what the newest snapshot looked at is, for the failure line
	for _, d := range slices.Backward(dates) {
		date, err := time.Parse(time.DateOnly, d)
		if err != nil || date.After(today) {
			continue
		}
		if date.Before(oldest) {
			break
		}
		st, err := openState(ctx, store, date)
		if err != nil {
			if newest == "" {
				newest = fmt.Sprintf("%s: %v", d, err)
			}
			continue
		}
		if st.Published && now.Sub(st.PublishedTime) <= maxAge {
			return true, fmt.Sprintf("OK: snapshot %s published at %s, %s ago (within %s; %s)", d,
				st.PublishedTime.UTC().Format(time.RFC3339), now.Sub(st.PublishedTime).Round(time.Minute), maxAge, plural(st.Rows(), "row", "rows"))
		}
		if newest == "" {
			newest = fmt.Sprintf("%s %s", d, describeState(st))
			if st.Published {
				newest = fmt.Sprintf("%s published at %s, %s ago", d, st.PublishedTime.UTC().Format(time.RFC3339), now.Sub(st.PublishedTime).Round(time.Minute))
			}
		}
	}
	if newest == "" {
		newest = "none since " + oldest.Format(time.DateOnly)
		if len(dates) > 0 {
			newest += "; the newest in staging is " + dates[len(dates)-1]
		}
	}
	return false, fmt.Sprintf("FAILED: no snapshot published within %s (newest: %s); see bindsync status", maxAge, newest)
}

// openState replays the checkpoint of day.
func openState(ctx context.Context, store staging.Store, day time.Time) (*checkpoint.State, error) {
	cp, err := checkpoint.Open(ctx, store, day)
	if err != nil {
		return nil, err
	}
	return cp.State(), nil
}

// describeState says in a few words what state a snapshot is in, with the
// failed users' count when there are some.
func describeState(st *checkpoint.State) string {
	state := st.Describe()
	text := stateTexts[state]
	if state == checkpoint.StateFailed && len(st.Failed) > 0 {
		text += fmt.Sprintf(" (%s)", plural(int64(len(st.Failed)), "user failed", "users failed"))
	}
	return text
}

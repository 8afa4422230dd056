package checkpoint_test

import (
	"context"
	"testing"
	"time"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/staging"
)

func TestDescribe(t *testing.T) {
	day := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	t0, t1 := day.Add(2*time.Hour), day.Add(3*time.Hour)
	user := func(n string) checkpoint.UserRef { return checkpoint.UserRef{Service: "IS01", User: n} }
	finish := func(status checkpoint.RunStatus, total int64) checkpoint.Entry {
		return checkpoint.Entry{Kind: checkpoint.KindFinish, RunID: "run-1", Time: t1, Run: &checkpoint.RunSummary{RunID: "run-1", Start: t0, End: t1, Status: status, UsersTotal: total}}
	}
	done := func(names ...string) checkpoint.Entry {
		e := checkpoint.Entry{Kind: checkpoint.KindCommit, RunID: "run-1"}
		for _, n := range names {
			e.Done = append(e.Done, checkpoint.UserDone{UserRef: user(n)})
		}
		return e
	}
	start := checkpoint.Entry{Kind: checkpoint.KindStart, RunID: "run-1", Time: t0}
	tests := []struct {
		name      string
		entries   []checkpoint.Entry
		want      checkpoint.SnapshotState
		wantTotal int64
	}{
		{"empty", nil, checkpoint.StateNoCheckpoint, 0},
		{"running", []checkpoint.Entry{start, done("a")}, checkpoint.StateInProgress, 0},
		{"interrupted", []checkpoint.Entry{start, done("a"), finish(checkpoint.RunInterrupted, 3)}, checkpoint.StateInProgress, 3},
		{"failed listing", []checkpoint.Entry{start, finish(checkpoint.RunFailed, 0)}, checkpoint.StateFailed, 0},
		{"failed with users left", []checkpoint.Entry{start, done("a"), finish(checkpoint.RunFailed, 3)}, checkpoint.StateFailed, 3},
		{"failed publishing", []checkpoint.Entry{start, done("a", "b", "c"), finish(checkpoint.RunFailed, 3)}, checkpoint.StateComplete, 3},
		{"publish begun", []checkpoint.Entry{start, {Kind: checkpoint.KindPublish, Publish: map[string]string{"job": "j1"}}, finish(checkpoint.RunFailed, 0)}, checkpoint.StateComplete, 0},
		{"new run after failure", []checkpoint.Entry{start, done("a", "b", "c"), finish(checkpoint.RunFailed, 3), {Kind: checkpoint.KindStart, RunID: "run-2"}}, checkpoint.StateInProgress, 3},
		{"published", []checkpoint.Entry{start, done("a"), {Kind: checkpoint.KindPublished}}, checkpoint.StatePublished, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			store, err := staging.NewDir(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			cp, err := checkpoint.Open(ctx, store, day)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range tt.entries {
				if err := cp.Append(ctx, e); err != nil {
					t.Fatal(err)
				}
			}
			cp, err = checkpoint.Open(ctx, store, day)
			if err != nil {
				t.Fatal(err)
			}
			st := cp.State()
			if got := st.Describe(); got != tt.want {
				t.Errorf("Describe = %q, want %q", got, tt.want)
			}
			if got := st.UsersTotal(); got != tt.wantTotal {
				t.Errorf("UsersTotal = %d, want %d", got, tt.wantTotal)
			}
			dates, err := checkpoint.Snapshots(ctx, store)
			if err != nil {
				t.Fatal(err)
			}
			if want := len(tt.entries) > 0; want != (len(dates) == 1 && dates[0] == "2026-11-26") {
				t.Errorf("Snapshots = %v", dates)
			}
		})
	}
}

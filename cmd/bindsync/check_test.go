package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/bindsync/bindsync/checkpoint"
)

// withDate moves the entries of a statusTest run to the snapshot of day,
// their times by the same number of days.
func withDate(entries []checkpoint.Entry, day time.Time) []checkpoint.Entry {
	shift := day.Sub(statusDay)
	out := make([]checkpoint.Entry, len(entries))
	for i, e := range entries {
		e.Time = e.Time.Add(shift)
		if e.Run != nil {
			r := *e.Run
			r.Start, r.End = r.Start.Add(shift), r.End.Add(shift)
			e.Run = &r
		}
		out[i] = e
	}
	return out
}

func TestStatusCheck(t *testing.T) {
	published := statusT1.Add(time.Minute) // when publishedRun publishes 2026-11-26
	day := func(s string) time.Time { d, _ := time.Parse(time.DateOnly, s); return d }

	yesterdayOnly := newStatusEnv(t)
	yesterdayOnly.append(t, statusDay, publishedRun()...)

	tonightFailed := newStatusEnv(t)
	tonightFailed.append(t, statusDay, publishedRun()...)
	tonightFailed.append(t, day("2026-11-27"), withDate(failedRun(), day("2026-11-27"))...)

	// An old date published again (--force) a moment ago must not pass
	// for last night's snapshot.
	oldRepublished := newStatusEnv(t)
	oldRepublished.append(t, day("2026-11-20"), withDate(publishedRun(), day("2026-11-26"))...)
	old := newStatusEnv(t)
	old.append(t, day("2026-11-20"), withDate(publishedRun(), day("2026-11-20"))...)

	tests := []struct {
		name   string
		env    *statusEnv
		day    time.Time
		now    time.Time
		maxAge time.Duration
		ok     bool
		want   string
	}{
		{"published 25h ago", yesterdayOnly, time.Time{}, published.Add(25 * time.Hour), 26 * time.Hour, true,
			"OK: snapshot 2026-11-26 published at 2026-11-26T02:11:00Z, 25h0m0s ago (within 26h0m0s; 13 rows)"},
		{"published 27h ago", yesterdayOnly, time.Time{}, published.Add(27 * time.Hour), 26 * time.Hour, false,
			"FAILED: no snapshot published within 26h0m0s (newest: 2026-11-26 published at 2026-11-26T02:11:00Z, 27h0m0s ago); see bindsync status"},
		{"tonight failed, yesterday still fresh", tonightFailed, time.Time{}, published.Add(24*time.Hour + 30*time.Minute), 26 * time.Hour, true,
			"OK: snapshot 2026-11-26"},
		{"tonight failed, yesterday stale", tonightFailed, time.Time{}, published.Add(27 * time.Hour), 26 * time.Hour, false,
			"FAILED: no snapshot published within 26h0m0s (newest: 2026-11-27 failed (23 users failed)); see bindsync status"},
		{"old date republished", oldRepublished, time.Time{}, published.Add(time.Hour), 26 * time.Hour, false,
			"FAILED: no snapshot published within 26h0m0s (newest: none since 2026-11-25; the newest in staging is 2026-11-20)"},
		{"given date published", old, day("2026-11-20"), published.Add(100 * 24 * time.Hour), 26 * time.Hour, true,
			"OK: snapshot 2026-11-20 published at 2026-11-20T02:11:00Z (13 rows)"},
		{"given date failed", tonightFailed, day("2026-11-27"), published.Add(25 * time.Hour), 26 * time.Hour, false,
			"FAILED: snapshot 2026-11-27 is not published: failed (23 users failed)"},
		{"given date absent", old, day("2026-11-21"), published, 26 * time.Hour, false,
			"FAILED: snapshot 2026-11-21 is not published: no checkpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, line := checkPublished(context.Background(), tt.env.store, "staging", tt.day, tt.now, tt.maxAge)
			if ok != tt.ok || !strings.HasPrefix(line, tt.want) {
				t.Errorf("check = %v, %q\nwant   %v, %q…", ok, line, tt.ok, tt.want)
			}
		})
	}
	if ok, line := checkPublished(context.Background(), nil, "/no/staging", time.Time{}, published, time.Hour); ok || !strings.Contains(line, "staging /no/staging does not exist") {
		t.Errorf("no staging: %v, %q", ok, line)
	}
}

// TestStatusCheckExitCodes runs the command as a monitor would: exit 0
// and one OK line, exit 1 and one FAILED line.
func TestStatusCheckExitCodes(t *testing.T) {
	e := newStatusEnv(t)
	e.append(t, statusDay, publishedRun()...)
	age := time.Since(statusT1).Round(time.Hour) + 48*time.Hour
	tests := []struct {
		args   []string
		code   int
		stdout string
	}{
		{[]string{"--check", "--max-age", age.String()}, exitOK, "OK: snapshot 2026-11-26 published"},
		{[]string{"--check"}, exitFailed, "FAILED: no snapshot published within 26h0m0s"},
		{[]string{"--check", "--snapshot-date", statusDate}, exitOK, "OK: snapshot 2026-11-26 published"},
		{[]string{"--check", "--snapshot-date", "2026-11-25"}, exitFailed, "FAILED: snapshot 2026-11-25 is not published"},
		{[]string{"--check", "--json"}, exitUsage, ""},
		{[]string{"--check", "--max-age", "0s"}, exitUsage, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(t, append([]string{"status", "--config", e.config}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout, stderr)
			}
			if tt.stdout != "" && (!strings.HasPrefix(stdout, tt.stdout) || strings.Count(stdout, "\n") != 1) {
				t.Errorf("stdout = %q, want one line starting %q", stdout, tt.stdout)
			}
		})
	}
}

// TestForceKeepsEarlierRuns runs a snapshot, runs it again with --force,
// and expects status to show the first run as an earlier attempt.
func TestForceKeepsEarlierRuns(t *testing.T) {
	_, cfg := fakeRunConfig(t, "tok", "tok")
	runArgs := []string{"run", "--config", cfg, "--snapshot-date", statusDate, "--progress", "0"}
	if code, stdout, stderr := runCLI(t, runArgs...); code != exitOK {
		t.Fatalf("first run: exit %d\n%s\n%s", code, stdout, stderr)
	}
	first := statusJSON(t, cfg, "--snapshot-date", statusDate)
	if len(first.Runs) != 1 || len(first.EarlierRuns) != 0 {
		t.Fatalf("after one run: %d runs, %d earlier", len(first.Runs), len(first.EarlierRuns))
	}
	if code, stdout, stderr := runCLI(t, append(runArgs, "--force")...); code != exitOK {
		t.Fatalf("forced run: exit %d\n%s\n%s", code, stdout, stderr)
	}
	second := statusJSON(t, cfg, "--snapshot-date", statusDate)
	if len(second.Runs) != 1 || second.Runs[0].RunID == first.Runs[0].RunID {
		t.Fatalf("after --force the checkpoint holds %+v, want only the new run", second.Runs)
	}
	if len(second.EarlierRuns) != 1 {
		t.Fatalf("after --force: %d earlier runs, want 1", len(second.EarlierRuns))
	}
	got := second.EarlierRuns[0]
	if got.RunID != first.Runs[0].RunID || got.Status != "succeeded" || got.Bindings != first.Runs[0].Bindings || !got.Published || got.End == nil {
		t.Errorf("earlier run = %+v, want the first run (%+v), published", got, first.Runs[0])
	}
	code, table, stderr := runCLI(t, "status", "--config", cfg, "--snapshot-date", statusDate)
	if code != exitOK || !strings.Contains(table, "earlier attempts (before --force):") || !strings.Contains(table, first.Runs[0].RunID) ||
		!strings.Contains(table, "(snapshot was published)") {
		t.Errorf("status table (exit %d) does not show the earlier attempt:\n%s\n%s", code, table, stderr)
	}
}

// statusJSON runs status --json with cfg and args and decodes its report.
func statusJSON(t *testing.T, cfg string, args ...string) statusReport {
	t.Helper()
	code, stdout, stderr := runCLI(t, append([]string{"status", "--config", cfg, "--json"}, args...)...)
	if code != exitOK {
		t.Fatalf("status: exit %d\n%s", code, stderr)
	}
	var rep statusReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("status --json: %v\n%s", err, stdout)
	}
	return rep
}

// TestArchiveRunsOfDamagedAndRunningLogs: a damaged log gives the runs
// before the damage, and a run archived while it ran is replaced once it
// has ended, while an ended one is kept as first archived.
func TestArchiveRunsOfDamagedAndRunningLogs(t *testing.T) {
	ctx := context.Background()
	e := newStatusEnv(t)
	e.append(t, statusDay, halfDone()...)
	n, err := archiveRuns(ctx, e.store, statusDay, statusT1, zap.NewNop())
	if err != nil || n != 1 {
		t.Fatalf("archiveRuns = %d, %v; want 1 run", n, err)
	}
	e.append(t, statusDay, failedRun()[2])
	if _, err := archiveRuns(ctx, e.store, statusDay, statusT1, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	runs, err := readHistory(ctx, e.store, statusDay)
	if err != nil || len(runs) != 1 || runs[0].Run.Status != checkpoint.RunFailed {
		t.Fatalf("history = %+v, %v; want run-1 failed (replaced once it ended)", runs, err)
	}

	damaged := newStatusEnv(t)
	damaged.append(t, statusDay, failedRun()...)
	damaged.append(t, statusDay, checkpoint.Entry{Kind: checkpoint.KindStart, RunID: "run-2", Time: statusT1.Add(time.Hour)})
	logDir := filepath.Join(filepath.Dir(damaged.config), "staging", checkpoint.Dir(statusDay), "_log")
	if err := os.WriteFile(filepath.Join(logDir, fmt.Sprintf("%020d.json", 4)), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err = archiveRuns(ctx, damaged.store, statusDay, statusT1, zap.NewNop())
	if err != nil || n != 1 {
		t.Fatalf("damaged log: archiveRuns = %d, %v; want run-1, the run before the damage", n, err)
	}
}

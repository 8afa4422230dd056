package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/staging"
)

const (
	statusService = "IS0123456789abcdef0123456789abcdef"
	statusDate    = "2026-11-26"
)

var statusDay = time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)

// statusEnv is a staging directory and a config file pointing at it.
type statusEnv struct {
	store  *staging.Dir
	config string
}

func newStatusEnv(t *testing.T) *statusEnv {
	t.Helper()
	dir := t.TempDir()
	store, err := staging.NewDir(filepath.Join(dir, "staging"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`twilio:
  account_sid: AC0123456789abcdef0123456789abcdef
  auth_token: x
services:
  - sid: %s
    users: all
staging: %s
warehouse:
  local:
    path: %s
`, statusService, filepath.Join(dir, "staging"), filepath.Join(dir, "warehouse"))
	p := filepath.Join(dir, "bindsync.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return &statusEnv{store: store, config: p}
}

// append writes checkpoint entries of day, as a run would.
func (e *statusEnv) append(t *testing.T, day time.Time, entries ...checkpoint.Entry) {
	t.Helper()
	cp, err := checkpoint.Open(context.Background(), e.store, day)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		if err := cp.Append(context.Background(), en); err != nil {
			t.Fatal(err)
		}
	}
}

func statusUser(name string) checkpoint.UserRef {
	return checkpoint.UserRef{Service: statusService, User: name}
}

var (
	statusT0 = time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)
	statusT1 = statusT0.Add(10 * time.Minute)
)

// halfDone is a run that committed one part and is still going (or died).
func halfDone() []checkpoint.Entry {
	return []checkpoint.Entry{
		{Kind: checkpoint.KindStart, RunID: "run-1", Time: statusT0},
		{Kind: checkpoint.KindCommit, RunID: "run-1", Time: statusT0.Add(time.Minute),
			Parts:    []checkpoint.Part{{Name: "snapshots/2026-11-26/parts/run-1-00001.parquet", Rows: 13, Bytes: 2048}},
			Done:     []checkpoint.UserDone{{UserRef: statusUser("US1"), Bindings: 6, Pages: 1}, {UserRef: statusUser("US2"), Bindings: 4, Pages: 1}},
			Gone:     []checkpoint.UserRef{statusUser("US3")},
			InFlight: []checkpoint.InFlight{{UserRef: statusUser("US4"), Next: "tok+/=", Parts: []string{"snapshots/2026-11-26/parts/run-1-00001.parquet"}, Bindings: 3, Pages: 1}},
		},
	}
}

// failedUsers are more users than the table lists.
func failedUsers() []checkpoint.UserFailed {
	var out []checkpoint.UserFailed
	for i := range 23 {
		out = append(out, checkpoint.UserFailed{UserRef: statusUser(fmt.Sprintf("US%02d-failed", i)), Reason: fmt.Sprintf("twilio: status 500 after 6 attempts (user %d)", i)})
	}
	return out
}

func failedRun() []checkpoint.Entry {
	entries := halfDone()
	entries[1].InFlight = nil
	return append(entries, checkpoint.Entry{Kind: checkpoint.KindFinish, RunID: "run-1", Time: statusT1, Run: &checkpoint.RunSummary{
		RunID: "run-1", Start: statusT0, End: statusT1, Status: "failed", Error: "some users could not be read (23)",
		Services: 1, UsersTotal: 26, UsersDone: 2, UsersGone: 1, UsersFailed: failedUsers(),
		Bindings: 10, Pages: 2, Retries: 7,
	}})
}

func publishedRun() []checkpoint.Entry {
	entries := halfDone()
	entries[1].InFlight = nil
	entries[1].Done = append(entries[1].Done, checkpoint.UserDone{UserRef: statusUser("US4"), Bindings: 3, Pages: 1})
	return append(entries,
		checkpoint.Entry{Kind: checkpoint.KindPublish, RunID: "run-1", Time: statusT1, Publish: map[string]string{"bigquery/load": "bindsync_20261126_load_0"}},
		checkpoint.Entry{Kind: checkpoint.KindPublished, RunID: "run-1", Time: statusT1.Add(time.Minute)},
		checkpoint.Entry{Kind: checkpoint.KindFinish, RunID: "run-1", Time: statusT1.Add(time.Minute), Run: &checkpoint.RunSummary{
			RunID: "run-1", Start: statusT0, End: statusT1.Add(time.Minute), Status: "succeeded",
			Services: 1, UsersTotal: 4, UsersDone: 3, UsersGone: 1, Bindings: 13, Pages: 3,
		}},
	)
}

// statusCounts are the fields of a report that TestStatus compares, with
// its lists by length.
type statusCounts struct {
	State, StateText                             string
	UsersDone, UsersTotal                        int64
	UsersInFlight, UsersGone, UsersFailed, Parts int
	BindingsDone, Rows, Bytes                    int64
	Published                                    bool
	FailedListed, InFlightListed, Runs           int
	PublishKeys                                  int
}

func countsOf(r statusReport) statusCounts {
	return statusCounts{
		State: r.State, StateText: r.StateText, UsersDone: r.UsersDone, UsersTotal: r.UsersTotal,
		UsersInFlight: r.UsersInFlight, UsersGone: r.UsersGone, UsersFailed: r.UsersFailed, Parts: r.Parts,
		BindingsDone: r.BindingsDone, Rows: r.Rows, Bytes: r.Bytes, Published: r.Published,
		FailedListed: len(r.Failed), InFlightListed: len(r.InFlight), Runs: len(r.Runs), PublishKeys: len(r.Publish),
	}
}

func TestStatus(t *testing.T) {
	tests := []struct {
		name    string
		entries []checkpoint.Entry
		want    statusCounts
		table   []string // lines (regexps) the table must hold
		absent  []string // texts the table must not hold
	}{
		{
			name: "fresh",
			want: statusCounts{State: string(checkpoint.StateNoCheckpoint), StateText: "no checkpoint"},
			table: []string{
				`^snapshot\s+2026-11-26\s+\(`,
				`^state\s+no checkpoint\s+\(no run has started this snapshot\)$`,
				`^snapshots\s+none in staging$`,
			},
			absent: []string{"RUN", "users"},
		},
		{
			name:    "half done",
			entries: halfDone(),
			want: statusCounts{
				State: string(checkpoint.StateInProgress), StateText: "in progress / interrupted",
				UsersDone: 2, UsersInFlight: 1, UsersGone: 1, BindingsDone: 10, Parts: 1, Rows: 13, Bytes: 2048,
				InFlightListed: 1, Runs: 1,
			},
			table: []string{
				`^state\s+in progress / interrupted\s+\(`,
				`^users\s+2 done \(total not known until a run ends\), 1 in flight, 1 gone, 0 failed$`,
				`^parts\s+1 part, 13 rows, 2\.0 KiB \(10 bindings of finished users\)$`,
				`^published\s+no$`,
				`^snapshots\s+2026-11-26$`,
				`^RUN\s+START\s+END\s+STATUS\s+USERS\s+DONE\s+GONE\s+FAILED\s+BINDINGS\s+PAGES\s+RETRIES$`,
				`^run-1\s+2026-11-26T02:00:00Z\s+-\s+running\s+0\s+0\s+0\s+0\s+0\s+0\s+0$`,
			},
			absent: []string{"failed users"},
		},
		{
			name:    "failed",
			entries: failedRun(),
			want: statusCounts{
				State: string(checkpoint.StateFailed), StateText: "failed",
				UsersDone: 2, UsersTotal: 26, UsersGone: 1, UsersFailed: 23, BindingsDone: 10, Parts: 1, Rows: 13, Bytes: 2048,
				FailedListed: 23, Runs: 1,
			},
			table: []string{
				`^state\s+failed\s+\(.*retries the failed users\)$`,
				`^users\s+2 done of 26 known, 0 in flight, 1 gone, 23 failed$`,
				`^run-1\s+2026-11-26T02:00:00Z\s+2026-11-26T02:10:00Z\s+failed\s+26\s+2\s+1\s+23\s+10\s+2\s+7$`,
				`^last run error: some users could not be read \(23\)$`,
				`^failed users \(23\):$`,
				`^SERVICE\s+USER\s+REASON$`,
				`^IS0123456789abcdef0123456789abcdef\s+"US00-failed"\s+twilio: status 500 after 6 attempts \(user 0\)$`,
				`^IS0123456789abcdef0123456789abcdef\s+"US19-failed"\s+twilio: status 500 after 6 attempts \(user 19\)$`,
				`^and 3 more \(bindsync status --json lists them all\)$`,
			},
			absent: []string{"US20-failed", "US22-failed"},
		},
		{
			name:    "published",
			entries: publishedRun(),
			want: statusCounts{
				State: string(checkpoint.StatePublished), StateText: "published",
				UsersDone: 3, UsersTotal: 4, UsersGone: 1, BindingsDone: 13, Parts: 1, Rows: 13, Bytes: 2048, Published: true,
				Runs: 1, PublishKeys: 1,
			},
			table: []string{
				`^state\s+published\s+\(nothing to do\)$`,
				`^users\s+3 done of 4 known, 0 in flight, 1 gone, 0 failed$`,
				`^published\s+2026-11-26T02:11:00Z$`,
				`^publish\s+bigquery/load = bindsync_20261126_load_0$`,
				`^run-1\s+2026-11-26T02:00:00Z\s+2026-11-26T02:11:00Z\s+succeeded\s+4\s+3\s+1\s+0\s+13\s+3\s+0$`,
			},
			absent: []string{"failed users", "last run error"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newStatusEnv(t)
			e.append(t, statusDay, tt.entries...)
			// A run holding the snapshot's lock must not stop status.
			lease, err := e.store.Lock(context.Background(), checkpoint.Dir(statusDay)+"/LOCK")
			if err != nil {
				t.Fatal(err)
			}
			defer lease.Release()

			table := runStatus(t, e, "--snapshot-date", statusDate)
			for _, re := range tt.table {
				if !regexp.MustCompile(`(?m)` + re).MatchString(table) {
					t.Errorf("table has no line matching %s:\n%s", re, table)
				}
			}
			for _, s := range tt.absent {
				if strings.Contains(table, s) {
					t.Errorf("table holds %q:\n%s", s, table)
				}
			}

			var got statusReport
			out := runStatus(t, e, "--snapshot-date", statusDate, "--json")
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("decode --json output: %v\n%s", err, out)
			}
			if got.Snapshot != statusDate {
				t.Errorf("snapshot = %q, want %q", got.Snapshot, statusDate)
			}
			if got := countsOf(got); got != tt.want {
				t.Errorf("--json counts\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestStatusJSONDetails(t *testing.T) {
	e := newStatusEnv(t)
	e.append(t, statusDay, failedRun()...)
	var got statusReport
	if err := json.Unmarshal([]byte(runStatus(t, e, "--snapshot-date", statusDate, "--json")), &got); err != nil {
		t.Fatal(err)
	}
	want := failedUsers()
	if len(got.Failed) != len(want) {
		t.Fatalf("%d failed users, want %d", len(got.Failed), len(want))
	}
	for i, f := range want {
		g := got.Failed[i]
		if g.ServiceSID != f.Service || g.User != f.User || g.Reason != f.Reason {
			t.Errorf("failed[%d] = %+v, want %+v", i, g, f)
		}
	}
	if len(got.Runs) != 1 {
		t.Fatalf("runs = %+v, want one", got.Runs)
	}
	r := got.Runs[0]
	if r.RunID != "run-1" || r.Status != "failed" || !r.Start.Equal(statusT0) || r.End == nil || !r.End.Equal(statusT1) ||
		r.UsersTotal != 26 || r.UsersFailed != 23 || r.Retries != 7 || r.Error != "some users could not be read (23)" {
		t.Errorf("run = %+v", r)
	}
	if got.PublishedAt != nil {
		t.Errorf("published_at = %v, want null", got.PublishedAt)
	}

	// In-flight users are listed with their progress, never their page token.
	e2 := newStatusEnv(t)
	e2.append(t, statusDay, halfDone()...)
	out := runStatus(t, e2, "--snapshot-date", statusDate, "--json")
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.InFlight) != 1 || got.InFlight[0] != (statusInFlight{ServiceSID: statusService, User: "US4", Bindings: 3, Pages: 1}) {
		t.Errorf("in_flight = %+v", got.InFlight)
	}
	if strings.Contains(out, "tok+/=") {
		t.Errorf("--json prints a page token:\n%s", out)
	}
	for _, key := range []string{`"users_in_flight"`, `"published_at": null`, `"failed": []`, `"publish": {}`, `"end": null`} {
		if !strings.Contains(out, key) {
			t.Errorf("--json output misses %s:\n%s", key, out)
		}
	}
}

func TestStatusDefaultsToNewestSnapshot(t *testing.T) {
	e := newStatusEnv(t)
	older := statusDay.AddDate(0, 0, -1)
	e.append(t, older, publishedRun()...)
	e.append(t, statusDay, halfDone()...)
	out := runStatus(t, e)
	for _, re := range []string{`(?m)^snapshot\s+2026-11-26\s`, `(?m)^state\s+in progress / interrupted\s`, `(?m)^snapshots\s+2026-11-25, 2026-11-26$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output has no line matching %s:\n%s", re, out)
		}
	}
	out = runStatus(t, e, "--snapshot-date", "2026-11-25")
	if !regexp.MustCompile(`(?m)^state\s+published\s`).MatchString(out) {
		t.Errorf("--snapshot-date 2026-11-25 does not show the older snapshot:\n%s", out)
	}
}

func TestStatusWithoutStagingCreatesNothing(t *testing.T) {
	e := newStatusEnv(t)
	dir := filepath.Join(filepath.Dir(e.config), "staging")
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	var got statusReport
	if err := json.Unmarshal([]byte(runStatus(t, e, "--json")), &got); err != nil {
		t.Fatal(err)
	}
	if got.State != string(checkpoint.StateNoCheckpoint) || len(got.Snapshots) != 0 {
		t.Errorf("state %q, snapshots %v; want no checkpoint and none", got.State, got.Snapshots)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("status created the staging directory (stat: %v)", err)
	}
}

func TestStatusExitCodes(t *testing.T) {
	e := newStatusEnv(t)
	corrupt := newStatusEnv(t)
	corrupt.append(t, statusDay, halfDone()...)
	if err := os.WriteFile(filepath.Join(filepath.Dir(corrupt.config), "staging", checkpoint.Dir(statusDay), "_log", fmt.Sprintf("%020d.json", 3)), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{"no config", []string{"status"}, exitUsage, "--config FILE is required"},
		{"bad date", []string{"status", "--config", e.config, "--snapshot-date", "26/11/2026"}, exitUsage, "--snapshot-date must be YYYY-MM-DD"},
		{"stray argument", []string{"status", "--config", e.config, "now"}, exitUsage, `unexpected argument "now"`},
		{"corrupt checkpoint", []string{"status", "--config", corrupt.config, "--snapshot-date", statusDate}, exitFailed, "is corrupt"},
		{"readable", []string{"status", "--config", e.config, "--snapshot-date", statusDate}, exitOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout, stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr does not say %q:\n%s", tt.want, stderr)
			}
		})
	}
}

// runStatus runs `bindsync status --config` with args and returns stdout.
func runStatus(t *testing.T, e *statusEnv, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), append([]string{"status", "--config", e.config}, args...), &out, &errOut)
	if err != nil {
		t.Fatalf("status: %v\nstderr: %s", err, errOut.String())
	}
	return out.String()
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/config"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio/twiliotest"
	"github.com/bindsync/bindsync/worker"
)

const (
	svcA = "IS12aaaaaaaaaaaaaaaaaaaaaaaaaaaaab"
	svcB = "IS98bbbbbbbbbbbbbbbbbbbbbbbbbbbbcd"
)

func TestRenderProgress(t *testing.T) {
	two := []worker.ServiceSnapshot{
		{SID: svcA, UsersTotal: 3000, UsersFinished: 1200},
		{SID: svcB, UsersTotal: 40, UsersFinished: 10, Listing: true},
	}
	var six []worker.ServiceSnapshot
	for i := range 6 {
		six = append(six, worker.ServiceSnapshot{SID: fmt.Sprintf("IS%030d%02d", 0, i), UsersTotal: 10, UsersFinished: int64(i)})
	}
	tests := []struct {
		name  string
		s     worker.StatsSnapshot
		width int
		want  string
	}{
		{
			name: "listing",
			s: worker.StatsSnapshot{Elapsed: 10 * time.Second, Listing: true, UsersTotal: 3040, UsersDone: 1210,
				Bindings: 52_340, Retries: 1, PerService: two},
			want: "IS12…ab 1200/3000  IS98…cd 10/40+  │ 52340 bindings  5234/s  1 retry  ETA ≥15s (listing)",
		},
		{
			name: "eta",
			s: worker.StatsSnapshot{Elapsed: 100 * time.Second, UsersTotal: 400, UsersDone: 90, UsersSkipped: 100, UsersGone: 5, UsersFailed: 5,
				Bindings: 1000, Retries: 0, PerService: []worker.ServiceSnapshot{{SID: svcA, UsersTotal: 400, UsersFinished: 200}}},
			want: "IS12…ab 200/400  │ 1000 bindings  10/s  0 retries  ETA 3m20s",
		},
		{
			name: "almost done",
			s:    worker.StatsSnapshot{Elapsed: time.Second, UsersTotal: 40, UsersDone: 39, Bindings: 390, PerService: []worker.ServiceSnapshot{{SID: svcA, UsersTotal: 40, UsersFinished: 39}}},
			want: "IS12…ab 39/40  │ 390 bindings  390/s  0 retries  ETA <1s",
		},
		{
			name: "nothing finished yet",
			s:    worker.StatsSnapshot{Elapsed: time.Second, UsersTotal: 5, PerService: []worker.ServiceSnapshot{{SID: svcA, UsersTotal: 5}}},
			want: "IS12…ab 0/5  │ 0 bindings  0/s  0 retries  ETA unknown",
		},
		{
			name: "every user read",
			s:    worker.StatsSnapshot{Elapsed: time.Second, UsersTotal: 5, UsersDone: 5, Bindings: 7, PerService: []worker.ServiceSnapshot{{SID: svcA, UsersTotal: 5, UsersFinished: 5}}},
			want: "IS12…ab 5/5  │ 7 bindings  7/s  0 retries  finishing…",
		},
		{
			name: "no service counters",
			s:    worker.StatsSnapshot{Elapsed: 2 * time.Second, UsersTotal: 8, UsersDone: 2, Bindings: 10, Retries: 3},
			want: "users 2/8  │ 10 bindings  5/s  3 retries  ETA 6s",
		},
		{
			name: "many services",
			s:    worker.StatsSnapshot{Elapsed: time.Second, UsersTotal: 60, Listing: true, PerService: six},
			want: "IS00…00 0/10  IS00…01 1/10  IS00…02 2/10  IS00…03 3/10  +2 more  │ 0 bindings  0/s  0 retries  listing users…",
		},
		{
			name: "listing, nothing finished yet",
			s:    worker.StatsSnapshot{Elapsed: 3 * time.Second, Listing: true, UsersTotal: 200, Bindings: 40, PerService: two[1:]},
			want: "IS98…cd 10/40+  │ 40 bindings  13/s  0 retries  listing users…",
		},
		{
			name:  "narrow terminal",
			s:     worker.StatsSnapshot{Elapsed: 10 * time.Second, Listing: true, UsersTotal: 3040, UsersDone: 1210, Bindings: 52_340, Retries: 1, PerService: two},
			width: 21,
			want:  "1210/3040+ 52.3kb 1r",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := renderProgress(tt.s, tt.width); got != tt.want {
				t.Errorf("renderProgress =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

// TestLiveProgressKeepsLogLinesApart follows the bytes a terminal gets:
// a log line always starts on a cleared line and the progress line is
// drawn again after it, and the line is gone when the run ends.
func TestLiveProgressKeepsLogLinesApart(t *testing.T) {
	var out bytes.Buffer
	p := newLiveProgress(&out, func() int { return 0 })
	p.every = time.Hour // no redraw by the clock during the test

	stats := &worker.Stats{} // not started: zero elapsed, a stable line
	svc := stats.Service(svcA)
	svc.UsersTotal.Store(4)
	svc.UsersFinished.Store(1)
	stats.UsersTotal.Store(4)
	stats.UsersDone.Store(1)
	line := "IS12…ab 1/4  │ 0 bindings  0/s  0 retries  ETA unknown"

	if got := p.begin(stats, 10*time.Second); got != 0 {
		t.Errorf("begin returned a log interval of %v; progress log lines must be off", got)
	}
	fmt.Fprintf(p, "INFO\trun started\n")
	fmt.Fprintf(p, "partial ")
	fmt.Fprintf(p, "line\n")
	p.end()
	fmt.Fprintf(p, "after the run\n")

	want := clearLine + line +
		clearLine + "INFO\trun started\n" + clearLine + line +
		clearLine + "partial " + "line\n" + clearLine + line +
		clearLine + "after the run\n"
	if got := out.String(); got != want {
		t.Errorf("terminal got\n%q\nwant\n%q", got, want)
	}
}

func TestNoLiveProgressOutsideATerminal(t *testing.T) {
	var buf bytes.Buffer
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, w := range []struct {
		name string
		w    io.Writer
	}{{"buffer", &buf}, {"file", f}} {
		cfg := config.Default()
		out, live := liveOutput(cfg, w.w)
		if live != nil || out != w.w || cfg.Log.Format != "auto" {
			t.Errorf("%s: liveOutput = %v, %v (format %q); want the writer itself, no live line, format unchanged", w.name, out, live, cfg.Log.Format)
		}
	}
	// A nil display keeps the run's progress log lines.
	var none *liveProgress
	if got := none.begin(&worker.Stats{}, 10*time.Second); got != 10*time.Second {
		t.Errorf("nil begin = %v, want the log interval", got)
	}
	none.end()
}

const progressToken = "5f3e9c1d7a2b48e6a0c4d8f2b6e1a9c3"

// progressWorld is a fake Twilio account of two services and the config
// of a run against it.
func progressWorld(t *testing.T) (*twiliotest.World, string) {
	t.Helper()
	world := twiliotest.NewWorld(twiliotest.WorldSpec{Seed: 9, Services: 2, UsersPerService: 12, MaxBindingsPerUser: 30})
	// A token as long as Twilio's: the client refuses a next page that
	// holds its secret, which a one-letter secret would make of most.
	srv := twiliotest.NewServer(twiliotest.Options{World: world, AccountSID: world.AccountSID, AuthToken: progressToken})
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`twilio:
  base_url: %s
  account_sid: %s
  auth_token: `+progressToken+`
  concurrency: 4
services:
  - sid: %s
    users: all
  - sid: %s
    users: all
staging: %s
warehouse:
  local:
    path: %s
`, srv.URL(), world.AccountSID, world.Services[0].SID, world.Services[1].SID, filepath.Join(dir, "staging"), filepath.Join(dir, "warehouse"))
	p := filepath.Join(dir, "bindsync.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return world, p
}

func TestRunOutsideATerminalLogsProgressLines(t *testing.T) {
	_, cfg := progressWorld(t)
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"run", "--config", cfg, "--snapshot-date", statusDate, "--progress", "1ms"}, &out, &errOut)
	if err != nil {
		t.Fatalf("run: %v\nstderr: %s", err, errOut.String())
	}
	logs := errOut.String()
	if strings.ContainsAny(logs, "\r\x1b") {
		t.Errorf("stderr holds terminal control characters:\n%q", logs)
	}
	for i, l := range strings.Split(strings.TrimSuffix(logs, "\n"), "\n") {
		if !strings.HasPrefix(l, "{") {
			t.Errorf("stderr line %d is not a JSON log line: %q", i+1, l)
		}
	}
	if !strings.Contains(logs, `"msg":"run finished"`) || !strings.Contains(out.String(), "succeeded") {
		t.Errorf("no finished run:\nstdout: %s\nstderr: %s", out.String(), logs)
	}
}

// TestRunCountsUsersPerService checks the per-service counters the live
// line shows: users finished before the run count as finished, and every
// service ends with all its users finished and its bindings counted.
func TestRunCountsUsersPerService(t *testing.T) {
	world, path := progressWorld(t)
	cfg, err := config.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	store, err := staging.NewDir(cfg.Staging)
	if err != nil {
		t.Fatal(err)
	}
	// Three users of the first service were finished by an earlier run.
	day, _ := time.Parse(time.DateOnly, statusDate)
	cp, err := checkpoint.Open(context.Background(), store, day)
	if err != nil {
		t.Fatal(err)
	}
	skipped := map[string]bool{}
	var done []checkpoint.UserDone
	for _, u := range world.Services[0].Users[:3] {
		skipped[u.SID] = true
		done = append(done, checkpoint.UserDone{UserRef: checkpoint.UserRef{Service: u.ServiceSID, User: u.SID}})
	}
	if err := cp.Append(context.Background(), checkpoint.Entry{Kind: checkpoint.KindCommit, RunID: "earlier", Done: done}); err != nil {
		t.Fatal(err)
	}

	j, err := newJob(context.Background(), cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	res, err := j.run(context.Background(), day, false, 0)
	if err != nil {
		t.Fatalf("run: %v", err)
	}

	got := j.stats.Snapshot().PerService
	if len(got) != len(world.Services) {
		t.Fatalf("%d services counted, want %d: %+v", len(got), len(world.Services), got)
	}
	var sum int64
	for i, svc := range world.Services {
		var bindings int64
		for _, u := range svc.Users {
			if !skipped[u.SID] {
				bindings += int64(u.NumBindings)
			}
		}
		want := worker.ServiceSnapshot{SID: svc.SID, UsersTotal: int64(len(svc.Users)), UsersFinished: int64(len(svc.Users)), Bindings: bindings}
		if got[i] != want {
			t.Errorf("service %d: %+v, want %+v", i, got[i], want)
		}
		sum += got[i].Bindings
	}
	if sum != res.Summary.Bindings {
		t.Errorf("services count %d bindings, the run read %d", sum, res.Summary.Bindings)
	}
}

// TestRenderProgressFitsTheTerminal: three services at 120, 80 and 60
// columns. The line never takes the last column (no wrap), and whatever
// detail it gives up, it keeps the users, bindings, retries and the ETA.
func TestRenderProgressFitsTheTerminal(t *testing.T) {
	three := []worker.ServiceSnapshot{
		{SID: "IS12aaaaaaaaaaaaaaaaaaaaaaaaaaaaab", UsersTotal: 1500, UsersFinished: 1500},
		{SID: "IS34aaaaaaaaaaaaaaaaaaaaaaaaaaaacd", UsersTotal: 1200, UsersFinished: 800, Listing: true},
		{SID: "IS56aaaaaaaaaaaaaaaaaaaaaaaaaaaaef", UsersTotal: 157, UsersFinished: 157},
	}
	listing := worker.StatsSnapshot{Elapsed: 40 * time.Second, Listing: true, UsersTotal: 2857, UsersDone: 2457,
		Bindings: 170_328, Retries: 12, PerService: three}
	listed := listing
	listed.Listing = false
	listed.PerService = slices.Clone(three)
	listed.PerService[1].Listing = false
	tests := []struct {
		name  string
		s     worker.StatsSnapshot
		width int
		want  string
	}{
		{"listing 120", listing, 120, "IS12…ab 1500/1500  IS34…cd 800/1200+  IS56…ef 157/157  │ 170328 bindings  4258/s  12 retries  ETA ≥7s (listing)"},
		{"listing 100", listing, 100, "users 2457/2857+  │ 170328 bindings  4258/s  12 retries  ETA ≥7s (listing)"},
		{"listing 110", listing, 110, "IS12…ab 1500/1500  IS34…cd 800/1200+  IS56…ef 157/157  │ 170.3k bindings  4258/s  12 retries  ETA ≥7s"},
		{"listing 80", listing, 80, "users 2457/2857+  │ 170328 bindings  4258/s  12 retries  ETA ≥7s (listing)"},
		{"listing 60", listing, 60, "users 2457/2857+ │ 170.3k bindings  12 retries  ETA ≥7s"},
		{"listed 120", listed, 120, "IS12…ab 1500/1500  IS34…cd 800/1200  IS56…ef 157/157  │ 170328 bindings  4258/s  12 retries  ETA 7s"},
		{"listed 80", listed, 80, "users 2457/2857  │ 170328 bindings  4258/s  12 retries  ETA 7s"},
		{"listed 60", listed, 60, "users 2457/2857 │ 170.3k bindings  12 retries  ETA 7s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := renderProgress(tt.s, tt.width)
			if got != tt.want {
				t.Errorf("renderProgress =\n%q\nwant\n%q", got, tt.want)
			}
			if n := utf8.RuneCountInString(got); n > tt.width-1 {
				t.Errorf("%d columns used of %d: the terminal would wrap it", n, tt.width)
			}
			for _, figure := range []string{"12 retries", "ETA "} {
				if !strings.Contains(got, figure) {
					t.Errorf("%q lost %q", got, figure)
				}
			}
		})
	}
}

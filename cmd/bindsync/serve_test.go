package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/config"
	"github.com/bindsync/bindsync/metrics/metricstest"
	"github.com/bindsync/bindsync/twilio/twiliotest"
	"github.com/bindsync/bindsync/worker"
)

// waitLimit bounds every wait for an event in these tests; reaching it is
// a failure, never a measure.
const waitLimit = 20 * time.Second

// every is a schedule firing every d, finer than cron's one second, so
// that the tests of the scheduling logic need not wait whole seconds.
type every time.Duration

func (e every) Next(t time.Time) time.Time { return t.Add(time.Duration(e)) }

// served is a serve running in the background of a test.
type served struct {
	t      *testing.T
	url    string
	cancel context.CancelFunc
	done   chan error
	logs   *observer.ObservedLogs
}

func startServe(t *testing.T, cfg *config.Config, opts serveOptions) *served {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.listener = ln
	core, logs := observer.New(zapcore.DebugLevel)
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{t: t, url: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() { s.done <- serve(ctx, cfg, zap.New(core), opts) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(waitLimit):
			t.Error("serve did not return after its context ended")
		}
	})
	return s
}

// waitStatus polls path until it answers want or the wait runs out, and
// returns the last status.
func (s *served) waitStatus(path string, want int) int {
	deadline := time.Now().Add(waitLimit)
	for {
		code, _ := s.get(path)
		if code == want || time.Now().After(deadline) {
			return code
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop cancels serve's context and returns what serve returned.
func (s *served) stop() error {
	s.t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		return err
	case <-time.After(waitLimit):
		s.t.Fatal("serve did not return after its context ended")
		return nil
	}
}

func (s *served) get(path string) (int, string) {
	s.t.Helper()
	resp, err := http.Get(s.url + path)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// metrics fetches /metrics and returns every sample by its series, e.g.
// `bindsync_runs_total{status="failed"}`.
func (s *served) metrics() map[string]float64 {
	s.t.Helper()
	code, body := s.get("/metrics")
	if code != http.StatusOK {
		s.t.Fatalf("GET /metrics: status %d", code)
	}
	out, err := metricstest.Samples(strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// waitMetric waits until series reaches at least min and returns every
// sample as it was then.
func (s *served) waitMetric(series string, min float64) map[string]float64 {
	s.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		m := s.metrics()
		if m[series] >= min {
			return m
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s stayed at %v, below %v", series, m[series], min)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

func TestServeSkipsFiringsWhileARunIsGoing(t *testing.T) {
	summary := checkpoint.RunSummary{Status: "succeeded", UsersDone: 12, UsersGone: 1, Bindings: 345, Pages: 17}
	var calls, active, maxActive atomic.Int32
	entered := make(chan time.Time, 100)
	release := make(chan struct{})
	runOnce := func(ctx context.Context, date time.Time) (*worker.Result, error) {
		n := active.Add(1)
		defer active.Add(-1)
		for m := maxActive.Load(); n > m && !maxActive.CompareAndSwap(m, n); m = maxActive.Load() {
		}
		call := calls.Add(1)
		entered <- date
		if call == 1 {
			<-release
			return &worker.Result{Date: date, Summary: summary}, nil
		}
		// Later runs last until the shutdown cancels them.
		<-ctx.Done()
		return nil, fmt.Errorf("interrupted: %w", ctx.Err())
	}
	s := startServe(t, config.Default(), serveOptions{runOnce: runOnce, schedule: every(50 * time.Millisecond)})

	date := receive(t, entered, "the first run")
	now := time.Now().UTC()
	if want := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC); !date.Equal(want) {
		t.Errorf("the run was for %s, want today in UTC %s", date, want)
	}
	during := s.waitMetric(`bindsync_runs_total{status="skipped"}`, 2)
	metricstest.Check(t, during, map[string]float64{
		"bindsync_run_in_progress":                1,
		`bindsync_runs_total{status="succeeded"}`: 0,
	})
	if skips := s.logs.FilterMessage("scheduled run skipped: the previous run is still going").Len(); skips < 2 {
		t.Errorf("%d skipped firings logged, want at least 2", skips)
	}

	close(release)
	after := s.waitMetric(`bindsync_runs_total{status="succeeded"}`, 1)
	metricstest.Check(t, after, map[string]float64{
		`bindsync_runs_total{status="succeeded"}`: 1,
		`bindsync_runs_total{status="failed"}`:    0,
		`bindsync_runs_total{status="panicked"}`:  0,
		`bindsync_users_total{state="done"}`:      12,
		`bindsync_users_total{state="gone"}`:      1,
		`bindsync_users_total{state="failed"}`:    0,
		"bindsync_bindings_total":                 345,
		"bindsync_pages_total":                    17,
		"bindsync_run_duration_seconds_count":     1,
	})
	if _, ok := after["bindsync_last_success_timestamp_seconds"]; !ok {
		t.Error("bindsync_last_success_timestamp_seconds missing after a successful run")
	}
	// A later firing runs again once the first run is over.
	receive(t, entered, "a run after the first one ended")

	if err := s.stop(); err != nil {
		t.Errorf("serve returned %v after its context ended, want nil", err)
	}
	if got := maxActive.Load(); got != 1 {
		t.Errorf("%d runs went at once, want 1", got)
	}
	if got := active.Load(); got != 0 {
		t.Errorf("%d runs still going after serve returned", got)
	}
	if n := s.logs.FilterMessage("next run").Len(); n < 2 {
		t.Errorf("the next run time was logged %d times, want once after each of the 2 runs", n)
	}
}

func TestServeCountsAPanicAndGoesOn(t *testing.T) {
	var calls atomic.Int32
	runOnce := func(ctx context.Context, date time.Time) (*worker.Result, error) {
		if calls.Add(1) == 1 {
			panic(errors.New("a bug in the first run"))
		}
		return &worker.Result{Date: date, Summary: checkpoint.RunSummary{Status: "succeeded", UsersDone: 2, Bindings: 5, Pages: 1}}, nil
	}
	s := startServe(t, config.Default(), serveOptions{runOnce: runOnce, schedule: every(50 * time.Millisecond)})

	got := s.waitMetric(`bindsync_runs_total{status="succeeded"}`, 1)
	if got[`bindsync_runs_total{status="panicked"}`] != 1 {
		t.Errorf(`runs_total{status="panicked"} = %v, want 1`, got[`bindsync_runs_total{status="panicked"}`])
	}
	if got["bindsync_run_in_progress"] > 1 {
		t.Errorf("run_in_progress = %v", got["bindsync_run_in_progress"])
	}
	panics := s.logs.FilterMessage("scheduled run panicked").All()
	if len(panics) != 1 {
		t.Fatalf("%d panics logged, want 1", len(panics))
	}
	if stack, _ := panics[0].ContextMap()["stack"].(string); !strings.Contains(stack, "TestServeCountsAPanicAndGoesOn") {
		t.Errorf("the logged stack does not show the panicking function:\n%s", stack)
	}
	if code, body := s.get("/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("GET /healthz after a panic = %d %q, want 200 ok", code, body)
	}
	if err := s.stop(); err != nil {
		t.Errorf("serve returned %v, want nil", err)
	}
}

// TestServeCountsAWorkerPanic: a panic in a goroutine of the worker comes
// back as an error wrapping worker.ErrPanic. It is counted as panicked
// with the users its summary counted, logged, not tried again, and serve
// goes on.
func TestServeCountsAWorkerPanic(t *testing.T) {
	var calls atomic.Int32
	runOnce := func(ctx context.Context, date time.Time) (*worker.Result, error) {
		if calls.Add(1) == 1 {
			res := &worker.Result{Date: date, Summary: checkpoint.RunSummary{Status: "failed", UsersDone: 4, Bindings: 9, Pages: 4}}
			return res, fmt.Errorf("fetch bindings: %w", worker.Recovered("index out of range"))
		}
		return &worker.Result{Date: date, Summary: checkpoint.RunSummary{Status: "succeeded", UsersDone: 2, Bindings: 5, Pages: 1}}, nil
	}
	s := startServe(t, config.Default(), serveOptions{
		runOnce:     runOnce,
		schedule:    every(50 * time.Millisecond),
		retryDelays: []time.Duration{time.Hour}, // a retry would hold the next firing an hour
	})

	got := s.waitMetric(`bindsync_runs_total{status="succeeded"}`, 1)
	metricstest.Check(t, got, map[string]float64{
		`bindsync_runs_total{status="panicked"}`: 1,
		`bindsync_runs_total{status="failed"}`:   0,
		`bindsync_users_total{state="done"}`:     6,
		"bindsync_bindings_total":                14,
	})
	if s.logs.FilterMessage("scheduled run failed; trying again").Len() != 0 {
		t.Error("a panicked run was tried again")
	}
	panics := s.logs.FilterMessage("scheduled run panicked").All()
	if len(panics) != 1 {
		t.Fatalf("%d panics logged, want 1", len(panics))
	}
	if msg, _ := panics[0].ContextMap()["error"].(string); !strings.Contains(msg, "panic: index out of range [at ") {
		t.Errorf("the logged error does not show the panic and its stack: %q", msg)
	}
	if code, body := s.get("/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("GET /healthz after a panic = %d %q, want 200 ok", code, body)
	}
	if err := s.stop(); err != nil {
		t.Errorf("serve returned %v, want nil", err)
	}
}

func TestServeProbesAndShutdown(t *testing.T) {
	tests := []struct {
		name string
		// obeys: the run returns once its context is cancelled; otherwise
		// it ignores the cancellation and serve must give up waiting.
		obeys       bool
		stopTimeout time.Duration
	}{
		{name: "run saves and returns", obeys: true, stopTimeout: waitLimit},
		{name: "run ignores the cancel", obeys: false, stopTimeout: 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entered := make(chan struct{}, 100)
			cancelled := make(chan struct{})
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			var calls atomic.Int32
			runOnce := func(ctx context.Context, date time.Time) (*worker.Result, error) {
				calls.Add(1)
				entered <- struct{}{}
				<-ctx.Done()
				close(cancelled)
				if !tt.obeys {
					<-release
				}
				return &worker.Result{Summary: checkpoint.RunSummary{Status: "interrupted", UsersDone: 3}}, fmt.Errorf("interrupted: %w", ctx.Err())
			}
			s := startServe(t, config.Default(), serveOptions{runOnce: runOnce, schedule: every(50 * time.Millisecond), stopTimeout: tt.stopTimeout})

			if code, body := s.get("/healthz"); code != http.StatusOK || body != "ok\n" {
				t.Errorf("GET /healthz = %d %q, want 200 ok", code, body)
			}
			// The listener answers a moment before the scheduler has
			// started; readiness follows.
			if code := s.waitStatus("/readyz", http.StatusOK); code != http.StatusOK {
				t.Errorf("GET /readyz = %d once started, want 200", code)
			}
			receive(t, entered, "the run")
			if err := s.stop(); err != nil {
				t.Errorf("serve returned %v, want nil", err)
			}
			select {
			case <-cancelled:
			default:
				t.Error("serve returned without cancelling the run's context")
			}
			if n := calls.Load(); n != 1 {
				t.Errorf("%d runs started, want 1", n)
			}
			if _, err := http.Get(s.url + "/healthz"); err == nil {
				t.Error("the listener still answers after serve returned")
			}
			if tt.obeys {
				waited := s.logs.FilterMessage("the run did not stop in time; its last checkpoint stands").Len()
				if waited != 0 {
					t.Error("serve gave up on a run that returned")
				}
			} else if s.logs.FilterMessage("the run did not stop in time; its last checkpoint stands").Len() != 1 {
				t.Error("serve did not log that it gave up waiting for the run")
			}
		})
	}
}

func TestServeNotReadyWhileShuttingDown(t *testing.T) {
	entered := make(chan struct{}, 100)
	release := make(chan struct{})
	runOnce := func(ctx context.Context, date time.Time) (*worker.Result, error) {
		entered <- struct{}{}
		<-ctx.Done()
		<-release // saving the checkpoint takes a while
		return nil, ctx.Err()
	}
	s := startServe(t, config.Default(), serveOptions{runOnce: runOnce, schedule: every(50 * time.Millisecond)})
	receive(t, entered, "the run")
	s.cancel()

	deadline := time.Now().Add(waitLimit)
	for {
		code, _ := s.get("/readyz")
		if code == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /readyz = %d during the shutdown, want 503", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, _ := s.get("/healthz"); code != http.StatusOK {
		t.Errorf("GET /healthz = %d during the shutdown, want 200 while the process lives", code)
	}
	select {
	case err := <-s.done:
		t.Fatalf("serve returned %v before the run it cancelled returned", err)
	default:
	}
	close(release)
	if err := s.stop(); err != nil {
		t.Errorf("serve returned %v, want nil", err)
	}
}

func TestServeFailsOnABadListenAddress(t *testing.T) {
	cfg := config.Default()
	cfg.HTTP.Listen = "127.0.0.1:not-a-port"
	err := serve(context.Background(), cfg, zap.NewNop(), serveOptions{
		runOnce:  func(context.Context, time.Time) (*worker.Result, error) { return nil, errors.New("must not run") },
		schedule: every(time.Hour),
	})
	if err == nil || !strings.Contains(err.Error(), "http.listen") {
		t.Errorf("serve = %v, want an http.listen error", err)
	}
}

// TestServeEndToEnd serves the real runs of a configuration against the
// fake Twilio, with a local staging directory and warehouse, on the
// schedule of the configuration.
func TestServeEndToEnd(t *testing.T) {
	t.Parallel()
	world := twiliotest.NewWorld(twiliotest.WorldSpec{Seed: 11, Services: 1, UsersPerService: 24, MaxBindingsPerUser: 40})
	tw := twiliotest.NewServer(twiliotest.Options{World: world})
	defer tw.Close()

	dir := t.TempDir()
	cfg := config.Default()
	cfg.Twilio.BaseURL = tw.URL()
	cfg.Twilio.AccountSID = world.AccountSID
	cfg.Twilio.AuthToken = twiliotest.DefaultAuthToken
	cfg.Twilio.PageSize = 10
	cfg.Twilio.UsersPageSize = 10
	cfg.Twilio.Concurrency = 4
	// User by user: the figures below count a page per user.
	cfg.Services = []config.Service{{SID: world.Services[0].SID, Users: config.Users{All: true}, Strategy: worker.StrategyPerUser}}
	cfg.Staging = filepath.Join(dir, "staging")
	cfg.Warehouse.Local = &config.Local{Path: filepath.Join(dir, "warehouse")}
	cfg.Schedule = "@every 1s"
	if problems := cfg.Validate(); len(problems) > 0 {
		t.Fatalf("configuration: %v", problems)
	}

	opts, err := newServeOptions(context.Background(), cfg, "", zap.NewNop(), 0)
	if err != nil {
		t.Fatal(err)
	}
	s := startServe(t, cfg, opts)
	got := s.waitMetric(`bindsync_runs_total{status="succeeded"}`, 1)
	if err := s.stop(); err != nil {
		t.Errorf("serve returned %v, want nil", err)
	}

	metricstest.Check(t, got, map[string]float64{
		"bindsync_bindings_total":                      float64(world.TotalBindings()),
		`bindsync_users_total{state="done"}`:           24,
		`bindsync_users_total{state="failed"}`:         0,
		`bindsync_runs_total{status="failed"}`:         0,
		`bindsync_runs_total{status="panicked"}`:       0,
		`bindsync_twilio_requests_total{kind="users"}`: 3, // 24 users, 10 a page
		"bindsync_twilio_requests_in_flight":           0,
	})
	if got["bindsync_pages_total"] < 24 {
		t.Errorf("bindsync_pages_total = %v, want at least one page per user (24)", got["bindsync_pages_total"])
	}
	if got[`bindsync_twilio_requests_total{kind="bindings"}`] != got["bindsync_pages_total"] {
		t.Errorf("bindings requests %v != pages %v with no faults", got[`bindsync_twilio_requests_total{kind="bindings"}`], got["bindsync_pages_total"])
	}

	today, _ := snapshotDate("", time.Now())
	snap := filepath.Join(cfg.Warehouse.Local.Path, "user_bindings", "snapshot_date="+today.Format(time.DateOnly))
	files, err := os.ReadDir(snap)
	if err != nil {
		t.Fatalf("the first firing published nothing: %v", err)
	}
	var parquet int
	for _, f := range files {
		if strings.HasSuffix(f.Name(), ".parquet") {
			parquet++
		}
	}
	if parquet == 0 {
		t.Errorf("%s holds no Parquet file: %v", snap, files)
	}
}

// TestRunPushesMetrics runs `bindsync run` with a Pushgateway configured:
// the run's metrics are pushed, and a Pushgateway that refuses them costs a
// warning, not the exit code.
func TestRunPushesMetrics(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		status   int
		wantWarn bool
	}{
		{name: "accepted", status: http.StatusOK},
		{name: "refused", status: http.StatusServiceUnavailable, wantWarn: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			world := twiliotest.NewWorld(twiliotest.WorldSpec{Seed: 5, Services: 1, UsersPerService: 6, MaxBindingsPerUser: 10})
			tw := twiliotest.NewServer(twiliotest.Options{World: world})
			defer tw.Close()
			type push struct {
				method, path string
				body         []byte
			}
			pushes := make(chan push, 10)
			gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				pushes <- push{r.Method, r.URL.Path, body}
				w.WriteHeader(tt.status)
			}))
			defer gw.Close()

			dir := t.TempDir()
			file := filepath.Join(dir, "bindsync.yaml")
			conf := fmt.Sprintf(`twilio:
  base_url: %s
  account_sid: %s
  auth_token: %s
services:
  - sid: %s
    users: all
staging: staging
warehouse:
  local:
    path: warehouse
metrics:
  pushgateway: %s
  job: nightly-bindings
`, tw.URL(), world.AccountSID, twiliotest.DefaultAuthToken, world.Services[0].SID, gw.URL)
			if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			code, stdout, stderr := runCLI(t, "run", "--config", file)
			if code != exitOK {
				t.Fatalf("exit code %d, want 0\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
			p := receive(t, pushes, "the push")
			if want := "/metrics/job/nightly-bindings"; p.method != http.MethodPost || p.path != want {
				t.Errorf("pushed with %s %s, want POST %s", p.method, p.path, want)
			}
			for _, name := range []string{"bindsync_runs_total", "bindsync_bindings_total", "bindsync_last_success_timestamp_seconds"} {
				if !strings.Contains(string(p.body), name) {
					t.Errorf("the pushed metrics lack %s", name)
				}
			}
			if warned := strings.Contains(stderr, "metrics not pushed"); warned != tt.wantWarn {
				t.Errorf("warning logged: %v, want %v\nstderr: %s", warned, tt.wantWarn, stderr)
			}
		})
	}
}

func TestServeTriesAFailedSnapshotAgain(t *testing.T) {
	var (
		mu    sync.Mutex
		dates []time.Time
	)
	runOnce := func(ctx context.Context, date time.Time) (*worker.Result, error) {
		mu.Lock()
		dates = append(dates, date)
		n := len(dates)
		mu.Unlock()
		if n <= 2 {
			return &worker.Result{Date: date, Summary: checkpoint.RunSummary{Status: "failed"}}, errors.New("twilio: 503 after 6 attempts")
		}
		return &worker.Result{Date: date, Summary: checkpoint.RunSummary{Status: "succeeded", UsersDone: 3, Bindings: 7, Pages: 2}}, nil
	}
	s := startServe(t, config.Default(), serveOptions{
		runOnce:     runOnce,
		schedule:    soon(), // one firing: the tries come from the retries alone
		retryDelays: []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond},
	})
	got := s.waitMetric(`bindsync_runs_total{status="succeeded"}`, 1)
	metricstest.Check(t, got, map[string]float64{
		`bindsync_runs_total{status="failed"}`:    2,
		`bindsync_runs_total{status="succeeded"}`: 1,
	})
	mu.Lock()
	defer mu.Unlock()
	if len(dates) != 3 || !dates[0].Equal(dates[1]) || !dates[1].Equal(dates[2]) {
		t.Errorf("runs for dates %v, want three tries of one date", dates)
	}
	if n := s.logs.FilterMessage("scheduled run failed; trying again").Len(); n != 2 {
		t.Errorf("%d retries logged, want 2", n)
	}
}

func TestServeDoesNotRetryAConfigurationError(t *testing.T) {
	var calls atomic.Int32
	runOnce := func(ctx context.Context, date time.Time) (*worker.Result, error) {
		calls.Add(1)
		return nil, usagef("twilio: 401 Unauthorized: check twilio.auth_token")
	}
	s := startServe(t, config.Default(), serveOptions{
		runOnce:     runOnce,
		schedule:    soon(),
		retryDelays: []time.Duration{time.Millisecond, time.Millisecond},
	})
	// The firing is over once it logs the next run time.
	deadline := time.Now().Add(waitLimit)
	for s.logs.FilterMessage("next run").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the firing never ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d runs after a configuration error, want 1", n)
	}
}

// fireOnce is a schedule that fires once, at a moment, and then not for
// an hour.
type fireOnce struct{ at time.Time }

func soon() *fireOnce { return &fireOnce{at: time.Now().Add(50 * time.Millisecond)} }

func (f *fireOnce) Next(t time.Time) time.Time {
	if t.Before(f.at) {
		return f.at
	}
	return t.Add(time.Hour)
}

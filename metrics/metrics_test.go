package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/metrics/metricstest"
	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

// fixedNow is the clock of the tests; its Unix time is 1795000000.
var fixedNow = time.Unix(1795000000, 0)

func newTestMetrics() *Metrics {
	m := New()
	m.now = func() time.Time { return fixedNow }
	return m
}

// scrape fetches the handler's exposition and returns every sample by its
// series, e.g. `bindsync_runs_total{status="failed"}`.
func scrape(t *testing.T, m *Metrics) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: status %d: %s", rec.Code, rec.Body)
	}
	out, err := metricstest.Samples(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRunFinishedCountsOneRun(t *testing.T) {
	errBoom := errors.New("boom")
	failedUsers := []checkpoint.UserFailed{{UserRef: checkpoint.UserRef{Service: "IS1", User: "a"}, Reason: "500"}, {UserRef: checkpoint.UserRef{Service: "IS1", User: "b"}, Reason: "500"}}
	tests := []struct {
		name        string
		summary     checkpoint.RunSummary
		err         error
		wantStatus  checkpoint.RunStatus
		wantSuccess bool
	}{
		{
			name:       "succeeded",
			summary:    checkpoint.RunSummary{Status: "succeeded", UsersDone: 7, UsersGone: 2, UsersNotFound: 3, Bindings: 345, Pages: 12},
			wantStatus: checkpoint.RunSucceeded, wantSuccess: true,
		},
		{
			name:    "failed users",
			summary: checkpoint.RunSummary{Status: "failed", UsersDone: 5, UsersFailed: failedUsers, Bindings: 40, Pages: 6},
			err:     errBoom, wantStatus: checkpoint.RunFailed,
		},
		{
			name:    "interrupted",
			summary: checkpoint.RunSummary{Status: "interrupted", UsersDone: 1, Bindings: 3, Pages: 1},
			err:     fmt.Errorf("interrupted: %w", context.Canceled), wantStatus: checkpoint.RunInterrupted,
		},
		{name: "already published", wantStatus: checkpoint.RunSucceeded, wantSuccess: true},
		{name: "locked before it began", err: errBoom, wantStatus: checkpoint.RunFailed},
		{name: "cancelled before it began", err: fmt.Errorf("lock snapshot: %w", context.Canceled), wantStatus: checkpoint.RunInterrupted},
		{name: "deadline before it began", err: fmt.Errorf("open: %w", context.DeadlineExceeded), wantStatus: checkpoint.RunInterrupted},
		{
			name:    "succeeded but its end not saved",
			summary: checkpoint.RunSummary{Status: "succeeded", UsersDone: 3, Bindings: 9, Pages: 3},
			err:     errBoom, wantStatus: checkpoint.RunFailed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestMetrics()
			m.RunStarted()
			if got := scrape(t, m)["bindsync_run_in_progress"]; got != 1 {
				t.Errorf("run_in_progress during the run = %v, want 1", got)
			}
			m.RunFinished(tt.summary, tt.err, 90*time.Second)
			got := scrape(t, m)

			want := map[string]float64{
				`bindsync_users_total{state="done"}`:      float64(tt.summary.UsersDone),
				`bindsync_users_total{state="gone"}`:      float64(tt.summary.UsersGone),
				`bindsync_users_total{state="not_found"}`: float64(tt.summary.UsersNotFound),
				`bindsync_users_total{state="failed"}`:    float64(len(tt.summary.UsersFailed)),
				`bindsync_users_total{state="skipped"}`:   0,
				"bindsync_bindings_total":                 float64(tt.summary.Bindings),
				"bindsync_pages_total":                    float64(tt.summary.Pages),
				"bindsync_run_in_progress":                0,
				"bindsync_run_duration_seconds_sum":       90,
				"bindsync_run_duration_seconds_count":     1,
				"bindsync_last_run_timestamp_seconds":     1795000000,
			}
			for _, s := range []checkpoint.RunStatus{checkpoint.RunSucceeded, checkpoint.RunFailed, checkpoint.RunInterrupted, checkpoint.RunPanicked, checkpoint.RunSkipped} {
				want[fmt.Sprintf(`bindsync_runs_total{status=%q}`, s)] = 0
			}
			want[fmt.Sprintf(`bindsync_runs_total{status=%q}`, tt.wantStatus)] = 1
			metricstest.Check(t, got, want)

			success, ok := got["bindsync_last_success_timestamp_seconds"]
			switch {
			case tt.wantSuccess && success != 1795000000:
				t.Errorf("last_success_timestamp_seconds = %v (present %v), want 1795000000", success, ok)
			case !tt.wantSuccess && ok:
				t.Errorf("last_success_timestamp_seconds = %v after a run that did not succeed, want no sample", success)
			}
		})
	}
}

func TestRunsAccumulate(t *testing.T) {
	m := newTestMetrics()
	m.RunStarted()
	m.AddUsersSkipped(0)
	m.RunFinished(checkpoint.RunSummary{Status: "interrupted", UsersDone: 4, Bindings: 100, Pages: 5}, context.Canceled, time.Minute)
	m.RunStarted()
	m.AddUsersSkipped(4)
	m.RunFinished(checkpoint.RunSummary{Status: "succeeded", UsersDone: 6, UsersGone: 1, Bindings: 150, Pages: 8}, nil, 2*time.Minute)
	m.RunSkipped()
	m.RunSkipped()
	m.RunStarted()
	m.RunPanicked(3 * time.Second)

	metricstest.Check(t, scrape(t, m), map[string]float64{
		`bindsync_runs_total{status="succeeded"}`:   1,
		`bindsync_runs_total{status="interrupted"}`: 1,
		`bindsync_runs_total{status="failed"}`:      0,
		`bindsync_runs_total{status="panicked"}`:    1,
		`bindsync_runs_total{status="skipped"}`:     2,
		`bindsync_users_total{state="done"}`:        10,
		`bindsync_users_total{state="gone"}`:        1,
		`bindsync_users_total{state="skipped"}`:     4,
		"bindsync_bindings_total":                   250,
		"bindsync_pages_total":                      13,
		"bindsync_run_duration_seconds_sum":         183,
		"bindsync_run_duration_seconds_count":       3,
		"bindsync_run_in_progress":                  0,
		"bindsync_last_success_timestamp_seconds":   1795000000,
	})
}

func TestNewShowsEverySeriesAtZero(t *testing.T) {
	got := scrape(t, New())
	want := map[string]float64{
		`bindsync_twilio_requests_total{kind="users"}`:                        0,
		`bindsync_twilio_requests_total{kind="bindings"}`:                     0,
		`bindsync_twilio_requests_total{kind="service_bindings"}`:             0,
		`bindsync_twilio_requests_total{kind="user"}`:                         0,
		`bindsync_twilio_concurrency_limit`:                                   0,
		`bindsync_twilio_concurrency_limit_changes_total{reason="throttled"}`: 0,
		`bindsync_twilio_retries_total{reason="429"}`:                         0,
		`bindsync_twilio_retries_total{reason="5xx"}`:                         0,
		`bindsync_twilio_retries_total{reason="network"}`:                     0,
		`bindsync_twilio_retries_total{reason="truncated"}`:                   0,
		`bindsync_runs_total{status="panicked"}`:                              0,
		`bindsync_runs_total{status="skipped"}`:                               0,
		`bindsync_users_total{state="done"}`:                                  0,
		"bindsync_twilio_requests_in_flight":                                  0,
		"bindsync_run_in_progress":                                            0,
		"bindsync_bindings_total":                                             0,
	}
	metricstest.Check(t, got, want)
	for _, series := range []string{"bindsync_last_success_timestamp_seconds", "bindsync_last_run_timestamp_seconds"} {
		if v, ok := got[series]; ok {
			t.Errorf("%s = %v before any run, want no sample", series, v)
		}
	}
	if _, ok := got["go_goroutines"]; !ok {
		t.Error("go_goroutines: missing; the Go collector is not served")
	}
}

func TestHooksCountRequests(t *testing.T) {
	m := New()
	h := m.Hooks()
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			h.InFlight(+1)
			h.OnRequest("bindings")
			h.InFlight(-1)
		})
	}
	wg.Wait()
	h.OnRequest("users")
	h.OnRetry("429", 1, time.Second)
	h.OnRetry("429", 2, 2*time.Second)
	h.OnRetry("network", 1, 0)
	h.InFlight(+1)
	h.InFlight(+1)

	metricstest.Check(t, scrape(t, m), map[string]float64{
		`bindsync_twilio_requests_total{kind="bindings"}`:   10,
		`bindsync_twilio_requests_total{kind="users"}`:      1,
		`bindsync_twilio_retries_total{reason="429"}`:       2,
		`bindsync_twilio_retries_total{reason="network"}`:   1,
		`bindsync_twilio_retries_total{reason="5xx"}`:       0,
		`bindsync_twilio_retries_total{reason="truncated"}`: 0,
		"bindsync_twilio_requests_in_flight":                2,
	})
}

// TestConcurrencyLimitGauge follows the client's cap: the value it starts
// with, then every change the limiter reports, counted by reason.
func TestConcurrencyLimitGauge(t *testing.T) {
	m := New()
	h := m.Hooks()
	m.SetConcurrencyLimit(8)
	metricstest.Check(t, scrape(t, m), map[string]float64{"bindsync_twilio_concurrency_limit": 8})
	for _, c := range []struct {
		limit  int
		reason string
	}{{16, "slow_start"}, {32, "slow_start"}, {9, "throttled"}, {10, "increase"}, {11, "probe"}, {10, "throttled"}} {
		h.OnLimitChange(c.limit, c.reason)
	}
	metricstest.Check(t, scrape(t, m), map[string]float64{
		"bindsync_twilio_concurrency_limit":                                    10,
		`bindsync_twilio_concurrency_limit_changes_total{reason="slow_start"}`: 2,
		`bindsync_twilio_concurrency_limit_changes_total{reason="throttled"}`:  2,
		`bindsync_twilio_concurrency_limit_changes_total{reason="increase"}`:   1,
		`bindsync_twilio_concurrency_limit_changes_total{reason="probe"}`:      1,
	})
}

// pushed is one request a fake Pushgateway received.
type pushed struct {
	method, path string
	user, pass   string
	families     map[string]*dto.MetricFamily
	err          error
}

func fakePushgateway(t *testing.T, status int) (*httptest.Server, func() []pushed) {
	t.Helper()
	var mu sync.Mutex
	var got []pushed
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := pushed{method: r.Method, path: r.URL.EscapedPath(), families: map[string]*dto.MetricFamily{}}
		p.user, p.pass, _ = r.BasicAuth()
		body, err := io.ReadAll(r.Body)
		if err != nil {
			p.err = err
		}
		dec := expfmt.NewDecoder(bytes.NewReader(body), expfmt.ResponseFormat(r.Header))
		for p.err == nil {
			mf := &dto.MetricFamily{}
			if err := dec.Decode(mf); err != nil {
				if !errors.Is(err, io.EOF) {
					p.err = err
				}
				break
			}
			p.families[mf.GetName()] = mf
		}
		mu.Lock()
		got = append(got, p)
		mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []pushed {
		mu.Lock()
		defer mu.Unlock()
		return append([]pushed(nil), got...)
	}
}

func counterValue(mf *dto.MetricFamily, label, value string) (float64, bool) {
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label && l.GetValue() == value {
				return m.GetCounter().GetValue(), true
			}
		}
	}
	return 0, false
}

func TestPush(t *testing.T) {
	tests := []struct {
		name     string
		userinfo string // put in the gateway URL
		job      string
		status   int
		wantErr  string
		wantUser string
	}{
		{name: "accepted", job: "bindsync", status: http.StatusOK},
		{name: "accepted 202", job: "nightly", status: http.StatusAccepted},
		{name: "basic auth from the URL", userinfo: "pusher:s3cret@", job: "bindsync", status: http.StatusOK, wantUser: "pusher"},
		{name: "refused", userinfo: "pusher:s3cret@", job: "bindsync", status: http.StatusInternalServerError, wantErr: "unexpected status code 500", wantUser: "pusher"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, requests := fakePushgateway(t, tt.status)
			m := newTestMetrics()
			m.RunStarted()
			m.RunFinished(checkpoint.RunSummary{Status: "succeeded", UsersDone: 3, Bindings: 21, Pages: 4}, nil, time.Second)

			gateway := strings.Replace(srv.URL, "://", "://"+tt.userinfo, 1)
			err := m.Push(context.Background(), gateway, tt.job)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Push: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Push error = %v, want one containing %q", err, tt.wantErr)
			case err != nil && strings.Contains(err.Error(), "s3cret"):
				t.Fatalf("Push error %q reveals the password", err)
			}

			reqs := requests()
			if len(reqs) != 1 {
				t.Fatalf("the Pushgateway got %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.err != nil {
				t.Fatalf("decode the pushed body: %v", r.err)
			}
			if wantPath := "/metrics/job/" + tt.job; r.method != http.MethodPost || r.path != wantPath {
				t.Errorf("request %s %s, want POST %s", r.method, r.path, wantPath)
			}
			if r.user != tt.wantUser || (tt.wantUser != "" && r.pass != "s3cret") {
				t.Errorf("basic auth user %q password %q, want user %q", r.user, r.pass, tt.wantUser)
			}
			runs, ok := r.families["bindsync_runs_total"]
			if !ok {
				t.Fatalf("pushed families %v: bindsync_runs_total missing", keys(r.families))
			}
			if v, _ := counterValue(runs, "status", "succeeded"); v != 1 {
				t.Errorf(`pushed bindsync_runs_total{status="succeeded"} = %v, want 1`, v)
			}
			if b := r.families["bindsync_bindings_total"].GetMetric(); len(b) != 1 || b[0].GetCounter().GetValue() != 21 {
				t.Errorf("pushed bindsync_bindings_total = %v, want 21", b)
			}
			for name := range r.families {
				if !strings.HasPrefix(name, "bindsync_") {
					t.Errorf("pushed %s; only bindsync_* metrics belong in the Pushgateway", name)
				}
			}
		})
	}
}

func TestPushLeavesOutUnsetSuccess(t *testing.T) {
	srv, requests := fakePushgateway(t, http.StatusOK)
	m := newTestMetrics()
	m.RunStarted()
	m.RunFinished(checkpoint.RunSummary{Status: "failed"}, errors.New("boom"), time.Second)
	if err := m.Push(context.Background(), srv.URL, "bindsync"); err != nil {
		t.Fatal(err)
	}
	fams := requests()[0].families
	if _, ok := fams["bindsync_last_success_timestamp_seconds"]; ok {
		t.Error("a failed run pushed bindsync_last_success_timestamp_seconds; it would overwrite the last real success")
	}
	if _, ok := fams["bindsync_last_run_timestamp_seconds"]; !ok {
		t.Error("bindsync_last_run_timestamp_seconds was not pushed")
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestConcurrencyLimitGaugeFollowsClient wires the hooks into a Twilio
// client that meets an account limit on a fake server: once the client has
// lowered its cap, the gauge shows the cap the client reports.
func TestConcurrencyLimitGaugeFollowsClient(t *testing.T) {
	world := twiliotest.NewWorld(twiliotest.WorldSpec{Seed: 3, Services: 1, UsersPerService: 60, MaxBindingsPerUser: 2})
	srv := twiliotest.NewServer(twiliotest.Options{World: world, Faults: twiliotest.Faults{MaxConcurrent: 2, Latency: 2 * time.Millisecond}})
	defer srv.Close()
	m := New()
	c, err := twilio.New(twilio.Config{BaseURL: srv.URL(), Username: world.AccountSID, Password: twiliotest.DefaultAuthToken,
		MaxInFlight: 16, BackoffBase: time.Millisecond, BackoffMax: 2 * time.Millisecond, MaxAttempts: 20, Hooks: m.Hooks()})
	if err != nil {
		t.Fatal(err)
	}
	m.SetConcurrencyLimit(c.InFlightLimit())
	var wg sync.WaitGroup
	for _, u := range world.Services[0].Users {
		wg.Go(func() {
			if _, err := c.ListBindings(context.Background(), twilio.BindingsQuery{ServiceSID: u.ServiceSID, User: u.SID}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got := scrape(t, m)
	if srv.Stats().ByStatus[429] == 0 || got[`bindsync_twilio_concurrency_limit_changes_total{reason="throttled"}`] == 0 {
		t.Fatalf("the account limit was never met (429s %d): the test proves nothing", srv.Stats().ByStatus[429])
	}
	if want := float64(c.InFlightLimit()); got["bindsync_twilio_concurrency_limit"] != want {
		t.Errorf("bindsync_twilio_concurrency_limit = %v, want the client's cap %v", got["bindsync_twilio_concurrency_limit"], want)
	}
}

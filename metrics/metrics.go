// Package metrics holds the Prometheus metrics of bindsync: runs and their
// outcome, users, bindings and pages read, and the requests made to Twilio.
//
// The metrics live in a registry of their own, not the global one, so that a
// test or a second instance in one process starts from zero. `bindsync serve`
// exposes them on /metrics; `bindsync run`, a batch job that ends before any
// scrape, pushes them to a Pushgateway with Push.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/push"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/twilio"
)

// Metrics are the metrics of one bindsync process. Its methods are safe for
// concurrent use.
type Metrics struct {
	// runs holds the bindsync_* metrics, the ones worth pushing; process
	// holds the Go runtime and process metrics, served only on /metrics.
	runs    *prometheus.Registry
	process *prometheus.Registry

	runsTotal   *prometheus.CounterVec
	duration    prometheus.Histogram
	lastSuccess *prometheus.GaugeVec
	lastRun     *prometheus.GaugeVec
	users       *prometheus.CounterVec
	bindings    prometheus.Counter
	violations  *prometheus.CounterVec
	pages       prometheus.Counter
	requests    *prometheus.CounterVec
	retries     *prometheus.CounterVec
	inFlight    prometheus.Gauge
	limit       prometheus.Gauge
	limitChange *prometheus.CounterVec
	inProgress  prometheus.Gauge

	now func() time.Time
}

// New returns the metrics with every counter at zero. The label values
// bindsync knows of are created up front, so that dashboards and alerts see
// a 0 rather than no series.
func New() *Metrics {
	m := &Metrics{
		runs:    prometheus.NewRegistry(),
		process: prometheus.NewRegistry(),
		runsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bindsync_runs_total",
			Help: "Runs of a snapshot by outcome: succeeded, failed, interrupted, panicked, or skipped (the schedule fired while a run was still going).",
		}, []string{"status"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bindsync_run_duration_seconds",
			Help:    "Duration of the runs that were started, whatever their outcome.",
			Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800},
		}),
		// Both timestamps are vectors without labels so that they are not
		// exported before they are first set: a Pushgateway then keeps the
		// last success pushed by an earlier run instead of a zero.
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bindsync_last_success_timestamp_seconds",
			Help: "Unix time at which the last successful run ended.",
		}, nil),
		lastRun: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bindsync_last_run_timestamp_seconds",
			Help: "Unix time at which the last run ended, whatever its outcome.",
		}, nil),
		users: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bindsync_users_total",
			Help: "Users handled by runs: done (read now), gone (deleted meanwhile), not_found (configured but unknown to Twilio), failed (after retries), skipped (finished by an earlier run of the same snapshot).",
		}, []string{"state"}),
		bindings: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bindsync_bindings_total",
			Help: "Bindings read from Twilio by finished runs.",
		}),
		violations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bindsync_contract_violations_total",
			Help: "Records read from Twilio that broke the API's contract (stored as received), by kind, e.g. binding_type_null.",
		}, []string{"kind"}),
		pages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bindsync_pages_total",
			Help: "Bindings pages read from Twilio by finished runs.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bindsync_twilio_requests_total",
			Help: "HTTP attempts made to Twilio, retries included, by kind: users (the Users list), bindings (a user's bindings), service_bindings (the service-wide Bindings list), user (one user looked up by identity).",
		}, []string{"kind"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bindsync_twilio_retries_total",
			Help: "Twilio requests retried, by reason: 429, 5xx, network, truncated.",
		}, []string{"reason"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bindsync_twilio_requests_in_flight",
			Help: "HTTP requests to Twilio in flight now.",
		}),
		limit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bindsync_twilio_concurrency_limit",
			Help: "The Twilio client's cap on requests in flight now: it adapts, below twilio.concurrency, to what the account allows (lowered after a 429, raised while requests succeed).",
		}),
		limitChange: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bindsync_twilio_concurrency_limit_changes_total",
			Help: "Changes of the cap on requests in flight, by reason: slow_start (doubled before the first 429), increase (one more, below the level learned from 429s), probe (one more above it), throttled (lowered after a 429).",
		}, []string{"reason"}),
		inProgress: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bindsync_run_in_progress",
			Help: "1 while a run is going, else 0.",
		}),
		now: time.Now,
	}
	m.runs.MustRegister(m.runsTotal, m.duration, m.lastSuccess, m.lastRun, m.users,
		m.bindings, m.violations, m.pages, m.requests, m.retries, m.inFlight, m.limit, m.limitChange, m.inProgress)
	m.process.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	for _, s := range []checkpoint.RunStatus{checkpoint.RunSucceeded, checkpoint.RunFailed, checkpoint.RunInterrupted, checkpoint.RunPanicked, checkpoint.RunSkipped} {
		m.runsTotal.WithLabelValues(string(s))
	}
	for _, s := range []string{"done", "gone", "failed", "skipped"} {
		m.users.WithLabelValues(s)
	}
	for _, k := range []string{"users", "bindings", "service_bindings", "user"} {
		m.requests.WithLabelValues(k)
	}
	for _, r := range []string{"slow_start", "increase", "probe", "throttled"} {
		m.limitChange.WithLabelValues(r)
	}
	for _, r := range []string{"429", "5xx", "network", "truncated"} {
		m.retries.WithLabelValues(r)
	}
	return m
}

// Hooks returns the observers to put in twilio.Config.Hooks. They only touch
// atomic counters, so they are as cheap as the client asks.
func (m *Metrics) Hooks() twilio.Hooks {
	return twilio.Hooks{
		OnRequest: func(kind string) { m.requests.WithLabelValues(kind).Inc() },
		OnRetry: func(reason string, attempt int, wait time.Duration) {
			m.retries.WithLabelValues(reason).Inc()
		},
		InFlight: func(delta int) { m.inFlight.Add(float64(delta)) },
		OnLimitChange: func(limit int, reason string) {
			m.limit.Set(float64(limit))
			m.limitChange.WithLabelValues(reason).Inc()
		},
	}
}

// SetConcurrencyLimit sets bindsync_twilio_concurrency_limit to the cap a
// new client starts with (twilio.Client.InFlightLimit), which no
// OnLimitChange reports; the hooks keep it current from there.
func (m *Metrics) SetConcurrencyLimit(limit int) { m.limit.Set(float64(limit)) }

// RunStarted marks a run as going. Every RunStarted is to be followed by
// RunFinished or RunPanicked.
func (m *Metrics) RunStarted() { m.inProgress.Set(1) }

// RunFinished records the end of a run: its status, duration, and the
// counts of its summary. The status is the summary's; when the summary has
// none (the run stopped before it began, or found the snapshot already
// published) it comes from err: nil is a success, a cancelled context an
// interruption, anything else a failure. A summary that says succeeded
// with a non-nil err (its checkpoint could not be saved) counts as failed.
func (m *Metrics) RunFinished(s checkpoint.RunSummary, err error, dur time.Duration) {
	status := s.Status
	if status == "" || (err != nil && status == checkpoint.RunSucceeded) {
		status = statusOf(err)
	}
	m.users.WithLabelValues("done").Add(float64(s.UsersDone))
	m.users.WithLabelValues("gone").Add(float64(s.UsersGone))
	m.users.WithLabelValues("not_found").Add(float64(s.UsersNotFound))
	m.users.WithLabelValues("failed").Add(float64(max(s.UsersFailedCount, int64(len(s.UsersFailed)))))
	m.bindings.Add(float64(s.Bindings))
	for kind, n := range s.ContractViolations {
		m.violations.WithLabelValues(kind).Add(float64(n))
	}
	m.pages.Add(float64(s.Pages))
	m.ended(status, dur)
}

// RunPanicked records a run that ended in a panic.
func (m *Metrics) RunPanicked(dur time.Duration) { m.ended(checkpoint.RunPanicked, dur) }

// RunSkipped records a firing of the schedule that started no run because
// the previous one was still going.
func (m *Metrics) RunSkipped() { m.runsTotal.WithLabelValues(string(checkpoint.RunSkipped)).Inc() }

// AddUsersSkipped counts users a run did not read because an earlier run of
// the same snapshot had finished them (worker.Stats.UsersSkipped); the run
// summary does not hold that number.
func (m *Metrics) AddUsersSkipped(n int64) { m.users.WithLabelValues("skipped").Add(float64(n)) }

// ended records the end of a run. The run is counted last, so that a
// scrape that sees it counted sees its duration and timestamps too.
func (m *Metrics) ended(status checkpoint.RunStatus, dur time.Duration) {
	now := float64(m.now().UnixNano()) / 1e9
	m.duration.Observe(dur.Seconds())
	m.lastRun.WithLabelValues().Set(now)
	if status == checkpoint.RunSucceeded {
		m.lastSuccess.WithLabelValues().Set(now)
	}
	m.inProgress.Set(0)
	m.runsTotal.WithLabelValues(string(status)).Inc()
}

func statusOf(err error) checkpoint.RunStatus {
	switch {
	case err == nil:
		return checkpoint.RunSucceeded
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return checkpoint.RunInterrupted
	default:
		return checkpoint.RunFailed
	}
}

// Gatherer returns every metric: bindsync's, the Go runtime's and the
// process's.
func (m *Metrics) Gatherer() prometheus.Gatherer {
	return prometheus.Gatherers{m.runs, m.process}
}

// Handler serves every metric in the Prometheus exposition format, for
// /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Gatherer(), promhttp.HandlerOpts{})
}

// Push sends the bindsync_* metrics to the Pushgateway at url, in the group
// job=job alone: a CronJob's pod, and so its host name, changes every night,
// and a group per pod would pile up in the Pushgateway, while one group per
// job always holds the latest run. The Go and process metrics are left out:
// those of a process that is about to exit say nothing once it is gone.
//
// It uses POST, which replaces only the metrics pushed, so that the
// bindsync_last_success_timestamp_seconds of an earlier successful run
// stays in the group when this run failed and did not set it.
//
// A user and password in url are sent as basic auth and kept out of errors.
func (m *Metrics) Push(ctx context.Context, gateway, job string) error {
	u, err := url.Parse(gateway)
	if err != nil {
		// The parse error would quote the URL, and with it any password.
		return errors.New("push metrics: the Pushgateway URL does not parse")
	}
	user := u.User
	u.User = nil
	p := push.New(u.String(), job).Gatherer(m.runs)
	if user != nil {
		pass, _ := user.Password()
		p = p.BasicAuth(user.Username(), pass)
	}
	if err := p.AddContext(ctx); err != nil {
		return fmt.Errorf("push metrics to %s: %w", u, err)
	}
	return nil
}

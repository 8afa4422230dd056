package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"
	"go.uber.org/zap"

	"github.com/bindsync/bindsync/config"
	"github.com/bindsync/bindsync/metrics"
	"github.com/bindsync/bindsync/worker"
)

// Bounds of the shutdown of serve. A Kubernetes pod gets 30 s by default
// between SIGTERM and SIGKILL; the serve Deployment gives 60 s.
const (
	// serveStopTimeout bounds the wait for a run to save its checkpoint.
	serveStopTimeout = 40 * time.Second
	// serveHTTPTimeout bounds the wait for open HTTP requests at the end.
	serveHTTPTimeout = 5 * time.Second
)

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	var c common
	fs := newFlagSet("serve", stderr, &c, true)
	progress := fs.Duration("progress", time.Minute, "interval of progress log lines during a run (0 to disable)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(&c)
	if err != nil {
		return err
	}
	red := newRedactor(cfg)
	defer func() { err = presentable(err, red) }()
	if cfg.Schedule == "" {
		return usagef("schedule: is required by serve (a cron line such as %q)", config.DefaultSchedule)
	}
	log, err := newLogger(&c, cfg, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	logWarnings(log, cfg)
	logMemoryLimit(log, memLimit, memLimitSource)

	opts, err := newServeOptions(ctx, cfg, c.config, log, *progress)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, log, opts)
}

// newServeOptions builds the production runOnce of the configuration cfg,
// read from configFile (named in advice about credentials): a new job, and
// so worker.Stats counting from zero, for every run, all counting into one
// set of metrics. It builds a job once first, so that a configuration that
// cannot work fails at start (exit 2) rather than at the first firing.
func newServeOptions(ctx context.Context, cfg *config.Config, configFile string, log *zap.Logger, progress time.Duration) (serveOptions, error) {
	m := metrics.New()
	probe, err := newJobWithMetrics(ctx, cfg, log, m)
	if err != nil {
		return serveOptions{}, err
	}
	probe.close()
	return serveOptions{
		metrics: m,
		runOnce: func(ctx context.Context, date time.Time) (*worker.Result, error) {
			j, err := newJobWithMetrics(ctx, cfg, log, m)
			if err != nil {
				return nil, err
			}
			defer j.close()
			j.configFile = configFile
			return j.run(ctx, date, false, progress)
		},
	}, nil
}

// serveOptions are the parts of serve that tests replace. Only runOnce is
// required.
type serveOptions struct {
	// runOnce runs the snapshot of date (UTC midnight). Its ctx is cancelled
	// at shutdown, and it is then to save its checkpoint and return.
	runOnce func(ctx context.Context, date time.Time) (*worker.Result, error)
	// listener serves HTTP; nil means listening on cfg.HTTP.Listen.
	listener net.Listener
	// schedule says when runs start; nil means cfg.Schedule.
	schedule cron.Schedule
	// metrics are served on /metrics and count the runs; nil means new ones.
	metrics *metrics.Metrics
	// stopTimeout bounds the wait for a running run at shutdown; zero means
	// serveStopTimeout.
	stopTimeout time.Duration
	// retryDelays are the pauses before each new try of a snapshot whose
	// run failed; nil means serveRetryDelays.
	retryDelays []time.Duration
}

// serveRetryDelays space the new tries of a failed scheduled run. With a
// daily schedule the next firing reads the next day, so a failed snapshot
// is finished by these tries or not at all (then `bindsync run
// --snapshot-date` finishes it); they add up to about two hours.
var serveRetryDelays = []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour}

// serve runs snapshots on a schedule until ctx ends, one at a time, and
// serves /healthz, /readyz and /metrics meanwhile. Each firing reads the
// snapshot of the UTC date of the moment it fires, without --force, so a
// firing whose snapshot is already published does nothing, and one whose
// snapshot an earlier run left unfinished resumes it. A firing that comes
// while a run is still going is skipped.
//
// When ctx ends, serve stops the schedule, cancels the running run (which
// saves its checkpoint for the next firing to resume), waits for it up to
// the stop timeout, closes the listener and returns nil. It returns an
// error only when it cannot start or the HTTP server fails.
func serve(ctx context.Context, cfg *config.Config, log *zap.Logger, opts serveOptions) error {
	s := &server{log: log, runOnce: opts.runOnce, metrics: opts.metrics, schedule: opts.schedule, retryDelays: opts.retryDelays}
	if s.retryDelays == nil {
		s.retryDelays = serveRetryDelays
	}
	if s.metrics == nil {
		s.metrics = metrics.New()
	}
	if s.schedule == nil {
		var err error
		if s.schedule, err = config.ParseSchedule(cfg.Schedule); err != nil {
			return usagef("schedule: %v (got %q)", err, cfg.Schedule)
		}
	}
	stopTimeout := opts.stopTimeout
	if stopTimeout <= 0 {
		stopTimeout = serveStopTimeout
	}
	ln := opts.listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.HTTP.Listen); err != nil {
			return fmt.Errorf("http.listen: %w", err)
		}
	}

	srv := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.Serve(ln) }()

	// Runs get a context of their own, cancelled only once the scheduler
	// has stopped, so that no run starts after the one being cancelled.
	runCtx, cancelRuns := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRuns()
	cronLog := cronLogger{log}
	sched := cron.New(
		cron.WithLocation(time.UTC),
		cron.WithLogger(cronLog),
		cron.WithChain(cron.Recover(cronLog), cron.SkipIfStillRunning(skipLogger{log, s.metrics})),
	)
	sched.Schedule(s.schedule, cron.FuncJob(func() { s.fire(runCtx) }))
	sched.Start()
	s.ready.Store(true)
	log.Info("serving", zap.String("listen", ln.Addr().String()), zap.String("schedule", cfg.Schedule),
		zap.Time("next_run", s.schedule.Next(time.Now()).UTC()))

	var httpErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down: stopping the schedule and any run")
	case httpErr = <-httpDone:
		log.Error("HTTP server failed; shutting down", zap.Error(httpErr))
	}
	s.ready.Store(false)
	stopped := sched.Stop()
	cancelRuns()
	select {
	case <-stopped.Done():
	case <-time.After(stopTimeout):
		log.Warn("the run did not stop in time; its last checkpoint stands", zap.Duration("waited", stopTimeout))
	}

	if httpErr != nil {
		return fmt.Errorf("http server on %s: %w", ln.Addr(), httpErr)
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), serveHTTPTimeout)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		log.Warn("HTTP server did not shut down cleanly", zap.Error(err))
	}
	log.Info("stopped")
	return nil
}

// server is the state serve shares between the scheduler and HTTP.
type server struct {
	log      *zap.Logger
	runOnce  func(ctx context.Context, date time.Time) (*worker.Result, error)
	metrics  *metrics.Metrics
	schedule cron.Schedule
	// ready is true from the start of the scheduler to the start of the
	// shutdown.
	ready atomic.Bool
	// retryDelays space the new tries of a failed run.
	retryDelays []time.Duration
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	mux.Handle("GET /metrics", s.metrics.Handler())
	return mux
}

// fire is one firing of the schedule: it runs the snapshot of today (UTC)
// and records the outcome. A panic in the run, here or in the worker's
// goroutines (which return it as an error wrapping worker.ErrPanic), is
// counted and logged, not tried again before the next firing (it is a bug,
// likely to come back), and the process goes on. The recover must be here,
// inside the chain:
// cron.SkipIfStillRunning does not give its token back when a panic passes
// through it, and every later firing would then be skipped.
func (s *server) fire(ctx context.Context) {
	if ctx.Err() != nil {
		return // shutting down: the firing raced the stop of the scheduler
	}
	date, _ := snapshotDate("", time.Now())
	log := s.log.With(zap.String("snapshot", date.Format(time.DateOnly)))
	log.Info("scheduled run starting")
	s.metrics.RunStarted()
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			s.metrics.RunPanicked(time.Since(start))
			log.Error("scheduled run panicked", zap.Any("panic", r), zap.StackSkip("stack", 1))
		}
		log.Info("next run", zap.Time("next_run", s.schedule.Next(time.Now()).UTC()))
	}()

	res, err := s.runOnce(ctx, date)
	recordRun(s.metrics, res, err, time.Since(start))
	// A failed snapshot is tried again (resuming from its checkpoint) while
	// the failure may pass: not after a shutdown, not for a configuration
	// or credentials problem that needs a person.
	tries := 1
	for try := 0; err != nil && ctx.Err() == nil && !isUsage(err) && !errors.Is(err, worker.ErrPanic) && try < len(s.retryDelays); try++ {
		log.Error("scheduled run failed; trying again", zap.Error(err), zap.Duration("in", s.retryDelays[try]), zap.Int("try", try+2))
		select {
		case <-ctx.Done():
		case <-time.After(s.retryDelays[try]):
		}
		if ctx.Err() != nil {
			break
		}
		s.metrics.RunStarted()
		again := time.Now()
		res, err = s.runOnce(ctx, date)
		recordRun(s.metrics, res, err, time.Since(again))
		tries++
	}
	switch {
	case errors.Is(err, worker.ErrPanic):
		log.Error("scheduled run panicked", zap.Error(err))
	case err != nil && errors.Is(err, context.Canceled) && ctx.Err() != nil:
		log.Warn("scheduled run interrupted by the shutdown; the next firing of the same day resumes it", zap.Error(err))
	case err != nil:
		log.Error("scheduled run failed; finish it with `bindsync run --snapshot-date` once the cause is fixed",
			zap.Error(err), zap.Int("tries", tries))
	case res != nil && res.AlreadyPublished:
		log.Info("scheduled run found the snapshot already published")
	default:
		log.Info("scheduled run done", zap.Duration("duration", time.Since(start).Round(time.Millisecond)))
	}
}

// isUsage reports errors that another try cannot get past: configuration,
// credentials, permissions.
func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

// cronLogger passes the scheduler's own messages to zap: its routine ones
// at debug level, since serve logs the runs and the next run itself.
type cronLogger struct{ log *zap.Logger }

func (l cronLogger) Info(msg string, keysAndValues ...any) {
	l.log.Sugar().Debugw("cron: "+msg, keysAndValues...)
}

func (l cronLogger) Error(err error, msg string, keysAndValues ...any) {
	l.log.Sugar().Errorw("cron: "+msg, append([]any{"error", err}, keysAndValues...)...)
}

// skipLogger is the logger of cron.SkipIfStillRunning, whose only message
// is a skipped firing: it counts and logs it.
type skipLogger struct {
	log     *zap.Logger
	metrics *metrics.Metrics
}

func (l skipLogger) Info(msg string, keysAndValues ...any) {
	l.metrics.RunSkipped()
	l.log.Warn("scheduled run skipped: the previous run is still going")
}

func (l skipLogger) Error(err error, msg string, keysAndValues ...any) {
	l.log.Sugar().Errorw("cron: "+msg, append([]any{"error", err}, keysAndValues...)...)
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/config"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/metrics"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/worker"
)

// job is everything one run needs, built from the configuration.
type job struct {
	cfg        *config.Config
	client     *twilio.Client
	store      staging.Store
	publishers []exporter.Publisher
	// privacy is the privacy policy of export.columns, with its key.
	privacy *exporter.Privacy
	stats   *worker.Stats
	log     *zap.Logger
	// configFile is the configuration file the job was built from, named
	// in advice about credentials; empty when the configuration was made
	// in memory (demo, tests).
	configFile string
	// metrics counts the Twilio requests of the job's client and the users
	// its runs skip; the outcome of a run is recorded by whoever started it
	// (recordRun), since serve records runs it did not build.
	metrics *metrics.Metrics
	// afterRun hooks see every run's outcome, failed ones included (the
	// BigQuery sync_runs table is written by one).
	afterRun []func(ctx context.Context, res *worker.Result, err error)
	// closers release the clients the job opened (BigQuery, GCS), newest
	// first; serve builds a job per run and must not leak them.
	closers []func() error
}

// close releases what the job opened.
func (j *job) close() {
	for i := len(j.closers) - 1; i >= 0; i-- {
		if err := j.closers[i](); err != nil {
			j.log.Debug("close client", zap.Error(err))
		}
	}
	j.closers = nil
}

func newJob(ctx context.Context, cfg *config.Config, log *zap.Logger) (*job, error) {
	return newJobWithMetrics(ctx, cfg, log, metrics.New())
}

// newJobWithMetrics is newJob counting into m, which may outlive the job:
// serve builds a fresh job, and so fresh worker.Stats, for every run, and
// serves one m all along.
func newJobWithMetrics(ctx context.Context, cfg *config.Config, log *zap.Logger, m *metrics.Metrics) (*job, error) {
	return buildJob(ctx, cfg, log, m, true)
}

// newPublishJob is newJob without a Twilio client, for publish, which
// never calls Twilio: its configuration need not hold the Twilio secrets
// (publishReads).
func newPublishJob(ctx context.Context, cfg *config.Config, log *zap.Logger) (*job, error) {
	return buildJob(ctx, cfg, log, metrics.New(), false)
}

func buildJob(ctx context.Context, cfg *config.Config, log *zap.Logger, m *metrics.Metrics, withClient bool) (*job, error) {
	j := &job{cfg: cfg, log: log, stats: &worker.Stats{}, metrics: m}
	var err error
	// Validate has checked the policy; a failure here is a configuration
	// built in code that skipped it. The error never holds the key.
	if j.privacy, err = cfg.Export.Columns.Privacy(); err != nil {
		return nil, usagef("export.columns: %v", err)
	}
	j.store, err = openStaging(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if c, ok := j.store.(io.Closer); ok {
		j.closers = append(j.closers, c.Close)
	}
	if withClient {
		if err := j.connectTwilio(m); err != nil {
			j.close()
			return nil, err
		}
	}
	if l := cfg.Warehouse.Local; l != nil {
		j.publishers = append(j.publishers, exporter.LocalWarehouse{Path: l.Path})
	}
	if cfg.Warehouse.BigQuery != nil {
		if err := setupBigQuery(ctx, j); err != nil {
			j.close()
			return nil, err
		}
	}
	return j, nil
}

// connectTwilio makes the job's Twilio client, counting into m.
func (j *job) connectTwilio(m *metrics.Metrics) error {
	cfg, log, observe := j.cfg, j.log, m.Hooks()
	var err error
	j.client, err = twilio.New(twilio.Config{
		BaseURL:           cfg.Twilio.BaseURL,
		Username:          cfg.Twilio.Username(),
		Password:          cfg.Twilio.Password(),
		UserAgent:         "bindsync/" + version,
		RequestTimeout:    cfg.Twilio.RequestTimeout,
		MaxAttempts:       cfg.Twilio.MaxAttempts,
		MaxInFlight:       cfg.Twilio.Concurrency,
		RequestsPerSecond: cfg.Twilio.RequestsPerSecond,
		MaxBodyBytes:      int64(cfg.Twilio.MaxResponseBytes),
		UnavailableAfter:  cfg.Twilio.UnavailableAfter,
		Hooks: twilio.Hooks{
			OnPageSizeFallback: func(kind string, asked, used int) {
				log.Warn("Twilio rejected the page size; going on with its documented maximum for the rest of the run",
					zap.String("list", kind), zap.Int("asked", asked), zap.Int("used", used))
			},
			OnRequest: observe.OnRequest,
			InFlight:  observe.InFlight,
			OnLimitChange: func(limit int, reason string) {
				observe.OnLimitChange(limit, reason)
				log.Debug("Twilio requests in flight capped", zap.Int("limit", limit), zap.String("reason", reason))
			},
			OnRetry: func(reason string, attempt int, wait time.Duration) {
				j.stats.Retries.Add(1)
				observe.OnRetry(reason, attempt, wait)
				log.Debug("retrying Twilio request", zap.String("reason", reason), zap.Int("attempt", attempt), zap.Duration("wait", wait))
			},
		},
	})
	if err != nil {
		return usagef("twilio: %v", err)
	}
	m.SetConcurrencyLimit(j.client.InFlightLimit())
	return nil
}

func openStaging(ctx context.Context, cfg *config.Config) (staging.Store, error) {
	if cfg.StagingIsGCS() {
		return openGCSStaging(ctx, cfg)
	}
	s, err := staging.NewDir(cfg.Staging)
	if err != nil {
		return nil, fmt.Errorf("open staging directory: %w", err)
	}
	return s, nil
}

func (j *job) services() []worker.Service {
	out := make([]worker.Service, len(j.cfg.Services))
	for i, s := range j.cfg.Services {
		out[i] = worker.Service{SID: s.SID, AllUsers: s.Users.All, Users: s.Users.List, BindingTypes: s.BindingTypes, Strategy: s.Strategy}
	}
	return out
}

// lockWait is how long a run waits for its snapshot's lock: a little
// longer than a lock can outlive a killed run (a GCS lease until it
// expires; a local lock not at all), so that the run takes over.
func (j *job) lockWait() time.Duration {
	l, ok := j.store.(staging.Locker)
	if !ok {
		return 0
	}
	if ttl := staging.LockTTL(l); ttl > 0 {
		return ttl + 10*time.Second
	}
	return 0
}

// options are the worker's options from the configuration, shared by run
// and publish.
func (j *job) options() worker.Options {
	return worker.Options{
		Services:       j.services(),
		PageSize:       j.cfg.Twilio.PageSize,
		UsersPageSize:  j.cfg.Twilio.UsersPageSize,
		Concurrency:    j.cfg.Twilio.Concurrency,
		Store:          j.store,
		Publishers:     j.publishers,
		Logger:         j.log,
		PartRows:       j.cfg.Export.PartRows,
		BatchRows:      j.cfg.Export.BatchRows,
		RowGroupRows:   j.cfg.Export.RowGroupRows,
		BatchBytes:     int64(j.cfg.Export.BatchBytes),
		RowGroupBytes:  int64(j.cfg.Export.RowGroupBytes),
		Privacy:        j.privacy,
		CommitInterval: j.cfg.Export.CommitInterval,
		LockWait:       j.lockWait(),
		Stats:          j.stats,
	}
}

// run runs one snapshot.
func (j *job) run(ctx context.Context, date time.Time, force bool, progress time.Duration) (*worker.Result, error) {
	if force {
		// The worker's Reset deletes the runs of the date: keep them.
		n, err := archiveRuns(ctx, j.store, date, time.Now(), j.log)
		if err != nil {
			return nil, fmt.Errorf("--force: %w (nothing was deleted)", err)
		}
		if n > 0 {
			j.log.Info("kept the earlier runs of the snapshot before starting it over",
				zap.Int("runs", n), zap.String("history", j.store.URI(historyPrefix(date))))
		}
	}
	skipped := j.stats.UsersSkipped.Load()
	opts := j.options()
	opts.ProgressInterval = progress
	opts.Force = force
	res, err := worker.Run(ctx, j.client, opts, date)
	j.metrics.AddUsersSkipped(j.stats.UsersSkipped.Load() - skipped)
	for _, hook := range j.afterRun {
		hook(context.WithoutCancel(ctx), res, err)
	}
	if errors.Is(err, twilio.ErrUnauthorized) {
		file := j.configFile
		if file == "" {
			file = "the configuration file in " + j.cfg.Dir
		}
		return res, usageError{withHint(err, fmt.Sprintf("Twilio refused the credentials: check twilio.account_sid and twilio.auth_token (or api_key_sid and api_key_secret) in %s", file))}
	}
	return res, err
}

// recordRun records the outcome of a run that began dur ago, after
// m.RunStarted, whatever its result: res is nil when the run stopped before
// it began. A run whose error wraps worker.ErrPanic counts as panicked,
// with the users and bindings its summary counted.
func recordRun(m *metrics.Metrics, res *worker.Result, err error, dur time.Duration) {
	var s checkpoint.RunSummary
	if res != nil {
		s = res.Summary
	}
	if errors.Is(err, worker.ErrPanic) {
		s.Status = checkpoint.RunPanicked
	}
	m.RunFinished(s, err, dur)
}

// pushTimeout bounds the push of a run's metrics, so that an unreachable
// Pushgateway cannot hold the process after its run.
const pushTimeout = 10 * time.Second

// pushMetrics pushes m to the configured Pushgateway, if any. A failed push
// is only a warning: the run's outcome and exit code stand.
func pushMetrics(ctx context.Context, cfg *config.Config, m *metrics.Metrics, log *zap.Logger) {
	if cfg.Metrics.Pushgateway == "" {
		return
	}
	// An interrupted run is worth reporting too: push even after ctx ends.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pushTimeout)
	defer cancel()
	if err := m.Push(ctx, cfg.Metrics.Pushgateway, cfg.Metrics.Job); err != nil {
		log.Warn("metrics not pushed", zap.Error(err))
		return
	}
	log.Debug("metrics pushed", zap.String("job", cfg.Metrics.Job))
}

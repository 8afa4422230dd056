// Package worker runs one snapshot. It owns the reading stage: the
// snapshot's lock, walking the configured services and users, paging
// through every user's bindings (or, with the service strategy, through
// a service's Bindings list once), streaming them into Parquet part files
// through the one writer goroutine, recording progress in the checkpoint
// log, and checking every committed part before anything is published.
// Once every user is read and every part checks out, it hands the
// snapshot to package publish (the second stage) and records the run's
// summary. A run that dies is resumed by the next run of the same
// snapshot date.
package worker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/publish"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio"
)

// Source is what the worker needs of Twilio; *twilio.Client implements it.
type Source interface {
	ListUsers(ctx context.Context, q twilio.UsersQuery) (*twilio.UsersPage, error)
	ListBindings(ctx context.Context, q twilio.BindingsQuery) (*twilio.BindingsPage, error)
	// ListServiceBindings reads the service-wide Bindings list, for the
	// service strategy.
	ListServiceBindings(ctx context.Context, q twilio.ServiceBindingsQuery) (*twilio.ServiceBindingsPage, error)
	// GetUser resolves a user by SID or identity (404: ErrNotFound).
	GetUser(ctx context.Context, serviceSID, user string) (*twilio.User, error)
}

var _ Source = (*twilio.Client)(nil)

// Service is one service to read and which users.
type Service struct {
	SID          string
	AllUsers     bool     // list users through the Users API
	Users        []string // else these SIDs or identities
	BindingTypes []string // optional filter
	// Strategy chooses how the service is walked; "" is StrategyAuto.
	Strategy Strategy
}

// Strategy is how a service's bindings are read.
type Strategy string

// Strategies. The service walk costs about users/100 + bindings/50
// requests, where the per-user walk costs at least one request per user,
// but each service's walk is two lists read one page after the other, so
// it keeps one request of the account in flight per service; the per-user
// walk reads Options.Concurrency users at once.
const (
	// StrategyAuto is StrategyService for a service read with AllUsers and
	// StrategyPerUser for a list of users.
	StrategyAuto Strategy = "auto"
	// StrategyPerUser reads each user's own Bindings list.
	StrategyPerUser Strategy = "per_user"
	// StrategyService lists the users once, for their SIDs, and reads the
	// service-wide Bindings list once. It needs AllUsers.
	StrategyService Strategy = "service"
)

// Strategies lists the valid values of Service.Strategy, for
// configuration checks and messages.
var Strategies = []Strategy{StrategyAuto, StrategyPerUser, StrategyService}

// Resolve returns the strategy the service is read with when the snapshot
// has no progress of its own for it: StrategyService or StrategyPerUser.
func (s Service) Resolve() Strategy {
	switch s.Strategy {
	case StrategyPerUser, StrategyService:
		return s.Strategy
	}
	if s.AllUsers {
		return StrategyService
	}
	return StrategyPerUser
}

// check reports a Service that Run cannot read.
func (s Service) check() error {
	switch {
	case s.Strategy != "" && !slices.Contains(Strategies, s.Strategy):
		return fmt.Errorf("service %s: unknown strategy %q (want one of auto, per_user, service)", s.SID, s.Strategy)
	case s.Strategy == StrategyService && !s.AllUsers:
		return fmt.Errorf("service %s: strategy %q reads every user of the service; it needs AllUsers", s.SID, s.Strategy)
	}
	return nil
}

// Options configure a run.
type Options struct {
	Services []Service
	// PageSize is the bindings page size asked of Twilio; UsersPageSize
	// the Users list's.
	PageSize      int
	UsersPageSize int
	Concurrency   int
	// MaxEmptyPages bounds the empty pages in a row that a list may serve
	// before it counts as a paging loop; 0 means twilio.DefaultMaxEmptyPages.
	MaxEmptyPages int
	Store         staging.Store
	// Locker takes the snapshot's lock; nil means Store, which must then
	// be a staging.Locker too (staging.Dir and gcs.Store are).
	Locker     staging.Locker
	Publishers []exporter.Publisher
	Logger     *zap.Logger

	// PartRows bounds the rows of a part file; CommitInterval bounds the
	// time between two checkpoints (and so the work a crash can lose).
	PartRows  int
	BatchRows int
	// RowGroupRows bounds a Parquet row group, the unit the writer holds
	// in memory; 0 means the exporter's default.
	RowGroupRows int
	// BatchBytes and RowGroupBytes bound a record batch and a row group
	// in bytes too, whatever the size of the values; 0 means the
	// exporter's defaults.
	BatchBytes, RowGroupBytes int64
	// Privacy is the privacy policy applied to the rows as they are
	// written into parts (and so to every table derived from them); nil
	// keeps every column.
	Privacy        *exporter.Privacy
	CommitInterval time.Duration
	// ProgressInterval is the period of progress log lines; 0 disables them.
	ProgressInterval time.Duration
	// Force starts the snapshot over even if it was published already.
	Force bool
	// LockWait is how long to wait for the snapshot's lock when another
	// run holds it. A lock on GCS is a lease that outlives a killed run
	// until it expires, so waiting a little longer than the lease lets the
	// next run take over; a local lock dies with its process, so 0 (fail
	// at once) suits it.
	LockWait time.Duration
	// Stats, when set, receives the live counters (for progress displays
	// and metrics); otherwise the run keeps its own.
	Stats *Stats
	// Now is the clock (tests); time.Now by default.
	Now func() time.Time
}

// Result is what a run did.
type Result struct {
	RunID            string
	Date             time.Time
	AlreadyPublished bool
	Summary          checkpoint.RunSummary
	Parts            []checkpoint.Part
	Rows             int64
	Failed           []checkpoint.UserFailed
	Published        []string // Describe() of each publisher
}

// Sentinel errors of Run.
var (
	// ErrUsersFailed: some users could not be read after retries; the
	// snapshot was not published, and the next run resumes.
	ErrUsersFailed = errors.New("some users could not be read")
	// ErrLocked: another run holds the snapshot.
	ErrLocked = errors.New("another bindsync run is working on this snapshot")
	// ErrLockLost: the snapshot's lock was lost during the run (another
	// process took it over or removed it, or it could not be renewed), so
	// the run stopped at once; its checkpoint holds the work committed.
	ErrLockLost = errors.New("lost the lock")
)

// MaxNamedFailures bounds the failed users a run names (in its summary and
// the checkpoint); the rest are counted. maxReasonBytes bounds each reason.
const (
	MaxNamedFailures = 1000
	maxReasonBytes   = 512
)

// Defaults of Options, applied by Run to zero fields. config.Default
// starts from the same values, so a configuration file and a program
// using this package alone get the same run.
const (
	// DefaultConcurrency reads as many users at once as the Twilio client
	// lets requests be in flight.
	DefaultConcurrency    = twilio.DefaultMaxInFlight
	DefaultPartRows       = 500_000
	DefaultCommitInterval = 30 * time.Second
)

func (o *Options) setDefaults() {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.PageSize <= 0 {
		o.PageSize = twilio.MaxBindingsPageSize
	}
	if o.UsersPageSize <= 0 {
		o.UsersPageSize = twilio.MaxUsersPageSize
	}
	if o.PartRows <= 0 {
		o.PartRows = DefaultPartRows
	}
	if o.BatchRows <= 0 {
		o.BatchRows = exporter.DefaultBatchRows
	}
	if o.CommitInterval <= 0 {
		o.CommitInterval = DefaultCommitInterval
	}
	if o.Locker == nil {
		o.Locker, _ = o.Store.(staging.Locker)
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Stats == nil {
		o.Stats = &Stats{}
	}
}

// Run reads and publishes the snapshot of date (UTC midnight). It returns
// ErrUsersFailed (wrapped, with the users named) when users failed,
// twilio.ErrUnauthorized when Twilio refused the credentials, and the
// context's error when interrupted, and ErrLockLost (wrapped: "lost the
// lock on snapshot D: ...") when the snapshot's lock was lost, which stops
// the run at once; in every case the checkpoint holds the work done so far.
func Run(ctx context.Context, src Source, opts Options, date time.Time) (res *Result, err error) {
	opts.setDefaults()
	for _, s := range opts.Services {
		if err := s.check(); err != nil {
			return nil, err
		}
	}
	date = time.Date(date.Year(), date.Month(), date.Day(), 0, 0, 0, 0, time.UTC)
	log := opts.Logger.With(zap.String("snapshot", date.Format(time.DateOnly)))
	store := opts.Store

	ctx, release, err := lockSnapshot(ctx, &opts, date, log)
	if err != nil {
		return nil, err
	}
	defer func() {
		// A run stopped by a lost lock says so first, whatever else its
		// stop caused (the finish entry may fail if another run appended).
		if lost := context.Cause(ctx); err != nil && errors.Is(lost, ErrLockLost) {
			if !strings.HasSuffix(err.Error(), lost.Error()) {
				log.Warn("run stopped after losing the snapshot lock", zap.Error(err))
			}
			err = lost
		}
		release()
	}()

	if opts.Force {
		// --force starts the date over whatever its state, a damaged
		// checkpoint included: that is the way out that loses nothing.
		log.Info("starting the snapshot over (--force)")
		if err := checkpoint.Reset(ctx, store, date); err != nil {
			return nil, err
		}
	}
	cp, err := checkpoint.Open(ctx, store, date)
	if err != nil {
		return nil, err
	}
	if st := cp.State(); st.Published {
		log.Info("snapshot already published; use --force to read it again",
			zap.Time("published_at", st.PublishedTime), zap.Int64("rows", st.Rows()))
		return &Result{Date: date, AlreadyPublished: true, Parts: st.Parts, Rows: st.Rows()}, nil
	}
	if err := checkResumedPrivacy(ctx, cp, store, opts.Privacy); err != nil {
		return nil, err
	}

	r := &run{
		opts:  opts,
		src:   src,
		store: store,
		cp:    cp,
		date:  date,
		log:   log,
		stats: opts.Stats,
		id:    checkpoint.NewRunID(opts.Now()),
	}
	return r.run(ctx)
}

// checkResumedPrivacy refuses to resume a snapshot whose committed parts
// were written under another privacy policy or key than p, at once rather
// than after reading the rest of it: publishing would refuse it anyway
// (publish checks every part), and only --force can mend it.
func checkResumedPrivacy(ctx context.Context, cp *checkpoint.Log, store staging.Store, p *exporter.Privacy) error {
	st := cp.State()
	if len(st.Parts) == 0 {
		return nil
	}
	parts := make([]exporter.PartInfo, len(st.Parts))
	for i, pt := range st.Parts {
		parts[i] = exporter.PartInfo{Name: pt.Name, Rows: pt.Rows, Bytes: pt.Bytes, CRC32C: pt.CRC32C}
	}
	snap := exporter.Snapshot{Date: st.Date, Store: store, Tables: []exporter.Table{{Name: exporter.BindingsTable, Parts: parts}}}
	// Only a part that says it was written under another policy stops the
	// run here: one that cannot be read (missing, damaged) is the part
	// check's to find, and its users are read again.
	if err := exporter.CheckPrivacy(ctx, snap, p); errors.Is(err, exporter.ErrPrivacyMismatch) {
		return fmt.Errorf("resume snapshot %s: %w", st.Date.Format(time.DateOnly), err)
	}
	return nil
}

type run struct {
	opts  Options
	src   Source
	store staging.Store
	cp    *checkpoint.Log
	date  time.Time
	log   *zap.Logger
	stats *Stats
	id    string
	start time.Time

	// resume is the checkpoint's unfinished users when the run began; the
	// fetchers read it while the writer changes the live state.
	resume map[checkpoint.UserRef]checkpoint.InFlight
	// claimed are the users this run has taken on, by service and SID.
	claimed *userSet
	// partSeq numbers the part files this run writes; names never repeat
	// within a run, whichever writer or repair writes them.
	partSeq atomic.Int64
	// failed are the users that failed in this run (at most
	// MaxNamedFailures), and violations the records that broke the API's
	// contract, by kind: each writer hands over its own when it ends.
	failed     []checkpoint.UserFailed
	violations map[string]int64
	// pageSizeNoted makes the run say once that Twilio serves smaller
	// pages than configured (meta.page_size is the truth).
	pageSizeNoted sync.Once
}

func (r *run) partOptions() exporter.PartOptions {
	return exporter.PartOptions{BatchRows: r.opts.BatchRows, RowGroupRows: r.opts.RowGroupRows, BatchBytes: r.opts.BatchBytes, RowGroupBytes: r.opts.RowGroupBytes, Privacy: r.opts.Privacy}
}

// newPartName returns the staging name of the run's next part file.
func (r *run) newPartName() string {
	return checkpoint.PartName(r.date, fmt.Sprintf("%s-%05d.parquet", r.id, r.partSeq.Add(1)))
}

func (r *run) run(ctx context.Context) (*Result, error) {
	r.start = r.opts.Now().UTC()
	r.stats.begin(time.Now(), r.opts.Services)
	st := r.cp.State()
	resumed := len(st.Runs) > 0
	r.violations = map[string]int64{}
	if err := r.cp.Append(ctx, checkpoint.Entry{Kind: checkpoint.KindStart, RunID: r.id, Time: r.start}); err != nil {
		return nil, err
	}
	r.log.Info("run started", zap.String("run_id", r.id), zap.Bool("resumed", resumed),
		zap.Int("services", len(r.opts.Services)), zap.Int64("users_done_before", st.UsersDone),
		zap.Int("users_in_flight", len(st.InFlight)), zap.Int("parts", len(st.Parts)))

	// Work that must survive cancellation (the last commit, the finish
	// entry) uses a context that is not cancelled with the run.
	saveCtx := context.WithoutCancel(ctx)

	readErr := r.read(ctx, saveCtx)
	// Parts are checked before anything is published: a part that is
	// missing, cut short or damaged leaves the snapshot, and its users are
	// read again, in this run, until every part checks out.
	for round := 1; readErr == nil && r.stats.UsersFailed.Load() == 0; round++ {
		bad, err := r.verifyParts(ctx, saveCtx)
		if err != nil || !bad {
			readErr = err
			break
		}
		if round == maxRepairRounds {
			readErr = fmt.Errorf("parts of snapshot %s still damaged after %d rounds of reading their users again: check the staging store", r.date.Format(time.DateOnly), round)
			break
		}
		readErr = r.read(ctx, saveCtx)
	}

	summary := r.summary()
	res := &Result{RunID: r.id, Date: r.date}
	finish := func(status checkpoint.RunStatus, err error) (*Result, error) {
		summary.Status = status
		summary.End = r.opts.Now().UTC()
		if err != nil {
			summary.Error = err.Error()
		}
		st := r.cp.State()
		res.Summary = summary
		res.Parts = st.Parts
		res.Rows = st.Rows()
		res.Failed = summary.UsersFailed
		if aerr := r.cp.Append(saveCtx, checkpoint.Entry{Kind: checkpoint.KindFinish, RunID: r.id, Run: &summary}); aerr != nil {
			return res, errors.Join(err, aerr)
		}
		r.logSummary(summary)
		return res, err
	}

	switch {
	case readErr != nil && ctx.Err() != nil:
		return finish(checkpoint.RunInterrupted, fmt.Errorf("interrupted: %w", context.Cause(ctx)))
	case readErr != nil:
		return finish(checkpoint.RunFailed, readErr)
	case summary.UsersFailedCount > 0:
		return finish(checkpoint.RunFailed, failedError(summary.UsersFailed, summary.UsersFailedCount))
	}

	if err := r.publish(ctx, res); err != nil {
		if ctx.Err() != nil {
			return finish(checkpoint.RunInterrupted, fmt.Errorf("interrupted while publishing: %w", err))
		}
		return finish(checkpoint.RunFailed, err)
	}
	return finish(checkpoint.RunSucceeded, nil)
}

func failedError(failed []checkpoint.UserFailed, count int64) error {
	var b strings.Builder
	for i, f := range failed {
		if i == 10 {
			fmt.Fprintf(&b, "; and %d more", count-10)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		if f.User == checkpoint.ServiceWalkUser {
			fmt.Fprintf(&b, "service %s (its Bindings list): %s", f.Service, f.Reason)
			continue
		}
		fmt.Fprintf(&b, "service %s user %q: %s", f.Service, f.User, f.Reason)
	}
	return fmt.Errorf("%w (%d): %s", ErrUsersFailed, count, b.String())
}

func (r *run) summary() checkpoint.RunSummary {
	s := r.stats.Snapshot()
	failed := slices.Clone(r.failed)
	sort.Slice(failed, func(i, j int) bool { return failed[i].String() < failed[j].String() })
	return checkpoint.RunSummary{
		RunID:              r.id,
		Start:              r.start,
		Services:           int(s.Services),
		UsersTotal:         s.UsersTotal,
		UsersDone:          s.UsersDone,
		UsersGone:          s.UsersGone,
		UsersNotFound:      s.UsersNotFound,
		UsersFailed:        failed,
		UsersFailedCount:   s.UsersFailed,
		Bindings:           s.Bindings,
		Pages:              s.Pages,
		Retries:            s.Retries,
		ContractViolations: maps.Clone(r.violations),
	}
}

func (r *run) logSummary(s checkpoint.RunSummary) {
	fields := []zap.Field{
		zap.String("run_id", s.RunID), zap.String("status", string(s.Status)),
		zap.Duration("duration", s.End.Sub(s.Start).Round(time.Millisecond)),
		zap.Int("services", s.Services), zap.Int64("users_total", s.UsersTotal),
		zap.Int64("users_done", s.UsersDone), zap.Int64("users_skipped", r.stats.UsersSkipped.Load()),
		zap.Int64("users_gone", s.UsersGone), zap.Int64("users_not_found", s.UsersNotFound), zap.Int64("users_failed", s.UsersFailedCount),
		zap.Int64("bindings", s.Bindings), zap.Int64("pages", s.Pages), zap.Int64("retries", s.Retries),
		zap.Int64("snapshot_rows", r.cp.State().Rows()), zap.Int("parts", len(r.cp.State().Parts)),
	}
	for _, f := range s.UsersFailed {
		r.log.Error("user failed", zap.String("service_sid", f.Service), zap.String("user", f.User), zap.String("reason", f.Reason))
	}
	if s.Status == checkpoint.RunSucceeded {
		r.log.Info("run finished", fields...)
	} else {
		r.log.Error("run finished", append(fields, zap.String("error", s.Error))...)
	}
}

// publish hands the read snapshot to the publishing stage. Files left in
// staging after the snapshot is published are only a warning: the
// snapshot is visible, and the run succeeded.
func (r *run) publish(ctx context.Context, res *Result) error {
	published, err := publish.Snapshot(ctx, r.cp, publish.Options{
		Store:       r.store,
		Publishers:  r.opts.Publishers,
		RunID:       r.id,
		PartOptions: r.partOptions(),
		SyncedAt:    r.start,
		Logger:      r.log,
	})
	res.Published = published
	if err == nil || errors.Is(err, publish.ErrNotCleaned) {
		removeUsersFiles(context.WithoutCancel(ctx), r.store, r.cp.State().UsersFiles(), r.log)
	}
	if errors.Is(err, publish.ErrNotCleaned) {
		r.log.Warn("snapshot published; some of its files stay in staging", zap.Error(err))
		return nil
	}
	return err
}

// removeUsersFiles removes the users files of the walks of a published
// snapshot from staging: the users table holds them now. A file left
// behind is only a warning, as for parts.
func removeUsersFiles(ctx context.Context, store staging.Store, files []checkpoint.Part, log *zap.Logger) {
	for _, f := range files {
		if err := store.Delete(ctx, f.Name); err != nil && !errors.Is(err, staging.ErrNotExist) {
			log.Warn("remove the users file of a published walk from staging", zap.String("file", store.URI(f.Name)), zap.Error(err))
		}
	}
}

// read walks every user and streams their bindings into committed parts.
func (r *run) read(ctx, saveCtx context.Context) error {
	st := r.cp.State()
	r.resume = make(map[checkpoint.UserRef]checkpoint.InFlight, len(st.InFlight))
	for u, f := range st.InFlight {
		r.resume[u] = *f
	}
	// A writer that fails (a full disk, a staging store that refuses
	// writes) stops the fetchers: what they read could not be kept.
	readCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	w := newWriter(r, saveCtx)
	w.onError = stop
	// The buffer holds a page of users or two beyond the fetchers' own, so
	// that a Users list runs ahead of them and no fetcher waits for it.
	jobs := make(chan job, r.opts.Concurrency+2*r.opts.UsersPageSize)

	g, gctx := errgroup.WithContext(readCtx)
	writerDone := make(chan error, 1)
	go func() { writerDone <- w.loop() }()

	stopProgress := r.startProgress()
	defer stopProgress()

	r.claimed = newUserSet(r.opts.Services)
	p := r.plan(st)
	// Walks given up go first, before any row of their services is
	// written again.
	for _, svc := range p.drop {
		if err := w.sendWait(event{kind: evWalkDrop, user: checkpoint.UserRef{Service: svc, User: checkpoint.ServiceWalkUser}}); err != nil {
			w.close()
			<-writerDone
			return err
		}
	}
	for _, wp := range p.walks {
		g.Go(func() (err error) {
			defer recoverInto(&err, "walk service "+wp.svc.SID)
			return r.walkService(gctx, w, wp.svc, wp.resume)
		})
	}
	g.Go(func() (err error) {
		defer close(jobs)
		defer recoverInto(&err, "list users")
		return r.enumerate(gctx, jobs, p.perUser)
	})
	for i := 0; i < r.opts.Concurrency; i++ {
		g.Go(func() (err error) {
			defer recoverInto(&err, "read bindings")
			for j := range jobs {
				if err := r.readUser(gctx, w, j); err != nil {
					return err
				}
			}
			return nil
		})
	}
	err := g.Wait()
	if err == nil && readCtx.Err() == nil {
		// Users that a crashed run had begun but that no longer exist
		// (deleted, or taken out of the configuration) lose the rows read
		// so far, so that the snapshot holds no half user.
		for u := range r.resume {
			if !r.claimed.has(u) {
				w.send(event{kind: evDrop, user: u})
			}
		}
	}
	// Every user is claimed by now: the set (some 16 bytes a user) is not
	// needed for publishing, whose peak memory it would add to.
	r.claimed = nil
	w.close()
	werr := <-writerDone
	// The writer is done: what it recorded is the run's now.
	r.failed = append(r.failed, w.failed...)
	for k, n := range w.violations {
		r.violations[k] += n
	}
	if werr != nil && ctx.Err() == nil {
		return werr // the fetchers' errors only echo the writer's cancel
	}
	if err == nil {
		err = ctx.Err()
	}
	return errors.Join(err, werr)
}

type job struct {
	svc  *Service
	user checkpoint.UserRef
	// sid and identity are what is known of the user before reading it:
	// both from the Users API, or the configured string, which is one or
	// the other.
	sid, identity string
	// name is the configured string ("" for users found by listing).
	name string
}

// walkPlan is a service to walk in this read, from resume.
type walkPlan struct {
	svc    *Service
	resume checkpoint.Walk
}

// readPlan says how each configured service is read: user by user, by a
// walk, or not at all (its walk finished); and which walks in progress
// are given up.
type readPlan struct {
	perUser []*Service
	walks   []walkPlan
	drop    []string
}

// plan chooses the walk of every service from its strategy and from what
// the snapshot holds already: a service is read one way within a
// snapshot, so a service begun user by user goes on that way, a finished
// walk stands, and a walk in progress whose service is now read user by
// user (or no longer configured) is given up, its rows dropped.
func (r *run) plan(st *checkpoint.State) readPlan {
	var p readPlan
	configured := map[string]bool{}
	for i := range r.opts.Services {
		svc := &r.opts.Services[i]
		configured[svc.SID] = true
		log := r.log.With(zap.String("service_sid", svc.SID))
		want := svc.Resolve()
		switch done, walk := st.WalksDone[svc.SID], st.Walks[svc.SID]; {
		case done != nil:
			if want != StrategyService {
				log.Info("service read whole by its Bindings list in this snapshot; its users are not read again (run --force to read it with strategy per_user)")
			}
			n := done.UsersFile.Rows
			ss := r.stats.Service(svc.SID)
			r.stats.UsersTotal.Add(n)
			r.stats.UsersSkipped.Add(n)
			ss.UsersTotal.Add(n)
			ss.UsersFinished.Add(n)
		case walk != nil && want == StrategyService:
			p.walks = append(p.walks, walkPlan{svc: svc, resume: *walk})
		case walk != nil:
			log.Info("giving up the walk of the service begun in this snapshot: it is read user by user now")
			p.drop = append(p.drop, svc.SID)
			p.perUser = append(p.perUser, svc)
		case want == StrategyService && st.PerUser[svc.SID]:
			log.Info("service begun user by user in this snapshot; finishing it that way (run --force to read it with strategy service)")
			p.perUser = append(p.perUser, svc)
		case want == StrategyService:
			p.walks = append(p.walks, walkPlan{svc: svc})
		default:
			p.perUser = append(p.perUser, svc)
		}
	}
	for _, svc := range slices.Sorted(maps.Keys(st.Walks)) {
		if !configured[svc] {
			r.log.Info("giving up the walk of a service no longer configured", zap.String("service_sid", svc))
			p.drop = append(p.drop, svc)
		}
	}
	return p
}

// enumerate sends every user still to read of services, listing the users
// of every service at once, so that the fetchers always have users to read
// while one list waits for a page. A user named twice (a Users page that
// repeats it, a configuration naming it twice) is sent once: users are
// claimed by service and SID.
func (r *run) enumerate(ctx context.Context, jobs chan<- job, services []*Service) error {
	emit := func(svc *Service, sid, identity, name string) error {
		ss := r.stats.Service(svc.SID)
		var u checkpoint.UserRef
		if sid != "" {
			u = checkpoint.UserRef{Service: svc.SID, User: sid}
			if !r.claimed.claim(u) {
				r.log.Debug("user named twice; read once", zap.String("service_sid", svc.SID), zap.String("user_sid", sid))
				return nil
			}
		} else {
			// An identity: the fetcher resolves it to a SID and claims it.
			u = checkpoint.UserRef{Service: svc.SID, User: identity}
		}
		r.stats.UsersTotal.Add(1)
		ss.UsersTotal.Add(1)
		if r.cp.IsDone(u) {
			r.stats.UsersSkipped.Add(1)
			ss.UsersFinished.Add(1)
			return nil
		}
		select {
		case jobs <- job{svc: svc, user: u, sid: sid, identity: identity, name: name}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, svc := range services {
		g.Go(func() (err error) {
			defer recoverInto(&err, "list users of service "+svc.SID)
			if svc.AllUsers {
				return r.listUsers(ctx, svc, emit)
			}
			for _, u := range svc.Users {
				sid, identity := "", u
				if checkpoint.IsUserSID(u) {
					sid, identity = u, ""
				}
				if err := emit(svc, sid, identity, u); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// listUsers walks the Users list of svc, calling emit for every user.
func (r *run) listUsers(ctx context.Context, svc *Service, emit func(svc *Service, sid, identity, name string) error) error {
	r.stats.Listing.Add(1)
	r.stats.Service(svc.SID).Listing.Store(true)
	defer func() {
		r.stats.Listing.Add(-1)
		r.stats.Service(svc.SID).Listing.Store(false)
	}()
	next := ""
	guard := twilio.NewPageGuard("users of service "+svc.SID, r.opts.MaxEmptyPages)
	for {
		page, err := r.src.ListUsers(ctx, twilio.UsersQuery{ServiceSID: svc.SID, PageSize: r.opts.UsersPageSize, Next: next})
		if err != nil {
			return fmt.Errorf("list users of service %s: %w", svc.SID, err)
		}
		if err := guard.Check(page.Next, len(page.Users)); err != nil {
			return fmt.Errorf("list users of service %s: %w", svc.SID, err)
		}
		for _, u := range page.Users {
			if !checkpoint.IsUserSID(u.SID) {
				return fmt.Errorf("list users of service %s: %w: a user has SID %q", svc.SID, twilio.ErrBadResponse, u.SID)
			}
			identity := ""
			if u.Identity != nil {
				identity = *u.Identity
			}
			if err := emit(svc, u.SID, identity, ""); err != nil {
				return err
			}
		}
		if page.Next == "" {
			return nil
		}
		next = page.Next
	}
}

// readUser pages through one user's bindings, handing every page to the
// writer. Only errors that must stop the whole run are returned; a user
// that fails is recorded and the run goes on.
func (r *run) readUser(ctx context.Context, w *writer, j job) error {
	ss := r.stats.Service(j.svc.SID)
	if j.sid == "" {
		ok, err := r.resolve(ctx, w, &j)
		if !ok || err != nil {
			return err
		}
	}
	log := r.log.With(zap.String("service_sid", j.user.Service), zap.String("user_sid", j.user.User))
	q := twilio.BindingsQuery{ServiceSID: j.svc.SID, User: j.user.User, UserSID: j.sid, BindingTypes: j.svc.BindingTypes, PageSize: r.opts.PageSize}
	guard := twilio.NewPageGuard(fmt.Sprintf("bindings of user %s in service %s", j.user.User, j.svc.SID), r.opts.MaxEmptyPages)
	resumed := false
	if f, ok := r.resume[j.user]; ok && f.Next != "" {
		q.Next = f.Next
		guard.Resume(f.Next)
		resumed = true
		log.Debug("resuming user", zap.String("page", f.Next), zap.Int64("bindings_before", f.Bindings))
	}
	fail := func(err error) error {
		log.Error("user failed", zap.Error(err))
		w.send(event{kind: evFailed, user: j.user, reason: err.Error()})
		ss.UsersFinished.Add(1)
		return nil
	}
	first := true
	for {
		page, err := r.src.ListBindings(ctx, q)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case stopsRun(err):
			return err
		case errors.Is(err, twilio.ErrNotFound) && first && !resumed && j.name != "":
			// A configured user that Twilio does not know at all.
			log.Warn("configured user not found", zap.Error(err))
			w.send(event{kind: evNotFound, user: j.user})
			ss.UsersFinished.Add(1)
			return nil
		case errors.Is(err, twilio.ErrNotFound):
			log.Info("user not found; it was deleted", zap.Error(err))
			w.send(event{kind: evGone, user: j.user})
			ss.UsersFinished.Add(1)
			return nil
		case first && resumed && errors.Is(err, twilio.ErrPageTokenRejected):
			log.Warn("saved page token rejected; reading the user again from the first page", zap.Error(err))
			if err := w.sendWait(event{kind: evRestart, user: j.user}); err != nil {
				return err
			}
			q.Next, first, resumed = "", false, false
			guard = twilio.NewPageGuard(fmt.Sprintf("bindings of user %s in service %s", j.user.User, j.svc.SID), r.opts.MaxEmptyPages)
			continue
		default:
			return fail(err)
		}
		first = false
		// A page that repeats one seen before is not written: its rows
		// would be in the snapshot twice.
		if err := guard.Check(page.Next, len(page.Bindings)); err != nil {
			return fail(err)
		}
		if ps := page.Meta.PageSize; ps > 0 && ps < r.opts.PageSize {
			r.pageSizeNoted.Do(func() {
				r.log.Info("Twilio serves fewer bindings per page than twilio.page_size asks", zap.Int("page_size", ps), zap.Int("configured", r.opts.PageSize))
			})
		}
		r.stats.Pages.Add(1)
		r.stats.Bindings.Add(int64(len(page.Bindings)))
		ss.Bindings.Add(int64(len(page.Bindings)))
		w.send(event{kind: evPage, user: j.user, bindings: page.Bindings, next: page.Next, sid: j.sid, identity: j.identity, name: j.name})
		if page.Next == "" {
			ss.UsersFinished.Add(1)
			return nil
		}
		q.Next = page.Next
	}
}

// stopsRun reports whether err from Twilio must end the whole run rather
// than fail one user: credentials refused, or Twilio down for every request.
func stopsRun(err error) bool {
	return errors.Is(err, twilio.ErrUnauthorized) || errors.Is(err, twilio.ErrUnavailable)
}

// resolve looks a configured identity up (GET /Users/{Identity}) and turns
// j into a job keyed by the user's SID: the Bindings list is read by SID,
// and a user named both ways is read once. It reports false when there is
// nothing more to do for j (not found, failed, named twice, or finished by
// an earlier run); the error is one that stops the run.
func (r *run) resolve(ctx context.Context, w *writer, j *job) (bool, error) {
	ss := r.stats.Service(j.svc.SID)
	u, err := r.src.GetUser(ctx, j.svc.SID, j.identity)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return false, ctx.Err()
	case stopsRun(err):
		return false, err
	case errors.Is(err, twilio.ErrNotFound):
		r.log.Warn("configured user not found", zap.String("service_sid", j.svc.SID), zap.String("user", j.identity), zap.Error(err))
		w.send(event{kind: evNotFound, user: j.user})
		ss.UsersFinished.Add(1)
		return false, nil
	default:
		r.log.Error("user failed", zap.String("service_sid", j.svc.SID), zap.String("user", j.identity), zap.Error(err))
		w.send(event{kind: evFailed, user: j.user, reason: err.Error()})
		ss.UsersFinished.Add(1)
		return false, nil
	}
	j.sid = u.SID
	if u.Identity != nil {
		j.identity = *u.Identity
	}
	j.user = checkpoint.UserRef{Service: j.svc.SID, User: u.SID}
	if !r.claimed.claim(j.user) {
		r.log.Debug("user named twice; read once", zap.String("service_sid", j.svc.SID), zap.String("user_sid", u.SID), zap.String("identity", j.name))
		r.stats.UsersTotal.Add(-1)
		ss.UsersTotal.Add(-1)
		return false, nil
	}
	if r.cp.IsDone(j.user) {
		r.stats.UsersSkipped.Add(1)
		ss.UsersFinished.Add(1)
		return false, nil
	}
	return true, nil
}

// recoverInto turns a panic of the calling goroutine into *err, an error
// of the run wrapping ErrPanic, so that a bug in one goroutine ends the run
// with the reason named (exit 1) instead of killing the process.
func recoverInto(err *error, what string) {
	if v := recover(); v != nil {
		*err = fmt.Errorf("%s: %w", what, Recovered(v))
	}
}

func (r *run) startProgress() (stop func()) {
	if r.opts.ProgressInterval <= 0 {
		return func() {}
	}
	t := time.NewTicker(r.opts.ProgressInterval)
	done := make(chan struct{})
	go func() {
		defer func() {
			if v := recover(); v != nil {
				r.log.Error("progress reporting stopped", zap.Error(Recovered(v)))
			}
		}()
		for {
			select {
			case <-t.C:
				s := r.stats.Snapshot()
				eta := zap.Skip()
				if d := s.ETA(); d > 0 {
					eta = zap.Duration("eta", d.Round(time.Second))
				}
				r.log.Info("progress",
					zap.Int64("users_finished", s.Finished()), zap.Int64("users_total", s.UsersTotal),
					zap.Bool("listing_users", s.Listing), zap.Int64("bindings", s.Bindings),
					zap.Int64("pages", s.Pages), zap.Int64("retries", s.Retries),
					zap.Int64("users_failed", s.UsersFailed), zap.Int64("parts", s.Parts),
					zap.Float64("bindings_per_second", float64(int64(s.Rate()*10))/10),
					eta)
			case <-done:
				return
			}
		}
	}()
	return func() { t.Stop(); close(done) }
}

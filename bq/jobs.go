package bq

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"

	"cloud.google.com/go/bigquery"
	"go.uber.org/zap"

	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/internal/wait"
)

// submitFunc submits one job under the given ID.
type submitFunc func(ctx context.Context, jobID string) (*bigquery.Job, error)

// step is one job of a publish, tracked in the journal under its name.
type step struct {
	name   string // e.g. "load", "g1_load_p0003", "g1_copy"
	what   string // for messages: "load part p into t$20261126"
	target string // table (with decorator) the job writes, for messages
	submit submitFunc
}

// publish is one Publish call: the snapshot, its journal and the token
// that makes its job IDs unique.
type publish struct {
	p       *Publisher
	s       exporter.Snapshot
	parts   []exporter.PartInfo // of the table Options.Source
	journal exporter.Journal
	prefix  string // journal key prefix
	token   string
	log     *zap.Logger
}

// newPublish reads (or starts) the snapshot's publishing state. The token
// is the ID of the run that first published the snapshot: every job ID of
// the snapshot includes it, so a snapshot read again with --force (which
// starts a new checkpoint) never adopts the jobs of the old one. A table
// with a Version keeps its state per version, and the version is part of
// the token, so that a new version is loaded by new jobs rather than taken
// for done.
func (p *Publisher) newPublish(ctx context.Context, s exporter.Snapshot, t exporter.Table) (*publish, error) {
	j := s.Journal
	if j == nil {
		j = &memJournal{}
	}
	pub := &publish{
		p:       p,
		s:       s,
		parts:   t.Parts,
		journal: j,
		prefix:  "bigquery/" + p.opts.Project + "." + p.opts.Dataset + "." + p.opts.Table + "/",
		log:     p.log.With(zap.String("snapshot", day(s.Date))),
	}
	version := sanitizeID(t.Version)
	if version != "" {
		pub.prefix += version + "/"
	}
	pub.token = j.Get(pub.prefix + "token")
	if pub.token == "" {
		pub.token = sanitizeID(s.RunID)
		if pub.token == "" {
			pub.token = strconv.FormatInt(p.opts.Now().UnixNano(), 36)
		}
		if version != "" {
			pub.token += "_" + version
		}
		if err := j.Set(ctx, map[string]string{pub.prefix + "token": pub.token}); err != nil {
			return nil, fmt.Errorf("bigquery: save publishing state: %w", err)
		}
	}
	return pub, nil
}

// jobID builds the deterministic ID of one attempt of a step, such as
// bindsync_user_bindings_20261126_20261126T020000Z-ab12cd_load_p0003_a1.
func (pub *publish) jobID(stepName string, attempt int) string {
	return fmt.Sprintf("bindsync_%s_%s_%s_%s_a%d", idPart(pub.p.opts.Table), partitionID(pub.s.Date), pub.token, stepName, attempt)
}

// idPart keeps a table name short enough for a job ID (at most 1024
// characters); a long name is cut and made unique again with its hash.
func idPart(name string) string {
	name = sanitizeID(name)
	if len(name) <= 100 {
		return name
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	return fmt.Sprintf("%s_%016x", name[:80], h.Sum64())
}

// sanitizeID replaces what a job ID may not hold (anything but letters,
// digits, '_' and '-') with '_'.
func sanitizeID(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, s)
}

func (pub *publish) key(stepName, field string) string {
	return pub.prefix + stepName + "." + field
}

// done reports whether the journal marks the step done.
func (pub *publish) done(stepName string) bool {
	return pub.journal.Get(pub.key(stepName, "done")) != ""
}

// run runs one step exactly once across runs. A step marked done is
// skipped. Otherwise the job of the recorded attempt is submitted (or
// adopted if it exists) and waited for; the step is marked done when it
// succeeds. A failed job moves the step to the next attempt number in the
// journal before anything else, so its ID is never used again; up to
// MaxAttempts jobs are tried in one run when the failure may be transient.
func (pub *publish) run(ctx context.Context, st step) error {
	if pub.done(st.name) {
		pub.log.Debug("step already done", zap.String("step", st.name))
		return nil
	}
	attempt, _ := strconv.Atoi(pub.journal.Get(pub.key(st.name, "attempt")))
	if attempt < 1 {
		attempt = 1
	}
	sc := pub.p.scope(st.target)
	for try := 1; ; try++ {
		id := pub.jobID(st.name, attempt)
		// Record the ID before the job can exist, so that a crash right
		// after submitting still finds it.
		if pub.journal.Get(pub.key(st.name, "job")) != id {
			if err := pub.journal.Set(ctx, map[string]string{
				pub.key(st.name, "attempt"): strconv.Itoa(attempt),
				pub.key(st.name, "job"):     id,
			}); err != nil {
				return fmt.Errorf("bigquery: save job ID %s: %w", id, err)
			}
		}
		jobErr, err := pub.p.runJob(ctx, id, st.submit, pub.log.With(zap.String("step", st.name)))
		if err != nil {
			return sc.explain(st.what, err)
		}
		if jobErr == nil {
			if err := pub.journal.Set(ctx, map[string]string{pub.key(st.name, "done"): id}); err != nil {
				return fmt.Errorf("bigquery: save the end of job %s: %w", id, err)
			}
			return nil
		}
		attempt++
		if err := pub.journal.Set(ctx, map[string]string{pub.key(st.name, "attempt"): strconv.Itoa(attempt)}); err != nil {
			return fmt.Errorf("bigquery: save the failure of job %s: %w", id, err)
		}
		if !retryableJob(jobErr) {
			return sc.explain(st.what, jobErr)
		}
		if try >= pub.p.opts.MaxAttempts {
			f, _ := failureOf(jobErr)
			return &Error{Kind: ErrJobFailed, Err: jobErr, Msg: fmt.Sprintf(
				"%s failed %d times (last job %s: %s, reason %q): run again later; the next run resumes with a new attempt",
				st.what, try, id, f.message, f.reason)}
		}
		pub.log.Warn("job failed; retrying under a new job ID", zap.String("job_id", id), zap.Error(jobErr))
	}
}

// runJob submits a job under id, or adopts the job that already has this
// ID, and waits until it is done. jobErr is the job's own failure; err is
// a failure to submit or to follow the job.
func (p *Publisher) runJob(ctx context.Context, id string, submit submitFunc, log *zap.Logger) (jobErr, err error) {
	job, err := p.submit(ctx, id, submit, log)
	if err != nil {
		return nil, err
	}
	status, err := p.wait(ctx, job)
	if err != nil {
		return nil, err
	}
	if jobErr := status.Err(); jobErr != nil {
		return jobErr, nil
	}
	log.Info("job done", zap.String("job_id", id))
	return nil, nil
}

// submit sends the job, adopting an existing job of the same ID (our own
// earlier attempt, whose answer was lost or whose run was killed), and
// sends it again after a transient failure: the fixed ID makes that safe.
func (p *Publisher) submit(ctx context.Context, id string, submit submitFunc, log *zap.Logger) (*bigquery.Job, error) {
	delay := p.opts.PollInterval
	for try := 1; ; try++ {
		job, err := submit(ctx, id)
		if err == nil {
			log.Info("job submitted", zap.String("job_id", id))
			return job, nil
		}
		if isDuplicate(err) {
			log.Info("job exists already; waiting for it", zap.String("job_id", id))
			return p.client.JobFromIDLocation(ctx, id, p.opts.Location)
		}
		if !retryableCall(err) || try >= p.opts.MaxAttempts {
			return nil, err
		}
		log.Warn("submitting job failed; sending it again", zap.String("job_id", id), zap.Error(err))
		if err := wait.Sleep(ctx, delay); err != nil {
			return nil, err
		}
		delay = min(2*delay, p.opts.MaxPollInterval)
	}
}

// wait polls the job until it is done, with a growing interval.
func (p *Publisher) wait(ctx context.Context, job *bigquery.Job) (*bigquery.JobStatus, error) {
	delay := p.opts.PollInterval
	status := job.LastStatus()
	for status == nil || !status.Done() {
		if err := wait.Sleep(ctx, delay); err != nil {
			return nil, err
		}
		delay = min(delay*3/2, p.opts.MaxPollInterval)
		var err error
		if status, err = job.Status(ctx); err != nil {
			return nil, err
		}
	}
	return status, nil
}

// memJournal keeps the state of a Publish whose caller has no durable
// journal; exactly-once then holds only within that call.
type memJournal struct {
	mu sync.Mutex
	kv map[string]string
}

func (m *memJournal) Get(key string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.kv[key]
}

func (m *memJournal) Set(_ context.Context, kv map[string]string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.kv == nil {
		m.kv = make(map[string]string)
	}
	for k, v := range kv {
		m.kv[k] = v
	}
	return nil
}

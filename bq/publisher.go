// Package bq publishes bindsync snapshots to BigQuery and records every
// run in a sync_runs table. The schemas of its tables are derived from the
// Arrow schemas of package schemas (Schema), pinned by testdata/.
//
// A snapshot replaces one partition of the user_bindings table
// (user_bindings$YYYYMMDD) with WRITE_TRUNCATE, so readers see the old or
// the new snapshot of a date, never a mix. From GCS staging, one load job
// reads every part where it already lies. From local staging, each part
// is uploaded by a load job into a staging table, which one copy job then
// moves into the partition.
//
// Every job has a deterministic ID built from the table, the snapshot, a
// token of the snapshot's checkpoint, the step and an attempt number, and
// the ID is saved in the snapshot's journal before the job is submitted. A
// run killed while publishing therefore finds its jobs again: a step marked
// done is skipped, a job that exists is adopted (BigQuery answers 409
// duplicate) and waited for, and a job that failed is retried under the
// next attempt number, since a failed job keeps its ID. Nothing is loaded
// twice.
package bq

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/bigquery"
	"go.uber.org/zap"

	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
)

// Defaults of Options.
const (
	DefaultMaxAttempts     = 3
	DefaultPollInterval    = 250 * time.Millisecond
	DefaultMaxPollInterval = 5 * time.Second
	DefaultStagingTTL      = 48 * time.Hour
	// DefaultLocation is where load jobs run when Options.Location is
	// empty: BigQuery's multi-region US, which must be the dataset's.
	DefaultLocation = "US"
	// RunsTable is the table that gets one row per run.
	RunsTable = "sync_runs"
	// LatestSuffix names the view of the newest snapshot: <table>_latest.
	LatestSuffix = "_latest"
	// UsersSuffix names the users table beside a bindings table:
	// <table>_users.
	UsersSuffix = "_users"
	// ChangesSuffix names the changes table beside a bindings table:
	// <table>_changes.
	ChangesSuffix = "_changes"
	// HistorySuffix names the view of validity intervals derived from the
	// changes table: <table>_history.
	HistorySuffix = "_history"
)

// Options configure a Publisher. Project, Dataset and Table are required.
type Options struct {
	Project  string
	Dataset  string
	Table    string
	Location string // default DefaultLocation
	// PartitionExpiration, when positive, makes BigQuery drop snapshots
	// older than this.
	PartitionExpiration time.Duration
	// Source is the table of the snapshot that this Publisher loads into
	// Table; "" means exporter.BindingsTable. A Publisher of the users
	// table has Source exporter.UsersTable and Schema
	// Schema(schemas.Users()) (or Schema of the privacy policy's
	// UsersSchema); one of the changes table has Source
	// exporter.ChangesTable and Schema Schema(schemas.Changes()) (or of the
	// policy's ChangesSchema).
	Source string
	// HistoryView names the view of validity intervals that a Publisher
	// of the changes table keeps beside it (see HistoryQuery). "" means
	// Table less ChangesSuffix plus HistorySuffix (user_bindings_history
	// beside user_bindings_changes); "-" means none. Publishers of other
	// tables keep no such view.
	HistoryView string
	// Schema is the schema of the table; nil means Schema(schemas.Binding()).
	// A column added here is added to an existing table; none is dropped.
	// Descriptions, and a REQUIRED column made NULLABLE here, are updated
	// on an existing table by a metadata change that rewrites no
	// partition: that is how a privacy policy (schemas.Policy.BigQuery)
	// set on a table with data says from then on which columns are hashed
	// or dropped, while earlier partitions keep the values they hold.
	Schema bigquery.Schema
	// Principal names the credentials in error messages ("grant ... to
	// <Principal>"); NewClient returns it.
	Principal string
	// MaxAttempts bounds the jobs tried for one step in one run, and the
	// sends of one request that failed on the way.
	MaxAttempts int
	// PollInterval is the first wait between two looks at a running job;
	// it grows up to MaxPollInterval.
	PollInterval    time.Duration
	MaxPollInterval time.Duration
	// StagingTTL is the expiration of the staging tables of local staging,
	// a safety net: they are dropped once their snapshot is copied.
	StagingTTL time.Duration
	// Logger receives a line per job; nil means no logs.
	Logger *zap.Logger
	// Now is the clock (tests); time.Now by default.
	Now func() time.Time
}

// Publisher publishes snapshots to one BigQuery table. It is safe for
// concurrent use, but two Publish calls of the same snapshot must not run
// at once (the worker's snapshot lock sees to that).
type Publisher struct {
	client *bigquery.Client
	opts   Options
	log    *zap.Logger

	mu    sync.Mutex
	ready bool // EnsureTables succeeded
}

var _ exporter.Publisher = (*Publisher)(nil)

// New returns a Publisher that uses client for opts.Table.
func New(client *bigquery.Client, opts Options) (*Publisher, error) {
	if client == nil {
		return nil, fmt.Errorf("bigquery: no client")
	}
	if opts.Project == "" || opts.Dataset == "" || opts.Table == "" {
		return nil, fmt.Errorf("bigquery: project, dataset and table are required (got %q, %q, %q)", opts.Project, opts.Dataset, opts.Table)
	}
	if opts.Location == "" {
		opts.Location = DefaultLocation
	}
	if opts.Source == "" {
		opts.Source = exporter.BindingsTable
	}
	if opts.Schema == nil {
		opts.Schema = Schema(schemas.Binding())
	}
	switch {
	case opts.Source != exporter.ChangesTable || opts.HistoryView == "-":
		opts.HistoryView = ""
	case opts.HistoryView == "":
		opts.HistoryView = strings.TrimSuffix(opts.Table, ChangesSuffix) + HistorySuffix
	}
	if opts.Principal == "" {
		opts.Principal = "the credentials in use"
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.MaxPollInterval < opts.PollInterval {
		opts.MaxPollInterval = max(DefaultMaxPollInterval, opts.PollInterval)
	}
	if opts.StagingTTL <= 0 {
		opts.StagingTTL = DefaultStagingTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Publisher{client: client, opts: opts, log: log.With(zap.String("table", opts.Project+":"+opts.Dataset+"."+opts.Table))}, nil
}

// Describe names the destination for logs: "BigQuery project:dataset.table".
func (p *Publisher) Describe() string {
	return "BigQuery " + p.opts.Project + ":" + p.opts.Dataset + "." + p.opts.Table
}

// scope returns the message scope of a table of the dataset ("" for the
// dataset itself).
func (p *Publisher) scope(table string) scope {
	return scope{project: p.opts.Project, dataset: p.opts.Dataset, table: table, location: p.opts.Location, principal: p.opts.Principal}
}

func (p *Publisher) dataset() *bigquery.Dataset {
	return p.client.DatasetInProject(p.opts.Project, p.opts.Dataset)
}

// ensureReady runs EnsureTables once per Publisher.
func (p *Publisher) ensureReady(ctx context.Context) error {
	p.mu.Lock()
	ready := p.ready
	p.mu.Unlock()
	if ready {
		return nil
	}
	return p.EnsureTables(ctx)
}

// Publish replaces the partition of s.Date with the parts of the table
// Options.Source of s. It is idempotent: called again after a crash, or in
// a rerun, it skips the steps the journal marks done and adopts the jobs
// it had submitted. Parts of a store that offers them in place
// (staging.InPlace) are loaded from there; the others are uploaded. A
// refresh (s.Refresh) without that table leaves the table alone.
func (p *Publisher) Publish(ctx context.Context, s exporter.Snapshot) error {
	t, ok := s.Table(p.opts.Source)
	if !ok {
		if s.Refresh {
			return nil
		}
		return fmt.Errorf("bigquery: snapshot %s has no table %q to publish to %s", day(s.Date), p.opts.Source, p.opts.Table)
	}
	if err := p.ensureReady(ctx); err != nil {
		return err
	}
	if len(t.Parts) == 0 {
		// An empty snapshot still replaces the day: an empty partition.
		return p.truncatePartition(ctx, s.Date)
	}
	if s.Store == nil {
		return fmt.Errorf("bigquery: snapshot %s has no staging store", day(s.Date))
	}
	pub, err := p.newPublish(ctx, s, t)
	if err != nil {
		return err
	}
	if store, ok := s.Store.(staging.InPlace); ok {
		uris := make([]string, 0, len(t.Parts))
		for _, part := range t.Parts {
			if uri, ok := store.GCSURI(part.Name); ok {
				uris = append(uris, uri)
			}
		}
		if len(uris) == len(t.Parts) {
			return pub.fromGCS(ctx)
		}
	}
	return pub.fromUploads(ctx)
}

// truncatePartition empties the partition of date, for a snapshot without
// rows; deleting a partition that does not exist is not an error.
func (p *Publisher) truncatePartition(ctx context.Context, date time.Time) error {
	t := p.dataset().Table(p.opts.Table + "$" + partitionID(date))
	if err := t.Delete(ctx); err != nil && !isNotFound(err) {
		return p.scope(p.opts.Table+"$"+partitionID(date)).explain("empty the partition of an empty snapshot", err)
	}
	return nil
}

// partitionID is the partition decorator of a snapshot date: YYYYMMDD.
func partitionID(date time.Time) string { return date.UTC().Format("20060102") }

// day formats a snapshot date for messages.
func day(date time.Time) string { return date.UTC().Format(time.DateOnly) }

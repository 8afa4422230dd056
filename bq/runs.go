package bq

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"cloud.google.com/go/bigquery"
	"go.uber.org/zap"

	"github.com/bindsync/bindsync/checkpoint"
)

// Run is one row of the sync_runs table: what one run of bindsync did.
type Run struct {
	RunID        string
	SnapshotDate time.Time
	Start, End   time.Time
	// Status is RunSucceeded, RunFailed, RunInterrupted or
	// RunAlreadyPublished of package checkpoint.
	Status checkpoint.RunStatus
	// Error is the run's error message, empty when it succeeded.
	Error      string
	Services   int
	UsersTotal int64
	UsersDone  int64
	UsersGone  int64
	// UsersNotFound are configured users Twilio does not know.
	UsersNotFound int64
	// UsersFailed counts the users that failed; FailedUsers names some
	// (the run names at most 1,000). 0 means len(FailedUsers).
	UsersFailed int64
	FailedUsers []FailedUser
	Bindings    int64
	Pages       int64
	Retries     int64
	// SnapshotRows is the number of rows the snapshot held at the end.
	SnapshotRows int64
	// ContractViolations counts the records read in this run that broke
	// the API's contract, by kind (schemas.ViolationBindingTypeNull, ...).
	ContractViolations map[string]int64
}

// FailedUser is a user whose bindings could not be read.
type FailedUser struct {
	ServiceSID string
	User       string
	Reason     string
}

// runsSchema is the schema of the sync_runs table.
func runsSchema() bigquery.Schema {
	str := func(name, desc string, required bool) *bigquery.FieldSchema {
		return &bigquery.FieldSchema{Name: name, Type: bigquery.StringFieldType, Required: required, Description: desc}
	}
	num := func(name, desc string) *bigquery.FieldSchema {
		return &bigquery.FieldSchema{Name: name, Type: bigquery.IntegerFieldType, Description: desc}
	}
	return bigquery.Schema{
		str("run_id", "ID of the run; a resumed snapshot has one row per run.", true),
		{Name: "snapshot_date", Type: bigquery.DateFieldType, Required: true, Description: "UTC date of the snapshot the run worked on."},
		{Name: "started_at", Type: bigquery.TimestampFieldType, Required: true, Description: "When the run started (UTC)."},
		{Name: "ended_at", Type: bigquery.TimestampFieldType, Required: true, Description: "When the run ended (UTC)."},
		str("status", "succeeded, failed, interrupted or already_published (nothing to do).", true),
		str("error", "Why the run did not succeed; null when it did.", false),
		num("services", "Chat services read."),
		num("users_total", "Users known to the snapshot."),
		num("users_done", "Users whose bindings were read in this run."),
		num("users_gone", "Users deleted in Twilio while the snapshot was read."),
		num("users_failed", "Users whose bindings could not be read."),
		{Name: "failed_users", Type: bigquery.RecordFieldType, Repeated: true, Description: "The users that could not be read, and why.", Schema: bigquery.Schema{
			str("service_sid", "Service of the user.", false),
			str("user", "User SID or identity as configured.", false),
			str("reason", "The last error.", false),
		}},
		num("bindings", "Bindings read in this run."),
		num("pages", "Bindings pages read in this run."),
		num("retries", "Twilio requests retried in this run."),
		num("snapshot_rows", "Rows of the snapshot at the end of the run."),
		// Added after the first release: EnsureTables adds it to an
		// existing sync_runs table (a REPEATED column can always be added).
		num("users_not_found", "Configured users (SID or identity) that Twilio does not know."),
		{Name: "contract_violations", Type: bigquery.RecordFieldType, Repeated: true, Description: "Records read in this run that broke the API's contract (stored as received), counted by kind; empty when there were none.", Schema: bigquery.Schema{
			str("kind", "What was wrong, e.g. binding_type_null.", false),
			num("count", "How many records."),
		}},
	}
}

// runRow is a Run as one line of newline-delimited JSON.
type runRow struct {
	RunID         string          `json:"run_id"`
	SnapshotDate  string          `json:"snapshot_date"`
	StartedAt     string          `json:"started_at"`
	EndedAt       string          `json:"ended_at"`
	Status        string          `json:"status"`
	Error         *string         `json:"error"`
	Services      int             `json:"services"`
	UsersTotal    int64           `json:"users_total"`
	UsersDone     int64           `json:"users_done"`
	UsersGone     int64           `json:"users_gone"`
	UsersFailed   int64           `json:"users_failed"`
	UsersNotFound int64           `json:"users_not_found"`
	FailedUsers   []failedUserRow `json:"failed_users"`
	Bindings      int64           `json:"bindings"`
	Pages         int64           `json:"pages"`
	Retries       int64           `json:"retries"`
	SnapshotRows  int64           `json:"snapshot_rows"`
	Violations    []violationRow  `json:"contract_violations"`
}

type violationRow struct {
	Kind  string `json:"kind"`
	Count int64  `json:"count"`
}

type failedUserRow struct {
	ServiceSID string `json:"service_sid"`
	User       string `json:"user"`
	Reason     string `json:"reason"`
}

// maxFailedUsers bounds the failed users listed in one row; users_failed
// still counts them all.
const maxFailedUsers = 1000

const timestampLayout = "2006-01-02T15:04:05.000000Z"

func (r Run) row() runRow {
	out := runRow{
		RunID:         r.RunID,
		SnapshotDate:  r.SnapshotDate.UTC().Format(time.DateOnly),
		StartedAt:     r.Start.UTC().Format(timestampLayout),
		EndedAt:       r.End.UTC().Format(timestampLayout),
		Status:        string(r.Status),
		Services:      r.Services,
		UsersTotal:    r.UsersTotal,
		UsersDone:     r.UsersDone,
		UsersGone:     r.UsersGone,
		UsersFailed:   max(r.UsersFailed, int64(len(r.FailedUsers))),
		UsersNotFound: r.UsersNotFound,
		FailedUsers:   []failedUserRow{},
		Bindings:      r.Bindings,
		Pages:         r.Pages,
		Retries:       r.Retries,
		SnapshotRows:  r.SnapshotRows,
		Violations:    []violationRow{},
	}
	for _, kind := range slices.Sorted(maps.Keys(r.ContractViolations)) {
		out.Violations = append(out.Violations, violationRow{Kind: kind, Count: r.ContractViolations[kind]})
	}
	if r.Error != "" {
		out.Error = &r.Error
	}
	for i, f := range r.FailedUsers {
		if i == maxFailedUsers {
			break
		}
		out.FailedUsers = append(out.FailedUsers, failedUserRow(f))
	}
	return out
}

// RecordRun appends one row for r to the sync_runs table.
//
// The row goes in by a load job of newline-delimited JSON, not by a
// streaming insert: the job's ID is derived from the run ID, and BigQuery
// never accepts a job ID twice, so a retried request cannot append the row
// twice, ever. A streaming insert's insertId only removes duplicates on a
// best-effort basis for about a minute, and streamed rows sit in a buffer
// that blocks DML for a while. Load jobs are also free. A failed load job
// appends nothing and is retried under the next attempt number.
func (p *Publisher) RecordRun(ctx context.Context, r Run) error {
	if r.RunID == "" {
		return fmt.Errorf("bigquery: record run: no run ID")
	}
	if err := p.ensureReady(ctx); err != nil {
		return err
	}
	line, err := json.Marshal(r.row())
	if err != nil {
		return fmt.Errorf("bigquery: encode run %s: %w", r.RunID, err)
	}
	line = append(line, '\n')
	sc := p.scope(RunsTable)
	what := "append run " + r.RunID + " to " + RunsTable
	log := p.log.With(zap.String("run_id", r.RunID))
	for attempt := 1; ; attempt++ {
		id := fmt.Sprintf("bindsync_%s_%s_a%d", RunsTable, sanitizeID(r.RunID), attempt)
		jobErr, err := p.runJob(ctx, id, func(ctx context.Context, id string) (*bigquery.Job, error) {
			src := bigquery.NewReaderSource(bytes.NewReader(line))
			src.SourceFormat = bigquery.JSON
			l := p.dataset().Table(RunsTable).LoaderFrom(src)
			l.MediaOptions = uploadOptions(int64(len(line)))
			l.JobIDConfig = bigquery.JobIDConfig{JobID: id, Location: p.opts.Location}
			l.CreateDisposition = bigquery.CreateNever
			l.WriteDisposition = bigquery.WriteAppend
			return l.Run(ctx)
		}, log)
		switch {
		case err != nil:
			return sc.explain(what, err)
		case jobErr == nil:
			return nil
		case !retryableJob(jobErr) || attempt >= p.opts.MaxAttempts:
			return sc.explain(what, jobErr)
		}
		log.Warn("sync_runs load job failed; retrying under a new job ID", zap.String("job_id", id), zap.Error(jobErr))
	}
}

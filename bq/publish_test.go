package bq_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bindsync/bindsync/bq"
	"github.com/bindsync/bindsync/bq/bqtest"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/staging/stagingtest"
)

func TestPublishFromUploads(t *testing.T) {
	t.Parallel()
	e := newEnv(t, bqtest.Options{})
	p := e.publisher(nil)
	ctx := testContext(t)
	store := stagingtest.NewDir(t)
	bindings := makeBindings("IS01", 250, 1)
	j := newJournal()
	snap := writeSnapshot(t, store, day1, bindings, 100, "run1", j)
	if err := p.Publish(ctx, snap); err != nil {
		t.Fatal(err)
	}
	e.checkRows(day1, bindings)

	wantLoads := []string{
		"bindsync_user_bindings_20261126_run1_g1_load_p0000_a1",
		"bindsync_user_bindings_20261126_run1_g1_load_p0001_a1",
		"bindsync_user_bindings_20261126_run1_g1_load_p0002_a1",
	}
	if got := e.jobIDs("LOAD", ""); !slices.Equal(got, wantLoads) {
		t.Errorf("load jobs = %v, want %v", got, wantLoads)
	}
	copies := e.jobIDs("COPY", "")
	if want := []string{"bindsync_user_bindings_20261126_run1_g1_copy_a1"}; !slices.Equal(copies, want) {
		t.Fatalf("copy jobs = %v, want %v", copies, want)
	}
	cp := e.srv.Job(copies[0]).Configuration.Copy
	if cp.DestinationTable.TableId != "user_bindings$20261126" || cp.WriteDisposition != "WRITE_TRUNCATE" || cp.SourceTables[0].TableId != "user_bindings__staging_20261126" {
		t.Errorf("copy job: %s <- %s, %s", cp.DestinationTable.TableId, cp.SourceTables[0].TableId, cp.WriteDisposition)
	}
	for i, id := range wantLoads {
		l := e.srv.Job(id).Configuration.Load
		wantWrite := "WRITE_APPEND"
		if i == 0 {
			wantWrite = "WRITE_TRUNCATE_DATA"
		}
		if l.SourceFormat != "PARQUET" || l.ParquetOptions == nil || !l.ParquetOptions.EnableListInference || l.WriteDisposition != wantWrite {
			t.Errorf("load %s: format %s, list inference %v, write %s (want %s)", id, l.SourceFormat, l.ParquetOptions, l.WriteDisposition, wantWrite)
		}
	}
	if e.srv.Table(dataset, "user_bindings__staging_20261126") != nil {
		t.Error("the staging table was not dropped")
	}
	if got := j.lookup(t, "g1_copy.done"); got != copies[0] {
		t.Errorf("journal marks the copy done by %q", got)
	}

	// Publishing the same snapshot again (a crash after publishing, before
	// the checkpoint said so) submits nothing.
	jobs := len(e.srv.Jobs())
	if err := p.Publish(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if n := len(e.srv.Jobs()); n != jobs {
		t.Errorf("republishing a published snapshot ran %d more jobs", n-jobs)
	}
	e.checkRows(day1, bindings)

	// The same date read again (a new checkpoint, as with --force) replaces
	// the partition; another date adds one.
	again := makeBindings("IS01", 120, 2)
	if err := p.Publish(ctx, writeSnapshot(t, stagingtest.NewDir(t), day1, again, 50, "run2", newJournal())); err != nil {
		t.Fatal(err)
	}
	e.checkRows(day1, again)
	other := makeBindings("IS02", 30, 3)
	if err := p.Publish(ctx, writeSnapshot(t, stagingtest.NewDir(t), day2, other, 100, "run3", newJournal())); err != nil {
		t.Fatal(err)
	}
	e.checkRows(day1, again)
	e.checkRows(day2, other)
	e.checkJobsOnce()
}

func TestPublishFromGCS(t *testing.T) {
	t.Parallel()
	store := gcsStore{Dir: stagingtest.NewDir(t), bucket: "staging-bucket", prefix: "bindsync"}
	e := newEnv(t, bqtest.Options{GCS: store.read})
	p := e.publisher(nil)
	ctx := testContext(t)
	bindings := makeBindings("IS01", 230, 4)
	snap := writeSnapshot(t, store, day1, bindings, 100, "run1", newJournal())
	if err := p.Publish(ctx, snap); err != nil {
		t.Fatal(err)
	}
	e.checkRows(day1, bindings)

	jobs := e.srv.Jobs()
	if len(jobs) != 1 {
		t.Fatalf("%d jobs, want one load job", len(jobs))
	}
	l := jobs[0].Configuration.Load
	var wantURIs []string
	for _, part := range snap.Tables[0].Parts {
		wantURIs = append(wantURIs, store.URI(part.Name))
	}
	if jobs[0].JobReference.JobId != "bindsync_user_bindings_20261126_run1_load_a1" {
		t.Errorf("job ID %s", jobs[0].JobReference.JobId)
	}
	if !slices.Equal(l.SourceUris, wantURIs) || l.DestinationTable.TableId != "user_bindings$20261126" ||
		l.WriteDisposition != "WRITE_TRUNCATE" || l.SourceFormat != "PARQUET" || l.ParquetOptions == nil || !l.ParquetOptions.EnableListInference {
		t.Errorf("load job: uris %v -> %s, %s, %s, %+v", l.SourceUris, l.DestinationTable.TableId, l.WriteDisposition, l.SourceFormat, l.ParquetOptions)
	}

	again := makeBindings("IS01", 90, 5)
	if err := p.Publish(ctx, writeSnapshot(t, store, day1, again, 40, "run2", newJournal())); err != nil {
		t.Fatal(err)
	}
	e.checkRows(day1, again)
	e.checkJobsOnce()
}

// TestPublishResumes stops Publish while a job runs, as a killed run
// would, and publishes again with the same journal: every part is loaded
// exactly once.
func TestPublishResumes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// stopAt is part of the ID of the job that is running when Publish stops.
		stopAt string
		// between runs between the two Publish calls.
		between func(e *env)
		// adopted is part of the ID of the job the second call must adopt.
		adopted  string
		wantGen2 bool
	}{
		{name: "during a load", stopAt: "_g1_load_p0002_", adopted: "_g1_load_p0002_"},
		{name: "during the copy", stopAt: "_g1_copy_", adopted: "_g1_copy_"},
		{
			name:   "and the staging table expires",
			stopAt: "_g1_load_p0002_",
			between: func(e *env) {
				// The table goes while a job still loads into it.
				if err := e.client.Dataset(dataset).Table("user_bindings__staging_20261126").Delete(context.Background()); err != nil {
					e.t.Fatal(err)
				}
			},
			wantGen2: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, bqtest.Options{JobDelay: 100 * time.Millisecond})
			store := stagingtest.NewDir(t)
			bindings := makeBindings("IS01", 200, 6)
			j := newJournal()
			snap := writeSnapshot(t, store, day1, bindings, 50, "run1", j)

			ctx, cancel := context.WithCancel(testContext(t))
			done := make(chan error, 1)
			go func() { done <- e.publisher(nil).Publish(ctx, snap) }()
			deadline := time.Now().Add(10 * time.Second)
			for len(e.jobIDsAny(tt.stopAt)) == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("no job %s started", tt.stopAt)
				}
				time.Sleep(2 * time.Millisecond)
			}
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("stopped Publish returned %v, want context.Canceled", err)
			}
			if got := e.srv.Rows(dataset, table, "20261126"); len(got) != 0 {
				t.Fatalf("%d rows visible after a stopped publish", len(got))
			}
			st := e.srv.Table(dataset, "user_bindings__staging_20261126")
			if st == nil || st.TimePartitioning == nil || st.TimePartitioning.Field != "snapshot_date" || st.TimePartitioning.ExpirationMs != 0 || st.ExpirationTime == 0 {
				t.Fatalf("staging table while publishing: %+v", st)
			}
			if tt.between != nil {
				tt.between(e)
			}

			before := len(e.srv.Requests())
			if err := e.publisher(nil).Publish(testContext(t), snap); err != nil {
				t.Fatal(err)
			}
			e.checkRows(day1, bindings)
			if tt.wantGen2 {
				// The job of the lost table was waited for before a new
				// table of the same name was made.
				stopped := e.jobIDsAny(tt.stopAt)[0]
				reqs := e.srv.Requests()[before:]
				waited := slices.Index(reqs, "GET /bigquery/v2/projects/test-project/jobs/"+stopped)
				created := slices.Index(reqs, "POST /bigquery/v2/projects/test-project/datasets/twilio_chat/tables")
				if waited < 0 || created < 0 || waited > created {
					t.Errorf("job %s looked at (request %d) after the new staging table was made (request %d)", stopped, waited, created)
				}
			}
			e.checkJobsOnce()
			if tt.adopted != "" {
				ids := e.jobIDsAny(tt.adopted)
				if len(ids) != 1 || e.srv.InsertAttempts(ids[0]) != 2 {
					t.Errorf("jobs %v: want one job, submitted twice (adopted on 409)", ids)
				}
			}
			for _, id := range e.jobIDsAny("_g1_load_p0000_") {
				if n := e.srv.InsertAttempts(id); n != 1 {
					t.Errorf("job %s, done before the stop, was submitted %d times", id, n)
				}
			}
			gen2 := e.jobIDsAny("_g2_")
			if tt.wantGen2 != (len(gen2) > 0) {
				t.Errorf("second-generation jobs: %v (want some: %v)", gen2, tt.wantGen2)
			}
		})
	}
}

// jobIDsAny lists the IDs of jobs of any kind that contain part.
func (e *env) jobIDsAny(part string) []string {
	var out []string
	for _, j := range e.srv.Jobs() {
		if strings.Contains(j.JobReference.JobId, part) {
			out = append(out, j.JobReference.JobId)
		}
	}
	return out
}

func TestPublishRetriesFailedJobs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		fail     int
		reason   string
		message  string
		wantErr  string
		wantKind error
		// wantJobs are the load job IDs of part 0 after the first call.
		wantJobs []string
	}{
		{
			name: "transient failure", fail: 1, reason: "backendError", message: "Backend error. Please try again.",
			wantJobs: []string{"bindsync_user_bindings_20261126_run1_g1_load_p0000_a1", "bindsync_user_bindings_20261126_run1_g1_load_p0000_a2"},
		},
		{
			name: "failing every attempt", fail: 3, reason: "backendError", message: "Backend error. Please try again.",
			wantErr:  `bigquery: load part snapshots/2026-11-26/parts/run1-00000.parquet into staging table user_bindings__staging_20261126 failed 3 times (last job bindsync_user_bindings_20261126_run1_g1_load_p0000_a3: Backend error. Please try again., reason "backendError"): run again later; the next run resumes with a new attempt`,
			wantKind: bq.ErrJobFailed,
			wantJobs: []string{"bindsync_user_bindings_20261126_run1_g1_load_p0000_a1", "bindsync_user_bindings_20261126_run1_g1_load_p0000_a2", "bindsync_user_bindings_20261126_run1_g1_load_p0000_a3"},
		},
		{
			name: "schema mismatch", fail: 1, reason: "invalid", message: "Provided Schema does not match Table test-project:twilio_chat.user_bindings__staging_20261126. Field sid has changed type from INTEGER to STRING",
			wantErr:  `bigquery: the data does not fit the schema of table test-project:twilio_chat.user_bindings__staging_20261126 (Provided Schema does not match Table test-project:twilio_chat.user_bindings__staging_20261126. Field sid has changed type from INTEGER to STRING): bindsync only adds columns, so drop or rename the table, or set warehouse.bigquery.table to a new one`,
			wantKind: bq.ErrSchema,
			wantJobs: []string{"bindsync_user_bindings_20261126_run1_g1_load_p0000_a1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, bqtest.Options{})
			p := e.publisher(nil)
			ctx := testContext(t)
			if err := p.EnsureTables(ctx); err != nil {
				t.Fatal(err)
			}
			bindings := makeBindings("IS01", 120, 7)
			j := newJournal()
			snap := writeSnapshot(t, stagingtest.NewDir(t), day1, bindings, 60, "run1", j)
			e.srv.FailNextJobs(tt.fail, tt.reason, tt.message)
			err := p.Publish(ctx, snap)
			if got := e.jobIDs("LOAD", "_p0000_"); !slices.Equal(got, tt.wantJobs) {
				t.Errorf("jobs of part 0 = %v, want %v", got, tt.wantJobs)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error:\n got %v\nwant %s", err, tt.wantErr)
				}
				if !errors.Is(err, tt.wantKind) {
					t.Errorf("error is not %v", tt.wantKind)
				}
				if rows := e.srv.Rows(dataset, table, ""); len(rows) != 0 {
					t.Fatalf("%d rows published by a failed publish", len(rows))
				}
				// The next run starts with a new attempt and succeeds.
				if err := e.publisher(nil).Publish(ctx, snap); err != nil {
					t.Fatal(err)
				}
				next := fmt.Sprintf("bindsync_user_bindings_20261126_run1_g1_load_p0000_a%d", len(tt.wantJobs)+1)
				if e.srv.Job(next) == nil {
					t.Errorf("the rerun did not use attempt %s", next)
				}
			}
			e.checkRows(day1, bindings)
			e.checkJobsOnce()
		})
	}
}

func TestPublishEmptySnapshotEmptiesPartition(t *testing.T) {
	t.Parallel()
	e := newEnv(t, bqtest.Options{})
	p := e.publisher(nil)
	ctx := testContext(t)
	if err := p.Publish(ctx, writeSnapshot(t, stagingtest.NewDir(t), day1, makeBindings("IS01", 10, 8), 100, "run1", newJournal())); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, exporter.Snapshot{Date: day1, Store: stagingtest.NewDir(t), RunID: "run2", Journal: newJournal(), Tables: []exporter.Table{{Name: exporter.BindingsTable}}}); err != nil {
		t.Fatal(err)
	}
	e.checkRows(day1, nil)
}

func TestPublishErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		gcs      bool
		setup    func(e *env)
		wantErr  string
		wantKind error
	}{
		{
			name: "no permission to run jobs",
			setup: func(e *env) {
				e.srv.Deny("POST", "/upload/bigquery/v2/projects/test-project/jobs", 403, "accessDenied")
			},
			wantErr:  "bigquery: permission denied on dataset test-project:twilio_chat: grant roles/bigquery.dataEditor on the dataset and roles/bigquery.jobUser on the project to " + principal,
			wantKind: bq.ErrPermission,
		},
		{
			name: "quota",
			setup: func(e *env) {
				e.srv.FailNextJobs(1, "quotaExceeded", "Quota exceeded: Your table exceeded quota for imports or query appends per table")
			},
			wantErr:  "bigquery: quota exceeded on test-project:twilio_chat.user_bindings__staging_20261126 while trying to load part snapshots/2026-11-26/parts/run1-00000.parquet into staging table user_bindings__staging_20261126 (Quota exceeded: Your table exceeded quota for imports or query appends per table): wait for the quota to refill and run again (the checkpoint keeps the progress), or ask for a higher quota",
			wantKind: bq.ErrQuota,
		},
		{
			name: "staging bucket not readable",
			gcs:  true,
			setup: func(e *env) {
				e.srv.FailNextJobs(1, "accessDenied", "Access Denied: File gs://staging-bucket/bindsync/x.parquet: Access Denied")
			},
			wantErr:  "bigquery: permission denied reading gs://staging-bucket/bindsync/x.parquet for test-project:twilio_chat.user_bindings$20261126: grant roles/storage.objectViewer on the staging bucket to " + principal,
			wantKind: bq.ErrPermission,
		},
		{
			name: "staging file gone",
			gcs:  true,
			setup: func(e *env) {
				e.srv.FailNextJobs(1, "notFound", "Not found: URI gs://staging-bucket/bindsync/x.parquet")
			},
			wantErr:  "bigquery: staging file gs://staging-bucket/bindsync/x.parquet not found while loading test-project:twilio_chat.user_bindings$20261126: run again with --force to read the snapshot again",
			wantKind: bq.ErrNotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			store := gcsStore{Dir: stagingtest.NewDir(t), bucket: "staging-bucket", prefix: "bindsync"}
			e := newEnv(t, bqtest.Options{GCS: store.read})
			p := e.publisher(nil)
			ctx := testContext(t)
			if err := p.EnsureTables(ctx); err != nil {
				t.Fatal(err)
			}
			var snap exporter.Snapshot
			if tt.gcs {
				snap = writeSnapshot(t, store, day1, makeBindings("IS01", 10, 9), 100, "run1", newJournal())
			} else {
				snap = writeSnapshot(t, stagingtest.NewDir(t), day1, makeBindings("IS01", 10, 9), 100, "run1", newJournal())
			}
			tt.setup(e)
			err := p.Publish(ctx, snap)
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("error:\n got %v\nwant %s", err, tt.wantErr)
			}
			if !errors.Is(err, tt.wantKind) {
				t.Errorf("error is not %v", tt.wantKind)
			}
		})
	}
}

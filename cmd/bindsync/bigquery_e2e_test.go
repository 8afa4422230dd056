package main

// End-to-end tests of the BigQuery warehouse: the binary runs against the
// fake Twilio, the fake BigQuery (bqtest) and, for GCS staging, an
// in-process fake-gcs-server; the rows BigQuery ends up with are compared
// with the generated world.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/civil"
	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/bindsync/bindsync/bq/bqtest"
	"github.com/bindsync/bindsync/internal/snapshottest"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

const (
	bqProject = "test-project"
	bqDataset = "twilio_chat"
	bqTable   = "user_bindings"
	gcsBucket = "bindsync-e2e"
)

// bqE2E is an e2e world whose config also publishes to a fake BigQuery.
type bqE2E struct {
	*e2e
	bq  *bqtest.Server
	gcs *fakestorage.Server // nil with local staging
}

type bqE2EOptions struct {
	gcs      bool
	jobDelay time.Duration
	// location of the dataset; "" means US, where the config says it is.
	location string
	// config is appended under warehouse.bigquery.
	config string
}

func newBQE2E(t *testing.T, spec twiliotest.WorldSpec, faults twiliotest.Faults, o bqE2EOptions) *bqE2E {
	t.Helper()
	e := &bqE2E{}
	opts := bqtest.Options{Project: bqProject, JobDelay: o.jobDelay}
	if o.gcs {
		// The storage client reads objects by the XML API path
		// (/bucket/object), which the fake serves only on its public host.
		srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", PublicHost: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Stop)
		srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: gcsBucket})
		e.gcs = srv
		opts.GCS = e.readGCS
		opts.GCSList = e.listGCS
	}
	e.bq = bqtest.NewServer(opts)
	t.Cleanup(e.bq.Close)
	loc := o.location
	if loc == "" {
		loc = "US"
	}
	e.bq.CreateDataset(bqDataset, loc)

	extra := fmt.Sprintf("  bigquery:\n    project: %s\n    dataset: %s\n    endpoint: %s\n%s", bqProject, bqDataset, e.bq.URL(), o.config)
	extra += "export:\n  part_rows: 150\n  commit_interval: 100ms\n"
	e.e2e = newE2E(t, spec, faults, extra)
	if o.gcs {
		// The binary's storage client talks to the fake without credentials.
		e.moreEnv = append(e.moreEnv, "STORAGE_EMULATOR_HOST="+e.gcs.URL())
		e.editConfig("staging: staging\n", "staging: gs://"+gcsBucket+"/runs\n")
	}
	return e
}

// editConfig replaces old with new in the config file.
func (e *bqE2E) editConfig(old, new string) {
	e.t.Helper()
	data, err := os.ReadFile(e.config)
	if err != nil {
		e.t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(old)) {
		e.t.Fatalf("config has no %q", old)
	}
	if err := os.WriteFile(e.config, bytes.Replace(data, []byte(old), []byte(new), 1), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

func (e *bqE2E) readGCS(_ context.Context, bucket, object string) ([]byte, error) {
	obj, err := e.gcs.GetObject(bucket, object)
	if err != nil {
		return nil, err
	}
	return obj.Content, nil
}

func (e *bqE2E) listGCS(_ context.Context, bucket, prefix string) ([]string, error) {
	objs, _, err := e.gcs.ListObjectsWithOptions(bucket, fakestorage.ListOptions{Prefix: prefix})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, o := range objs {
		out = append(out, o.Name)
	}
	return out, nil
}

// canonicalBQ renders a binding as BigQuery keeps it: a REPEATED column
// has no null, so a null message_types list is an empty one.
func canonicalBQ(b twilio.Binding) string {
	if b.MessageTypes == nil {
		b.MessageTypes = []string{}
	}
	return snapshottest.Canonical(b)
}

// wantBQ is e.want() as BigQuery keeps it.
func (e *bqE2E) wantBQ() []string {
	var out []string
	for _, s := range e.want() {
		var b twilio.Binding
		if err := json.Unmarshal([]byte(s), &b); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, canonicalBQ(b))
	}
	sort.Strings(out)
	return out
}

// bqRows reads the partition of date from the fake BigQuery as canonical
// bindings, checking the columns bindsync adds.
func (e *bqE2E) bqRows(date time.Time) []string {
	e.t.Helper()
	var out []string
	for _, r := range e.bq.Rows(bqDataset, bqTable, date.Format("20060102")) {
		if d, ok := r[schemas.ColSnapshotDate].(civil.Date); !ok || d != civil.DateOf(date) {
			e.t.Fatalf("row with snapshot_date %v in partition %s", r[schemas.ColSnapshotDate], date.Format(time.DateOnly))
		}
		if ts, ok := r[schemas.ColSyncedAt].(time.Time); !ok || ts.IsZero() {
			e.t.Fatalf("row with synced_at %v", r[schemas.ColSyncedAt])
		}
		b, err := bindingOfRow(r)
		if err != nil {
			e.t.Fatalf("row %v: %v", r, err)
		}
		out = append(out, canonicalBQ(b))
	}
	sort.Strings(out)
	return out
}

// bindingOfRow converts a row of the fake BigQuery into a binding.
func bindingOfRow(r map[string]any) (twilio.Binding, error) {
	var b twilio.Binding
	var bad []string
	str := func(col string) *string {
		v, ok := r[col].(string)
		if !ok {
			if r[col] != nil {
				bad = append(bad, col)
			}
			return nil
		}
		return &v
	}
	ts := func(col string) *time.Time {
		v, ok := r[col].(time.Time)
		if !ok {
			if r[col] != nil {
				bad = append(bad, col)
			}
			return nil
		}
		return &v
	}
	b.SID, b.AccountSID, b.ServiceSID = str(schemas.ColSID), str(schemas.ColAccountSID), str(schemas.ColServiceSID)
	b.DateCreated, b.DateUpdated = ts(schemas.ColDateCreated), ts(schemas.ColDateUpdated)
	b.Endpoint, b.Identity, b.UserSID = str(schemas.ColEndpoint), str(schemas.ColIdentity), str(schemas.ColUserSID)
	b.CredentialSID, b.URL = str(schemas.ColCredentialSID), str(schemas.ColURL)
	b.BindingType = str(schemas.ColBindingType)
	items, ok := r[schemas.ColMessageTypes].([]any)
	if !ok {
		bad = append(bad, schemas.ColMessageTypes)
	}
	b.MessageTypes = []string{}
	for _, it := range items {
		s, ok := it.(string)
		if !ok {
			bad = append(bad, schemas.ColMessageTypes)
		}
		b.MessageTypes = append(b.MessageTypes, s)
	}
	if len(bad) > 0 {
		return b, fmt.Errorf("bad values in columns %v", bad)
	}
	return b, nil
}

// checkBQExact asserts the partition of date holds every binding of the
// world exactly once, every field equal.
func (e *bqE2E) checkBQExact(date time.Time) {
	e.t.Helper()
	want, got := e.wantBQ(), e.bqRows(date)
	if len(got) != len(want) {
		e.t.Errorf("BigQuery partition %s has %d rows, want %d", date.Format(time.DateOnly), len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			e.t.Fatalf("BigQuery partition %s, first difference at row %d:\n got %s\nwant %s", date.Format(time.DateOnly), i, got[i], want[i])
		}
	}
}

// checkBQUsers asserts the users table's partition of date holds every
// user of the world once, with its number of bindings.
func (e *bqE2E) checkBQUsers(date time.Time) {
	e.t.Helper()
	var got []string
	for _, r := range e.bq.Rows(bqDataset, "user_bindings_users", date.Format("20060102")) {
		got = append(got, fmt.Sprintf("%v|%v|%v|%v", r["service_sid"], r["user"], r["bindings"], r["state"]))
	}
	sort.Strings(got)
	snapshottest.Equal(e.t, got, snapshottest.WantUsers(e.world, e.services, nil))
}

// checkJobsOnce asserts BigQuery accepted no job ID twice.
func (e *bqE2E) checkJobsOnce() {
	e.t.Helper()
	for _, j := range e.bq.Jobs() {
		if n := e.bq.JobCount(j.JobReference.JobId); n > 1 {
			e.t.Errorf("job %s accepted %d times", j.JobReference.JobId, n)
		}
	}
}

// snapshotJobs lists the load and copy jobs that wrote snapshots of
// user_bindings (not sync_runs rows, not the users table), in order.
func (e *bqE2E) snapshotJobs() []string {
	var out []string
	for _, j := range e.bq.Jobs() {
		id := j.JobReference.JobId
		if !strings.HasPrefix(id, "bindsync_sync_runs_") && !strings.HasPrefix(id, "bindsync_user_bindings_users_") && !strings.HasPrefix(id, "bindsync_user_bindings_changes_") {
			out = append(out, j.JobReference.JobId)
		}
	}
	return out
}

// syncRuns returns the status of each sync_runs row, in order.
func (e *bqE2E) syncRuns() []string {
	var out []string
	for _, r := range e.bq.Rows(bqDataset, "sync_runs", "") {
		out = append(out, fmt.Sprint(r["status"]))
	}
	return out
}

func (e *bqE2E) mustRun(args ...string) result {
	e.t.Helper()
	r := e.run(e2eToken, append([]string{"run", "--config", e.config}, args...)...)
	if r.code != 0 {
		e.t.Fatalf("bindsync %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

const latestView = "SELECT * FROM `test-project.twilio_chat.user_bindings` WHERE snapshot_date = (SELECT MAX(snapshot_date) FROM `test-project.twilio_chat.user_bindings`)"

func TestE2EBigQuery(t *testing.T) {
	t.Parallel()
	for _, gcs := range []bool{false, true} {
		name := "local staging"
		if gcs {
			name = "GCS staging"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newBQE2E(t, twiliotest.WorldSpec{Seed: 21, Services: 2, UsersPerService: 40, MaxBindingsPerUser: 60},
				twiliotest.Faults{}, bqE2EOptions{gcs: gcs})
			day := e2eDay.Format(time.DateOnly)
			r := e.mustRun("--snapshot-date", day)
			if !strings.Contains(r.stdout, "published to BigQuery test-project:twilio_chat.user_bindings") {
				t.Errorf("stdout does not name BigQuery:\n%s", r.stdout)
			}
			e.checkExact()
			e.checkBQExact(e2eDay)
			e.checkBQUsers(e2eDay)
			first := e.snapshotJobs()
			if gcs {
				if len(first) != 1 {
					t.Fatalf("GCS staging ran jobs %v, want one load", first)
				}
				l := e.bq.Job(first[0]).Configuration.Load
				if len(l.SourceUris) < 2 || !strings.HasPrefix(l.SourceUris[0], "gs://"+gcsBucket+"/runs/") || l.DestinationTable.TableId != "user_bindings$20261126" {
					t.Errorf("load job reads %v into %s", l.SourceUris, l.DestinationTable.TableId)
				}
			} else if len(first) < 3 {
				t.Fatalf("local staging ran jobs %v, want a load per part and a copy", first)
			}

			// A plain rerun is a no-op for the table, and is recorded.
			r = e.mustRun("--snapshot-date", day)
			if !strings.Contains(r.stdout, "already published") {
				t.Errorf("rerun:\n%s", r.stdout)
			}
			if got := e.snapshotJobs(); len(got) != len(first) {
				t.Errorf("a rerun of a published snapshot ran jobs %v", got[len(first):])
			}
			e.checkBQExact(e2eDay)

			// --force reads and publishes it again: same rows, not twice.
			e.mustRun("--snapshot-date", day, "--force")
			if got := e.snapshotJobs(); len(got) <= len(first) {
				t.Error("--force published nothing")
			}
			e.checkBQExact(e2eDay)

			// Another date adds a partition; the view reads the newest.
			next := e2eDay.AddDate(0, 0, 1)
			e.mustRun("--snapshot-date", next.Format(time.DateOnly))
			e.checkBQExact(e2eDay)
			e.checkBQExact(next)
			if got := e.bq.ViewQuery(bqDataset, "user_bindings_latest"); got != latestView {
				t.Errorf("view SQL:\n got %s\nwant %s", got, latestView)
			}
			if got, want := strings.Join(e.syncRuns(), ","), "succeeded,already_published,succeeded,succeeded"; got != want {
				t.Errorf("sync_runs statuses = %s, want %s", got, want)
			}
			e.checkJobsOnce()
		})
	}
}

func TestE2EBigQueryKillWhilePublishing(t *testing.T) {
	t.Parallel()
	e := newBQE2E(t, twiliotest.WorldSpec{Seed: 22, Services: 1, UsersPerService: 40, MaxBindingsPerUser: 40},
		twiliotest.Faults{}, bqE2EOptions{jobDelay: 400 * time.Millisecond})
	cmd := exec.Command(binary, "run", "--config", e.config, "--snapshot-date", e2eDay.Format(time.DateOnly))
	cmd.Env = e.env(e2eToken)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it while the second part's load job runs: the first is done.
	const running = "_g1_load_p0001_a1"
	var killedJob string
	deadline := time.Now().Add(30 * time.Second)
	for killedJob == "" {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("no load job of part 1 started:\n%s", out.String())
		}
		time.Sleep(5 * time.Millisecond)
		for _, id := range e.snapshotJobs() {
			if strings.HasSuffix(id, running) {
				killedJob = id
			}
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if rows := e.bq.Rows(bqDataset, bqTable, "20261126"); len(rows) != 0 {
		t.Fatalf("%d rows visible after a run killed while publishing", len(rows))
	}

	e.mustRun("--snapshot-date", e2eDay.Format(time.DateOnly))
	e.checkBQExact(e2eDay)
	e.checkJobsOnce()
	if n := e.bq.InsertAttempts(killedJob); n != 2 {
		t.Errorf("the job running at the kill was submitted %d times, want 2 (then adopted)", n)
	}
	for _, id := range e.snapshotJobs() {
		if strings.Contains(id, "_p0000_") && e.bq.InsertAttempts(id) != 1 {
			t.Errorf("job %s, done before the kill, was submitted again", id)
		}
	}
	if got := strings.Join(e.syncRuns(), ","); got != "succeeded" {
		t.Errorf("sync_runs = %s, want only the rerun (a killed run records nothing)", got)
	}
}

func TestE2EBigQuerySyncRunsRecordsFailedRuns(t *testing.T) {
	t.Parallel()
	e := newBQE2E(t, twiliotest.WorldSpec{Seed: 23, Services: 1, UsersPerService: 20, MaxBindingsPerUser: 30},
		twiliotest.Faults{}, bqE2EOptions{})
	e.editConfig("max_attempts: 10\n", "max_attempts: 2\n")
	// The failure is a user's own list, which the per-user walk reads.
	e.editConfig("    users: all\n", "    users: all\n    strategy: per_user\n")
	failing := e.world.Services[0].Users[3].SID
	e.srv.SetFaults(twiliotest.Faults{FailUsers: map[string]int{failing: 500}})
	r := e.runSnapshot()
	if r.code != 1 {
		t.Fatalf("run with a failing user: exit %d, want 1\n%s", r.code, r.stderr)
	}
	if rows := e.bq.Rows(bqDataset, bqTable, ""); len(rows) != 0 {
		t.Fatalf("a failed run published %d rows", len(rows))
	}
	runs := e.bq.Rows(bqDataset, "sync_runs", "")
	if len(runs) != 1 || runs[0]["status"] != "failed" || runs[0]["users_failed"] != int64(1) {
		t.Fatalf("sync_runs after a failed run: %v", runs)
	}
	fu, _ := runs[0]["failed_users"].([]any)
	if len(fu) != 1 || fu[0].(map[string]any)["user"] != failing {
		t.Errorf("failed_users = %v, want %s", runs[0]["failed_users"], failing)
	}
	if msg, _ := runs[0]["error"].(string); !strings.Contains(msg, "some users could not be read") {
		t.Errorf("error = %q", msg)
	}

	e.srv.SetFaults(twiliotest.Faults{})
	e.mustRun("--snapshot-date", e2eDay.Format(time.DateOnly))
	e.checkBQExact(e2eDay)
	if got := strings.Join(e.syncRuns(), ","); got != "failed,succeeded" {
		t.Errorf("sync_runs = %s, want failed,succeeded", got)
	}
	runs = e.bq.Rows(bqDataset, "sync_runs", "")
	if runs[0]["run_id"] == runs[1]["run_id"] || runs[1]["snapshot_date"] != civil.DateOf(e2eDay) {
		t.Errorf("rows: %v", runs)
	}
}

func TestE2EBigQueryErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		opts     bqE2EOptions
		setup    func(e *bqE2E)
		wantCode int
		wantErr  string
	}{
		{
			name:     "no permission",
			setup:    func(e *bqE2E) { e.bq.Deny("", "/bigquery/v2/projects/test-project/datasets", 403, "accessDenied") },
			wantCode: 2,
			wantErr:  "bindsync: bigquery: permission denied on dataset test-project:twilio_chat: grant roles/bigquery.dataEditor on the dataset and roles/bigquery.jobUser on the project to the credentials in use\n",
		},
		{
			name:     "unknown dataset",
			setup:    func(e *bqE2E) { e.editConfig("dataset: twilio_chat", "dataset: chat_export") },
			wantCode: 2,
			wantErr:  "bindsync: bigquery: dataset test-project:chat_export not found: create it (bq mk --location=US --dataset test-project:chat_export) or fix warehouse.bigquery.dataset\n",
		},
		{
			name:     "unknown project",
			setup:    func(e *bqE2E) { e.editConfig("project: test-project", "project: other-project") },
			wantCode: 2,
			wantErr:  "bindsync: bigquery: project other-project not found: check warehouse.bigquery.project, and that the BigQuery API is enabled in it\n",
		},
		{
			name:     "dataset in another location",
			opts:     bqE2EOptions{location: "EU"},
			wantCode: 2,
			wantErr:  "bindsync: bigquery: dataset test-project:twilio_chat is in location EU, but warehouse.bigquery.location is US: set warehouse.bigquery.location to EU\n",
		},
		{
			name:     "failed load job",
			setup:    func(e *bqE2E) { e.bq.FailNextJobs(3, "backendError", "Backend error. Please try again.") },
			wantCode: 1,
			wantErr:  "bindsync: publish snapshot 2026-11-26 to BigQuery test-project:twilio_chat.user_bindings: bigquery: load part snapshots/2026-11-26/parts/",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newBQE2E(t, twiliotest.WorldSpec{Seed: 24, Services: 1, UsersPerService: 5, MaxBindingsPerUser: 10}, twiliotest.Faults{}, tt.opts)
			if tt.setup != nil {
				tt.setup(e)
			}
			r := e.runSnapshot()
			if r.code != tt.wantCode || !strings.Contains(r.stderr, tt.wantErr) {
				t.Fatalf("exit %d (want %d), stderr:\n%s\nwant it to hold:\n%s", r.code, tt.wantCode, r.stderr, tt.wantErr)
			}
			if tt.name == "failed load job" {
				if !strings.Contains(r.stderr, `failed 3 times (last job bindsync_user_bindings_20261126_`) || !strings.Contains(r.stderr, `reason "backendError"): run again later; the next run resumes with a new attempt`) {
					t.Errorf("stderr does not say the job failed 3 times:\n%s", r.stderr)
				}
				if got := strings.Join(e.syncRuns(), ","); got != "failed" {
					t.Errorf("sync_runs = %s, want failed", got)
				}
				// The next run resumes with a new attempt and publishes.
				e.mustRun("--snapshot-date", e2eDay.Format(time.DateOnly))
				e.checkBQExact(e2eDay)
				e.checkJobsOnce()
			}
		})
	}
}

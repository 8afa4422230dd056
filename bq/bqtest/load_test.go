package bqtest_test

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"github.com/apache/arrow-go/v18/arrow"
	"google.golang.org/api/googleapi"

	"github.com/bindsync/bindsync/bq/bqtest"
)

const uploadRequest = "POST /upload/bigquery/v2/projects/proj/jobs"

func countRequests(reqs []string, want string) int {
	n := 0
	for _, r := range reqs {
		if r == want {
			n++
		}
	}
	return n
}

// loadPartition loads rows into user_bindings$part with WRITE_TRUNCATE
// under jobID and returns the job's error. chunkSize > 0 forces resumable
// uploads for media bigger than it.
func (e *env) loadPartition(t *testing.T, jobID, part string, data []byte, chunkSize int) error {
	t.Helper()
	l := e.ds.Table("user_bindings$" + part).LoaderFrom(parquetSource(data))
	l.WriteDisposition = bigquery.WriteTruncate
	l.JobID = jobID
	if chunkSize > 0 {
		l.MediaOptions = []googleapi.MediaOption{googleapi.ChunkSize(chunkSize)}
	}
	job, err := l.Run(testContext(t))
	return runJob(t, job, err)
}

func TestLoadReplacesPartition(t *testing.T) {
	tests := []struct {
		name        string
		chunkSize   int
		pad         int
		wantUploads func(size int) int
	}{
		{"multipart", 0, 0, func(int) int { return 1 }},
		// The opening request, then one request per 256 KiB chunk.
		{"resumable", googleapi.MinUploadChunkSize, 300, func(size int) int {
			return 1 + (size+googleapi.MinUploadChunkSize-1)/googleapi.MinUploadChunkSize
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, bqtest.Options{})
			e.createBindings(t, "user_bindings")

			first := makeBindings(nov26, "a", 2000, tt.pad)
			data := bindingsParquet(t, first)
			before := countRequests(e.srv.Requests(), uploadRequest)
			if err := e.loadPartition(t, "snap-20261126-a", "20261126", data, tt.chunkSize); err != nil {
				t.Fatalf("first load: %v", err)
			}
			n := countRequests(e.srv.Requests(), uploadRequest) - before
			if want := tt.wantUploads(len(data)); n != want {
				t.Errorf("%d upload requests for %d bytes, want %d", n, len(data), want)
			}
			if got := e.srv.Rows("ds", "user_bindings", "20261126"); !reflect.DeepEqual(got, wantBindings(first)) {
				t.Fatalf("rows after first load: %d rows, first %v; want %d rows, first %v", len(got), got[0], len(first), wantBindings(first)[0])
			}

			second := makeBindings(nov26, "b", 3, 0)
			if err := e.loadPartition(t, "snap-20261126-b", "20261126", bindingsParquet(t, second), tt.chunkSize); err != nil {
				t.Fatalf("second load: %v", err)
			}
			other := makeBindings(nov27, "c", 2, 0)
			if err := e.loadPartition(t, "snap-20261127-c", "20261127", bindingsParquet(t, other), tt.chunkSize); err != nil {
				t.Fatalf("load of another partition: %v", err)
			}
			if got := e.srv.Rows("ds", "user_bindings", "20261126"); !reflect.DeepEqual(got, wantBindings(second)) {
				t.Errorf("partition 20261126 = %v\nwant %v", got, wantBindings(second))
			}
			if got := e.srv.Rows("ds", "user_bindings", ""); !reflect.DeepEqual(got, wantBindings(second, other)) {
				t.Errorf("table = %v\nwant %v", got, wantBindings(second, other))
			}
			if md := e.srv.Table("ds", "user_bindings"); md.NumRows != 5 {
				t.Errorf("numRows = %d, want 5", md.NumRows)
			}
			stats := e.srv.Job("snap-20261126-b").Statistics.Load
			if stats == nil || stats.OutputRows != 3 || stats.InputFiles != 1 {
				t.Errorf("load statistics = %+v", stats)
			}
		})
	}
}

func TestLoadErrorsLeaveTableUnchanged(t *testing.T) {
	seed := makeBindings(nov26, "seed", 2, 0)
	noZone := arrow.NewSchema([]arrow.Field{
		{Name: "snapshot_date", Type: arrow.FixedWidthTypes.Date32},
		{Name: "user_sid", Type: arrow.BinaryTypes.String},
		{Name: "sid", Type: arrow.BinaryTypes.String},
		{Name: "date_created", Type: &arrow.TimestampType{Unit: arrow.Microsecond}, Nullable: true},
	}, nil)
	schema := func(change func(fs []arrow.Field) []arrow.Field) *arrow.Schema {
		return arrow.NewSchema(change(slicesClone(bindingArrowSchema().Fields())), nil)
	}
	row := []any{nov26, "US1", "BS1", "e", []string{"new_message"}, t0}
	tests := []struct {
		name      string
		table     string
		data      func(t *testing.T) []byte
		configure func(l *bigquery.Loader, src *bigquery.ReaderSource)
		reason    string
		text      string
	}{
		{
			name:   "row outside the decorated partition",
			table:  "user_bindings$20261126",
			data:   func(t *testing.T) []byte { return bindingsParquet(t, makeBindings(nov27, "x", 3, 0)) },
			reason: "invalid",
			text:   "Some rows belong to different partitions rather than destination partition 20261126",
		},
		{
			name:  "missing required column",
			table: "user_bindings$20261126",
			data: func(t *testing.T) []byte {
				sc := schema(func(fs []arrow.Field) []arrow.Field { return append(fs[:2:2], fs[3:]...) })
				return rowsParquet(t, sc, [][]any{{nov26, "US1", "e", []string{"a"}, t0}})
			},
			reason: "invalid",
			text:   "Field sid is missing in new schema",
		},
		{
			name:  "wrong type",
			table: "user_bindings$20261126",
			data: func(t *testing.T) []byte {
				sc := schema(func(fs []arrow.Field) []arrow.Field { fs[2].Type = arrow.PrimitiveTypes.Int64; return fs })
				return rowsParquet(t, sc, [][]any{{nov26, "US1", int64(7), "e", []string{"a"}, t0}})
			},
			reason: "invalid",
			text:   "Field sid has changed type from STRING to INTEGER",
		},
		{
			name:  "nullable data for a required column",
			table: "user_bindings$20261126",
			data: func(t *testing.T) []byte {
				sc := schema(func(fs []arrow.Field) []arrow.Field { fs[1].Nullable = true; return fs })
				return rowsParquet(t, sc, [][]any{row})
			},
			reason: "invalid",
			text:   "Field user_sid has changed mode from REQUIRED to NULLABLE",
		},
		{
			name:      "list without list inference",
			table:     "user_bindings$20261126",
			data:      func(t *testing.T) []byte { return rowsParquet(t, bindingArrowSchema(), [][]any{row}) },
			configure: func(_ *bigquery.Loader, src *bigquery.ReaderSource) { src.ParquetOptions = nil },
			reason:    "invalid",
			text:      "Field message_types has changed type from STRING to RECORD",
		},
		{
			name:  "timestamp without time zone",
			table: "user_bindings$20261126",
			data: func(t *testing.T) []byte {
				return rowsParquet(t, noZone, [][]any{{nov26, "US1", "BS1", t0}})
			},
			reason: "invalid",
			text:   "Field date_created has changed type from TIMESTAMP to DATETIME",
		},
		{
			name:  "new column without ALLOW_FIELD_ADDITION",
			table: "user_bindings$20261126",
			data: func(t *testing.T) []byte {
				sc := schema(func(fs []arrow.Field) []arrow.Field {
					return append(fs, arrow.Field{Name: "extra", Type: arrow.BinaryTypes.String, Nullable: true})
				})
				return rowsParquet(t, sc, [][]any{append(row[:6:6], "x")})
			},
			reason: "invalid",
			text:   "Cannot add fields (field: extra)",
		},
		{
			name:  "schema update option on a whole-table truncate",
			table: "user_bindings",
			data:  func(t *testing.T) []byte { return bindingsParquet(t, makeBindings(nov26, "x", 1, 0)) },
			configure: func(l *bigquery.Loader, _ *bigquery.ReaderSource) {
				l.SchemaUpdateOptions = []string{"ALLOW_FIELD_ADDITION"}
			},
			reason: "invalid",
			text:   "Schema update options should only be specified",
		},
		{
			name:  "WRITE_EMPTY into a partition with rows",
			table: "user_bindings$20261126",
			data:  func(t *testing.T) []byte { return bindingsParquet(t, makeBindings(nov26, "x", 1, 0)) },
			configure: func(l *bigquery.Loader, _ *bigquery.ReaderSource) {
				l.WriteDisposition = bigquery.WriteEmpty
			},
			reason: "duplicate",
			text:   "Already Exists: Table proj:ds.user_bindings$20261126",
		},
		{
			name:  "CREATE_NEVER and no table",
			table: "missing",
			data:  func(t *testing.T) []byte { return bindingsParquet(t, makeBindings(nov26, "x", 1, 0)) },
			configure: func(l *bigquery.Loader, _ *bigquery.ReaderSource) {
				l.CreateDisposition = bigquery.CreateNever
			},
			reason: "notFound",
			text:   "Not found: Table proj:ds.missing",
		},
		{
			name:   "not a Parquet file",
			table:  "user_bindings$20261126",
			data:   func(*testing.T) []byte { return []byte("PAR1 but not really") },
			reason: "invalid",
			text:   "Error while reading data",
		},
		{
			name:   "bad partition decorator",
			table:  "user_bindings$2026-11-26",
			data:   func(t *testing.T) []byte { return bindingsParquet(t, makeBindings(nov26, "x", 1, 0)) },
			reason: "invalid",
			text:   "Invalid partition decorator",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, bqtest.Options{})
			e.createBindings(t, "user_bindings")
			if err := e.loadPartition(t, "seed", "20261126", bindingsParquet(t, seed), 0); err != nil {
				t.Fatalf("seed load: %v", err)
			}
			before := e.srv.Table("ds", "user_bindings")

			src := parquetSource(tt.data(t))
			l := e.ds.Table(tt.table).LoaderFrom(src)
			l.WriteDisposition = bigquery.WriteTruncate
			l.JobID = "bad-load"
			if tt.configure != nil {
				tt.configure(l, src)
			}
			job, err := l.Run(testContext(t))
			wantJobError(t, runJob(t, job, err), tt.reason, tt.text)

			if got := e.srv.Rows("ds", "user_bindings", ""); !reflect.DeepEqual(got, wantBindings(seed)) {
				t.Errorf("rows after failed job = %v\nwant %v", got, wantBindings(seed))
			}
			if after := e.srv.Table("ds", "user_bindings"); after.Etag != before.Etag || len(after.Schema.Fields) != len(before.Schema.Fields) {
				t.Errorf("table changed by a failed job: etag %s -> %s, %d -> %d columns", before.Etag, after.Etag, len(before.Schema.Fields), len(after.Schema.Fields))
			}
			if job := e.srv.Job("bad-load"); job.Status.State != "DONE" || job.Status.ErrorResult == nil {
				t.Errorf("job status = %+v", job.Status)
			}
		})
	}
}

func slicesClone(fs []arrow.Field) []arrow.Field { return append([]arrow.Field(nil), fs...) }

func TestLoadSchemaChanges(t *testing.T) {
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	e.createBindings(t, "user_bindings")
	seed := makeBindings(nov26, "seed", 2, 0)
	if err := e.loadPartition(t, "seed", "20261126", bindingsParquet(t, seed), 0); err != nil {
		t.Fatalf("seed load: %v", err)
	}

	// ALLOW_FIELD_ADDITION appends a column; old rows read it as NULL.
	fields := append(slicesClone(bindingArrowSchema().Fields()), arrow.Field{Name: "extra", Type: arrow.BinaryTypes.String, Nullable: true})
	data := rowsParquet(t, arrow.NewSchema(fields, nil), [][]any{{nov27, "US9", "BS9", nil, []string{}, t0, "x"}})
	l := e.ds.Table("user_bindings$20261127").LoaderFrom(parquetSource(data))
	l.WriteDisposition = bigquery.WriteTruncate
	l.SchemaUpdateOptions = []string{"ALLOW_FIELD_ADDITION"}
	job, err := l.Run(ctx)
	if err := runJob(t, job, err); err != nil {
		t.Fatalf("load with a new column: %v", err)
	}
	md := e.srv.Table("ds", "user_bindings")
	last := md.Schema.Fields[len(md.Schema.Fields)-1]
	if last.Name != "extra" || last.Mode != "NULLABLE" || last.Type != "STRING" {
		t.Errorf("added column = %+v", last)
	}
	rows := e.srv.Rows("ds", "user_bindings", "")
	if len(rows) != 3 || rows[0]["extra"] != nil || rows[2]["extra"] != "x" || rows[0]["sid"] != "BSseed00000" {
		t.Errorf("rows = %v", rows)
	}

	// WRITE_TRUNCATE of the whole table replaces its schema with the
	// load's: descriptions are gone and the added column with it. The
	// partitioning stays.
	l = e.ds.Table("user_bindings").LoaderFrom(parquetSource(bindingsParquet(t, seed)))
	l.WriteDisposition = bigquery.WriteTruncate
	job, err = l.Run(ctx)
	if err := runJob(t, job, err); err != nil {
		t.Fatalf("whole-table truncate: %v", err)
	}
	md = e.srv.Table("ds", "user_bindings")
	if len(md.Schema.Fields) != 6 || md.Schema.Fields[2].Description != "" || md.TimePartitioning.Field != "snapshot_date" {
		t.Errorf("after whole-table truncate: schema %+v, partitioning %+v", md.Schema.Fields, md.TimePartitioning)
	}
	if got := e.srv.Rows("ds", "user_bindings", ""); !reflect.DeepEqual(got, wantBindings(seed)) {
		t.Errorf("rows after whole-table truncate = %v", got)
	}
}

func TestDuplicateJobID(t *testing.T) {
	tests := []struct {
		name      string
		chunkSize int
		pad       int
	}{
		{"multipart", 0, 0},
		{"resumable", googleapi.MinUploadChunkSize, 300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, bqtest.Options{})
			ctx := testContext(t)
			e.createBindings(t, "user_bindings")
			const id = "snap-20261126-load-1"
			rows := makeBindings(nov26, "a", 1500, tt.pad)
			if err := e.loadPartition(t, id, "20261126", bindingsParquet(t, rows), tt.chunkSize); err != nil {
				t.Fatalf("first load: %v", err)
			}

			l := e.ds.Table("user_bindings$20261126").LoaderFrom(parquetSource(bindingsParquet(t, makeBindings(nov26, "b", 1500, tt.pad))))
			l.WriteDisposition = bigquery.WriteTruncate
			l.JobID = id
			if tt.chunkSize > 0 {
				l.MediaOptions = []googleapi.MediaOption{googleapi.ChunkSize(tt.chunkSize)}
			}
			_, err := l.Run(ctx)
			wantAPIError(t, err, http.StatusConflict, "duplicate")

			job, err := e.client.JobFromID(ctx, id)
			if err != nil {
				t.Fatalf("job from id: %v", err)
			}
			if err := runJob(t, job, nil); err != nil {
				t.Errorf("existing job: %v", err)
			}
			if got := e.srv.JobCount(id); got != 1 {
				t.Errorf("JobCount = %d, want 1", got)
			}
			if got := e.srv.InsertAttempts(id); got != 2 {
				t.Errorf("InsertAttempts = %d, want 2", got)
			}
			if got := e.srv.Rows("ds", "user_bindings", ""); !reflect.DeepEqual(got, wantBindings(rows)) {
				t.Errorf("the rejected duplicate changed the table (%d rows)", len(got))
			}
		})
	}
}

func TestFailedJobKeepsItsID(t *testing.T) {
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	e.createBindings(t, "user_bindings")
	rows := makeBindings(nov26, "a", 3, 0)
	data := bindingsParquet(t, rows)

	e.srv.FailNextJobs(1, "backendError", "Backend error. Job aborted.")
	wantJobError(t, e.loadPartition(t, "snap-20261126-attempt-1", "20261126", data, 0), "backendError", "Job aborted")
	if got := e.srv.Rows("ds", "user_bindings", ""); len(got) != 0 {
		t.Fatalf("failed job wrote %d rows", len(got))
	}

	l := e.ds.Table("user_bindings$20261126").LoaderFrom(parquetSource(data))
	l.JobID = "snap-20261126-attempt-1"
	_, err := l.Run(ctx)
	wantAPIError(t, err, http.StatusConflict, "duplicate")

	if err := e.loadPartition(t, "snap-20261126-attempt-2", "20261126", data, 0); err != nil {
		t.Fatalf("retry with a new ID: %v", err)
	}
	if got := e.srv.Rows("ds", "user_bindings", "20261126"); !reflect.DeepEqual(got, wantBindings(rows)) {
		t.Errorf("rows after retry = %v", got)
	}
	var ids []string
	for _, j := range e.srv.Jobs() {
		ids = append(ids, j.JobReference.JobId+"="+j.Status.State)
	}
	want := []string{"snap-20261126-attempt-1=DONE", "snap-20261126-attempt-2=DONE"}
	if !reflect.DeepEqual(ids, want) {
		t.Errorf("jobs = %v, want %v", ids, want)
	}
}

func TestLoadFromGCS(t *testing.T) {
	part0 := makeBindings(nov26, "p0", 2, 0)
	part1 := makeBindings(nov26, "p1", 3, 0)
	objects := map[string][]byte{}
	gcs := func(_ context.Context, bucket, object string) ([]byte, error) {
		data, ok := objects[bucket+"/"+object]
		if !ok {
			return nil, errors.New("storage: object doesn't exist")
		}
		return data, nil
	}
	list := func(_ context.Context, bucket, prefix string) ([]string, error) {
		var out []string
		for k := range objects {
			if name, ok := strings.CutPrefix(k, bucket+"/"); ok && strings.HasPrefix(name, prefix) {
				out = append(out, name)
			}
		}
		sort.Strings(out)
		return out, nil
	}
	tests := []struct {
		name     string
		opts     bqtest.Options
		uris     []string
		want     []map[string]any
		wantText string
	}{
		{"one object", bqtest.Options{GCS: gcs}, []string{"gs://stage/snap/part-0.parquet"}, wantBindings(part0), ""},
		{"two objects", bqtest.Options{GCS: gcs}, []string{"gs://stage/snap/part-0.parquet", "gs://stage/snap/part-1.parquet"}, wantBindings(part0, part1), ""},
		{"wildcard", bqtest.Options{GCS: gcs, GCSList: list}, []string{"gs://stage/snap/part-*.parquet"}, wantBindings(part0, part1), ""},
		{"missing object", bqtest.Options{GCS: gcs}, []string{"gs://stage/snap/part-9.parquet"}, nil, "Not found: URI gs://stage/snap/part-9.parquet"},
		{"no GCS configured", bqtest.Options{}, []string{"gs://stage/snap/part-0.parquet"}, nil, "Not found: URI gs://stage/snap/part-0.parquet"},
		{"wildcard without a lister", bqtest.Options{GCS: gcs}, []string{"gs://stage/snap/part-*.parquet"}, nil, "Not found: Uris"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objects["stage/snap/part-0.parquet"] = bindingsParquet(t, part0)
			objects["stage/snap/part-1.parquet"] = bindingsParquet(t, part1)
			objects["stage/snap/manifest.json"] = []byte("{}")
			e := newEnv(t, tt.opts)
			e.createBindings(t, "user_bindings")
			ref := bigquery.NewGCSReference(tt.uris...)
			ref.SourceFormat = bigquery.Parquet
			ref.ParquetOptions = &bigquery.ParquetOptions{EnableListInference: true}
			l := e.ds.Table("user_bindings$20261126").LoaderFrom(ref)
			l.WriteDisposition = bigquery.WriteTruncate
			job, err := l.Run(testContext(t))
			jerr := runJob(t, job, err)
			if tt.wantText != "" {
				wantJobError(t, jerr, "notFound", tt.wantText)
				return
			}
			if jerr != nil {
				t.Fatalf("load: %v", jerr)
			}
			if got := e.srv.Rows("ds", "user_bindings", "20261126"); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("rows = %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestJobLocation(t *testing.T) {
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	data := bindingsParquet(t, makeBindings(nov26, "a", 2, 0))
	for id, loc := range map[string]string{"eu": "EU", "tokyo": "asia-northeast1"} {
		if err := e.client.Dataset(id).Create(ctx, &bigquery.DatasetMetadata{Location: loc}); err != nil {
			t.Fatalf("create dataset %s: %v", id, err)
		}
	}
	load := func(dataset, jobID, location string) (*bigquery.Job, error) {
		l := e.client.Dataset(dataset).Table("t").LoaderFrom(parquetSource(data))
		l.JobID = jobID
		l.Location = location
		return l.Run(ctx)
	}

	_, err := load("eu", "wrong-location", "US")
	wantAPIError(t, err, http.StatusNotFound, "notFound")
	if !strings.Contains(err.Error(), "Not found: Dataset proj:eu was not found in location US") {
		t.Errorf("error = %v", err)
	}
	if e.srv.JobCount("wrong-location") != 0 || e.srv.InsertAttempts("wrong-location") != 1 {
		t.Errorf("rejected job: count %d, attempts %d", e.srv.JobCount("wrong-location"), e.srv.InsertAttempts("wrong-location"))
	}

	job, err := load("eu", "inferred", "")
	if err := runJob(t, job, err); err != nil {
		t.Fatalf("load without location: %v", err)
	}
	if job.Location() != "EU" {
		t.Errorf("job location = %q, want EU", job.Location())
	}
	if got := len(e.srv.Rows("eu", "t", "")); got != 2 {
		t.Errorf("%d rows in eu.t, want 2", got)
	}

	// Jobs outside the US and EU multi-regions are found only with their
	// location.
	job, err = load("tokyo", "regional", "")
	if err := runJob(t, job, err); err != nil {
		t.Fatalf("regional load: %v", err)
	}
	_, err = e.client.JobFromID(ctx, "regional")
	wantAPIError(t, err, http.StatusNotFound, "notFound")
	if _, err := e.client.JobFromIDLocation(ctx, "regional", "asia-northeast1"); err != nil {
		t.Errorf("job with its location: %v", err)
	}
}

func TestJobDelay(t *testing.T) {
	data := bindingsParquet(t, makeBindings(nov26, "a", 2, 0))

	t.Run("cancel while running", func(t *testing.T) {
		e := newEnv(t, bqtest.Options{JobDelay: time.Hour})
		ctx := testContext(t)
		e.createBindings(t, "user_bindings")
		l := e.ds.Table("user_bindings$20261126").LoaderFrom(parquetSource(data))
		l.JobID = "slow"
		job, err := l.Run(ctx)
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		if job.LastStatus().State != bigquery.Running {
			t.Errorf("state after insert = %v, want running", job.LastStatus().State)
		}
		if got := e.srv.Rows("ds", "user_bindings", ""); len(got) != 0 {
			t.Errorf("running job already wrote %d rows", len(got))
		}
		if err := job.Cancel(ctx); err != nil {
			t.Fatalf("cancel: %v", err)
		}
		status, err := job.Status(ctx)
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		if !status.Done() {
			t.Fatalf("state after cancel = %v", status.State)
		}
		wantJobError(t, status.Err(), "stopped", "cancelled")
		if got := e.srv.Rows("ds", "user_bindings", ""); len(got) != 0 {
			t.Errorf("cancelled job wrote %d rows", len(got))
		}
	})

	t.Run("finishes after the client is gone", func(t *testing.T) {
		e := newEnv(t, bqtest.Options{JobDelay: 20 * time.Millisecond})
		e.createBindings(t, "user_bindings")
		gone, err := bigquery.NewClient(context.Background(), project, clientOptions(e.srv)...)
		if err != nil {
			t.Fatalf("client: %v", err)
		}
		l := gone.Dataset("ds").Table("user_bindings$20261126").LoaderFrom(parquetSource(data))
		l.JobID = "orphan"
		job, err := l.Run(testContext(t))
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		if job.LastStatus().State != bigquery.Running {
			t.Errorf("state in the insert answer = %v, want running", job.LastStatus().State)
		}
		gone.Close()

		again, err := e.client.JobFromID(testContext(t), "orphan")
		if err != nil {
			t.Fatalf("job from id: %v", err)
		}
		if err := runJob(t, again, nil); err != nil {
			t.Fatalf("job: %v", err)
		}
		if got := len(e.srv.Rows("ds", "user_bindings", "20261126")); got != 2 {
			t.Errorf("%d rows after the job finished, want 2", got)
		}
	})
}

func TestLoadNDJSON(t *testing.T) {
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	runs := e.ds.Table("sync_runs")
	err := runs.Create(ctx, &bigquery.TableMetadata{Schema: bigquery.Schema{
		{Name: "run_id", Type: bigquery.StringFieldType, Required: true},
		{Name: "snapshot_date", Type: bigquery.DateFieldType, Required: true},
		{Name: "finished_at", Type: bigquery.TimestampFieldType},
		{Name: "bindings", Type: bigquery.IntegerFieldType},
		{Name: "failed_users", Type: bigquery.StringFieldType, Repeated: true},
		{Name: "ok", Type: bigquery.BooleanFieldType},
	}})
	if err != nil {
		t.Fatalf("create sync_runs: %v", err)
	}
	load := func(body string) error {
		src := bigquery.NewReaderSource(strings.NewReader(body))
		src.SourceFormat = bigquery.JSON
		job, err := runs.LoaderFrom(src).Run(ctx)
		return runJob(t, job, err)
	}
	good := `{"run_id":"r1","snapshot_date":"2026-11-26","finished_at":"2026-11-26T03:04:05.123456Z","bindings":9007199254740993,"failed_users":["US1"],"ok":false}
{"run_id":"r2","snapshot_date":"2026-11-27","finished_at":null}
`
	if err := load(good); err != nil {
		t.Fatalf("load: %v", err)
	}
	want := []map[string]any{
		{"run_id": "r1", "snapshot_date": nov26, "finished_at": time.Date(2026, 11, 26, 3, 4, 5, 123456000, time.UTC), "bindings": int64(9007199254740993), "failed_users": []any{"US1"}, "ok": false},
		{"run_id": "r2", "snapshot_date": nov27, "finished_at": nil, "bindings": nil, "failed_users": []any{}, "ok": nil},
	}
	if got := e.srv.Rows("ds", "sync_runs", ""); !reflect.DeepEqual(got, want) {
		t.Errorf("rows = %v\nwant %v", got, want)
	}

	wantJobError(t, load(`{"run_id":"r3","snapshot_date":"2026-11-28","users":1}`), "invalid", "No such field: users")
	wantJobError(t, load(`{"snapshot_date":"2026-11-28"}`), "invalid", "Missing required field: run_id")
	if got := len(e.srv.Rows("ds", "sync_runs", "")); got != 2 {
		t.Errorf("%d rows after failed loads, want 2", got)
	}
}

package bqtest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"

	"github.com/bindsync/bindsync/bq/bqtest"
)

const project = "proj"

// env is a fake server with a dataset "ds" in US and a client for it.
type env struct {
	srv    *bqtest.Server
	client *bigquery.Client
	ds     *bigquery.Dataset
}

func newEnv(t *testing.T, opts bqtest.Options) *env {
	t.Helper()
	opts.Project = project
	srv := bqtest.NewServer(opts)
	t.Cleanup(srv.Close)
	srv.CreateDataset("ds", "US")
	client := newClient(t, srv)
	return &env{srv: srv, client: client, ds: client.Dataset("ds")}
}

func newClient(t *testing.T, srv *bqtest.Server) *bigquery.Client {
	t.Helper()
	client, err := bigquery.NewClient(context.Background(), project, clientOptions(srv)...)
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

// clientOptions point a client at srv, as bindsync's tests will.
func clientOptions(srv *bqtest.Server) []option.ClientOption {
	return []option.ClientOption{
		option.WithEndpoint(srv.URL() + "/bigquery/v2/"),
		option.WithoutAuthentication(),
	}
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// bindingSchema is a cut-down user_bindings table.
func bindingSchema() bigquery.Schema {
	return bigquery.Schema{
		{Name: "snapshot_date", Type: bigquery.DateFieldType, Required: true, Description: "UTC date of the snapshot"},
		{Name: "user_sid", Type: bigquery.StringFieldType, Required: true, Description: "User SID"},
		{Name: "sid", Type: bigquery.StringFieldType, Required: true, Description: "Binding SID"},
		{Name: "endpoint", Type: bigquery.StringFieldType, Description: "Device endpoint"},
		{Name: "message_types", Type: bigquery.StringFieldType, Repeated: true},
		{Name: "date_created", Type: bigquery.TimestampFieldType},
	}
}

// createBindings creates table name partitioned by snapshot_date and
// clustered by user_sid.
func (e *env) createBindings(t *testing.T, name string) *bigquery.Table {
	t.Helper()
	tbl := e.ds.Table(name)
	err := tbl.Create(testContext(t), &bigquery.TableMetadata{
		Schema:           bindingSchema(),
		TimePartitioning: &bigquery.TimePartitioning{Type: bigquery.DayPartitioningType, Field: "snapshot_date", Expiration: 400 * 24 * time.Hour},
		Clustering:       &bigquery.Clustering{Fields: []string{"user_sid"}},
		Description:      "Twilio chat user bindings",
	})
	if err != nil {
		t.Fatalf("create table %s: %v", name, err)
	}
	return tbl
}

type binding struct {
	date     civil.Date
	user     string
	sid      string
	endpoint *string
	types    []string
	created  time.Time
}

var (
	nov26 = civil.Date{Year: 2026, Month: 11, Day: 26}
	nov27 = civil.Date{Year: 2026, Month: 11, Day: 27}
	t0    = time.Date(2026, 11, 20, 8, 30, 0, 123456000, time.UTC)
)

func bindingArrowSchema() *arrow.Schema {
	return arrow.NewSchema([]arrow.Field{
		{Name: "snapshot_date", Type: arrow.FixedWidthTypes.Date32},
		{Name: "user_sid", Type: arrow.BinaryTypes.String},
		{Name: "sid", Type: arrow.BinaryTypes.String},
		{Name: "endpoint", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "message_types", Type: arrow.ListOf(arrow.BinaryTypes.String), Nullable: true},
		{Name: "date_created", Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}, Nullable: true},
	}, nil)
}

// bindingsParquet writes rows as a Parquet file with bindingArrowSchema.
func bindingsParquet(t *testing.T, rows []binding) []byte {
	t.Helper()
	values := make([][]any, len(rows))
	for i, r := range rows {
		var endpoint any
		if r.endpoint != nil {
			endpoint = *r.endpoint
		}
		values[i] = []any{r.date, r.user, r.sid, endpoint, r.types, r.created}
	}
	return rowsParquet(t, bindingArrowSchema(), values)
}

// wantBindings is what Server.Rows returns for rows.
func wantBindings(rows ...[]binding) []map[string]any {
	var out []map[string]any
	for _, rs := range rows {
		for _, r := range rs {
			types := make([]any, len(r.types))
			for i, mt := range r.types {
				types[i] = mt
			}
			var endpoint any
			if r.endpoint != nil {
				endpoint = *r.endpoint
			}
			out = append(out, map[string]any{
				"snapshot_date": r.date,
				"user_sid":      r.user,
				"sid":           r.sid,
				"endpoint":      endpoint,
				"message_types": types,
				"date_created":  r.created,
			})
		}
	}
	return out
}

// makeBindings returns n bindings of one snapshot; pad makes each row
// about that many bytes bigger, with content that does not compress.
func makeBindings(date civil.Date, prefix string, n, pad int) []binding {
	out := make([]binding, n)
	for i := range out {
		endpoint := fmt.Sprintf("%s-endpoint-%d-", prefix, i)
		for len(endpoint) < pad {
			endpoint += fmt.Sprintf("%x", (i+1)*len(endpoint)*7919)
		}
		out[i] = binding{
			date:     date,
			user:     fmt.Sprintf("US%s%03d", prefix, i%7),
			sid:      fmt.Sprintf("BS%s%05d", prefix, i),
			endpoint: &endpoint,
			types:    []string{"new_message", "added_to_channel"}[:i%3%2+1],
			created:  t0.Add(time.Duration(i) * time.Minute),
		}
		if i%4 == 3 {
			out[i].endpoint = nil
		}
	}
	return out
}

// rowsParquet writes rows whose values are string, int64, float64, bool,
// civil.Date, time.Time, []string or nil, in the order of schema.
func rowsParquet(t *testing.T, schema *arrow.Schema, rows [][]any) []byte {
	t.Helper()
	return parquetFile(t, schema, func(b *array.RecordBuilder) {
		for _, r := range rows {
			for i, v := range r {
				appendValue(t, b.Field(i), v)
			}
		}
	})
}

func appendValue(t *testing.T, fb array.Builder, v any) {
	t.Helper()
	if v == nil {
		fb.AppendNull()
		return
	}
	switch b := fb.(type) {
	case *array.StringBuilder:
		b.Append(v.(string))
	case *array.Int64Builder:
		b.Append(v.(int64))
	case *array.Float64Builder:
		b.Append(v.(float64))
	case *array.BooleanBuilder:
		b.Append(v.(bool))
	case *array.Date32Builder:
		b.Append(arrow.Date32FromTime(v.(civil.Date).In(time.UTC)))
	case *array.TimestampBuilder:
		b.Append(arrow.Timestamp(v.(time.Time).UnixMicro()))
	case *array.ListBuilder:
		b.Append(true)
		for _, s := range v.([]string) {
			appendValue(t, b.ValueBuilder(), s)
		}
	default:
		t.Fatalf("appendValue: no case for builder %T", fb)
	}
}

// parquetFile writes one record batch built by fill. Small row groups make
// multi-group files, as the exporter writes.
func parquetFile(t *testing.T, schema *arrow.Schema, fill func(b *array.RecordBuilder)) []byte {
	t.Helper()
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	fill(b)
	rec := b.NewRecordBatch()
	defer rec.Release()
	var buf bytes.Buffer
	w, err := pqarrow.NewFileWriter(schema, &buf, parquet.NewWriterProperties(parquet.WithMaxRowGroupLength(1000)), pqarrow.DefaultWriterProps())
	if err != nil {
		t.Fatalf("parquet writer: %v", err)
	}
	if err := w.Write(rec); err != nil {
		t.Fatalf("write parquet: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close parquet: %v", err)
	}
	return buf.Bytes()
}

// parquetSource wraps data as a Parquet reader source with list inference,
// as bindsync loads it.
func parquetSource(data []byte) *bigquery.ReaderSource {
	src := bigquery.NewReaderSource(bytes.NewReader(data))
	src.SourceFormat = bigquery.Parquet
	src.ParquetOptions = &bigquery.ParquetOptions{EnableListInference: true}
	return src
}

// runJob waits for a job and returns the job's own error (status.Err), or
// fails the test when the job could not be run or waited for.
func runJob(t *testing.T, job *bigquery.Job, err error) error {
	t.Helper()
	if err != nil {
		t.Fatalf("insert job: %v", err)
	}
	status, err := job.Wait(testContext(t))
	if err != nil {
		t.Fatalf("wait for job %s: %v", job.ID(), err)
	}
	return status.Err()
}

// wantAPIError checks that err is a googleapi.Error with this code and
// first reason.
func wantAPIError(t *testing.T, err error, code int, reason string) {
	t.Helper()
	var gerr *googleapi.Error
	if !errors.As(err, &gerr) {
		t.Fatalf("error = %v (%T), want googleapi.Error %d %s", err, err, code, reason)
	}
	if gerr.Code != code || len(gerr.Errors) == 0 || gerr.Errors[0].Reason != reason {
		t.Fatalf("error = %d %+v, want %d %s", gerr.Code, gerr.Errors, code, reason)
	}
}

// wantJobError checks that err is a job's bigquery.Error with this reason
// and a message containing text.
func wantJobError(t *testing.T, err error, reason, text string) {
	t.Helper()
	var jerr *bigquery.Error
	if !errors.As(err, &jerr) {
		t.Fatalf("job error = %v (%T), want bigquery.Error %s", err, err, reason)
	}
	if jerr.Reason != reason || !bytes.Contains([]byte(jerr.Message), []byte(text)) {
		t.Fatalf("job error = %s: %q, want %s containing %q", jerr.Reason, jerr.Message, reason, text)
	}
}

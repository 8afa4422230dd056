package bqtest_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"
	"google.golang.org/api/iterator"

	"github.com/bindsync/bindsync/bq/bqtest"
)

type syncRun struct {
	RunID        string     `bigquery:"run_id"`
	SnapshotDate civil.Date `bigquery:"snapshot_date"`
	FinishedAt   time.Time  `bigquery:"finished_at"`
	Bindings     int64      `bigquery:"bindings"`
	FailedUsers  []string   `bigquery:"failed_users"`
}

func syncRunsSchema() bigquery.Schema {
	return bigquery.Schema{
		{Name: "run_id", Type: bigquery.StringFieldType, Required: true},
		{Name: "snapshot_date", Type: bigquery.DateFieldType, Required: true},
		{Name: "finished_at", Type: bigquery.TimestampFieldType},
		{Name: "bindings", Type: bigquery.IntegerFieldType},
		{Name: "failed_users", Type: bigquery.StringFieldType, Repeated: true},
	}
}

func TestInsertAllAndRead(t *testing.T) {
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	tbl := e.ds.Table("sync_runs")
	err := tbl.Create(ctx, &bigquery.TableMetadata{
		Schema:           syncRunsSchema(),
		TimePartitioning: &bigquery.TimePartitioning{Field: "snapshot_date"},
	})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	runs := []*syncRun{
		{RunID: "r1", SnapshotDate: nov26, FinishedAt: t0, Bindings: 1<<53 + 1, FailedUsers: []string{"US1", "US2"}},
		{RunID: "r2", SnapshotDate: nov27, FinishedAt: t0.Add(24 * time.Hour), Bindings: 0},
	}
	ins := tbl.Inserter()
	if err := ins.Put(ctx, runs); err != nil {
		t.Fatalf("put: %v", err)
	}
	// The same insert IDs again are dropped, as BigQuery's de-duplication
	// does for retried requests.
	saver := &bigquery.StructSaver{Struct: runs[0], InsertID: "fixed-id"}
	for range 2 {
		if err := ins.Put(ctx, saver); err != nil {
			t.Fatalf("put with insert id: %v", err)
		}
	}

	var got []syncRun
	it := tbl.Read(ctx)
	for {
		var r syncRun
		err := it.Next(&r)
		if err == iterator.Done {
			break
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		got = append(got, r)
	}
	want := []syncRun{*runs[0], *runs[0], *runs[1]}
	want[2].FailedUsers = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read rows = %+v\nwant %+v", got, want)
	}
	if p := e.srv.Rows("ds", "sync_runs", "20261127"); len(p) != 1 || p[0]["run_id"] != "r2" {
		t.Errorf("partition 20261127 = %v", p)
	}
}

func TestInsertAllInvalidRow(t *testing.T) {
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	tbl := e.ds.Table("sync_runs")
	if err := tbl.Create(ctx, &bigquery.TableMetadata{Schema: syncRunsSchema()}); err != nil {
		t.Fatalf("create: %v", err)
	}
	rows := []*bigquery.ValuesSaver{
		{Schema: syncRunsSchema(), Row: []bigquery.Value{"ok", nov26, t0, 1, nil}},
		{Schema: syncRunsSchema()[:1], Row: []bigquery.Value{"no date"}},
	}
	err := tbl.Inserter().Put(ctx, rows)
	var multi bigquery.PutMultiError
	if !errors.As(err, &multi) {
		t.Fatalf("put error = %v (%T), want PutMultiError", err, err)
	}
	byIndex := map[int]string{}
	for _, rowErr := range multi {
		var e *bigquery.Error
		if len(rowErr.Errors) == 0 || !errors.As(rowErr.Errors[0], &e) {
			t.Fatalf("row error = %+v", rowErr)
		}
		byIndex[rowErr.RowIndex] = e.Reason
	}
	if want := map[int]string{0: "stopped", 1: "invalid"}; !reflect.DeepEqual(byIndex, want) {
		t.Errorf("row errors = %v, want %v", byIndex, want)
	}
	if got := e.srv.Rows("ds", "sync_runs", ""); len(got) != 0 {
		t.Errorf("rows = %v, want none", got)
	}
}

package bq_test

import (
	"reflect"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"

	"github.com/bindsync/bindsync/bq"
	"github.com/bindsync/bindsync/bq/bqtest"
)

func TestRecordRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, bqtest.Options{})
	p := e.publisher(nil)
	ctx := testContext(t)
	start := time.Date(2026, 11, 26, 2, 0, 0, 123456000, time.UTC)
	failed := bq.Run{
		RunID: "20261126T020000Z-aa11bb", SnapshotDate: day1, Start: start, End: start.Add(time.Minute),
		Status: "failed", Error: "some users could not be read (1)", Services: 2,
		UsersTotal: 10, UsersDone: 9, FailedUsers: []bq.FailedUser{{ServiceSID: "IS01", User: "alice", Reason: "HTTP 500"}},
		Bindings: 300, Pages: 12, Retries: 4, SnapshotRows: 300,
		ContractViolations: map[string]int64{"binding_type_unknown": 1, "binding_type_null": 3},
	}
	ok := bq.Run{
		RunID: "20261126T030000Z-cc22dd", SnapshotDate: day1, Start: start.Add(time.Hour), End: start.Add(time.Hour + time.Second),
		Status: "succeeded", Services: 2, UsersTotal: 10, UsersDone: 1, UsersGone: 1, Bindings: 20, Pages: 1, SnapshotRows: 320,
	}
	for _, r := range []bq.Run{failed, ok, failed} {
		if err := p.RecordRun(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	rows := e.srv.Rows(dataset, bq.RunsTable, "")
	if len(rows) != 2 {
		t.Fatalf("sync_runs has %d rows, want 2 (a run recorded twice appends once): %v", len(rows), rows)
	}
	if n := e.srv.InsertAttempts("bindsync_sync_runs_20261126T020000Z-aa11bb_a1"); n != 2 {
		t.Errorf("the repeated run was submitted %d times, want 2 (the second one a duplicate)", n)
	}
	want := []map[string]any{
		{
			"run_id": failed.RunID, "snapshot_date": civil.DateOf(day1), "started_at": start, "ended_at": start.Add(time.Minute),
			"status": "failed", "error": "some users could not be read (1)", "services": int64(2),
			"users_total": int64(10), "users_done": int64(9), "users_gone": int64(0), "users_failed": int64(1),
			"bindings": int64(300), "pages": int64(12), "retries": int64(4), "snapshot_rows": int64(300),
		},
		{
			"run_id": ok.RunID, "snapshot_date": civil.DateOf(day1), "started_at": start.Add(time.Hour), "ended_at": start.Add(time.Hour + time.Second),
			"status": "succeeded", "error": nil, "services": int64(2),
			"users_total": int64(10), "users_done": int64(1), "users_gone": int64(1), "users_failed": int64(0),
			"bindings": int64(20), "pages": int64(1), "retries": int64(0), "snapshot_rows": int64(320),
		},
	}
	for i, w := range want {
		for k, v := range w {
			got := rows[i][k]
			if gt, isTime := got.(time.Time); isTime {
				if !gt.Equal(v.(time.Time)) {
					t.Errorf("row %d %s = %v, want %v", i, k, got, v)
				}
				continue
			}
			if got != v {
				t.Errorf("row %d %s = %#v, want %#v", i, k, got, v)
			}
		}
	}
	fu, _ := rows[0]["failed_users"].([]any)
	if len(fu) != 1 {
		t.Fatalf("failed_users = %#v", rows[0]["failed_users"])
	}
	rec := fu[0].(map[string]any)
	if rec["service_sid"] != "IS01" || rec["user"] != "alice" || rec["reason"] != "HTTP 500" {
		t.Errorf("failed user = %v", rec)
	}
	if fu, _ := rows[1]["failed_users"].([]any); len(fu) != 0 {
		t.Errorf("succeeded run lists failed users %v", fu)
	}
	wantViolations := []any{
		map[string]any{"kind": "binding_type_null", "count": int64(3)},
		map[string]any{"kind": "binding_type_unknown", "count": int64(1)},
	}
	if got := rows[0]["contract_violations"]; !reflect.DeepEqual(got, wantViolations) {
		t.Errorf("contract_violations = %#v, want %#v", got, wantViolations)
	}
	if cv, _ := rows[1]["contract_violations"].([]any); len(cv) != 0 {
		t.Errorf("run without violations lists %v", cv)
	}
}

// TestRecordRunAddsViolationsColumn checks that a sync_runs table made
// before contract_violations existed gains the column, its rows intact.
func TestRecordRunAddsViolationsColumn(t *testing.T) {
	t.Parallel()
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	var old bigquery.Schema
	for _, f := range bq.RunsSchemaForTest() {
		if f.Name != "contract_violations" {
			old = append(old, f)
		}
	}
	tbl := e.client.Dataset(dataset).Table(bq.RunsTable)
	if err := tbl.Create(ctx, &bigquery.TableMetadata{Schema: old}); err != nil {
		t.Fatal(err)
	}
	start := day1.Add(2 * time.Hour)
	saver := &bigquery.ValuesSaver{Schema: old, Row: make([]bigquery.Value, len(old))}
	for i, f := range old {
		switch f.Name {
		case "run_id":
			saver.Row[i] = "old"
		case "snapshot_date":
			saver.Row[i] = civil.DateOf(day1)
		case "started_at", "ended_at":
			saver.Row[i] = start
		case "status":
			saver.Row[i] = "succeeded"
		case "failed_users":
			saver.Row[i] = []bigquery.Value{}
		}
	}
	if err := tbl.Inserter().Put(ctx, saver); err != nil {
		t.Fatal(err)
	}
	r := bq.Run{RunID: "new", SnapshotDate: day1, Start: start, End: start, Status: "succeeded", ContractViolations: map[string]int64{"binding_type_null": 2}}
	if err := e.publisher(nil).RecordRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	md, err := tbl.Metadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := md.Schema[len(md.Schema)-1]
	if last.Name != "contract_violations" || !last.Repeated || last.Type != bigquery.RecordFieldType {
		t.Fatalf("last column = %+v", last)
	}
	rows := e.srv.Rows(dataset, bq.RunsTable, "")
	if len(rows) != 2 || rows[0]["run_id"] != "old" || rows[1]["run_id"] != "new" {
		t.Fatalf("rows = %v", rows)
	}
	want := []any{map[string]any{"kind": "binding_type_null", "count": int64(2)}}
	if got := rows[1]["contract_violations"]; !reflect.DeepEqual(got, want) {
		t.Errorf("contract_violations = %#v, want %#v", got, want)
	}
}

func TestRecordRunRetriesFailedJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t, bqtest.Options{})
	p := e.publisher(nil)
	ctx := testContext(t)
	if err := p.EnsureTables(ctx); err != nil {
		t.Fatal(err)
	}
	e.srv.FailNextJobs(1, "backendError", "Backend error")
	r := bq.Run{RunID: "r1", SnapshotDate: day1, Start: day1, End: day1, Status: "succeeded"}
	if err := p.RecordRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	if rows := e.srv.Rows(dataset, bq.RunsTable, ""); len(rows) != 1 {
		t.Fatalf("%d rows, want 1", len(rows))
	}
	if e.srv.Job("bindsync_sync_runs_r1_a2") == nil {
		t.Error("no second attempt after a failed job")
	}
}

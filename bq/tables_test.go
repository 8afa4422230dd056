package bq_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"

	"github.com/bindsync/bindsync/bq"
	"github.com/bindsync/bindsync/bq/bqtest"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging/stagingtest"
)

const latestSQL = "SELECT * FROM `test-project.twilio_chat.user_bindings` WHERE snapshot_date = (SELECT MAX(snapshot_date) FROM `test-project.twilio_chat.user_bindings`)"

func TestEnsureTablesCreates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	expire := func(o *bq.Options) { o.PartitionExpiration = 400 * 24 * time.Hour }
	p := e.publisher(expire)
	if err := p.EnsureTables(ctx); err != nil {
		t.Fatal(err)
	}
	md, err := e.client.Dataset(dataset).Table(table).Metadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tp := md.TimePartitioning
	if tp == nil || tp.Field != schemas.PartitionField || tp.Type != bigquery.DayPartitioningType || tp.Expiration.Hours() != 400*24 {
		t.Errorf("partitioning %+v", tp)
	}
	if md.Clustering == nil || strings.Join(md.Clustering.Fields, ",") != "service_sid,user_sid" {
		t.Errorf("clustering %+v", md.Clustering)
	}
	checkSchema(t, md.Schema, bq.Schema(schemas.Binding()))

	if got := e.srv.ViewQuery(dataset, table+"_latest"); got != latestSQL {
		t.Errorf("view SQL:\n got %s\nwant %s", got, latestSQL)
	}
	runs := e.srv.Table(dataset, "sync_runs")
	if runs == nil || len(runs.Schema.Fields) == 0 || runs.Schema.Fields[0].Name != "run_id" || runs.Schema.Fields[0].Mode != "REQUIRED" {
		t.Fatalf("sync_runs table: %+v", runs)
	}

	// A second call with the same options changes nothing.
	before := len(e.srv.Requests())
	if err := e.publisher(expire).EnsureTables(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range e.srv.Requests()[before:] {
		if !strings.HasPrefix(r, "GET ") {
			t.Errorf("second EnsureTables sent %s", r)
		}
	}
}

// checkSchema compares names, types, modes and descriptions.
func checkSchema(t *testing.T, got, want bigquery.Schema) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("schema has %d columns, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Name != w.Name || g.Type != w.Type || g.Required != w.Required || g.Repeated != w.Repeated || g.Description != w.Description {
			t.Errorf("column %d = %+v, want %+v", i, *g, *w)
		}
	}
}

// TestEnsureTablesAddsColumn publishes with the schema of today, then
// with a schema that has a new column: the table gains it, rows intact.
func TestEnsureTablesAddsColumn(t *testing.T) {
	t.Parallel()
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	bindings := makeBindings("IS01", 80, 10)
	if err := e.publisher(nil).Publish(ctx, writeSnapshot(t, stagingtest.NewDir(t), day1, bindings, 50, "run1", newJournal())); err != nil {
		t.Fatal(err)
	}

	grown := append(bq.Schema(schemas.Binding()),
		&bigquery.FieldSchema{Name: "push_token_hash", Type: bigquery.StringFieldType, Description: "A new column."},
		&bigquery.FieldSchema{Name: "required_later", Type: bigquery.IntegerFieldType, Required: true},
	)
	// The old view is also rewritten if someone changed it.
	if _, err := e.client.Dataset(dataset).Table(table+"_latest").Update(ctx, bigquery.TableMetadataToUpdate{ViewQuery: "SELECT 1"}, ""); err != nil {
		t.Fatal(err)
	}
	p := e.publisher(func(o *bq.Options) { o.Schema = grown })
	if err := p.EnsureTables(ctx); err != nil {
		t.Fatal(err)
	}
	md, err := e.client.Dataset(dataset).Table(table).Metadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := append(bq.Schema(schemas.Binding()),
		&bigquery.FieldSchema{Name: "push_token_hash", Type: bigquery.StringFieldType, Description: "A new column."},
		// A REQUIRED column cannot be added to a table with rows.
		&bigquery.FieldSchema{Name: "required_later", Type: bigquery.IntegerFieldType},
	)
	checkSchema(t, md.Schema, want)
	e.checkRows(day1, bindings)
	for _, r := range e.srv.Rows(dataset, table, "") {
		if v, ok := r["push_token_hash"]; !ok || v != nil {
			t.Fatalf("old row has push_token_hash %v (present %v), want null", v, ok)
		}
	}
	if got := e.srv.ViewQuery(dataset, table+"_latest"); got != latestSQL {
		t.Errorf("view SQL not restored: %s", got)
	}

	// Snapshots keep loading into the wider table.
	more := makeBindings("IS01", 40, 11)
	if err := p.Publish(ctx, writeSnapshot(t, stagingtest.NewDir(t), day2, more, 50, "run2", newJournal())); err != nil {
		t.Fatal(err)
	}
	e.checkRows(day1, bindings)
	e.checkRows(day2, more)

	// Going back to the old schema drops nothing.
	if err := e.publisher(nil).EnsureTables(ctx); err != nil {
		t.Fatal(err)
	}
	if md, err = e.client.Dataset(dataset).Table(table).Metadata(ctx); err != nil {
		t.Fatal(err)
	}
	checkSchema(t, md.Schema, want)
}

func TestEnsureTablesErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		setup    func(e *env)
		opts     func(o *bq.Options)
		wantErr  string
		wantKind error
	}{
		{
			name: "no permission",
			setup: func(e *env) {
				e.srv.Deny("", "/bigquery/v2/projects/test-project/datasets/twilio_chat", 403, "accessDenied")
			},
			wantErr:  "bigquery: permission denied on dataset test-project:twilio_chat: grant roles/bigquery.dataEditor on the dataset and roles/bigquery.jobUser on the project to " + principal,
			wantKind: bq.ErrPermission,
		},
		{
			name: "no permission to create tables",
			setup: func(e *env) {
				e.srv.Deny("POST", "/bigquery/v2/projects/test-project/datasets/twilio_chat/tables", 403, "accessDenied")
			},
			wantErr:  "bigquery: permission denied on dataset test-project:twilio_chat: grant roles/bigquery.dataEditor on the dataset and roles/bigquery.jobUser on the project to " + principal,
			wantKind: bq.ErrPermission,
		},
		{
			name:     "unknown dataset",
			opts:     func(o *bq.Options) { o.Dataset = "chat_export" },
			wantErr:  "bigquery: dataset test-project:chat_export not found: create it (bq mk --location=US --dataset test-project:chat_export) or fix warehouse.bigquery.dataset",
			wantKind: bq.ErrNotFound,
		},
		{
			name:     "unknown project",
			opts:     func(o *bq.Options) { o.Project = "other-project" },
			wantErr:  "bigquery: project other-project not found: check warehouse.bigquery.project, and that the BigQuery API is enabled in it",
			wantKind: bq.ErrNotFound,
		},
		{
			name:     "dataset in another location",
			opts:     func(o *bq.Options) { o.Location = "EU" },
			wantErr:  "bigquery: dataset test-project:twilio_chat is in location US, but warehouse.bigquery.location is EU: set warehouse.bigquery.location to US",
			wantKind: bq.ErrLocation,
		},
		{
			name: "column of another type",
			setup: func(e *env) {
				s := bq.Schema(schemas.Binding())
				s[0] = &bigquery.FieldSchema{Name: "sid", Type: bigquery.IntegerFieldType}
				createTable(e, table, &bigquery.TableMetadata{Schema: s, TimePartitioning: &bigquery.TimePartitioning{Field: "snapshot_date"}})
			},
			wantErr:  "bigquery: table test-project:twilio_chat.user_bindings does not fit the schema bindsync writes (column sid is INTEGER in the table but STRING in bindsync's schema): bindsync only adds columns, so drop or rename the table, or set warehouse.bigquery.table to a new one",
			wantKind: bq.ErrSchema,
		},
		{
			name:     "table not partitioned",
			setup:    func(e *env) { createTable(e, table, &bigquery.TableMetadata{Schema: bq.Schema(schemas.Binding())}) },
			wantErr:  "bigquery: table test-project:twilio_chat.user_bindings is not partitioned by day on snapshot_date (it is not partitioned): drop or rename it, or set warehouse.bigquery.table to a new one, so that bindsync can create it",
			wantKind: bq.ErrSchema,
		},
		{
			name: "view name taken by a table",
			setup: func(e *env) {
				createTable(e, table+"_latest", &bigquery.TableMetadata{Schema: bq.Schema(schemas.Binding())})
			},
			wantErr:  "bigquery: test-project:twilio_chat.user_bindings_latest exists but is a TABLE, not a view: drop it so that bindsync can create the view of the newest snapshot",
			wantKind: bq.ErrSchema,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, bqtest.Options{})
			if tt.setup != nil {
				tt.setup(e)
			}
			p := e.publisher(tt.opts)
			err := p.EnsureTables(testContext(t))
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("error:\n got %v\nwant %s", err, tt.wantErr)
			}
			if !errors.Is(err, tt.wantKind) {
				t.Errorf("error is not %v", tt.wantKind)
			}
		})
	}
}

func createTable(e *env, name string, md *bigquery.TableMetadata) {
	e.t.Helper()
	if err := e.client.Dataset(dataset).Table(name).Create(context.Background(), md); err != nil {
		e.t.Fatal(err)
	}
}

// TestEnsureTablesRelaxesBindingType publishes into a table made when
// binding_type was REQUIRED: the column is relaxed to NULLABLE (BigQuery
// allows that change, and only that one, on a table with rows), the old
// rows stay, and bindings without a binding_type load as null.
func TestEnsureTablesRelaxesBindingType(t *testing.T) {
	t.Parallel()
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	old := bq.Schema(schemas.Binding())
	for _, f := range old {
		if f.Name == schemas.ColBindingType {
			f.Required = true
		}
	}
	// The table as an older bindsync made it, with a row.
	tbl := e.client.Dataset(dataset).Table(table)
	err := tbl.Create(ctx, &bigquery.TableMetadata{
		Schema:           old,
		TimePartitioning: &bigquery.TimePartitioning{Type: bigquery.DayPartitioningType, Field: schemas.PartitionField},
		Clustering:       &bigquery.Clustering{Fields: schemas.ClusterFields},
	})
	if err != nil {
		t.Fatal(err)
	}
	row := &bigquery.ValuesSaver{Schema: old, Row: make([]bigquery.Value, len(old))}
	for i, f := range old {
		switch f.Name {
		case schemas.ColSID:
			row.Row[i] = "BSold"
		case schemas.ColBindingType:
			row.Row[i] = "apn"
		case schemas.ColMessageTypes:
			row.Row[i] = []bigquery.Value{}
		case schemas.ColSnapshotDate:
			row.Row[i] = civil.DateOf(day1)
		case schemas.ColSyncedAt:
			row.Row[i] = day1
		}
	}
	if err := tbl.Inserter().Put(ctx, row); err != nil {
		t.Fatal(err)
	}

	bindings := makeBindings("IS01", 40, 21)
	for i := range bindings {
		if i%4 == 0 {
			bindings[i].BindingType = nil
		}
	}
	if err := e.publisher(nil).Publish(ctx, writeSnapshot(t, stagingtest.NewDir(t), day2, bindings, 25, "run2", newJournal())); err != nil {
		t.Fatal(err)
	}
	md, err := tbl.Metadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkSchema(t, md.Schema, bq.Schema(schemas.Binding()))
	if old := e.srv.Rows(dataset, table, day1.Format("20060102")); len(old) != 1 || old[0][schemas.ColSID] != "BSold" || old[0][schemas.ColBindingType] != "apn" {
		t.Errorf("the old row is now %v", old)
	}
	e.checkRows(day2, bindings)
	nulls := 0
	for _, r := range e.srv.Rows(dataset, table, day2.Format("20060102")) {
		if v, ok := r[schemas.ColBindingType]; !ok || v == nil {
			nulls++
		} else if v == "" {
			t.Errorf("a binding_type was stored as \"\"")
		}
	}
	if nulls != 10 {
		t.Errorf("%d rows with a null binding_type, want 10", nulls)
	}
}

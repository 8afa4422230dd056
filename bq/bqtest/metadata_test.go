package bqtest_test

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"google.golang.org/api/iterator"

	"github.com/bindsync/bindsync/bq/bqtest"
)

func TestTableMetadataRoundTrip(t *testing.T) {
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	e.createBindings(t, "user_bindings")

	md, err := e.ds.Table("user_bindings").Metadata(ctx)
	if err != nil {
		t.Fatalf("metadata: %v", err)
	}
	if md.Type != bigquery.RegularTable || md.Location != "US" || md.Description != "Twilio chat user bindings" {
		t.Errorf("type, location, description = %q, %q, %q", md.Type, md.Location, md.Description)
	}
	if md.FullID != "proj:ds.user_bindings" {
		t.Errorf("FullID = %q", md.FullID)
	}
	wantTP := &bigquery.TimePartitioning{Type: bigquery.DayPartitioningType, Field: "snapshot_date", Expiration: 400 * 24 * time.Hour}
	if !reflect.DeepEqual(md.TimePartitioning, wantTP) {
		t.Errorf("partitioning = %+v, want %+v", md.TimePartitioning, wantTP)
	}
	if md.Clustering == nil || !reflect.DeepEqual(md.Clustering.Fields, []string{"user_sid"}) {
		t.Errorf("clustering = %+v", md.Clustering)
	}
	if !reflect.DeepEqual(md.Schema, bindingSchema()) {
		t.Errorf("schema = %+v\nwant %+v", md.Schema, bindingSchema())
	}
	if md.ETag == "" {
		t.Error("no etag")
	}

	dmd, err := e.ds.Metadata(ctx)
	if err != nil {
		t.Fatalf("dataset metadata: %v", err)
	}
	if dmd.Location != "US" {
		t.Errorf("dataset location = %q", dmd.Location)
	}

	var names []string
	it := e.ds.Tables(ctx)
	for {
		tbl, err := it.Next()
		if err == iterator.Done {
			break
		}
		if err != nil {
			t.Fatalf("list tables: %v", err)
		}
		names = append(names, tbl.TableID)
	}
	if !reflect.DeepEqual(names, []string{"user_bindings"}) {
		t.Errorf("tables = %v", names)
	}
}

func TestCreateAndGetErrors(t *testing.T) {
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	e.createBindings(t, "t")
	other := newClient(t, e.srv)

	tests := []struct {
		name   string
		call   func() error
		code   int
		reason string
	}{
		{"table exists", func() error {
			return e.ds.Table("t").Create(ctx, &bigquery.TableMetadata{Schema: bindingSchema()})
		}, http.StatusConflict, "duplicate"},
		{"dataset exists", func() error {
			return e.ds.Create(ctx, nil)
		}, http.StatusConflict, "duplicate"},
		{"unknown dataset", func() error {
			_, err := e.client.Dataset("nope").Metadata(ctx)
			return err
		}, http.StatusNotFound, "notFound"},
		{"table in unknown dataset", func() error {
			return e.client.Dataset("nope").Table("t").Create(ctx, &bigquery.TableMetadata{Schema: bindingSchema()})
		}, http.StatusNotFound, "notFound"},
		{"unknown table", func() error {
			_, err := e.ds.Table("missing").Metadata(ctx)
			return err
		}, http.StatusNotFound, "notFound"},
		{"unknown project", func() error {
			_, err := other.DatasetInProject("elsewhere", "ds").Metadata(ctx)
			return err
		}, http.StatusNotFound, "notFound"},
		{"bad dataset id", func() error {
			return e.client.Dataset("bad-id").Create(ctx, nil)
		}, http.StatusBadRequest, "invalid"},
		{"partition field not a date", func() error {
			return e.ds.Table("p").Create(ctx, &bigquery.TableMetadata{
				Schema:           bindingSchema(),
				TimePartitioning: &bigquery.TimePartitioning{Field: "sid"},
			})
		}, http.StatusBadRequest, "invalid"},
		{"clustering field missing", func() error {
			return e.ds.Table("c").Create(ctx, &bigquery.TableMetadata{
				Schema:     bindingSchema(),
				Clustering: &bigquery.Clustering{Fields: []string{"nope"}},
			})
		}, http.StatusBadRequest, "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantAPIError(t, tt.call(), tt.code, tt.reason)
		})
	}
	if md, err := e.ds.Table("t").Metadata(ctx); err != nil || md.Description != "Twilio chat user bindings" {
		t.Errorf("after a duplicate create, table = %+v, %v; want it unchanged", md, err)
	}
}

func TestDatasetLocationDefault(t *testing.T) {
	e := newEnv(t, bqtest.Options{Location: "EU"})
	ctx := testContext(t)
	if err := e.client.Dataset("eu_ds").Create(ctx, nil); err != nil {
		t.Fatalf("create dataset: %v", err)
	}
	if err := e.client.Dataset("asia_ds").Create(ctx, &bigquery.DatasetMetadata{Location: "asia-northeast1"}); err != nil {
		t.Fatalf("create dataset: %v", err)
	}
	for id, want := range map[string]string{"eu_ds": "EU", "asia_ds": "asia-northeast1"} {
		md, err := e.client.Dataset(id).Metadata(ctx)
		if err != nil {
			t.Fatalf("metadata %s: %v", id, err)
		}
		if md.Location != want {
			t.Errorf("%s location = %q, want %q", id, md.Location, want)
		}
	}
}

func TestSchemaUpdate(t *testing.T) {
	base := bigquery.Schema{
		{Name: "id", Type: bigquery.StringFieldType, Required: true},
		{Name: "n", Type: bigquery.IntegerFieldType},
	}
	tests := []struct {
		name       string
		schema     bigquery.Schema
		wantErr    bool
		wantSchema bigquery.Schema
	}{
		{
			name:       "add nullable column with description",
			schema:     append(base[:2:2], &bigquery.FieldSchema{Name: "note", Type: bigquery.StringFieldType, Description: "added"}),
			wantSchema: append(base[:2:2], &bigquery.FieldSchema{Name: "note", Type: bigquery.StringFieldType, Description: "added"}),
		},
		{
			name:       "add repeated column",
			schema:     append(base[:2:2], &bigquery.FieldSchema{Name: "tags", Type: bigquery.StringFieldType, Repeated: true}),
			wantSchema: append(base[:2:2], &bigquery.FieldSchema{Name: "tags", Type: bigquery.StringFieldType, Repeated: true}),
		},
		{
			// As a privacy policy set on a table with data does: only the
			// descriptions change, and the rows stay.
			name:       "change descriptions",
			schema:     bigquery.Schema{{Name: "id", Type: bigquery.StringFieldType, Required: true, Description: "Hashed: HMAC-SHA-256."}, {Name: "n", Type: bigquery.IntegerFieldType, Description: "Dropped."}},
			wantSchema: bigquery.Schema{{Name: "id", Type: bigquery.StringFieldType, Required: true, Description: "Hashed: HMAC-SHA-256."}, {Name: "n", Type: bigquery.IntegerFieldType, Description: "Dropped."}},
		},
		{
			name:       "relax required column",
			schema:     bigquery.Schema{{Name: "id", Type: bigquery.StringFieldType}, base[1]},
			wantSchema: bigquery.Schema{{Name: "id", Type: bigquery.StringFieldType}, base[1]},
		},
		{
			name:    "change type",
			schema:  bigquery.Schema{base[0], {Name: "n", Type: bigquery.StringFieldType}},
			wantErr: true,
		},
		{
			name:    "drop column",
			schema:  bigquery.Schema{base[0]},
			wantErr: true,
		},
		{
			name:    "tighten mode",
			schema:  bigquery.Schema{base[0], {Name: "n", Type: bigquery.IntegerFieldType, Required: true}},
			wantErr: true,
		},
		{
			name:    "required to repeated",
			schema:  bigquery.Schema{{Name: "id", Type: bigquery.StringFieldType, Repeated: true}, base[1]},
			wantErr: true,
		},
		{
			name:    "nullable to repeated",
			schema:  bigquery.Schema{base[0], {Name: "n", Type: bigquery.IntegerFieldType, Repeated: true}},
			wantErr: true,
		},
		{
			name:    "relax and retype",
			schema:  bigquery.Schema{{Name: "id", Type: bigquery.IntegerFieldType}, base[1]},
			wantErr: true,
		},
		{
			name:    "add required column",
			schema:  append(base[:2:2], &bigquery.FieldSchema{Name: "r", Type: bigquery.StringFieldType, Required: true}),
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, bqtest.Options{})
			ctx := testContext(t)
			tbl := e.ds.Table("t")
			if err := tbl.Create(ctx, &bigquery.TableMetadata{Schema: base}); err != nil {
				t.Fatalf("create: %v", err)
			}
			if err := tbl.Inserter().Put(ctx, []*bigquery.ValuesSaver{{Schema: base, Row: []bigquery.Value{"a", 1}}}); err != nil {
				t.Fatalf("insert: %v", err)
			}
			md, err := tbl.Update(ctx, bigquery.TableMetadataToUpdate{Schema: tt.schema}, "")
			if tt.wantErr {
				wantAPIError(t, err, http.StatusBadRequest, "invalid")
				if got := e.srv.Table("ds", "t").Schema.Fields; len(got) != 2 || got[1].Type != "INTEGER" {
					t.Errorf("schema changed by a rejected update: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("update: %v", err)
			}
			if !reflect.DeepEqual(md.Schema, tt.wantSchema) {
				t.Errorf("schema = %+v\nwant %+v", md.Schema, tt.wantSchema)
			}
			rows := e.srv.Rows("ds", "t", "")
			if len(rows) != 1 || rows[0]["id"] != "a" || rows[0]["n"] != int64(1) {
				t.Errorf("rows after update = %v", rows)
			}
		})
	}
}

func TestUpdateWithEtag(t *testing.T) {
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	tbl := e.createBindings(t, "t")
	md, err := tbl.Metadata(ctx)
	if err != nil {
		t.Fatalf("metadata: %v", err)
	}
	updated, err := tbl.Update(ctx, bigquery.TableMetadataToUpdate{Description: "first"}, md.ETag)
	if err != nil {
		t.Fatalf("update with current etag: %v", err)
	}
	if updated.Description != "first" || updated.ETag == md.ETag {
		t.Errorf("after update: description %q, etag %q (was %q)", updated.Description, updated.ETag, md.ETag)
	}
	_, err = tbl.Update(ctx, bigquery.TableMetadataToUpdate{Description: "second"}, md.ETag)
	wantAPIError(t, err, http.StatusPreconditionFailed, "conditionNotMet")
	if got := e.srv.Table("ds", "t").Description; got != "first" {
		t.Errorf("description = %q after a stale update, want %q", got, "first")
	}
	// Partition expiration may change; the partitioning column may not.
	updated, err = tbl.Update(ctx, bigquery.TableMetadataToUpdate{
		TimePartitioning: &bigquery.TimePartitioning{Field: "snapshot_date", Expiration: 48 * time.Hour},
	}, "")
	if err != nil {
		t.Fatalf("change partition expiration: %v", err)
	}
	if updated.TimePartitioning.Expiration != 48*time.Hour {
		t.Errorf("expiration = %v", updated.TimePartitioning.Expiration)
	}
	_, err = tbl.Update(ctx, bigquery.TableMetadataToUpdate{
		TimePartitioning: &bigquery.TimePartitioning{Field: "date_created"},
	}, "")
	wantAPIError(t, err, http.StatusBadRequest, "invalid")
}

func TestView(t *testing.T) {
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	e.createBindings(t, "user_bindings")
	const query = "SELECT * FROM `proj.ds.user_bindings` WHERE snapshot_date = (SELECT MAX(snapshot_date) FROM `proj.ds.user_bindings`)"
	view := e.ds.Table("user_bindings_latest")
	if err := view.Create(ctx, &bigquery.TableMetadata{ViewQuery: query, Description: "newest snapshot"}); err != nil {
		t.Fatalf("create view: %v", err)
	}
	md, err := view.Metadata(ctx)
	if err != nil {
		t.Fatalf("view metadata: %v", err)
	}
	if md.Type != bigquery.ViewTable || md.ViewQuery != query || md.UseLegacySQL {
		t.Errorf("view metadata = type %q, query %q, legacy %v", md.Type, md.ViewQuery, md.UseLegacySQL)
	}
	if got := e.srv.ViewQuery("ds", "user_bindings_latest"); got != query {
		t.Errorf("ViewQuery = %q", got)
	}
	newQuery := strings.Replace(query, "MAX", "max", 1)
	if _, err := view.Update(ctx, bigquery.TableMetadataToUpdate{ViewQuery: newQuery}, ""); err != nil {
		t.Fatalf("update view: %v", err)
	}
	if got := e.srv.ViewQuery("ds", "user_bindings_latest"); got != newQuery {
		t.Errorf("ViewQuery after update = %q", got)
	}
}

// TestViewNeedsItsTables: BigQuery checks a view's query when the view is
// created or changed, so a view naming a table that does not exist yet is
// refused.
func TestViewNeedsItsTables(t *testing.T) {
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	const query = "SELECT * FROM `proj.ds.user_bindings_changes` WHERE change != 'removed'"
	view := e.ds.Table("user_bindings_history")
	err := view.Create(ctx, &bigquery.TableMetadata{ViewQuery: query})
	wantAPIError(t, err, http.StatusNotFound, "notFound")
	if !strings.Contains(err.Error(), "proj:ds.user_bindings_changes was not found") {
		t.Errorf("error does not name the missing table: %v", err)
	}
	err = view.Create(ctx, &bigquery.TableMetadata{ViewQuery: "SELECT * FROM `proj.nods.t`"})
	wantAPIError(t, err, http.StatusNotFound, "notFound")

	e.createBindings(t, "user_bindings_changes")
	if err := view.Create(ctx, &bigquery.TableMetadata{ViewQuery: query}); err != nil {
		t.Fatalf("create the view once its table exists: %v", err)
	}
	// Short references are in the server's project; other projects are
	// not checked.
	if _, err := view.Update(ctx, bigquery.TableMetadataToUpdate{ViewQuery: "SELECT * FROM `ds.user_bindings_changes` JOIN `other.x.y` USING (sid)"}, ""); err != nil {
		t.Fatalf("update the view: %v", err)
	}
	_, err = view.Update(ctx, bigquery.TableMetadataToUpdate{ViewQuery: "SELECT * FROM `ds.missing`"}, "")
	wantAPIError(t, err, http.StatusNotFound, "notFound")
	if got := e.srv.ViewQuery("ds", "user_bindings_history"); !strings.Contains(got, "other.x.y") {
		t.Errorf("a refused update changed the view: %s", got)
	}
}

func TestDeny(t *testing.T) {
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	e.createBindings(t, "t")
	e.srv.Deny(http.MethodGet, "/bigquery/v2/projects/proj/datasets/ds/tables/t", http.StatusForbidden, "accessDenied")

	_, err := e.ds.Table("t").Metadata(ctx)
	wantAPIError(t, err, http.StatusForbidden, "accessDenied")
	if _, err := e.ds.Metadata(ctx); err != nil {
		t.Errorf("dataset get, not denied: %v", err)
	}
	if err := e.ds.Table("t").Delete(ctx); err != nil {
		t.Errorf("delete, not denied: %v", err)
	}
	want := []string{
		"GET /bigquery/v2/projects/proj/datasets/ds/tables/t",
		"GET /bigquery/v2/projects/proj/datasets/ds",
		"DELETE /bigquery/v2/projects/proj/datasets/ds/tables/t",
	}
	got := e.srv.Requests()
	if len(got) < len(want) || !reflect.DeepEqual(got[len(got)-len(want):], want) {
		t.Errorf("requests = %q, want to end with %q", got, want)
	}
}

func TestDeleteDataset(t *testing.T) {
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	e.createBindings(t, "t")
	wantAPIError(t, e.ds.Delete(ctx), http.StatusBadRequest, "resourceInUse")
	if err := e.ds.DeleteWithContents(ctx); err != nil {
		t.Fatalf("delete with contents: %v", err)
	}
	_, err := e.ds.Metadata(ctx)
	wantAPIError(t, err, http.StatusNotFound, "notFound")
}

// TestSchemaUpdateNested applies the same rules inside a RECORD: relaxing
// a REQUIRED field is allowed, tightening or retyping one is not.
func TestSchemaUpdateNested(t *testing.T) {
	base := bigquery.Schema{{Name: "rec", Type: bigquery.RecordFieldType, Schema: bigquery.Schema{
		{Name: "a", Type: bigquery.StringFieldType, Required: true},
		{Name: "b", Type: bigquery.IntegerFieldType},
	}}}
	rec := func(a, b *bigquery.FieldSchema) bigquery.Schema {
		return bigquery.Schema{{Name: "rec", Type: bigquery.RecordFieldType, Schema: bigquery.Schema{a, b}}}
	}
	tests := []struct {
		name    string
		schema  bigquery.Schema
		wantErr bool
	}{
		{"relax", rec(&bigquery.FieldSchema{Name: "a", Type: bigquery.StringFieldType}, base[0].Schema[1]), false},
		{"tighten", rec(base[0].Schema[0], &bigquery.FieldSchema{Name: "b", Type: bigquery.IntegerFieldType, Required: true}), true},
		{"retype", rec(&bigquery.FieldSchema{Name: "a", Type: bigquery.IntegerFieldType, Required: true}, base[0].Schema[1]), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, bqtest.Options{})
			ctx := testContext(t)
			tbl := e.ds.Table("t")
			if err := tbl.Create(ctx, &bigquery.TableMetadata{Schema: base}); err != nil {
				t.Fatalf("create: %v", err)
			}
			md, err := tbl.Update(ctx, bigquery.TableMetadataToUpdate{Schema: tt.schema}, "")
			if tt.wantErr {
				wantAPIError(t, err, http.StatusBadRequest, "invalid")
				if got := e.srv.Table("ds", "t").Schema.Fields[0].Fields; got[0].Mode != "REQUIRED" || got[1].Mode != "NULLABLE" || got[0].Type != "STRING" {
					t.Errorf("schema changed by a rejected update: %+v %+v", got[0], got[1])
				}
				return
			}
			if err != nil {
				t.Fatalf("update: %v", err)
			}
			if !reflect.DeepEqual(md.Schema, tt.schema) {
				t.Errorf("schema = %+v, want %+v", md.Schema[0].Schema, tt.schema[0].Schema)
			}
		})
	}
}

package bq

import (
	"fmt"
	"strings"
	"testing"

	"cloud.google.com/go/bigquery"
	"github.com/apache/arrow-go/v18/arrow"

	"github.com/bindsync/bindsync/internal/golden"
	"github.com/bindsync/bindsync/schemas"
)

// schemaJSON is s as the bq command line and the REST API write it.
func schemaJSON(t *testing.T, s bigquery.Schema) []byte {
	t.Helper()
	js, err := s.ToJSONFields()
	if err != nil {
		t.Fatal(err)
	}
	return append(js, '\n')
}

// TestGoldenSchemas pins the BigQuery schema of every table, as it is and
// as a privacy policy that treats every column makes it.
func TestGoldenSchemas(t *testing.T) {
	golden.Check(t, "bigquery.golden.json", schemaJSON(t, Schema(schemas.Binding())))
	golden.Check(t, "users.bigquery.golden.json", schemaJSON(t, Schema(schemas.Users())))
	golden.Check(t, "changes.bigquery.golden.json", schemaJSON(t, Schema(schemas.Changes())))
	p := schemas.Policy{Endpoint: schemas.Hash, Identity: schemas.Drop, UsersUser: schemas.Drop, UsersIdentity: schemas.Hash}
	golden.Check(t, "policy.bigquery.golden.json", append(schemaJSON(t, Schema(p.BindingSchema())), schemaJSON(t, Schema(p.UsersSchema()))...))
}

func TestSchemaFields(t *testing.T) {
	got := map[string]string{}
	for _, f := range Schema(schemas.Binding()) {
		got[f.Name] = fmt.Sprintf("%s required=%v repeated=%v", f.Type, f.Required, f.Repeated)
	}
	tests := []struct{ name, want string }{
		{"sid", "STRING required=false repeated=false"},
		{"binding_type", "STRING required=false repeated=false"}, // null is kept, see schemas.Violations
		{"date_created", "TIMESTAMP required=false repeated=false"},
		{"message_types", "STRING required=false repeated=true"},
		{"snapshot_date", "DATE required=true repeated=false"},
		{"synced_at", "TIMESTAMP required=true repeated=false"},
	}
	for _, tt := range tests {
		if got[tt.name] != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got[tt.name], tt.want)
		}
	}
	if schemas.PartitionField != "snapshot_date" {
		t.Errorf("PartitionField = %q", schemas.PartitionField)
	}
}

// TestSchemaDescriptions: every column's description is its Arrow field's,
// the privacy policy's notes included, and each call returns a fresh value.
func TestSchemaDescriptions(t *testing.T) {
	p := schemas.Policy{Endpoint: schemas.Hash, Identity: schemas.Drop}
	for _, s := range []*arrow.Schema{schemas.Binding(), schemas.Users(), schemas.Changes(), p.BindingSchema(), p.ChangesSchema()} {
		got := Schema(s)
		if len(got) != s.NumFields() {
			t.Fatalf("%d columns, want %d", len(got), s.NumFields())
		}
		for i, f := range s.Fields() {
			want, _ := f.Metadata.GetValue(schemas.DescriptionKey)
			if got[i].Name != f.Name || got[i].Description != want || want == "" {
				t.Errorf("column %d: %s %q, want %s %q", i, got[i].Name, got[i].Description, f.Name, want)
			}
		}
	}
	a, b := Schema(schemas.Binding()), Schema(schemas.Binding())
	a[0].Name = "changed"
	if b[0].Name == "changed" || Schema(schemas.Binding())[0].Name == "changed" {
		t.Error("Schema returned a shared value")
	}
}

func TestSchemaUnsupported(t *testing.T) {
	tests := []struct {
		name    string
		typ     arrow.DataType
		wantErr string
	}{
		{"float", arrow.PrimitiveTypes.Float64, "no BigQuery mapping"},
		{"naive_ts", &arrow.TimestampType{Unit: arrow.Microsecond}, "without time zone"},
		{"list_of_int", arrow.ListOf(arrow.PrimitiveTypes.Int32), "no BigQuery mapping"},
	}
	for _, tt := range tests {
		s := arrow.NewSchema([]arrow.Field{{Name: tt.name, Type: tt.typ}}, nil)
		_, err := schemaOf(s)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), tt.name) {
			t.Errorf("%s: err = %v, want one naming the column and containing %q", tt.name, err, tt.wantErr)
		}
		func() {
			defer func() {
				if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), tt.name) {
					t.Errorf("%s: Schema panicked with %v, want a panic naming the column", tt.name, r)
				}
			}()
			Schema(s)
		}()
	}
}

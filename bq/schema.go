package bq

import (
	"fmt"

	"cloud.google.com/go/bigquery"
	"github.com/apache/arrow-go/v18/arrow"

	"github.com/bindsync/bindsync/schemas"
)

// Schema returns the BigQuery schema of a table whose rows have the Arrow
// schema s (schemas.Binding, schemas.Users, schemas.Changes, or what a
// privacy policy makes of them), derived from it so that the Parquet files
// and the table cannot drift apart: a column each, the description taken
// from the field's metadata. Each call returns a fresh value the caller may
// modify.
//
// It panics on a type with no BigQuery mapping: the schemas are constants
// of package schemas and the golden tests derive every one of them, so that
// only fires for a change that never passed the tests.
func Schema(s *arrow.Schema) bigquery.Schema {
	out, err := schemaOf(s)
	if err != nil {
		panic(fmt.Sprintf("bq: derive the BigQuery schema: %v", err))
	}
	return out
}

// schemaOf maps every field of s to a BigQuery column.
func schemaOf(s *arrow.Schema) (bigquery.Schema, error) {
	out := make(bigquery.Schema, 0, s.NumFields())
	for _, f := range s.Fields() {
		fs := &bigquery.FieldSchema{Name: f.Name, Required: !f.Nullable}
		if i := f.Metadata.FindKey(schemas.DescriptionKey); i >= 0 {
			fs.Description = f.Metadata.Values()[i]
		}
		typ := f.Type
		if l, ok := typ.(*arrow.ListType); ok {
			// BigQuery has no null array: a null list loads as an empty
			// one, and a REPEATED column is never REQUIRED.
			fs.Repeated, fs.Required = true, false
			typ = l.Elem()
		}
		t, err := fieldType(typ)
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", f.Name, err)
		}
		fs.Type = t
		out = append(out, fs)
	}
	return out, nil
}

// fieldType is the one type switch from Arrow to BigQuery. Only the types
// the schemas use are supported.
func fieldType(t arrow.DataType) (bigquery.FieldType, error) {
	switch t := t.(type) {
	case *arrow.StringType:
		return bigquery.StringFieldType, nil
	case *arrow.TimestampType:
		if t.TimeZone == "" {
			// A zone-less Parquet timestamp loads as DATETIME, not TIMESTAMP.
			return "", fmt.Errorf("timestamp without time zone is not supported")
		}
		return bigquery.TimestampFieldType, nil
	case *arrow.Date32Type:
		return bigquery.DateFieldType, nil
	case *arrow.Int64Type:
		return bigquery.IntegerFieldType, nil
	default:
		return "", fmt.Errorf("arrow type %s has no BigQuery mapping", t)
	}
}

package schemas

import (
	"fmt"

	"cloud.google.com/go/bigquery"
	"github.com/apache/arrow-go/v18/arrow"
)

// PartitionField is the DATE column the user_bindings table is partitioned
// by: one partition per snapshot, replaced as a whole when it is published.
const PartitionField = ColSnapshotDate

// ClusterFields are the clustering columns of the user_bindings table, in
// order; queries by service and user read only the blocks they need.
var ClusterFields = []string{ColServiceSID, ColUserSID}

// BigQuery returns the BigQuery schema of the user_bindings table, derived
// from the Arrow schema so that the two cannot drift apart. Each call returns
// a fresh value the caller may modify.
func BigQuery() bigquery.Schema {
	s, err := bigQuerySchema(Binding())
	if err != nil {
		// The Arrow schema is a constant, and the golden test derives it,
		// so this only fires for a change that never passed the tests.
		panic(fmt.Sprintf("schemas: derive BigQuery schema: %v", err))
	}
	return s
}

// bigQuerySchema maps every field of s to a BigQuery column, taking the
// column description from the field metadata.
func bigQuerySchema(s *arrow.Schema) (bigquery.Schema, error) {
	out := make(bigquery.Schema, 0, s.NumFields())
	for _, f := range s.Fields() {
		fs := &bigquery.FieldSchema{Name: f.Name, Required: !f.Nullable}
		if i := f.Metadata.FindKey(DescriptionKey); i >= 0 {
			fs.Description = f.Metadata.Values()[i]
		}
		typ := f.Type
		if l, ok := typ.(*arrow.ListType); ok {
			// BigQuery has no null array: a null list loads as an empty
			// one, and a REPEATED column is never REQUIRED.
			fs.Repeated, fs.Required = true, false
			typ = l.Elem()
		}
		t, err := bigQueryType(typ)
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", f.Name, err)
		}
		fs.Type = t
		out = append(out, fs)
	}
	return out, nil
}

// bigQueryType is the one type switch from Arrow to BigQuery. Only the
// types the binding schema uses are supported.
func bigQueryType(t arrow.DataType) (bigquery.FieldType, error) {
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

package bqtest

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"cloud.google.com/go/civil"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	bigquery "google.golang.org/api/bigquery/v2"
)

// readParquet decodes a Parquet file into rows and the schema BigQuery
// derives from it:
//
//   - non-nullable columns are REQUIRED, nullable ones NULLABLE;
//   - timestamps adjusted to UTC (an Arrow time zone) are TIMESTAMP, others
//     DATETIME;
//   - a LIST is REPEATED only with list inference
//     (parquetOptions.enableListInference); without it BigQuery loads it
//     as a RECORD holding a REPEATED RECORD "list" of "element", which
//     does not fit a REPEATED column;
//   - structs are RECORDs.
func readParquet(data []byte, listInference bool) ([]*bigquery.TableFieldSchema, []row, error) {
	tbl, err := pqarrow.ReadTable(context.Background(), bytes.NewReader(data), nil, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		return nil, nil, fmt.Errorf("read parquet: %w", err)
	}
	defer tbl.Release()
	sc := tbl.Schema()
	fields := make([]*bigquery.TableFieldSchema, sc.NumFields())
	for i, f := range sc.Fields() {
		if fields[i], err = fieldFromArrow(f, listInference); err != nil {
			return nil, nil, err
		}
	}
	rows := make([]row, tbl.NumRows())
	for i := range rows {
		rows[i] = make(row, len(fields))
	}
	for c, f := range fields {
		n := 0
		for _, chunk := range tbl.Column(c).Data().Chunks() {
			for i := 0; i < chunk.Len(); i++ {
				v, err := arrowValue(chunk, i, f)
				if err != nil {
					return nil, nil, fmt.Errorf("column %s, row %d: %w", f.Name, n, err)
				}
				if v != nil {
					rows[n][f.Name] = v
				}
				n++
			}
		}
	}
	return fields, rows, nil
}

// fieldFromArrow maps an Arrow field to the BigQuery column a Parquet load
// derives for it.
func fieldFromArrow(f arrow.Field, listInference bool) (*bigquery.TableFieldSchema, error) {
	mode := modeNullable
	if !f.Nullable {
		mode = modeRequired
	}
	out := &bigquery.TableFieldSchema{Name: f.Name, Mode: mode}
	switch dt := f.Type.(type) {
	case arrow.ListLikeType:
		elem, err := fieldFromArrow(dt.ElemField(), listInference)
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", f.Name, err)
		}
		if !listInference {
			elem.Mode = modeNullable
			if !dt.ElemField().Nullable {
				elem.Mode = modeRequired
			}
			out.Type = "RECORD"
			out.Fields = []*bigquery.TableFieldSchema{{Name: "list", Type: "RECORD", Mode: modeRepeated, Fields: []*bigquery.TableFieldSchema{elem}}}
			return out, nil
		}
		if elem.Mode == modeRepeated {
			return nil, fmt.Errorf("column %s: an array of arrays is not supported", f.Name)
		}
		elem.Name, elem.Mode = f.Name, modeRepeated
		return elem, nil
	case *arrow.StructType:
		out.Type = "RECORD"
		for _, sub := range dt.Fields() {
			sf, err := fieldFromArrow(sub, listInference)
			if err != nil {
				return nil, fmt.Errorf("column %s: %w", f.Name, err)
			}
			out.Fields = append(out.Fields, sf)
		}
		return out, nil
	case *arrow.TimestampType:
		out.Type = "DATETIME"
		if dt.TimeZone != "" {
			out.Type = "TIMESTAMP"
		}
		return out, nil
	}
	switch f.Type.ID() {
	case arrow.STRING, arrow.LARGE_STRING, arrow.STRING_VIEW:
		out.Type = "STRING"
	case arrow.BINARY, arrow.LARGE_BINARY, arrow.BINARY_VIEW, arrow.FIXED_SIZE_BINARY:
		out.Type = "BYTES"
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64, arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		out.Type = "INTEGER"
	case arrow.FLOAT16, arrow.FLOAT32, arrow.FLOAT64:
		out.Type = "FLOAT"
	case arrow.BOOL:
		out.Type = "BOOLEAN"
	case arrow.DATE32, arrow.DATE64:
		out.Type = "DATE"
	case arrow.TIME32, arrow.TIME64:
		out.Type = "TIME"
	default:
		return nil, fmt.Errorf("column %s: bqtest does not support Parquet type %s", f.Name, f.Type)
	}
	return out, nil
}

// arrowValue reads one value of an Arrow array as the stored Go value for
// column f (derived from the same array by fieldFromArrow).
func arrowValue(arr arrow.Array, i int, f *bigquery.TableFieldSchema) (any, error) {
	if arr.IsNull(i) {
		if f.Mode == modeRepeated {
			return []any{}, nil
		}
		return nil, nil
	}
	if f.Mode == modeRepeated {
		elem := *f
		elem.Mode = modeNullable
		return listValues(arr, i, &elem)
	}
	if f.Type == "RECORD" {
		return recordValue(arr, i, f)
	}
	switch a := arr.(type) {
	case interface{ Value(int) string }:
		return a.Value(i), nil
	case interface{ Value(int) []byte }:
		return bytes.Clone(a.Value(i)), nil
	case *array.Boolean:
		return a.Value(i), nil
	case *array.Int8:
		return int64(a.Value(i)), nil
	case *array.Int16:
		return int64(a.Value(i)), nil
	case *array.Int32:
		return int64(a.Value(i)), nil
	case *array.Int64:
		return a.Value(i), nil
	case *array.Uint8:
		return int64(a.Value(i)), nil
	case *array.Uint16:
		return int64(a.Value(i)), nil
	case *array.Uint32:
		return int64(a.Value(i)), nil
	case *array.Uint64:
		return int64(a.Value(i)), nil
	case *array.Float16:
		return float64(a.Value(i).Float32()), nil
	case *array.Float32:
		return float64(a.Value(i)), nil
	case *array.Float64:
		return a.Value(i), nil
	case *array.Timestamp:
		unit := a.DataType().(*arrow.TimestampType).Unit
		t := a.Value(i).ToTime(unit).UTC().Truncate(time.Microsecond)
		if f.Type == "DATETIME" {
			return civil.DateTimeOf(t), nil
		}
		return t, nil
	case *array.Date32:
		return civil.DateOf(a.Value(i).ToTime()), nil
	case *array.Date64:
		return civil.DateOf(a.Value(i).ToTime()), nil
	case *array.Time32:
		return civil.TimeOf(a.Value(i).ToTime(a.DataType().(*arrow.Time32Type).Unit)), nil
	case *array.Time64:
		return civil.TimeOf(a.Value(i).ToTime(a.DataType().(*arrow.Time64Type).Unit)), nil
	}
	return nil, fmt.Errorf("bqtest does not support Arrow array %T", arr)
}

func listValues(arr arrow.Array, i int, elem *bigquery.TableFieldSchema) ([]any, error) {
	list, ok := arr.(array.ListLike)
	if !ok {
		return nil, fmt.Errorf("expected a list, got %s", arr.DataType())
	}
	start, end := list.ValueOffsets(i)
	values := list.ListValues()
	out := make([]any, 0, end-start)
	for k := start; k < end; k++ {
		if values.IsNull(int(k)) {
			return nil, fmt.Errorf("array field %s cannot have a NULL element", elem.Name)
		}
		v, err := arrowValue(values, int(k), elem)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// recordValue reads a struct, or a list loaded without list inference
// (as {"list": [{"element": v}, ...]}).
func recordValue(arr arrow.Array, i int, f *bigquery.TableFieldSchema) (any, error) {
	if st, ok := arr.(*array.Struct); ok {
		out := make(map[string]any, len(f.Fields))
		for k, sf := range f.Fields {
			v, err := arrowValue(st.Field(k), i, sf)
			if err != nil {
				return nil, err
			}
			if v != nil {
				out[sf.Name] = v
			}
		}
		return out, nil
	}
	wrapper := f.Fields[0]
	elem := *wrapper.Fields[0]
	list, ok := arr.(array.ListLike)
	if !ok {
		return nil, fmt.Errorf("expected a list or struct, got %s", arr.DataType())
	}
	start, end := list.ValueOffsets(i)
	values := list.ListValues()
	items := make([]any, 0, end-start)
	for k := start; k < end; k++ {
		v, err := arrowValue(values, int(k), &elem)
		if err != nil {
			return nil, err
		}
		item := map[string]any{}
		if v != nil {
			item[elem.Name] = v
		}
		items = append(items, item)
	}
	return map[string]any{wrapper.Name: items}, nil
}

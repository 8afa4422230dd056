package bqtest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/civil"
	bigquery "google.golang.org/api/bigquery/v2"
)

// row is one stored table row, keyed by column name as the table's schema
// spells it. Values use the Go types listed on Server.Rows; records are
// nested maps of the same kind.
type row map[string]any

// cloneJSON deep-copies an API value through its JSON form, so stored
// state never shares memory with requests or answers.
func cloneJSON[T any](v *T) *T {
	if v == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("bqtest: clone %T: %v", v, err))
	}
	out := new(T)
	if err := json.Unmarshal(b, out); err != nil {
		panic(fmt.Sprintf("bqtest: clone %T: %v", v, err))
	}
	return out
}

// copyValue deep-copies a stored value.
func copyValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = copyValue(x)
		}
		return out
	case row:
		return copyValue(map[string]any(v))
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = copyValue(x)
		}
		return out
	case []byte:
		return bytes.Clone(v)
	default:
		return v
	}
}

// materialize copies a stored row into the shape Server.Rows promises:
// every column present, NULL as nil and an empty REPEATED column as an
// empty slice.
func materialize(r map[string]any, fields []*bigquery.TableFieldSchema) map[string]any {
	out := make(map[string]any, len(fields))
	for _, f := range fields {
		out[f.Name] = materializeValue(r[f.Name], f)
	}
	return out
}

func materializeValue(v any, f *bigquery.TableFieldSchema) any {
	if f.Mode == modeRepeated {
		items, _ := v.([]any)
		elem := *f
		elem.Mode = modeNullable
		out := make([]any, len(items))
		for i, it := range items {
			out[i] = materializeValue(it, &elem)
		}
		return out
	}
	if rec, ok := v.(map[string]any); ok && f.Type == "RECORD" {
		return materialize(rec, f.Fields)
	}
	return copyValue(v)
}

// valueSize estimates the logical bytes of a value the way BigQuery bills
// storage, closely enough for numBytes and job statistics.
func valueSize(v any) int64 {
	switch v := v.(type) {
	case nil:
		return 0
	case string:
		return int64(len(v)) + 2
	case []byte:
		return int64(len(v)) + 2
	case bool:
		return 1
	case []any:
		var n int64
		for _, x := range v {
			n += valueSize(x)
		}
		return n
	case map[string]any:
		var n int64
		for _, x := range v {
			n += valueSize(x)
		}
		return n
	default:
		return 8
	}
}

func rowsSize(rows []row) int64 {
	var n int64
	for _, r := range rows {
		n += valueSize(map[string]any(r))
	}
	return n
}

// Partition IDs as BigQuery names them in decorators.
const (
	nullPartition          = "__NULL__"
	unpartitionedPartition = "__UNPARTITIONED__"
)

var partitionLayouts = map[string]string{
	"HOUR":  "2006010215",
	"DAY":   "20060102",
	"MONTH": "200601",
	"YEAR":  "2006",
}

// partitionOf returns the partition a row belongs to: by the partitioning
// column, or by ingestion time now when the table is partitioned by
// ingestion time. Unpartitioned tables keep everything in "".
func partitionOf(r row, tp *bigquery.TimePartitioning, now time.Time) string {
	if tp == nil {
		return ""
	}
	layout := partitionLayouts[strings.ToUpper(tp.Type)]
	if tp.Field == "" {
		return now.UTC().Format(layout)
	}
	var v any
	for k, x := range r {
		if strings.EqualFold(k, tp.Field) {
			v = x
		}
	}
	switch v := v.(type) {
	case time.Time:
		return v.UTC().Format(layout)
	case civil.Date:
		return v.In(time.UTC).Format(layout)
	case civil.DateTime:
		return v.In(time.UTC).Format(layout)
	default:
		return nullPartition
	}
}

// validDecorator reports whether id names a partition of a table
// partitioned by tp.
func validDecorator(id string, tp *bigquery.TimePartitioning) bool {
	if id == nullPartition || id == unpartitionedPartition {
		return true
	}
	layout := partitionLayouts[strings.ToUpper(tp.Type)]
	t, err := time.Parse(layout, id)
	return err == nil && t.Format(layout) == id
}

// splitDecorator splits "table$20261126" into table and partition.
func splitDecorator(tableID string) (table, partition string) {
	table, partition, _ = strings.Cut(tableID, "$")
	return table, partition
}

// decodeJSONRow turns one JSON object (a line of NDJSON, or a row of
// insertAll) into a row of the given schema. Errors carry the column in
// Location, as BigQuery's insertErrors do.
func decodeJSONRow(prefix string, fields []*bigquery.TableFieldSchema, obj map[string]json.RawMessage, ignoreUnknown bool) (row, *bigquery.ErrorProto) {
	out := make(row, len(fields))
	for key := range obj {
		if findField(fields, key) == nil && !ignoreUnknown {
			return nil, &bigquery.ErrorProto{Reason: "invalid", Location: prefix + key, Message: fmt.Sprintf("no such field: %s.", prefix+key)}
		}
	}
	for _, f := range fields {
		var raw json.RawMessage
		for key, v := range obj {
			if strings.EqualFold(key, f.Name) {
				raw = v
			}
		}
		v, err := decodeJSONValue(prefix, raw, f, ignoreUnknown)
		if err != nil {
			return nil, err
		}
		if v != nil {
			out[f.Name] = v
		}
	}
	return out, nil
}

func decodeJSONValue(prefix string, raw json.RawMessage, f *bigquery.TableFieldSchema, ignoreUnknown bool) (any, *bigquery.ErrorProto) {
	name := prefix + f.Name
	bad := func(format string, args ...any) *bigquery.ErrorProto {
		return &bigquery.ErrorProto{Reason: "invalid", Location: name, Message: fmt.Sprintf(format, args...)}
	}
	if len(raw) == 0 || string(raw) == "null" {
		switch f.Mode {
		case modeRepeated:
			return []any{}, nil
		case modeRequired:
			return nil, bad("Missing required field: %s.", name)
		}
		return nil, nil
	}
	if f.Mode == modeRepeated {
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, bad("Array specified for non-repeated field: %s.", name)
		}
		elem := *f
		elem.Mode = modeNullable
		out := make([]any, 0, len(items))
		for _, it := range items {
			if string(it) == "null" {
				return nil, bad("Null value in repeated field: %s.", name)
			}
			v, err := decodeJSONValue(prefix, it, &elem, ignoreUnknown)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	if f.Type == "RECORD" {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil {
			return nil, bad("Cannot convert value to a record: %s.", name)
		}
		r, err := decodeJSONRow(name+".", f.Fields, obj, ignoreUnknown)
		if err != nil {
			return nil, err
		}
		return map[string]any(r), nil
	}
	text := string(raw)
	if s, err := strconv.Unquote(text); err == nil {
		text = s
	} else if raw[0] == '[' || raw[0] == '{' {
		return nil, bad("Cannot convert a JSON array or object to %s: %s.", f.Type, name)
	}
	v, err := parseScalar(text, f.Type)
	if err != nil {
		return nil, bad("Cannot convert value to %s (bad value): %s", strings.ToLower(f.Type), text)
	}
	return v, nil
}

// parseScalar parses the text form BigQuery accepts in JSON data for a
// column of type typ.
func parseScalar(text, typ string) (any, error) {
	switch typ {
	case "STRING", "NUMERIC", "BIGNUMERIC", "GEOGRAPHY", "JSON":
		return text, nil
	case "BYTES":
		return base64.StdEncoding.DecodeString(text)
	case "INTEGER":
		return strconv.ParseInt(text, 10, 64)
	case "FLOAT":
		return strconv.ParseFloat(text, 64)
	case "BOOLEAN":
		return strconv.ParseBool(text)
	case "TIMESTAMP":
		return parseTimestamp(text)
	case "DATE":
		return civil.ParseDate(text)
	case "DATETIME":
		return civil.ParseDateTime(strings.Replace(text, " ", "T", 1))
	case "TIME":
		return civil.ParseTime(text)
	}
	return nil, fmt.Errorf("unsupported type %s", typ)
}

var timestampLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999 Z07:00",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02",
}

// parseTimestamp accepts RFC 3339, BigQuery's "YYYY-MM-DD HH:MM:SS[.ffffff]
// [zone]" and seconds since the epoch. Zone-less values are UTC. BigQuery
// keeps microseconds.
func parseTimestamp(text string) (time.Time, error) {
	text = strings.TrimSuffix(strings.TrimSpace(text), " UTC")
	for _, layout := range timestampLayouts {
		if t, err := time.Parse(layout, text); err == nil {
			return t.UTC().Truncate(time.Microsecond), nil
		}
	}
	secs, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse timestamp %q: %w", text, err)
	}
	return time.UnixMicro(int64(secs * 1e6)).UTC(), nil
}

// encodeRow renders a stored row as tabledata.list does: one cell per
// column, in schema order, with values as strings.
func encodeRow(r map[string]any, fields []*bigquery.TableFieldSchema, int64Timestamps bool) *bigquery.TableRow {
	out := &bigquery.TableRow{F: make([]*bigquery.TableCell, len(fields))}
	for i, f := range fields {
		out.F[i] = &bigquery.TableCell{V: encodeValue(r[f.Name], f, int64Timestamps)}
	}
	return out
}

func encodeValue(v any, f *bigquery.TableFieldSchema, int64Timestamps bool) any {
	if f.Mode == modeRepeated {
		items, _ := v.([]any)
		elem := *f
		elem.Mode = modeNullable
		cells := make([]*bigquery.TableCell, len(items))
		for i, it := range items {
			cells[i] = &bigquery.TableCell{V: encodeValue(it, &elem, int64Timestamps)}
		}
		return cells
	}
	switch v := v.(type) {
	case nil:
		return nil
	case map[string]any:
		return encodeRow(v, f.Fields, int64Timestamps)
	case string:
		return v
	case []byte:
		return base64.StdEncoding.EncodeToString(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	case time.Time:
		if int64Timestamps {
			return strconv.FormatInt(v.UnixMicro(), 10)
		}
		return strconv.FormatFloat(float64(v.UnixMicro())/1e6, 'f', 6, 64)
	case civil.Date, civil.DateTime, civil.Time:
		return fmt.Sprint(v)
	default:
		return fmt.Sprint(v)
	}
}

package bqtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"time"

	bigquery "google.golang.org/api/bigquery/v2"
)

// loadData is the decoded input of a load job: its rows and the schema
// they carry (from the Parquet file, or the schema given for JSON).
type loadData struct {
	fields []*bigquery.TableFieldSchema
	rows   []row
	bytes  int64
}

// runLoadLocked applies a load job. Nothing changes unless every row is
// read, fits the destination's schema and falls in the decorated
// partition.
func (s *Server) runLoadLocked(js *jobState, now time.Time) *bigquery.ErrorProto {
	cfg := js.meta.Configuration.Load
	dst := cfg.DestinationTable
	tableID, part := splitDecorator(dst.TableId)
	name := s.tableName(dst.DatasetId, tableID)
	ds, ok := s.datasets[dst.DatasetId]
	if !ok {
		return jobError("notFound", "Not found: Dataset %s:%s", s.opts.Project, dst.DatasetId)
	}
	t := ds.tables[tableID]
	if t != nil && t.isView() {
		return jobError("invalid", "Cannot load data into %s: it is a view", name)
	}
	var current []*bigquery.TableFieldSchema
	if t != nil {
		current = schemaFields(t.meta.Schema)
	}
	data, errp := readLoadInput(cfg, js.inputs, current)
	if errp != nil {
		return errp
	}

	write := cfg.WriteDisposition
	updates := len(cfg.SchemaUpdateOptions) > 0
	if updates && write != "WRITE_APPEND" && write != "WRITE_TRUNCATE_DATA" && (write != "WRITE_TRUNCATE" || part == "") {
		return jobError("invalid", "Schema update options should only be specified with WRITE_APPEND disposition, or with WRITE_TRUNCATE disposition on a table partition.")
	}
	var spec *bigquery.Table
	if t == nil {
		if cfg.CreateDisposition == "CREATE_NEVER" {
			return jobError("notFound", "Not found: Table %s", name)
		}
		created, err := checkTableSpec(&bigquery.Table{
			TableReference:   &bigquery.TableReference{ProjectId: s.opts.Project, DatasetId: dst.DatasetId, TableId: tableID},
			Schema:           &bigquery.TableSchema{Fields: data.fields},
			TimePartitioning: cfg.TimePartitioning,
			Clustering:       cfg.Clustering,
		})
		if err != nil {
			return jobError("invalid", "%v", err)
		}
		spec = created
	} else {
		spec = cloneJSON(t.meta)
		if cfg.TimePartitioning != nil && !samePartitioning(cfg.TimePartitioning, spec.TimePartitioning) {
			return jobError("invalid", "Incompatible table partitioning specification. Expects partitioning specification %s, but input partitioning specification is %s", partitionSpec(spec.TimePartitioning), partitionSpec(cfg.TimePartitioning))
		}
		if write == "WRITE_TRUNCATE" && part == "" {
			// Truncating a whole table replaces its schema with the load's.
			spec.Schema = &bigquery.TableSchema{Fields: data.fields}
			checked, err := checkTableSpec(spec)
			if err != nil {
				return jobError("invalid", "%v", err)
			}
			spec = checked
		} else {
			fields, err := evolveFields("", current, data.fields, evolveRules{
				allowAdd:   slices.Contains(cfg.SchemaUpdateOptions, "ALLOW_FIELD_ADDITION"),
				allowRelax: slices.Contains(cfg.SchemaUpdateOptions, "ALLOW_FIELD_RELAXATION"),
			})
			if err != nil {
				return schemaMismatch(name, "%v", err)
			}
			spec.Schema = &bigquery.TableSchema{Fields: fields}
		}
	}
	if errp := checkDecorator(spec, part, name); errp != nil {
		return errp
	}
	rows := conformRows(data.rows, schemaFields(spec.Schema))
	placed, errp := placeRows(rows, nil, spec.TimePartitioning, part, now)
	if errp != nil {
		return errp
	}
	if errp := s.commitLocked(ds, t, spec, placed, part, write, name); errp != nil {
		return errp
	}
	js.meta.Statistics.Load = &bigquery.JobStatistics3{
		InputFiles:     int64(len(js.inputs)),
		InputFileBytes: data.bytes,
		OutputRows:     int64(len(rows)),
		OutputBytes:    rowsSize(rows),
	}
	return nil
}

// checkDecorator validates a partition decorator against the table spec.
func checkDecorator(spec *bigquery.Table, part, name string) *bigquery.ErrorProto {
	if part == "" {
		return nil
	}
	if spec.TimePartitioning == nil {
		return jobError("invalid", "Cannot read partition information from a table that is not partitioned: %s$%s", name, part)
	}
	if !validDecorator(part, spec.TimePartitioning) {
		return jobError("invalid", "Invalid partition decorator %q for table %s partitioned by %s", part, name, partitionSpec(spec.TimePartitioning))
	}
	return nil
}

// readLoadInput decodes every source of a load job. Parquet files carry
// their own schema; a schema in the job must then agree with it. JSON is
// read with the job's schema or, failing that, the table's.
func readLoadInput(cfg *bigquery.JobConfigurationLoad, inputs []inputFile, current []*bigquery.TableFieldSchema) (*loadData, *bigquery.ErrorProto) {
	data := &loadData{}
	for _, in := range inputs {
		data.bytes += int64(len(in.data))
	}
	switch cfg.SourceFormat {
	case "PARQUET":
		inference := cfg.ParquetOptions != nil && cfg.ParquetOptions.EnableListInference
		for i, in := range inputs {
			fields, rows, err := readParquet(in.data, inference)
			if err != nil {
				return nil, jobError("invalid", "Error while reading data, error message: %v; File: %s", err, in.name())
			}
			if i > 0 && !sameFields(data.fields, fields) {
				return nil, jobError("invalid", "Error while reading data, error message: the schema of %s differs from the schema of %s", in.name(), inputs[0].name())
			}
			data.fields = fields
			data.rows = append(data.rows, rows...)
		}
		if cfg.Schema != nil {
			declared, err := evolveFields("", cfg.Schema.Fields, data.fields, evolveRules{})
			if err != nil {
				return nil, jobError("invalid", "Provided Schema does not match the Parquet data. %v", err)
			}
			data.fields = declared
		}
		return data, nil
	case "NEWLINE_DELIMITED_JSON":
		switch {
		case cfg.Schema != nil:
			data.fields = cfg.Schema.Fields
		case current != nil:
			data.fields = current
		default:
			return nil, jobError("invalid", "No schema specified on job or table.")
		}
		for _, in := range inputs {
			rows, errp := readNDJSON(in.data, data.fields, cfg.IgnoreUnknownValues)
			if errp != nil {
				return nil, errp
			}
			data.rows = append(data.rows, rows...)
		}
		return data, nil
	}
	return nil, jobError("invalid", "bqtest: source format %s is not supported", cfg.SourceFormat)
}

func (f inputFile) name() string {
	if f.uri == "" {
		return "upload"
	}
	return f.uri
}

// readNDJSON reads newline-delimited JSON objects; the first bad row fails
// the whole load.
func readNDJSON(data []byte, fields []*bigquery.TableFieldSchema, ignoreUnknown bool) ([]row, *bigquery.ErrorProto) {
	var out []row
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 100<<20)
	pos := 0
	for sc.Scan() {
		line := sc.Bytes()
		start := pos
		pos += len(line) + 1
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(line, &obj); err != nil {
			return nil, jobError("invalid", "Error while reading data, error message: JSON parsing error in row starting at position %d: %v", start, err)
		}
		r, errp := decodeJSONRow("", fields, obj, ignoreUnknown)
		if errp != nil {
			msg := errp.Message
			return nil, jobError("invalid", "Error while reading data, error message: JSON parsing error in row starting at position %d: %s%s", start, strings.ToUpper(msg[:1]), msg[1:])
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return nil, jobError("invalid", "Error while reading data, error message: %v", err)
	}
	return out, nil
}

// conformRows renames the keys of rows to the column names of the
// destination schema (names match case-insensitively).
func conformRows(rows []row, fields []*bigquery.TableFieldSchema) []row {
	out := make([]row, len(rows))
	for i, r := range rows {
		out[i] = row(conformRecord(r, fields))
	}
	return out
}

func conformRecord(r map[string]any, fields []*bigquery.TableFieldSchema) map[string]any {
	out := make(map[string]any, len(r))
	for k, v := range r {
		f := findField(fields, k)
		if f == nil {
			continue
		}
		out[f.Name] = conformValue(v, f)
	}
	return out
}

func conformValue(v any, f *bigquery.TableFieldSchema) any {
	switch v := v.(type) {
	case map[string]any:
		return conformRecord(v, f.Fields)
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = conformValue(x, f)
		}
		return out
	default:
		return v
	}
}

// placeRows assigns rows to partitions. With a decorator, rows of a
// column-partitioned table must all belong to that partition, and rows of
// an ingestion-time table all go there. srcParts, when given, are the
// partitions rows came from, kept for ingestion-time tables.
func placeRows(rows []row, srcParts []string, tp *bigquery.TimePartitioning, part string, now time.Time) (map[string][]row, *bigquery.ErrorProto) {
	out := make(map[string][]row)
	for i, r := range rows {
		p := partitionOf(r, tp, now)
		switch {
		case part != "" && tp.Field == "":
			p = part
		case part != "" && p != part:
			return nil, jobError("invalid", "Some rows belong to different partitions rather than destination partition %s", part)
		case part == "" && tp != nil && tp.Field == "" && srcParts != nil && srcParts[i] != "":
			p = srcParts[i]
		}
		out[p] = append(out[p], r)
	}
	return out, nil
}

// commitLocked writes placed rows into the destination according to the
// write disposition, creating the table when t is nil. It is the only
// step of a job that changes state.
func (s *Server) commitLocked(ds *datasetState, t *tableState, spec *bigquery.Table, placed map[string][]row, part, write, name string) *bigquery.ErrorProto {
	if t != nil && write == "WRITE_EMPTY" {
		existing := len(t.rows(part))
		if existing > 0 {
			target := name
			if part != "" {
				target += "$" + part
			}
			return jobError("duplicate", "Already Exists: Table %s", target)
		}
	}
	if t == nil {
		t = s.addTableLocked(ds, spec)
	} else {
		t.meta = spec
	}
	truncate := isTruncate(write)
	switch {
	case truncate && part != "":
		delete(t.parts, part)
		if rows := placed[part]; len(rows) > 0 {
			t.parts[part] = rows
		}
	case truncate:
		t.parts = placed
	default:
		for p, rows := range placed {
			t.parts[p] = append(t.parts[p], rows...)
		}
	}
	s.touchLocked(t)
	return nil
}

// isTruncate reports whether a write disposition replaces data.
func isTruncate(write string) bool {
	return strings.HasPrefix(write, "WRITE_TRUNCATE")
}

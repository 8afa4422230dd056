package bqtest

import (
	"sort"
	"time"

	bigquery "google.golang.org/api/bigquery/v2"
)

// runCopyLocked applies a copy job: the rows of the source tables (or of
// their decorated partitions) go to the destination table or partition
// under the job's write disposition, all at once or not at all.
func (s *Server) runCopyLocked(js *jobState, now time.Time) *bigquery.ErrorProto {
	cfg := js.meta.Configuration.Copy
	var (
		srcMeta  *bigquery.Table
		rows     []row
		srcParts []string
	)
	for _, ref := range cfg.SourceTables {
		tableID, part := splitDecorator(ref.TableId)
		name := s.tableName(ref.DatasetId, tableID)
		ds, ok := s.datasets[ref.DatasetId]
		if !ok {
			return jobError("notFound", "Not found: Dataset %s:%s", s.opts.Project, ref.DatasetId)
		}
		t, ok := ds.tables[tableID]
		if !ok {
			return jobError("notFound", "Not found: Table %s", name)
		}
		if t.isView() {
			return jobError("invalid", "Using table %s is not allowed for this operation because of its type. Try using a different table that is of type TABLE.", name)
		}
		if errp := checkDecorator(t.meta, part, name); errp != nil {
			return errp
		}
		if srcMeta == nil {
			srcMeta = t.meta
		} else if !sameFields(schemaFields(srcMeta.Schema), schemaFields(t.meta.Schema)) {
			return jobError("invalid", "Source tables %s and %s have incompatible schemas", srcMeta.Id, t.meta.Id)
		}
		for _, p := range partitionIDs(t, part) {
			for _, r := range t.parts[p] {
				rows = append(rows, row(copyValue(map[string]any(r)).(map[string]any)))
				srcParts = append(srcParts, p)
			}
		}
	}

	dst := cfg.DestinationTable
	tableID, part := splitDecorator(dst.TableId)
	name := s.tableName(dst.DatasetId, tableID)
	ds, ok := s.datasets[dst.DatasetId]
	if !ok {
		return jobError("notFound", "Not found: Dataset %s:%s", s.opts.Project, dst.DatasetId)
	}
	t := ds.tables[tableID]
	srcFields := schemaFields(srcMeta.Schema)
	var spec *bigquery.Table
	switch {
	case t == nil && (cfg.CreateDisposition == "CREATE_NEVER" || part != ""):
		return jobError("notFound", "Not found: Table %s", name)
	case t == nil:
		spec = &bigquery.Table{
			TableReference:   &bigquery.TableReference{ProjectId: s.opts.Project, DatasetId: dst.DatasetId, TableId: tableID},
			Schema:           cloneJSON(srcMeta.Schema),
			TimePartitioning: cloneJSON(srcMeta.TimePartitioning),
			Clustering:       cloneJSON(srcMeta.Clustering),
		}
		spec.Type = "TABLE"
	case t.isView():
		return jobError("invalid", "Using table %s is not allowed for this operation because of its type. Try using a different table that is of type TABLE.", name)
	default:
		spec = cloneJSON(t.meta)
		if part == "" && !samePartitioning(spec.TimePartitioning, srcMeta.TimePartitioning) {
			return jobError("invalid", "Incompatible table partitioning specification. Expects partitioning specification %s, but input partitioning specification is %s", partitionSpec(spec.TimePartitioning), partitionSpec(srcMeta.TimePartitioning))
		}
		if cfg.WriteDisposition == "WRITE_TRUNCATE" && part == "" {
			spec.Schema = cloneJSON(srcMeta.Schema)
		} else {
			fields, err := evolveFields("", schemaFields(spec.Schema), srcFields, evolveRules{})
			if err != nil {
				return schemaMismatch(name, "%v", err)
			}
			spec.Schema = &bigquery.TableSchema{Fields: fields}
		}
	}
	if errp := checkDecorator(spec, part, name); errp != nil {
		return errp
	}
	rows = conformRows(rows, schemaFields(spec.Schema))
	placed, errp := placeRows(rows, srcParts, spec.TimePartitioning, part, now)
	if errp != nil {
		return errp
	}
	if errp := s.commitLocked(ds, t, spec, placed, part, cfg.WriteDisposition, name); errp != nil {
		return errp
	}
	js.meta.Statistics.Copy = &bigquery.JobStatistics5{CopiedRows: int64(len(rows)), CopiedLogicalBytes: rowsSize(rows)}
	return nil
}

// partitionIDs returns the partitions of a table to read, in order: the
// one a decorator names, else all.
func partitionIDs(t *tableState, part string) []string {
	if part != "" {
		return []string{part}
	}
	ids := make([]string, 0, len(t.parts))
	for p := range t.parts {
		ids = append(ids, p)
	}
	sort.Strings(ids)
	return ids
}

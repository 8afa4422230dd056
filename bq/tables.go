package bq

import (
	"context"
	"fmt"
	"strings"

	"cloud.google.com/go/bigquery"
	"go.uber.org/zap"

	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/schemas"
)

// EnsureTables checks the dataset and creates or updates what bindsync
// owns in it: the snapshot table (partitioned by snapshot_date, clustered
// by service and user), the <table>_latest view, for the changes table the
// history view (Options.HistoryView), and the sync_runs table.
// An existing table gains the columns its schema lacks, a REQUIRED column
// that became NULLABLE is relaxed and descriptions are refreshed; no column
// is ever dropped or retyped, so no data is lost. It fails with one clear
// error when the dataset is missing, in another location, or not writable.
func (p *Publisher) EnsureTables(ctx context.Context) error {
	if err := p.checkDataset(ctx); err != nil {
		return err
	}
	tp := &bigquery.TimePartitioning{Type: bigquery.DayPartitioningType, Field: schemas.PartitionField, Expiration: p.opts.PartitionExpiration}
	main := tableSpec{
		name:         p.opts.Table,
		description:  p.tableDescription(),
		schema:       p.opts.Schema,
		partitioning: tp,
		clustering:   &bigquery.Clustering{Fields: schemas.ClusterFields},
	}
	if err := p.ensureTable(ctx, main); err != nil {
		return err
	}
	latest := p.opts.Table + LatestSuffix
	if err := p.ensureView(ctx, latest, p.latestQuery(), "The newest snapshot of "+p.opts.Table+", written by bindsync.", "the view of the newest snapshot"); err != nil {
		return err
	}
	if h := p.opts.HistoryView; h != "" {
		desc := "Validity intervals of every version of every binding, derived from " + p.opts.Table + " by bindsync: a version holds from valid_from (included) to valid_to (excluded; null while it holds)."
		if err := p.ensureView(ctx, h, HistoryQuery(p.opts.Project, p.opts.Dataset, p.opts.Table), desc, "the history view"); err != nil {
			return err
		}
	}
	runs := tableSpec{
		name:        RunsTable,
		description: "One row per bindsync run, failed runs included, to see how fresh the snapshots are.",
		schema:      runsSchema(),
	}
	if err := p.ensureTable(ctx, runs); err != nil {
		return err
	}
	p.mu.Lock()
	p.ready = true
	p.mu.Unlock()
	return nil
}

// checkDataset fails early, and clearly, when the dataset is missing,
// unreadable or in another location than the jobs will run in.
func (p *Publisher) checkDataset(ctx context.Context) error {
	md, err := p.dataset().Metadata(ctx)
	if err != nil {
		return p.scope("").explain("read the dataset", err)
	}
	if !strings.EqualFold(md.Location, p.opts.Location) {
		return &Error{Kind: ErrLocation, Msg: fmt.Sprintf(
			"dataset %s is in location %s, but warehouse.bigquery.location is %s: set warehouse.bigquery.location to %s",
			p.scope("").datasetName(), md.Location, p.opts.Location, md.Location)}
	}
	return nil
}

// tableSpec is a table bindsync owns.
type tableSpec struct {
	name         string
	description  string
	schema       bigquery.Schema
	partitioning *bigquery.TimePartitioning
	clustering   *bigquery.Clustering
}

// ensureTable creates the table, or brings an existing one up to spec.
func (p *Publisher) ensureTable(ctx context.Context, spec tableSpec) error {
	sc := p.scope(spec.name)
	t := p.dataset().Table(spec.name)
	md, err := t.Metadata(ctx)
	if isNotFound(err) {
		err = t.Create(ctx, &bigquery.TableMetadata{
			Description:      spec.description,
			Schema:           spec.schema,
			TimePartitioning: spec.partitioning,
			Clustering:       spec.clustering,
		})
		if err == nil {
			p.log.Info("created table", zap.String("name", spec.name))
			return nil
		}
		if !isDuplicate(err) {
			return sc.explain("create the table", err)
		}
		// Another run created it meanwhile: check it like any other.
		md, err = t.Metadata(ctx)
	}
	if err != nil {
		return sc.explain("read the table", err)
	}
	if md.Type != bigquery.RegularTable && md.Type != "" {
		return &Error{Kind: ErrSchema, Msg: fmt.Sprintf(
			"%s is a %s, not a table: drop it or set warehouse.bigquery.table to another name", sc.tableName(), md.Type)}
	}
	var upd bigquery.TableMetadataToUpdate
	changed := false

	schema, added, err := mergeSchema(md.Schema, spec.schema)
	if err != nil {
		return &Error{Kind: ErrSchema, Err: err, Msg: fmt.Sprintf(
			"table %s does not fit the schema bindsync writes (%v): bindsync only adds columns, so drop or rename the table, or set warehouse.bigquery.table to a new one",
			sc.tableName(), err)}
	}
	if schema != nil {
		upd.Schema, changed = schema, true
	}

	if spec.partitioning != nil {
		cur := md.TimePartitioning
		if cur == nil || !strings.EqualFold(cur.Field, spec.partitioning.Field) || cur.Type != spec.partitioning.Type {
			return &Error{Kind: ErrSchema, Msg: fmt.Sprintf(
				"table %s is not partitioned by day on %s (it is %s): drop or rename it, or set warehouse.bigquery.table to a new one, so that bindsync can create it",
				sc.tableName(), spec.partitioning.Field, describePartitioning(cur))}
		}
		if cur.Expiration != spec.partitioning.Expiration {
			upd.TimePartitioning = &bigquery.TimePartitioning{Type: cur.Type, Field: cur.Field, Expiration: spec.partitioning.Expiration}
			changed = true
		}
	}
	if spec.clustering != nil && (md.Clustering == nil || !equalFold(md.Clustering.Fields, spec.clustering.Fields)) {
		// Clustering may change on an existing table; it applies to data
		// written from now on.
		upd.Clustering, changed = spec.clustering, true
	}
	if !changed {
		return nil
	}
	if _, err := t.Update(ctx, upd, md.ETag); err != nil {
		return sc.explain("update the table's schema", err)
	}
	if len(added) > 0 {
		p.log.Info("added columns to table", zap.String("name", spec.name), zap.Strings("columns", added))
	}
	return nil
}

// tableDescription is the description of the table a Publisher loads.
func (p *Publisher) tableDescription() string {
	switch p.opts.Source {
	case exporter.UsersTable:
		return "One row per user of each daily snapshot of Twilio Programmable Chat v2 user bindings, with its number of bindings, written by bindsync."
	case exporter.ChangesTable:
		return "One row per Twilio Programmable Chat v2 user binding added, removed or changed between a daily snapshot and the newest published snapshot before it, one partition per snapshot, written by bindsync."
	}
	return "Twilio Programmable Chat v2 user bindings, one partition per daily snapshot, written by bindsync."
}

// ensureView creates the view name with query, or brings its query up to
// date; what names the view in messages.
func (p *Publisher) ensureView(ctx context.Context, name, query, description, what string) error {
	sc := p.scope(name)
	v := p.dataset().Table(name)
	md, err := v.Metadata(ctx)
	if isNotFound(err) {
		err = v.Create(ctx, &bigquery.TableMetadata{
			Description: description,
			ViewQuery:   query,
		})
		if err == nil || isDuplicate(err) {
			return nil
		}
		return sc.explain("create the view", err)
	}
	if err != nil {
		return sc.explain("read the view", err)
	}
	if md.Type != bigquery.ViewTable {
		return &Error{Kind: ErrSchema, Msg: fmt.Sprintf(
			"%s exists but is a %s, not a view: drop it so that bindsync can create %s", sc.tableName(), md.Type, what)}
	}
	if md.ViewQuery == query && !md.UseLegacySQL {
		return nil
	}
	if _, err := v.Update(ctx, bigquery.TableMetadataToUpdate{ViewQuery: query, UseLegacySQL: false}, md.ETag); err != nil {
		return sc.explain("update the view", err)
	}
	return nil
}

// latestQuery is the SQL of the <table>_latest view.
func (p *Publisher) latestQuery() string {
	ref := fmt.Sprintf("`%s.%s.%s`", p.opts.Project, p.opts.Dataset, p.opts.Table)
	return fmt.Sprintf("SELECT * FROM %s WHERE %s = (SELECT MAX(%s) FROM %s)", ref, schemas.PartitionField, schemas.PartitionField, ref)
}

// HistoryQuery is the SQL of the history view over the changes table
// project.dataset.changes: one row per version of a binding, that is per
// row of the changes table that is not a removal, with the binding's
// values, the change that began the version, valid_from (the snapshot
// where it was first seen) and valid_to (the first snapshot where it no
// longer held: the next change of the same (service_sid, sid), or the
// next baseline day, whichever comes first; null while it holds).
//
// A baseline day (rows of kind initial: the first snapshot, or one that
// had nothing to compare with) restates every binding, so it ends every
// version begun before it, including those of bindings it no longer
// holds, whose removal nobody saw.
func HistoryQuery(project, dataset, changes string) string {
	ref := fmt.Sprintf("`%s.%s.%s`", project, dataset, changes)
	return `WITH days AS (
  SELECT day,
    MIN(IF(baseline, day, NULL)) OVER (ORDER BY day ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS next_baseline
  FROM (
    SELECT snapshot_date AS day, LOGICAL_OR(change = 'initial') AS baseline
    FROM ` + ref + `
    GROUP BY snapshot_date)
),
versions AS (
  SELECT c.*,
    LEAD(c.snapshot_date) OVER (PARTITION BY c.service_sid, c.sid ORDER BY c.snapshot_date) AS next_change,
    d.next_baseline
  FROM ` + ref + ` AS c
  JOIN days AS d ON d.day = c.snapshot_date
)
SELECT * EXCEPT (snapshot_date, previous_snapshot_date, synced_at, next_change, next_baseline),
  snapshot_date AS valid_from,
  CASE
    WHEN next_change IS NULL THEN next_baseline
    WHEN next_baseline IS NULL THEN next_change
    ELSE LEAST(next_change, next_baseline)
  END AS valid_to,
  synced_at
FROM versions
WHERE change != 'removed'`
}

// mergeSchema returns the schema an existing table must get so that it
// holds every column of want, and the names of the columns it adds; nil
// when the table already fits. Columns of have that want lacks are kept.
// A new column is always added NULLABLE (or REPEATED), since BigQuery
// cannot add a REQUIRED column to a table that has rows. A column whose
// type or repetition differs is an error: changing it would lose data.
func mergeSchema(have, want bigquery.Schema) (bigquery.Schema, []string, error) {
	out := make(bigquery.Schema, 0, len(have)+len(want))
	changed := false
	used := make(map[int]bool)
	for _, h := range have {
		i := fieldIndex(want, h.Name)
		if i < 0 {
			out = append(out, h)
			continue
		}
		used[i] = true
		w := want[i]
		m, fieldChanged, err := mergeField(h, w)
		if err != nil {
			return nil, nil, err
		}
		changed = changed || fieldChanged
		out = append(out, m)
	}
	var added []string
	for i, w := range want {
		if used[i] {
			continue
		}
		n := *w
		n.Required = false
		out = append(out, &n)
		added = append(added, w.Name)
		changed = true
	}
	if !changed {
		return nil, nil, nil
	}
	return out, added, nil
}

// mergeField merges the wanted column into the existing one.
func mergeField(h, w *bigquery.FieldSchema) (*bigquery.FieldSchema, bool, error) {
	if h.Type != w.Type {
		return nil, false, fmt.Errorf("column %s is %s in the table but %s in bindsync's schema", h.Name, h.Type, w.Type)
	}
	if h.Repeated != w.Repeated {
		return nil, false, fmt.Errorf("column %s is %s in the table but %s in bindsync's schema", h.Name, mode(h), mode(w))
	}
	m := *h
	changed := false
	if h.Required && !w.Required {
		m.Required, changed = false, true
	}
	if w.Description != "" && h.Description != w.Description {
		m.Description, changed = w.Description, true
	}
	if h.Type == bigquery.RecordFieldType {
		sub, _, err := mergeSchema(h.Schema, w.Schema)
		if err != nil {
			return nil, false, err
		}
		if sub != nil {
			m.Schema, changed = sub, true
		}
	}
	return &m, changed, nil
}

func mode(f *bigquery.FieldSchema) string {
	switch {
	case f.Repeated:
		return "REPEATED"
	case f.Required:
		return "REQUIRED"
	}
	return "NULLABLE"
}

// fieldIndex finds a column by name; BigQuery names are case-insensitive.
func fieldIndex(s bigquery.Schema, name string) int {
	for i, f := range s {
		if strings.EqualFold(f.Name, name) {
			return i
		}
	}
	return -1
}

func equalFold(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !strings.EqualFold(a[i], b[i]) {
			return false
		}
	}
	return true
}

func describePartitioning(tp *bigquery.TimePartitioning) string {
	switch {
	case tp == nil:
		return "not partitioned"
	case tp.Field == "":
		return "partitioned by ingestion time (" + string(tp.Type) + ")"
	}
	return "partitioned by " + string(tp.Type) + " on " + tp.Field
}

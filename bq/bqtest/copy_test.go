package bqtest_test

import (
	"reflect"
	"testing"

	"cloud.google.com/go/bigquery"

	"github.com/bindsync/bindsync/bq/bqtest"
)

// stagedEnv has user_bindings holding old rows for 20261126 and rows for
// 20261127, and an unpartitioned staging table with the same columns
// holding the new rows for 20261126.
type stagedEnv struct {
	*env
	old, other, staged []binding
}

func newStagedEnv(t *testing.T) *stagedEnv {
	t.Helper()
	e := &stagedEnv{
		env:    newEnv(t, bqtest.Options{}),
		old:    makeBindings(nov26, "old", 3, 0),
		other:  makeBindings(nov27, "other", 2, 0),
		staged: makeBindings(nov26, "new", 4, 0),
	}
	e.createBindings(t, "user_bindings")
	if err := e.loadPartition(t, "old", "20261126", bindingsParquet(t, e.old), 0); err != nil {
		t.Fatalf("load old: %v", err)
	}
	if err := e.loadPartition(t, "other", "20261127", bindingsParquet(t, e.other), 0); err != nil {
		t.Fatalf("load other: %v", err)
	}
	if err := e.ds.Table("staging").Create(testContext(t), &bigquery.TableMetadata{Schema: bindingSchema()}); err != nil {
		t.Fatalf("create staging: %v", err)
	}
	l := e.ds.Table("staging").LoaderFrom(parquetSource(bindingsParquet(t, e.staged)))
	job, err := l.Run(testContext(t))
	if err := runJob(t, job, err); err != nil {
		t.Fatalf("load staging: %v", err)
	}
	return e
}

func (e *stagedEnv) copy(t *testing.T, dst string, write bigquery.TableWriteDisposition, srcs ...string) error {
	t.Helper()
	var tables []*bigquery.Table
	for _, s := range srcs {
		tables = append(tables, e.ds.Table(s))
	}
	c := e.ds.Table(dst).CopierFrom(tables...)
	c.WriteDisposition = write
	job, err := c.Run(testContext(t))
	return runJob(t, job, err)
}

func TestCopyReplacesPartition(t *testing.T) {
	e := newStagedEnv(t)
	if err := e.copy(t, "user_bindings$20261126", bigquery.WriteTruncate, "staging"); err != nil {
		t.Fatalf("copy: %v", err)
	}
	if got := e.srv.Rows("ds", "user_bindings", ""); !reflect.DeepEqual(got, wantBindings(e.staged, e.other)) {
		t.Errorf("rows = %v\nwant %v", got, wantBindings(e.staged, e.other))
	}
	if got := e.srv.Rows("ds", "staging", ""); !reflect.DeepEqual(got, wantBindings(e.staged)) {
		t.Errorf("copy changed its source: %v", got)
	}
	jobs := e.srv.Jobs()
	last := jobs[len(jobs)-1]
	if last.Configuration.JobType != "COPY" || last.Statistics.Copy == nil || last.Statistics.Copy.CopiedRows != 4 {
		t.Errorf("copy job = %+v, statistics %+v", last.Configuration, last.Statistics.Copy)
	}
}

func TestCopyErrors(t *testing.T) {
	tests := []struct {
		name   string
		dst    string
		write  bigquery.TableWriteDisposition
		src    []string
		prep   func(t *testing.T, e *stagedEnv)
		reason string
		text   string
	}{
		{
			name:   "default WRITE_EMPTY into a partition with rows",
			dst:    "user_bindings$20261126",
			src:    []string{"staging"},
			reason: "duplicate",
			text:   "Already Exists: Table proj:ds.user_bindings$20261126",
		},
		{
			name:   "rows outside the decorated partition",
			dst:    "user_bindings$20261127",
			write:  bigquery.WriteTruncate,
			src:    []string{"staging"},
			reason: "invalid",
			text:   "Some rows belong to different partitions rather than destination partition 20261127",
		},
		{
			name:   "whole table with different partitioning",
			dst:    "user_bindings",
			write:  bigquery.WriteTruncate,
			src:    []string{"staging"},
			reason: "invalid",
			text:   "Incompatible table partitioning specification. Expects partitioning specification interval(type:day,field:snapshot_date), but input partitioning specification is none",
		},
		{
			name:   "missing source",
			dst:    "user_bindings$20261126",
			write:  bigquery.WriteTruncate,
			src:    []string{"nope"},
			reason: "notFound",
			text:   "Not found: Table proj:ds.nope",
		},
		{
			name:  "schema mismatch",
			dst:   "user_bindings$20261126",
			write: bigquery.WriteTruncate,
			src:   []string{"narrow"},
			prep: func(t *testing.T, e *stagedEnv) {
				err := e.ds.Table("narrow").Create(testContext(t), &bigquery.TableMetadata{Schema: bigquery.Schema{
					{Name: "snapshot_date", Type: bigquery.DateFieldType, Required: true},
					{Name: "sid", Type: bigquery.IntegerFieldType, Required: true},
				}})
				if err != nil {
					t.Fatalf("create narrow: %v", err)
				}
			},
			reason: "invalid",
			text:   "Field user_sid is missing in new schema",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newStagedEnv(t)
			if tt.prep != nil {
				tt.prep(t, e)
			}
			wantJobError(t, e.copy(t, tt.dst, tt.write, tt.src...), tt.reason, tt.text)
			if got := e.srv.Rows("ds", "user_bindings", ""); !reflect.DeepEqual(got, wantBindings(e.old, e.other)) {
				t.Errorf("failed copy changed the table: %v", got)
			}
		})
	}
}

func TestCopyCreatesTable(t *testing.T) {
	e := newStagedEnv(t)
	if err := e.copy(t, "backup", "", "user_bindings"); err != nil {
		t.Fatalf("copy: %v", err)
	}
	md := e.srv.Table("ds", "backup")
	if md == nil || md.TimePartitioning == nil || md.TimePartitioning.Field != "snapshot_date" || md.Schema.Fields[2].Description != "Binding SID" {
		t.Fatalf("backup table = %+v", md)
	}
	if got := e.srv.Rows("ds", "backup", "20261127"); !reflect.DeepEqual(got, wantBindings(e.other)) {
		t.Errorf("backup partition 20261127 = %v", got)
	}
	// A second copy with the default WRITE_EMPTY fails: the table has rows.
	wantJobError(t, e.copy(t, "backup", "", "user_bindings"), "duplicate", "Already Exists: Table proj:ds.backup")
}

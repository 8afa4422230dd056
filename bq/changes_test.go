package bq_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"

	"github.com/bindsync/bindsync/bq"
	"github.com/bindsync/bindsync/bq/bqtest"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/staging/stagingtest"
	"github.com/bindsync/bindsync/twilio"
)

const changesTable = table + bq.ChangesSuffix

// changesPublisher is a Publisher of the changes table.
func (e *env) changesPublisher(change func(*bq.Options)) *bq.Publisher {
	return e.publisher(func(o *bq.Options) {
		o.Table, o.Source, o.Schema = changesTable, exporter.ChangesTable, bq.Schema(schemas.Changes())
		if change != nil {
			change(o)
		}
	})
}

func TestEnsureTablesChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	if err := e.changesPublisher(nil).EnsureTables(ctx); err != nil {
		t.Fatal(err)
	}
	md, err := e.client.Dataset(dataset).Table(changesTable).Metadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tp := md.TimePartitioning; tp == nil || tp.Field != schemas.PartitionField || tp.Type != bigquery.DayPartitioningType {
		t.Errorf("partitioning %+v", tp)
	}
	if md.Clustering == nil || strings.Join(md.Clustering.Fields, ",") != "service_sid,user_sid" {
		t.Errorf("clustering %+v", md.Clustering)
	}
	if !strings.Contains(md.Description, "added, removed or changed") {
		t.Errorf("description %q", md.Description)
	}
	checkSchema(t, md.Schema, bq.Schema(schemas.Changes()))
	history := bq.HistoryQuery(project, dataset, changesTable)
	if got := e.srv.ViewQuery(dataset, table+bq.HistorySuffix); got != history {
		t.Errorf("history view SQL:\n got %s\nwant %s", got, history)
	}
	if !strings.Contains(history, "`test-project.twilio_chat.user_bindings_changes`") {
		t.Errorf("the history view does not read the changes table:\n%s", history)
	}
	if got := e.srv.ViewQuery(dataset, changesTable+bq.LatestSuffix); !strings.Contains(got, changesTable) {
		t.Errorf("latest view of the changes: %q", got)
	}

	// A view whose SQL changed is brought up to date.
	if _, err := e.client.Dataset(dataset).Table(table+bq.HistorySuffix).Update(ctx, bigquery.TableMetadataToUpdate{ViewQuery: "SELECT 1"}, ""); err != nil {
		t.Fatal(err)
	}
	if err := e.changesPublisher(nil).EnsureTables(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.srv.ViewQuery(dataset, table+bq.HistorySuffix); got != history {
		t.Errorf("history view SQL not restored: %s", got)
	}

	// Publishers of the other tables keep no history view, nor does one
	// told not to.
	other := newEnv(t, bqtest.Options{})
	if err := other.publisher(nil).EnsureTables(ctx); err != nil {
		t.Fatal(err)
	}
	if err := other.changesPublisher(func(o *bq.Options) { o.HistoryView = "-" }).EnsureTables(ctx); err != nil {
		t.Fatal(err)
	}
	if other.srv.Table(dataset, table+bq.HistorySuffix) != nil {
		t.Error("a history view was made where none was asked for")
	}
}

// writeChanges writes the changes from prev to cur (nil prev: initial
// rows) as a part in store and returns it.
func writeChanges(t *testing.T, store staging.Store, date, prevDate time.Time, prev, cur []twilio.Binding, name string) exporter.PartInfo {
	t.Helper()
	ctx := context.Background()
	digest := func(d time.Time, bs []twilio.Binding) *exporter.DigestRef {
		n := fmt.Sprintf("digests/%s-%s.digest", name, d.Format(time.DateOnly))
		src := func(ctx context.Context, fn func(*schemas.Row) error) error {
			for _, b := range bs {
				if err := fn(&schemas.Row{Binding: b, SyncedAt: d.Add(2 * time.Hour)}); err != nil {
					return err
				}
			}
			return nil
		}
		info, err := exporter.WriteDigest(ctx, store, n, d, src, exporter.DigestOptions{TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		return &exporter.DigestRef{Store: store, Name: n, Date: d, Info: info}
	}
	opts := exporter.ChangesOptions{Current: *digest(date, cur), Store: store, Name: name}
	if prev != nil {
		opts.Previous = digest(prevDate, prev)
	}
	info, err := exporter.WriteChanges(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	return info.Part
}

// changeRows reads a partition of the fake's changes table as "kind sid
// columns previous" lines, sorted.
func (e *env) changeRows(date time.Time) []string {
	e.t.Helper()
	var out []string
	for _, r := range e.srv.Rows(dataset, changesTable, date.Format("20060102")) {
		var cols []string
		for _, c := range r[schemas.ColChangedColumns].([]any) {
			cols = append(cols, c.(string))
		}
		prev := "-"
		if d, ok := r[schemas.ColPreviousSnapshotDate].(civil.Date); ok {
			prev = d.String()
		}
		if d, ok := r[schemas.ColSnapshotDate].(civil.Date); !ok || d != civil.DateOf(date) {
			e.t.Fatalf("row has snapshot_date %v, want %v", r[schemas.ColSnapshotDate], date)
		}
		out = append(out, fmt.Sprintf("%s %s %s %s", r[schemas.ColChange], r[schemas.ColSID], strings.Join(cols, ","), prev))
	}
	sort.Strings(out)
	return out
}

func TestPublishChangesVersions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	p := e.changesPublisher(nil)
	store := stagingtest.NewDir(t)
	day0 := day1.AddDate(0, 0, -1)
	before := makeBindings("IS01", 5, 1)
	now := slices.Clone(before[1:]) // the first is removed
	now[0].Endpoint = func(s string) *string { return &s }("a new token")
	j := newJournal()
	snap := func(part exporter.PartInfo, version string) exporter.Snapshot {
		return exporter.Snapshot{Date: day1, Store: store, RunID: "run1", Journal: j,
			Tables: []exporter.Table{{Name: exporter.ChangesTable, Schema: schemas.Changes(), Parts: []exporter.PartInfo{part}, Version: version}}}
	}
	v1 := writeChanges(t, store, day1, day0, before, now, "changes-v1.parquet")
	if err := p.Publish(ctx, snap(v1, "v1")); err != nil {
		t.Fatal(err)
	}
	sid := func(b twilio.Binding) string { return *b.SID }
	want := []string{
		"changed " + sid(now[0]) + " endpoint " + day0.Format(time.DateOnly),
		"removed " + sid(before[0]) + "  " + day0.Format(time.DateOnly),
	}
	if got := e.changeRows(day1); !slices.Equal(got, want) {
		t.Errorf("changes v1:\n got %q\nwant %q", got, want)
	}
	jobs := len(e.srv.Jobs())

	// Version 2, computed against no previous snapshot, replaces it under
	// new jobs although the journal marks version 1's steps done.
	v2 := writeChanges(t, store, day1, day0, nil, now, "changes-v2.parquet")
	if err := p.Publish(ctx, snap(v2, "v2")); err != nil {
		t.Fatal(err)
	}
	got := e.changeRows(day1)
	if len(got) != len(now) || !strings.HasPrefix(got[0], "initial ") {
		t.Errorf("changes v2: %q", got)
	}
	var v2Jobs []string
	for _, job := range e.srv.Jobs()[jobs:] {
		v2Jobs = append(v2Jobs, job.JobReference.JobId)
	}
	if len(v2Jobs) == 0 || !strings.Contains(v2Jobs[0], "_run1_v2_") {
		t.Errorf("version 2 ran jobs %v, want new jobs naming v2", v2Jobs)
	}
	// Publishing version 2 again runs nothing.
	jobs = len(e.srv.Jobs())
	if err := p.Publish(ctx, snap(v2, "v2")); err != nil {
		t.Fatal(err)
	}
	if n := len(e.srv.Jobs()) - jobs; n != 0 {
		t.Errorf("republishing version 2 ran %d jobs", n)
	}
	e.checkJobsOnce()
}

func TestPublishRefreshLeavesOtherTablesAlone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	store := stagingtest.NewDir(t)
	part := writeChanges(t, store, day2, day1, makeBindings("IS01", 3, 1), makeBindings("IS01", 4, 1), "refresh.parquet")
	refresh := exporter.Snapshot{Date: day2, Store: store, RunID: "run1", Journal: newJournal(), Refresh: true,
		Tables: []exporter.Table{{Name: exporter.ChangesTable, Schema: schemas.Changes(), Parts: []exporter.PartInfo{part}, Version: "v1"}}}
	before := len(e.srv.Requests())
	if err := e.publisher(nil).Publish(ctx, refresh); err != nil {
		t.Fatalf("the bindings publisher refused a refresh of another table: %v", err)
	}
	if n := len(e.srv.Requests()) - before; n != 0 {
		t.Errorf("the bindings publisher sent %d requests for a refresh of another table", n)
	}
	if err := e.changesPublisher(nil).Publish(ctx, refresh); err != nil {
		t.Fatal(err)
	}
	if got := e.changeRows(day2); len(got) != 1 || !strings.HasPrefix(got[0], "added ") {
		t.Errorf("refreshed changes: %q", got)
	}
	// A snapshot that is not a refresh must hold the publisher's table.
	refresh.Refresh = false
	if err := e.publisher(nil).Publish(ctx, refresh); err == nil || !strings.Contains(err.Error(), `no table "user_bindings"`) {
		t.Errorf("publishing a snapshot without the table: err = %v", err)
	}
}

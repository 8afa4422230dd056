package publish_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/bindsync/bindsync/bq"
	"github.com/bindsync/bindsync/bq/bqtest"
	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/publish"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio"
)

// days are consecutive snapshot dates.
var days = func() []time.Time {
	out := make([]time.Time, 8)
	for i := range out {
		out[i] = time.Date(2026, 11, 20+i, 0, 0, 0, 0, time.UTC)
	}
	return out
}()

// world is the bindings of a snapshot by SID.
type world map[string]twilio.Binding

func ptr[T any](v T) *T { return &v }

// binding i of service svc, at version v (a version changes the endpoint
// and date_updated).
func binding(svc string, i, v int) twilio.Binding {
	sid := fmt.Sprintf("BS%032x", i)
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Hour)
	updated := created.Add(time.Duration(v) * time.Minute)
	b := twilio.Binding{
		SID: &sid, AccountSID: ptr("AC" + strings.Repeat("0", 32)), ServiceSID: ptr(svc),
		DateCreated: &created, DateUpdated: &updated,
		Endpoint: ptr(fmt.Sprintf("token-%d-v%d", i, v)), Identity: ptr(fmt.Sprintf("user-%d", i%5)),
		UserSID: ptr(fmt.Sprintf("US%032x", i%5)), BindingType: ptr(twilio.BindingTypes[i%3]),
		URL: ptr("https://chat.twilio.com/v2/Services/" + svc + "/Users/x/Bindings/" + sid),
	}
	if i%4 != 0 {
		b.MessageTypes = []string{"new_message"}
	}
	return b
}

// evolve returns w after a day: every 7th binding removed, every 5th
// updated, and n new ones from next on.
func evolve(w world, day, next, n int) world {
	out := world{}
	keys := slices.Sorted(maps.Keys(w))
	for k, sid := range keys {
		b := w[sid]
		switch {
		case (k+day)%7 == 0:
			continue
		case (k+day)%5 == 0:
			b.Endpoint = ptr(*b.Endpoint + "+d" + fmt.Sprint(day))
			u := b.DateUpdated.Add(24 * time.Hour)
			b.DateUpdated = &u
		}
		out[sid] = b
	}
	for i := next; i < next+n; i++ {
		b := binding("IS01", i, 0)
		out[*b.SID] = b
	}
	return out
}

func firstWorld(n int) world {
	w := world{}
	for i := range n {
		b := binding("IS01", i, 0)
		if i%9 == 0 {
			b = binding("IS02", i, 0)
		}
		w[*b.SID] = b
	}
	return w
}

// expected renders the changes from prev (nil: none) to cur as the lines
// changeLines renders, sorted: a reference implementation with maps.
func expected(prev, cur world, prevDate *time.Time) []string {
	var out []string
	p := "-"
	if prevDate != nil {
		p = prevDate.Format(time.DateOnly)
	}
	for sid, b := range cur {
		old, ok := prev[sid]
		switch {
		case prev == nil:
			out = append(out, line(schemas.ChangeInitial, b, nil, p))
		case !ok:
			out = append(out, line(schemas.ChangeAdded, b, nil, p))
		default:
			var cols []string
			if !old.DateUpdated.Equal(*b.DateUpdated) {
				cols = append(cols, schemas.ColDateUpdated)
			}
			if *old.Endpoint != *b.Endpoint {
				cols = append(cols, schemas.ColEndpoint)
			}
			if cols != nil {
				out = append(out, line(schemas.ChangeChanged, b, cols, p))
			}
		}
	}
	for sid, b := range prev {
		if _, ok := cur[sid]; !ok {
			out = append(out, line(schemas.ChangeRemoved, b, nil, p))
		}
	}
	sort.Strings(out)
	return out
}

func line(kind string, b twilio.Binding, cols []string, prev string) string {
	return fmt.Sprintf("%s %s %s %s [%s] %s", kind, *b.ServiceSID, *b.SID, *b.Endpoint, strings.Join(cols, ","), prev)
}

func changeLines(rows []schemas.ChangeRow) []string {
	var out []string
	for _, r := range rows {
		p := "-"
		if r.PreviousSnapshotDate != nil {
			p = r.PreviousSnapshotDate.Format(time.DateOnly)
		}
		out = append(out, line(r.Change, r.Binding, r.ChangedColumns, p))
	}
	sort.Strings(out)
	return out
}

// readLocalChanges returns the changes of date in a local warehouse.
func readLocalChanges(t *testing.T, warehouse string, date time.Time) []string {
	t.Helper()
	dir := exporter.LocalWarehouse{Path: warehouse}.ChangesSnapshotDir(date)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("changes of %s: %v", date.Format(time.DateOnly), err)
	}
	var rows []schemas.ChangeRow
	for _, e := range entries {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		err = exporter.ReadChangesFile(context.Background(), f, st.Size(), func(r schemas.ChangeRow) error {
			if !r.SnapshotDate.Equal(date) {
				return fmt.Errorf("row of %v in the partition of %v", r.SnapshotDate, date)
			}
			rows = append(rows, r)
			return nil
		})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return changeLines(rows)
}

// stage writes w as the read snapshot of date in store: its parts and a
// checkpoint that names them, as a worker leaves a complete snapshot.
func stage(t *testing.T, store staging.Store, date time.Time, w world) {
	t.Helper()
	ctx := context.Background()
	cp, err := checkpoint.Open(ctx, store, date)
	if err != nil {
		t.Fatal(err)
	}
	runID := "run-" + date.Format("20060102")
	if err := cp.Append(ctx, checkpoint.Entry{Kind: checkpoint.KindStart, RunID: runID, Time: date.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	bs := slices.SortedFunc(maps.Values(w), func(a, b twilio.Binding) int { return strings.Compare(*a.SID, *b.SID) })
	e := checkpoint.Entry{Kind: checkpoint.KindCommit, RunID: runID}
	for start := 0; start < len(bs) || start == 0; start += 40 {
		name := checkpoint.PartName(date, fmt.Sprintf("%s-%03d.parquet", runID, start/40))
		pw, err := exporter.NewPartWriter(ctx, store, name, schemas.RowMeta{SnapshotDate: date, SyncedAt: date.Add(time.Hour)}, exporter.PartOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := pw.Append(bs[start:min(start+40, len(bs))]); err != nil {
			t.Fatal(err)
		}
		info, err := pw.Close()
		if err != nil {
			t.Fatal(err)
		}
		e.Parts = append(e.Parts, checkpoint.Part{Name: info.Name, Rows: info.Rows, Bytes: info.Bytes, CRC32C: info.CRC32C})
		if len(bs) == 0 {
			break
		}
	}
	e.Done = []checkpoint.UserDone{{UserRef: checkpoint.UserRef{Service: "IS01", User: "everyone"}, Bindings: int64(len(bs)), Pages: 1}}
	if err := cp.Append(ctx, e); err != nil {
		t.Fatal(err)
	}
	if err := cp.Append(ctx, checkpoint.Entry{Kind: checkpoint.KindFinish, RunID: runID, Run: &checkpoint.RunSummary{RunID: runID, Status: checkpoint.RunSucceeded, UsersTotal: 1, UsersDone: 1}}); err != nil {
		t.Fatal(err)
	}
}

// env is a staging directory and a local warehouse.
type env struct {
	t         *testing.T
	store     *staging.Dir
	warehouse string
	logs      *observer.ObservedLogs
	log       *zap.Logger
	opts      func(*publish.Options)
}

func newEnv(t *testing.T) *env {
	store, err := staging.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	return &env{t: t, store: store, warehouse: t.TempDir(), logs: logs, log: zap.New(core)}
}

func (e *env) options(store staging.Store, pubs ...exporter.Publisher) publish.Options {
	opts := publish.Options{
		Store:      store,
		Publishers: append([]exporter.Publisher{exporter.LocalWarehouse{Path: e.warehouse}}, pubs...),
		RunID:      "run-x",
		Logger:     e.log,
		TempDir:    e.t.TempDir(),
		SortBytes:  4096, // a few runs on disk for every snapshot
	}
	if e.opts != nil {
		e.opts(&opts)
	}
	return opts
}

// publish stages w as the snapshot of date and publishes it.
func (e *env) publish(date time.Time, w world) {
	e.t.Helper()
	stage(e.t, e.store, date, w)
	e.publishStaged(date, e.options(e.store))
}

func (e *env) publishStaged(date time.Time, opts publish.Options) {
	e.t.Helper()
	cp, err := checkpoint.Open(context.Background(), e.store, date)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := publish.Snapshot(context.Background(), cp, opts); err != nil {
		e.t.Fatalf("publish %s: %v", date.Format(time.DateOnly), err)
	}
}

func (e *env) checkChanges(date time.Time, want []string) {
	e.t.Helper()
	got := readLocalChanges(e.t, e.warehouse, date)
	if !slices.Equal(got, want) {
		e.t.Errorf("changes of %s: %d rows, want %d\n%s", date.Format(time.DateOnly), len(got), len(want), diffLines(got, want))
	}
}

// diffLines lists the lines only one side has.
func diffLines(got, want []string) string {
	var b strings.Builder
	for _, g := range got {
		if !slices.Contains(want, g) {
			fmt.Fprintf(&b, "  extra:   %s\n", g)
		}
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			fmt.Fprintf(&b, "  missing: %s\n", w)
		}
	}
	return b.String()
}

func (e *env) digests() []string {
	e.t.Helper()
	names, err := e.store.List(context.Background(), "snapshots/")
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, n := range names {
		if strings.HasSuffix(n, "/digest/bindings.digest") {
			out = append(out, strings.Split(n, "/")[1])
		}
	}
	return out
}

func TestChangesDayToDay(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w1 := firstWorld(100)
	w2 := evolve(w1, 1, 1000, 6)
	w3 := evolve(w2, 2, 2000, 3)
	e.publish(days[0], w1)
	e.publish(days[1], w2)
	e.publish(days[2], w3)

	// The first snapshot has nothing to compare with: every binding is
	// initial.
	e.checkChanges(days[0], expected(nil, w1, nil))
	e.checkChanges(days[1], expected(w1, w2, &days[0]))
	e.checkChanges(days[2], expected(w2, w3, &days[1]))
	if n := len(expected(w1, w2, &days[0])); n < 20 {
		t.Fatalf("only %d changes on day 2: the test proves little", n)
	}

	// Each published snapshot keeps its digest; nothing else of it stays.
	if got := e.digests(); !slices.Equal(got, []string{"2026-11-20", "2026-11-21", "2026-11-22"}) {
		t.Errorf("digests = %v", got)
	}
	for _, d := range days[:3] {
		left, err := e.store.List(context.Background(), checkpoint.Dir(d)+"/")
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range left {
			if !strings.Contains(name, "/_log/") && !strings.HasSuffix(name, "/digest/bindings.digest") {
				t.Errorf("left in staging after publishing: %s", name)
			}
		}
	}
	if n := e.logs.FilterMessage("computed the changes").Len(); n != 2 {
		t.Errorf("%d snapshots logged their changes, want 2 (and one baseline)", n)
	}
}

func TestChangesAfterAGap(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w1 := firstWorld(60)
	w2 := evolve(w1, 1, 1000, 4)
	w4 := evolve(w2, 3, 3000, 4)
	e.publish(days[0], w1)
	// The second day is read but never published, the third never read:
	// the fourth compares with the first.
	stage(t, e.store, days[1], w2)
	e.publish(days[3], w4)
	e.checkChanges(days[3], expected(w1, w4, &days[0]))
}

func TestChangesOfAPastDateRefreshTheNextSnapshot(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w1 := firstWorld(60)
	w2 := evolve(w1, 1, 1000, 4)
	w3 := evolve(w2, 2, 2000, 4)
	e.publish(days[0], w1)
	e.publish(days[2], w3) // the second day is late
	e.checkChanges(days[2], expected(w1, w3, &days[0]))

	// The second day published late compares with the first, and the
	// third's changes are computed again against it.
	e.publish(days[1], w2)
	e.checkChanges(days[1], expected(w1, w2, &days[0]))
	e.checkChanges(days[2], expected(w2, w3, &days[1]))

	// --force of the second day: read again (here with other content),
	// it is compared with the first and the third with it.
	ctx := context.Background()
	if err := checkpoint.Reset(ctx, e.store, days[1]); err != nil {
		t.Fatal(err)
	}
	w2b := evolve(w1, 5, 5000, 2)
	e.publish(days[1], w2b)
	e.checkChanges(days[1], expected(w1, w2b, &days[0]))
	e.checkChanges(days[2], expected(w2b, w3, &days[1]))
	// The digests of the first and third days were not touched.
	e.publish(days[3], w3)
	e.checkChanges(days[3], expected(w3, w3, &days[2]))
}

func TestChangesRebuildTheDigest(t *testing.T) {
	t.Parallel()
	w1 := firstWorld(60)
	w2 := evolve(w1, 1, 1000, 4)
	ctx := context.Background()

	t.Run("from the local warehouse", func(t *testing.T) {
		e := newEnv(t)
		e.publish(days[0], w1)
		if err := e.store.Delete(ctx, publish.DigestName(days[0])); err != nil {
			t.Fatal(err)
		}
		e.publish(days[1], w2)
		e.checkChanges(days[1], expected(w1, w2, &days[0]))
		if e.logs.FilterMessage("rebuilt the digest of an earlier snapshot").FilterField(zap.String("from", exporter.LocalWarehouse{Path: e.warehouse}.SnapshotDir(days[0]))).Len() != 1 {
			t.Error("no log line says the digest was rebuilt from the warehouse")
		}
	})

	t.Run("from its parts", func(t *testing.T) {
		e := newEnv(t)
		stage(t, e.store, days[0], w1)
		cp, err := checkpoint.Open(ctx, e.store, days[0])
		if err != nil {
			t.Fatal(err)
		}
		// Published without a digest by an earlier bindsync, its parts
		// left in staging, and no local warehouse.
		if err := cp.Append(ctx, checkpoint.Entry{Kind: checkpoint.KindPublished, RunID: "old"}); err != nil {
			t.Fatal(err)
		}
		stage(t, e.store, days[1], w2)
		opts := e.options(e.store)
		opts.Publishers = []exporter.Publisher{exporter.LocalWarehouse{Path: e.warehouse}}
		e.warehouse = t.TempDir() // no partition of the first day there
		opts.Publishers[0] = exporter.LocalWarehouse{Path: e.warehouse}
		e.publishStaged(days[1], opts)
		e.checkChanges(days[1], expected(w1, w2, &days[0]))
	})

	t.Run("nowhere: a baseline", func(t *testing.T) {
		e := newEnv(t)
		e.publish(days[0], w1)
		if err := e.store.Delete(ctx, publish.DigestName(days[0])); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(filepath.Join(e.warehouse, exporter.TableDir)); err != nil {
			t.Fatal(err)
		}
		e.publish(days[1], w2)
		e.checkChanges(days[1], expected(nil, w2, nil))
		logged := e.logs.FilterMessageSnippet("the changes are a baseline").All()
		if len(logged) != 1 || !strings.Contains(logged[0].Message, "2026-11-20") || !strings.Contains(logged[0].Message, "is gone") || !strings.Contains(logged[0].Message, "the local warehouse has no") {
			t.Errorf("baseline logged as %v", logged)
		}
		// The next day compares again.
		w3 := evolve(w2, 2, 2000, 3)
		e.publish(days[2], w3)
		e.checkChanges(days[2], expected(w2, w3, &days[1]))
	})
}

func TestChangesPruneOldDigests(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.opts = func(o *publish.Options) { o.KeepDigests = 2 }
	w := firstWorld(20)
	for i, d := range days[:5] {
		w = evolve(w, i, 1000*(i+1), 2)
		e.publish(d, w)
	}
	if got := e.digests(); !slices.Equal(got, []string{"2026-11-23", "2026-11-24"}) {
		t.Errorf("digests kept = %v, want the 2 newest", got)
	}
}

// stale: a snapshot whose publishing stopped after its changes were
// recorded compares them again when it resumes, if an older snapshot
// was published meanwhile.
func TestChangesComputedAgainWhenStale(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	srv, pubs := bigQuery(t, e.store)
	w1 := firstWorld(40)
	w2 := evolve(w1, 1, 1000, 3)
	w3 := evolve(w2, 2, 2000, 3)
	e.publish(days[0], w1)

	// The third day stops at its first publisher, after its changes
	// (against the first day) are recorded.
	stage(t, e.store, days[2], w3)
	cp, err := checkpoint.Open(context.Background(), e.store, days[2])
	if err != nil {
		t.Fatal(err)
	}
	opts := e.options(e.store, pubs...)
	opts.Publishers = append([]exporter.Publisher{failing{}}, opts.Publishers...)
	if _, err := publish.Snapshot(context.Background(), cp, opts); err == nil {
		t.Fatal("publishing through a failing publisher succeeded")
	}

	e.publish(days[1], w2)
	e.publishStaged(days[2], e.options(e.store, pubs...))
	e.checkChanges(days[2], expected(w2, w3, &days[1]))
	checkBQChanges(t, srv, days[2], expected(w2, w3, &days[1]))
	if e.logs.FilterMessageSnippet("no longer the newest published").Len() != 1 {
		t.Error("the recomputation is not logged")
	}
}

type failing struct{}

func (failing) Publish(context.Context, exporter.Snapshot) error { return errors.New("warehouse down") }
func (failing) Describe() string                                 { return "failing" }

// bigQuery starts a fake BigQuery and returns publishers of the three
// tables of a snapshot.
func bigQuery(t *testing.T, store staging.Store) (*bqtest.Server, []exporter.Publisher) {
	t.Helper()
	srv := bqtest.NewServer(bqtest.Options{})
	t.Cleanup(srv.Close)
	srv.CreateDataset("chat", "US")
	client, _, err := bq.NewClient(context.Background(), bq.ClientConfig{Project: "test-project", Endpoint: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	var pubs []exporter.Publisher
	for _, tb := range []struct {
		source, suffix string
		schema         bigquery.Schema
	}{
		{exporter.BindingsTable, "", bq.Schema(schemas.Binding())},
		{exporter.UsersTable, bq.UsersSuffix, bq.Schema(schemas.Users())},
		{exporter.ChangesTable, bq.ChangesSuffix, bq.Schema(schemas.Changes())},
	} {
		p, err := bq.New(client, bq.Options{Project: "test-project", Dataset: "chat", Table: "user_bindings" + tb.suffix, Source: tb.source,
			Schema: tb.schema, PollInterval: time.Millisecond, MaxPollInterval: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		pubs = append(pubs, p)
	}
	return srv, pubs
}

// checkBQChanges compares the fake's partition of the changes table with
// want.
func checkBQChanges(t *testing.T, srv *bqtest.Server, date time.Time, want []string) {
	t.Helper()
	var got []string
	for _, r := range srv.Rows("chat", "user_bindings_changes", date.Format("20060102")) {
		var cols []string
		for _, c := range r[schemas.ColChangedColumns].([]any) {
			cols = append(cols, c.(string))
		}
		p := "-"
		if d, ok := r[schemas.ColPreviousSnapshotDate].(civil.Date); ok {
			p = d.String()
		}
		got = append(got, fmt.Sprintf("%s %s %s %s [%s] %s", r[schemas.ColChange], r[schemas.ColServiceSID], r[schemas.ColSID], r[schemas.ColEndpoint], strings.Join(cols, ","), p))
	}
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("BigQuery changes of %s: %d rows, want %d\n%s", date.Format(time.DateOnly), len(got), len(want), diffLines(got, want))
	}
}

// errKilled is what every durable step fails with once a mortal process
// is dead.
var errKilled = errors.New("killed")

// mortal counts the durable steps of a process (objects committed,
// checkpoint entries appended, objects deleted, publisher calls) and
// fails every one after the first left, as if the process had been
// killed with kill -9 right then: what was committed stays, nothing more
// is written. Reads keep working; they change nothing.
type mortal struct {
	left atomic.Int64
}

func (m *mortal) step() error {
	if m.left.Add(-1) < 0 {
		return errKilled
	}
	return nil
}

func (m *mortal) dead() bool { return m.left.Load() < 0 }

type mortalStore struct {
	staging.Store
	m *mortal
}

type mortalWriter struct {
	staging.Writer
	m *mortal
}

func (w mortalWriter) Close() error {
	if err := w.m.step(); err != nil {
		w.Writer.Abort()
		return err
	}
	return w.Writer.Close()
}

func (s mortalStore) Create(ctx context.Context, name string) (staging.Writer, error) {
	w, err := s.Store.Create(ctx, name)
	if err != nil {
		return nil, err
	}
	return mortalWriter{w, s.m}, nil
}

func (s mortalStore) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	if err := s.m.step(); err != nil {
		return err
	}
	return s.Store.PutIfAbsent(ctx, name, data)
}

func (s mortalStore) Delete(ctx context.Context, name string) error {
	if err := s.m.step(); err != nil {
		return err
	}
	return s.Store.Delete(ctx, name)
}

type mortalPublisher struct {
	exporter.Publisher
	m *mortal
}

func (p mortalPublisher) Publish(ctx context.Context, s exporter.Snapshot) error {
	if err := p.m.step(); err != nil {
		return err
	}
	return p.Publisher.Publish(ctx, s)
}

// TestChangesSurviveAKillAtEveryStep kills the publishing of a snapshot
// at each of its durable steps in turn, then publishes it again as the
// next run would, and checks that the changes of that snapshot, and of
// the next one (computed from its digest), are exact in the local
// warehouse and in BigQuery, with every BigQuery job run once.
func TestChangesSurviveAKillAtEveryStep(t *testing.T) {
	t.Parallel()
	w1 := firstWorld(50)
	w2 := evolve(w1, 1, 1000, 5)
	w3 := evolve(w2, 2, 2000, 5)
	want2, want3 := expected(w1, w2, &days[0]), expected(w2, w3, &days[1])
	ctx := context.Background()

	// run publishes the second day with a process killed before its
	// step kill (never, if kill is beyond its steps) and returns how many
	// steps that process took.
	run := func(t *testing.T, kill int64) int64 {
		e := newEnv(t)
		srv, pubs := bigQuery(t, e.store)
		stage(t, e.store, days[0], w1)
		e.publishStaged(days[0], e.options(e.store))
		stage(t, e.store, days[1], w2)

		m := &mortal{}
		m.left.Store(kill)
		dying := mortalStore{e.store, m}
		opts := e.options(dying)
		opts.Publishers = nil
		for _, p := range append([]exporter.Publisher{exporter.LocalWarehouse{Path: e.warehouse}}, pubs...) {
			opts.Publishers = append(opts.Publishers, mortalPublisher{p, m})
		}
		cp, err := checkpoint.Open(ctx, dying, days[1])
		if err != nil {
			t.Fatal(err)
		}
		_, err = publish.Snapshot(ctx, cp, opts)
		killed := m.dead()
		if err != nil && !killed {
			t.Fatalf("publishing failed before the kill: %v", err)
		}
		if killed && err == nil {
			t.Fatal("publishing said it succeeded after the kill")
		}

		// The next run, a new process, finds the snapshot in its
		// checkpoint and publishes it unless it is published.
		cp, err = checkpoint.Open(ctx, e.store, days[1])
		if err != nil {
			t.Fatal(err)
		}
		if !cp.State().Published {
			if _, err := publish.Snapshot(ctx, cp, e.options(e.store, pubs...)); err != nil {
				t.Fatalf("publishing again: %v", err)
			}
		}
		e.checkChanges(days[1], want2)
		checkBQChanges(t, srv, days[1], want2)

		stage(t, e.store, days[2], w3)
		e.publishStaged(days[2], e.options(e.store, pubs...))
		e.checkChanges(days[2], want3)
		checkBQChanges(t, srv, days[2], want3)
		for _, j := range srv.Jobs() {
			if n := srv.JobCount(j.JobReference.JobId); n > 1 {
				t.Errorf("job %s accepted %d times", j.JobReference.JobId, n)
			}
		}
		// Exact without help: the digest of the second day was there for
		// the third, never rebuilt from the local warehouse.
		if n := e.logs.FilterMessage("rebuilding the digest of an earlier snapshot").Len(); n != 0 {
			t.Errorf("a digest was rebuilt %d times", n)
		}
		return kill - max(m.left.Load(), 0)
	}
	steps := run(t, 1<<40)
	if steps < 20 {
		t.Fatalf("publishing took %d durable steps: the mortal store misses some", steps)
	}
	for kill := range steps {
		if raceEnabled && kill%4 != 1 && kill != steps-1 {
			// Under the race detector, whose cost here is the same code
			// run 36 times, every fourth step and the last; `make test`
			// runs every step without it.
			continue
		}
		t.Run(fmt.Sprintf("kill_before_step_%d", kill), func(t *testing.T) {
			t.Parallel()
			run(t, kill)
		})
	}
}

// TestNoChangesEmptyThePartition: a snapshot equal to the previous one has
// an empty partition of changes, in BigQuery too, where it replaces what
// an earlier publication of the date put there.
func TestNoChangesEmptyThePartition(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	srv, pubs := bigQuery(t, e.store)
	ctx := context.Background()
	w1 := firstWorld(30)
	w2 := evolve(w1, 1, 1000, 3)
	publishAll := func(date time.Time, w world) {
		stage(t, e.store, date, w)
		e.publishStaged(date, e.options(e.store, pubs...))
	}
	publishAll(days[0], w1)
	publishAll(days[1], w2)
	checkBQChanges(t, srv, days[1], expected(w1, w2, &days[0]))

	if err := checkpoint.Reset(ctx, e.store, days[1]); err != nil {
		t.Fatal(err)
	}
	publishAll(days[1], w1)
	e.checkChanges(days[1], nil)
	checkBQChanges(t, srv, days[1], nil)
	left, err := e.store.List(ctx, checkpoint.Dir(days[1])+"/changes/")
	if err != nil || len(left) != 0 {
		t.Errorf("left in staging: %v (%v)", left, err)
	}
}

// TestStaleLaterChangesAreReported: a date published late cannot refresh
// the next snapshot's changes without that snapshot's digest; it says so
// and publishes itself all the same.
func TestStaleLaterChangesAreReported(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	rec := &recorder{}
	opts := func() publish.Options {
		o := e.options(e.store)
		o.Publishers = []exporter.Publisher{rec} // no local warehouse to rebuild from
		return o
	}
	w1 := firstWorld(20)
	w2 := evolve(w1, 1, 1000, 2)
	w3 := evolve(w2, 2, 2000, 2)
	for _, d := range []struct {
		date time.Time
		w    world
	}{{days[0], w1}, {days[2], w3}} {
		stage(t, e.store, d.date, d.w)
		e.publishStaged(d.date, opts())
	}
	if err := e.store.Delete(ctx, publish.DigestName(days[2])); err != nil {
		t.Fatal(err)
	}
	stage(t, e.store, days[1], w2)
	e.publishStaged(days[1], opts())
	logged := e.logs.FilterField(zap.String("stale", "2026-11-22")).All()
	if len(logged) != 1 || !strings.Contains(logged[0].Message, "2026-11-22 are stale") || !strings.Contains(logged[0].Message, "is gone") {
		t.Errorf("stale changes logged as %v", logged)
	}
	last := rec.got[len(rec.got)-1]
	if last.Refresh || !last.Date.Equal(days[1]) {
		t.Errorf("the last publication is of %v (refresh %v), want the late date alone", last.Date, last.Refresh)
	}
}

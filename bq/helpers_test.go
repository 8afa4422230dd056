package bq_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"

	"github.com/bindsync/bindsync/bq"
	"github.com/bindsync/bindsync/bq/bqtest"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio"
)

const (
	project   = "test-project"
	dataset   = "twilio_chat"
	table     = "user_bindings"
	principal = "service account bindsync@test-project.iam.gserviceaccount.com"
)

var (
	day1 = time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	day2 = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
)

// env is a fake BigQuery with the dataset in US and a client for it.
type env struct {
	t      *testing.T
	srv    *bqtest.Server
	client *bigquery.Client
}

func newEnv(t *testing.T, opts bqtest.Options) *env {
	t.Helper()
	opts.Project = project
	srv := bqtest.NewServer(opts)
	t.Cleanup(srv.Close)
	srv.CreateDataset(dataset, "US")
	client, who, err := bq.NewClient(context.Background(), bq.ClientConfig{Project: project, Endpoint: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if who != "the credentials in use" {
		t.Errorf("principal of an unauthenticated emulator client = %q", who)
	}
	t.Cleanup(func() { client.Close() })
	return &env{t: t, srv: srv, client: client}
}

// publisher returns a Publisher for the test table; change adjusts the
// options.
func (e *env) publisher(change func(*bq.Options)) *bq.Publisher {
	e.t.Helper()
	opts := bq.Options{
		Project:         project,
		Dataset:         dataset,
		Table:           table,
		Location:        "US",
		Principal:       principal,
		PollInterval:    5 * time.Millisecond,
		MaxPollInterval: 20 * time.Millisecond,
	}
	if change != nil {
		change(&opts)
	}
	p, err := bq.New(e.client, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// journal is an in-memory exporter.Journal that counts its writes.
type journal struct {
	mu   sync.Mutex
	kv   map[string]string
	sets int
}

func newJournal() *journal { return &journal{kv: map[string]string{}} }

func (j *journal) Get(key string) string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.kv[key]
}

func (j *journal) Set(_ context.Context, kv map[string]string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.sets++
	for k, v := range kv {
		j.kv[k] = v
	}
	return nil
}

// lookup returns the value of the only key ending in suffix.
func (j *journal) lookup(t *testing.T, suffix string) string {
	t.Helper()
	j.mu.Lock()
	defer j.mu.Unlock()
	var found []string
	for k, v := range j.kv {
		if strings.HasSuffix(k, suffix) {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		t.Fatalf("journal has %d keys ending in %q: %v", len(found), suffix, j.kv)
	}
	return found[0]
}

// gcsStore is a local store that names its objects gs://bucket/prefix/...,
// as the GCS store does, and serves them to the fake as that bucket.
type gcsStore struct {
	*staging.Dir
	bucket, prefix string
}

func (g gcsStore) URI(name string) string { return "gs://" + g.bucket + "/" + g.prefix + "/" + name }

// GCSURI offers every object in place, as the GCS store does.
func (g gcsStore) GCSURI(name string) (string, bool) { return g.URI(name), true }

// read serves bqtest.Options.GCS.
func (g gcsStore) read(ctx context.Context, bucket, object string) ([]byte, error) {
	name, ok := strings.CutPrefix(object, g.prefix+"/")
	if bucket != g.bucket || !ok {
		return nil, fmt.Errorf("no object gs://%s/%s", bucket, object)
	}
	return g.Dir.ReadAll(ctx, name)
}

// makeBindings returns n bindings for service svc with every kind of
// value: nulls, empty and null message types, several users.
func makeBindings(svc string, n, seed int) []twilio.Binding {
	out := make([]twilio.Binding, n)
	str := func(s string) *string { return &s }
	for i := range out {
		k := seed*100000 + i
		created := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(k) * time.Minute)
		b := twilio.Binding{
			SID:         str(fmt.Sprintf("BS%032x", k)),
			AccountSID:  str("AC00000000000000000000000000000001"),
			ServiceSID:  str(svc),
			DateCreated: &created,
			Endpoint:    str(fmt.Sprintf("endpoint-%d/dévice\t\"quoted\"", k)),
			Identity:    str(fmt.Sprintf("user %d", k%7)),
			UserSID:     str(fmt.Sprintf("US%032x", k%7)),
			BindingType: str([]string{"apn", "fcm", "gcm"}[k%3]),
			URL:         str(fmt.Sprintf("https://chat.twilio.com/v2/Services/%s/Users/US%032x/Bindings/BS%032x", svc, k%7, k)),
		}
		switch k % 4 {
		case 0:
			b.MessageTypes = nil
		case 1:
			b.MessageTypes = []string{}
		default:
			b.MessageTypes = []string{"new_message", "added_to_channel"}[:k%2+1]
		}
		if k%5 != 0 {
			updated := created.Add(time.Hour)
			b.DateUpdated = &updated
		}
		if k%3 == 0 {
			b.CredentialSID = str(fmt.Sprintf("CR%032x", k%3))
		}
		out[i] = b
	}
	return out
}

// writeSnapshot writes bindings into parts of at most perPart rows and
// returns the snapshot to publish.
func writeSnapshot(t *testing.T, store staging.Store, date time.Time, bindings []twilio.Binding, perPart int, runID string, j exporter.Journal) exporter.Snapshot {
	t.Helper()
	ctx := context.Background()
	snap := exporter.Snapshot{Date: date, Store: store, RunID: runID, Journal: j, Tables: []exporter.Table{{Name: exporter.BindingsTable, Schema: schemas.Binding()}}}
	meta := schemas.RowMeta{SnapshotDate: date, SyncedAt: date.Add(2 * time.Hour)}
	for i := 0; i < len(bindings); i += perPart {
		name := fmt.Sprintf("snapshots/%s/parts/%s-%05d.parquet", date.Format(time.DateOnly), runID, i/perPart)
		w, err := exporter.NewPartWriter(ctx, store, name, meta, exporter.PartOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Append(bindings[i:min(i+perPart, len(bindings))]); err != nil {
			t.Fatal(err)
		}
		info, err := w.Close()
		if err != nil {
			t.Fatal(err)
		}
		snap.Tables[0].Parts = append(snap.Tables[0].Parts, info)
	}
	return snap
}

// canonical renders a binding as JSON, with a null message_types list as
// an empty one: a REPEATED column cannot hold null, so BigQuery loads a
// null list as an empty one.
func canonical(b twilio.Binding) string {
	if b.MessageTypes == nil {
		b.MessageTypes = []string{}
	}
	for _, t := range []**time.Time{&b.DateCreated, &b.DateUpdated} {
		if *t != nil {
			u := (*t).UTC()
			*t = &u
		}
	}
	data, err := json.Marshal(b)
	if err != nil {
		panic(err)
	}
	return string(data)
}

func canonicalAll(bs []twilio.Binding) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = canonical(b)
	}
	sort.Strings(out)
	return out
}

// rowsOf reads a partition of the fake's table as canonical bindings and
// checks the columns bindsync adds.
func (e *env) rowsOf(date time.Time) []string {
	e.t.Helper()
	var out []string
	for _, r := range e.srv.Rows(dataset, table, date.Format("20060102")) {
		b, err := bindingFromRow(r)
		if err != nil {
			e.t.Fatalf("row %v: %v", r, err)
		}
		if d, ok := r[schemas.ColSnapshotDate].(civil.Date); !ok || d != civil.DateOf(date) {
			e.t.Fatalf("row has snapshot_date %v, want %v", r[schemas.ColSnapshotDate], date)
		}
		if ts, ok := r[schemas.ColSyncedAt].(time.Time); !ok || !ts.Equal(date.Add(2*time.Hour)) {
			e.t.Fatalf("row has synced_at %v", r[schemas.ColSyncedAt])
		}
		out = append(out, canonical(b))
	}
	sort.Strings(out)
	return out
}

// bindingFromRow converts a row of the fake into a binding.
func bindingFromRow(r map[string]any) (twilio.Binding, error) {
	var b twilio.Binding
	var err error
	str := func(col string) *string {
		switch v := r[col].(type) {
		case nil:
			return nil
		case string:
			return &v
		default:
			err = fmt.Errorf("column %s holds %T", col, v)
			return nil
		}
	}
	ts := func(col string) *time.Time {
		switch v := r[col].(type) {
		case nil:
			return nil
		case time.Time:
			return &v
		default:
			err = fmt.Errorf("column %s holds %T", col, v)
			return nil
		}
	}
	b.SID = str(schemas.ColSID)
	b.AccountSID = str(schemas.ColAccountSID)
	b.ServiceSID = str(schemas.ColServiceSID)
	b.DateCreated = ts(schemas.ColDateCreated)
	b.DateUpdated = ts(schemas.ColDateUpdated)
	b.Endpoint = str(schemas.ColEndpoint)
	b.Identity = str(schemas.ColIdentity)
	b.UserSID = str(schemas.ColUserSID)
	b.CredentialSID = str(schemas.ColCredentialSID)
	b.URL = str(schemas.ColURL)
	b.BindingType = str(schemas.ColBindingType)
	items, ok := r[schemas.ColMessageTypes].([]any)
	if !ok {
		return b, fmt.Errorf("message_types holds %T", r[schemas.ColMessageTypes])
	}
	b.MessageTypes = []string{}
	for _, it := range items {
		s, ok := it.(string)
		if !ok {
			return b, fmt.Errorf("message_types element %T", it)
		}
		b.MessageTypes = append(b.MessageTypes, s)
	}
	return b, err
}

// checkRows asserts the partition of date holds exactly want.
func (e *env) checkRows(date time.Time, want []twilio.Binding) {
	e.t.Helper()
	got, w := e.rowsOf(date), canonicalAll(want)
	if len(got) != len(w) {
		e.t.Fatalf("partition %s has %d rows, want %d", date.Format(time.DateOnly), len(got), len(w))
	}
	for i := range got {
		if got[i] != w[i] {
			e.t.Fatalf("partition %s, first difference at row %d:\n got %s\nwant %s", date.Format(time.DateOnly), i, got[i], w[i])
		}
	}
}

// checkJobsOnce asserts that BigQuery accepted every job ID at most once.
func (e *env) checkJobsOnce() {
	e.t.Helper()
	for _, j := range e.srv.Jobs() {
		if n := e.srv.JobCount(j.JobReference.JobId); n > 1 {
			e.t.Errorf("job %s accepted %d times", j.JobReference.JobId, n)
		}
	}
}

// jobIDs lists the IDs of the fake's jobs of a kind ("LOAD", "COPY") whose
// ID contains part, in insertion order.
func (e *env) jobIDs(kind, part string) []string {
	var out []string
	for _, j := range e.srv.Jobs() {
		if j.Configuration.JobType == kind && strings.Contains(j.JobReference.JobId, part) {
			out = append(out, j.JobReference.JobId)
		}
	}
	return out
}

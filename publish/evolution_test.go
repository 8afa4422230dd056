package publish_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/civil"

	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/twilio/twiliotest"
	"github.com/bindsync/bindsync/worker"
)

// TestThreeDaysOfAnEvolvingWorld reads a fake Twilio whose world lives
// from day to day on three days, with the worker, into a local warehouse
// and BigQuery, and checks every row of the changes tables against what
// the world changed: its kind, its columns, its values and the snapshot
// compared with.
func TestThreeDaysOfAnEvolvingWorld(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	start := days[0]
	world := twiliotest.NewWorld(twiliotest.WorldSpec{Seed: 12, Services: 2, UsersPerService: 40, MaxBindingsPerUser: 30,
		Evolution: twiliotest.DefaultEvolution(start)})
	store, err := staging.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	warehouse := t.TempDir()
	srvBQ, bqPubs := bigQuery(t, store)
	var services []worker.Service
	for _, s := range world.Services {
		services = append(services, worker.Service{SID: s.SID, AllUsers: true})
	}
	var kinds map[string]int
	for i, day := range days[:3] {
		srv := twiliotest.NewServer(twiliotest.Options{World: world.OnDay(day)})
		client, err := twilio.New(twilio.Config{BaseURL: srv.URL(), Username: world.AccountSID, Password: twiliotest.DefaultAuthToken})
		if err != nil {
			t.Fatal(err)
		}
		_, err = worker.Run(ctx, client, worker.Options{
			Services:    services,
			Store:       store,
			Locker:      store,
			Publishers:  append([]exporter.Publisher{exporter.LocalWarehouse{Path: warehouse}}, bqPubs...),
			Concurrency: 4,
			BatchRows:   64,
		}, day)
		srv.Close()
		if err != nil {
			t.Fatalf("day %d: %v", i+1, err)
		}

		// What the changes must hold, from the world alone.
		want := map[string]string{}
		var prev *time.Time
		if i == 0 {
			for b := range world.OnDay(day).AllBindings() {
				want[*b.SID] = changeText(schemas.ChangeInitial, nil, b, nil, day)
			}
		} else {
			prev = &days[i-1]
			kinds = map[string]int{}
			for _, c := range world.Changes(days[i-1], day) {
				b := c.New
				if c.Kind == twiliotest.Removed {
					b = c.Old
				}
				want[c.SID] = changeText(c.Kind, c.Columns, *b, prev, day)
				kinds[c.Kind]++
			}
			if kinds[twiliotest.Added] == 0 || kinds[twiliotest.Removed] == 0 || kinds[twiliotest.Changed] == 0 {
				t.Fatalf("day %d: the world changed %v: the test proves little", i+1, kinds)
			}
		}
		wantRows := slices.Sorted(mapValues(want))

		local := localChangeTexts(t, warehouse, day)
		if !slices.Equal(local, wantRows) {
			t.Errorf("day %d: local warehouse: %d changes, the world made %d\n%s", i+1, len(local), len(wantRows), diffLines(local, wantRows))
		}
		remote := bqChangeTexts(t, srvBQ, day)
		if !slices.Equal(remote, wantRows) {
			t.Errorf("day %d: BigQuery: %d changes, the world made %d\n%s", i+1, len(remote), len(wantRows), diffLines(remote, wantRows))
		}
	}
	t.Logf("changes of the third day: %v", kinds)
	if srvBQ.ViewQuery("chat", "user_bindings_history") == "" {
		t.Error("no history view in BigQuery")
	}
}

func mapValues(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

// changeText renders a change row: kind, columns, dates and every value.
func changeText(kind string, cols []string, b twilio.Binding, prev *time.Time, date time.Time) string {
	p := "-"
	if prev != nil {
		p = prev.Format(time.DateOnly)
	}
	if b.MessageTypes == nil {
		// BigQuery has no null list; the local warehouse keeps it, and
		// both are compared with one text.
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
	return fmt.Sprintf("%s %s [%s] %s %s", date.Format(time.DateOnly), kind, strings.Join(cols, ","), p, data)
}

func localChangeTexts(t *testing.T, warehouse string, date time.Time) []string {
	t.Helper()
	dir := exporter.LocalWarehouse{Path: warehouse}.ChangesSnapshotDir(date)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		err = exporter.ReadChangesFile(context.Background(), f, st.Size(), func(r schemas.ChangeRow) error {
			out = append(out, changeText(r.Change, r.ChangedColumns, r.Binding, r.PreviousSnapshotDate, r.SnapshotDate))
			return nil
		})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(out)
	return out
}

func bqChangeTexts(t *testing.T, srv interface {
	Rows(dataset, table, partition string) []map[string]any
}, date time.Time) []string {
	t.Helper()
	var out []string
	for _, r := range srv.Rows("chat", "user_bindings_changes", date.Format("20060102")) {
		b, err := bindingOfRow(r)
		if err != nil {
			t.Fatal(err)
		}
		var cols []string
		for _, c := range r[schemas.ColChangedColumns].([]any) {
			cols = append(cols, c.(string))
		}
		var prev *time.Time
		if d, ok := r[schemas.ColPreviousSnapshotDate].(civil.Date); ok {
			p := d.In(time.UTC)
			prev = &p
		}
		d := r[schemas.ColSnapshotDate].(civil.Date).In(time.UTC)
		out = append(out, changeText(r[schemas.ColChange].(string), cols, b, prev, d))
	}
	sort.Strings(out)
	return out
}

// bindingOfRow reads the binding columns of a row of the fake BigQuery.
func bindingOfRow(r map[string]any) (twilio.Binding, error) {
	var b twilio.Binding
	str := func(col string) *string {
		if v, ok := r[col].(string); ok {
			return &v
		}
		return nil
	}
	ts := func(col string) *time.Time {
		if v, ok := r[col].(time.Time); ok {
			return &v
		}
		return nil
	}
	b.SID, b.AccountSID, b.ServiceSID = str(schemas.ColSID), str(schemas.ColAccountSID), str(schemas.ColServiceSID)
	b.DateCreated, b.DateUpdated = ts(schemas.ColDateCreated), ts(schemas.ColDateUpdated)
	b.Endpoint, b.Identity, b.UserSID = str(schemas.ColEndpoint), str(schemas.ColIdentity), str(schemas.ColUserSID)
	b.CredentialSID, b.BindingType, b.URL = str(schemas.ColCredentialSID), str(schemas.ColBindingType), str(schemas.ColURL)
	items, ok := r[schemas.ColMessageTypes].([]any)
	if !ok {
		return b, fmt.Errorf("message_types holds %T", r[schemas.ColMessageTypes])
	}
	b.MessageTypes = []string{}
	for _, it := range items {
		b.MessageTypes = append(b.MessageTypes, it.(string))
	}
	return b, nil
}

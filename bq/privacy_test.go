package bq_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"sort"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"

	"github.com/bindsync/bindsync/bq"
	"github.com/bindsync/bindsync/bq/bqtest"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/staging/stagingtest"
	"github.com/bindsync/bindsync/twilio"
)

// hashKey is the tests' hash key; knownHash is HMAC-SHA-256 of knownID
// under it, computed outside Go (openssl dgst -sha256 -hmac).
const (
	hashKey   = "k3y-0f-32-bytes-or-more--for-the-tests"
	knownID   = "alice@example.com"
	knownHash = "c82bd9ec7690e0e389d6017620e8c14dd8e10b7362c626da69a53019e82e2991"
	usersName = table + bq.UsersSuffix
)

var day3 = time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)

// hmacHex is the hash as an analyst computes it, independently of the
// exporter's code.
func hmacHex(v string) string {
	m := hmac.New(sha256.New, []byte(hashKey))
	m.Write([]byte(v))
	return hex.EncodeToString(m.Sum(nil))
}

func policyOf(tr schemas.Treatment) schemas.Policy {
	return schemas.Policy{Endpoint: tr, Identity: tr, UsersUser: tr, UsersIdentity: tr}
}

// privacyUsers are the users rows of the tests: one configured by its
// identity (knownID), one by SID, one gone.
func privacyUsers() []schemas.UserRow {
	sid := fmt.Sprintf("US%032x", 1)
	return []schemas.UserRow{
		{ServiceSID: "IS01", User: knownID, UserSID: &sid, Identity: ptr(knownID), Bindings: 2, State: schemas.UserRead},
		{ServiceSID: "IS01", User: sid, UserSID: &sid, Identity: ptr("bob"), Bindings: 0, State: schemas.UserRead},
		{ServiceSID: "IS01", User: "gone-user", State: schemas.UserGone},
	}
}

func ptr[T any](v T) *T { return &v }

// privacyBindings are bindings whose first user has identity knownID.
func privacyBindings(seed int) []twilio.Binding {
	bs := makeBindings("IS01", 60, seed)
	for i := range bs {
		if *bs[i].Identity == "user 0" {
			bs[i].Identity = ptr(knownID)
		}
	}
	bs[1].Identity, bs[1].Endpoint = nil, nil
	return bs
}

// writePrivacySnapshot writes the bindings (two parts) and the users of a
// snapshot under opts, as a run does.
func writePrivacySnapshot(t *testing.T, store staging.Store, date time.Time, bs []twilio.Binding, opts exporter.PartOptions, runID string) exporter.Snapshot {
	t.Helper()
	ctx := context.Background()
	meta := schemas.RowMeta{SnapshotDate: date, SyncedAt: date.Add(2 * time.Hour)}
	snap := exporter.Snapshot{Date: date, Store: store, RunID: runID, Journal: newJournal(), Tables: []exporter.Table{
		{Name: exporter.BindingsTable, Schema: schemas.Binding()}, {Name: exporter.UsersTable, Schema: schemas.Users()},
	}}
	for i, half := range [][]twilio.Binding{bs[:len(bs)/2], bs[len(bs)/2:]} {
		w, err := exporter.NewPartWriter(ctx, store, fmt.Sprintf("snapshots/%s/parts/%s-%05d.parquet", date.Format(time.DateOnly), runID, i), meta, opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Append(half); err != nil {
			t.Fatal(err)
		}
		info, err := w.Close()
		if err != nil {
			t.Fatal(err)
		}
		snap.Tables[0].Parts = append(snap.Tables[0].Parts, info)
	}
	w, err := exporter.NewUsersPartWriter(ctx, store, fmt.Sprintf("snapshots/%s/users-%s.parquet", date.Format(time.DateOnly), runID), meta, opts)
	if err != nil {
		t.Fatal(err)
	}
	users := privacyUsers()
	for i := range users {
		if err := w.Append(&users[i]); err != nil {
			t.Fatal(err)
		}
	}
	info, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	snap.Tables[1].Parts = []exporter.PartInfo{info}
	return snap
}

// privacyPublishers are the publishers of both tables with the schemas of
// policy p, as cmd/bindsync makes them.
func (e *env) privacyPublishers(p schemas.Policy) []*bq.Publisher {
	return []*bq.Publisher{
		e.publisher(func(o *bq.Options) { o.Schema = bq.Schema(p.BindingSchema()) }),
		e.publisher(func(o *bq.Options) {
			o.Table, o.Source, o.Schema = usersName, exporter.UsersTable, bq.Schema(p.UsersSchema())
		}),
	}
}

func (e *env) publishAll(ctx context.Context, pubs []*bq.Publisher, s exporter.Snapshot) {
	e.t.Helper()
	for _, p := range pubs {
		if err := p.Publish(ctx, s); err != nil {
			e.t.Fatalf("publish to %s: %v", p.Describe(), err)
		}
	}
}

// treatValue is what the test expects a value written under tr to be.
func treatValue(tr schemas.Treatment, s *string) *string {
	switch {
	case s == nil || tr == schemas.Keep:
		return s
	case tr == schemas.Drop:
		return nil
	}
	return ptr(hmacHex(*s))
}

// usersRows reads a partition of the users table as "user|identity|state".
func (e *env) usersRows(date time.Time) []string {
	e.t.Helper()
	var out []string
	for _, r := range e.srv.Rows(dataset, usersName, date.Format("20060102")) {
		s := func(col string) string {
			switch v := r[col].(type) {
			case nil:
				return "<null>"
			case string:
				return v
			default:
				e.t.Fatalf("users column %s holds %T", col, v)
			}
			return ""
		}
		out = append(out, s(schemas.ColUser)+"|"+s(schemas.ColIdentity)+"|"+s(schemas.ColState))
	}
	sort.Strings(out)
	return out
}

func wantUsersRows(tr schemas.Treatment) []string {
	var out []string
	for _, u := range privacyUsers() {
		s := func(p *string) string {
			if p == nil {
				return "<null>"
			}
			return *p
		}
		out = append(out, s(treatValue(tr, &u.User))+"|"+s(treatValue(tr, u.Identity))+"|"+u.State)
	}
	sort.Strings(out)
	return out
}

// TestPublishPrivacyPolicy publishes a day under no policy, then a day
// under each treatment of both tables, through uploads and through GCS:
// the rows of the new day are kept, hashed (equal to an HMAC computed
// independently) or null; the existing tables' column descriptions (and
// the mode of a dropped REQUIRED column) are updated in place; the rows of
// the earlier day are not rewritten.
func TestPublishPrivacyPolicy(t *testing.T) {
	t.Parallel()
	for _, gcs := range []bool{false, true} {
		for _, tr := range schemas.Treatments {
			name := fmt.Sprintf("%s/gcs=%v", tr, gcs)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				var store staging.Store = stagingtest.NewDir(t)
				var opts bqtest.Options
				if gcs {
					g := gcsStore{Dir: stagingtest.NewDir(t), bucket: "staging-bucket", prefix: "bindsync"}
					store, opts.GCS = g, g.read
				}
				e := newEnv(t, opts)
				ctx := testContext(t)

				// Day 1, before the policy: the tables are made with the
				// plain descriptions.
				plain := privacyBindings(1)
				e.publishAll(ctx, e.privacyPublishers(schemas.Policy{}), writePrivacySnapshot(t, store, day1, plain, exporter.PartOptions{}, "run1"))
				rowsDay1 := e.srv.Rows(dataset, table, "20261126")
				usersDay1 := e.usersRows(day1)

				// Day 2, under the policy.
				p := policyOf(tr)
				priv, err := exporter.NewPrivacy(p, []byte(hashKey))
				if err != nil {
					t.Fatal(err)
				}
				bs := privacyBindings(2)
				e.publishAll(ctx, e.privacyPublishers(p), writePrivacySnapshot(t, store, day2, bs, exporter.PartOptions{Privacy: priv}, "run2"))

				want := make([]twilio.Binding, len(bs))
				for i, b := range bs {
					b.Endpoint, b.Identity = treatValue(tr, b.Endpoint), treatValue(tr, b.Identity)
					want[i] = b
				}
				e.checkRows(day2, want)
				if got, w := e.usersRows(day2), wantUsersRows(tr); !reflect.DeepEqual(got, w) {
					t.Errorf("users of day 2:\n got %v\nwant %v", got, w)
				}
				if tr == schemas.Hash {
					found := 0
					for _, r := range e.srv.Rows(dataset, table, "20261127") {
						if r[schemas.ColIdentity] == knownHash {
							found++
						}
					}
					if found == 0 || !containsString(e.usersRows(day2), knownHash+"|"+knownHash+"|read") {
						t.Errorf("the known identity is not hashed to %s in both tables (%d bindings)", knownHash, found)
					}
				}

				// The tables describe the policy now, and the day before is
				// as it was.
				for _, c := range []struct {
					name string
					want bigquery.Schema
				}{{table, bq.Schema(p.BindingSchema())}, {usersName, bq.Schema(p.UsersSchema())}} {
					md, err := e.client.Dataset(dataset).Table(c.name).Metadata(ctx)
					if err != nil {
						t.Fatal(err)
					}
					checkSchema(t, md.Schema, c.want)
				}
				if got := e.srv.Rows(dataset, table, "20261126"); !reflect.DeepEqual(got, rowsDay1) {
					t.Error("publishing under the policy rewrote the bindings of the day before")
				}
				if got := e.usersRows(day1); !reflect.DeepEqual(got, usersDay1) || !reflect.DeepEqual(got, wantUsersRows(schemas.Keep)) {
					t.Errorf("users of the day before: %v, want %v", got, usersDay1)
				}
				e.checkRows(day1, plain)
				e.checkJobsOnce()
			})
		}
	}
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestPublishHashSameAcrossDaysAndTables: under a hashing policy, the
// identity hashes to one value in both tables and on two days published
// by two processes, so joins and counts across them work in BigQuery.
func TestPublishHashSameAcrossDaysAndTables(t *testing.T) {
	t.Parallel()
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	p := policyOf(schemas.Hash)
	for i, day := range []time.Time{day2, day3} {
		priv, err := exporter.NewPrivacy(p, []byte(hashKey))
		if err != nil {
			t.Fatal(err)
		}
		e.publishAll(ctx, e.privacyPublishers(p), writePrivacySnapshot(t, stagingtest.NewDir(t), day, privacyBindings(10+i), exporter.PartOptions{Privacy: priv}, fmt.Sprintf("run%d", i)))
	}
	for _, day := range []string{"20261127", "20261128"} {
		n := 0
		for _, r := range e.srv.Rows(dataset, table, day) {
			if r[schemas.ColIdentity] == knownHash {
				n++
			}
		}
		if n == 0 {
			t.Errorf("%s: no binding of the identity hashed to %s", day, knownHash)
		}
		users := e.srv.Rows(dataset, usersName, day)
		if users[0][schemas.ColUser] != knownHash && users[1][schemas.ColUser] != knownHash && users[2][schemas.ColUser] != knownHash {
			t.Errorf("%s: users table does not hold %s as a user: %v", day, knownHash, users)
		}
	}
}

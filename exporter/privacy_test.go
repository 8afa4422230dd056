package exporter

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/staging/stagingtest"
	"github.com/bindsync/bindsync/twilio"
)

// testKey is the hash key of the tests; knownHash is HMAC-SHA-256 of
// "alice@example.com" under it, computed outside Go with
//
//	printf '%s' alice@example.com | openssl dgst -sha256 -hmac 'k3y-0f-32-bytes-or-more--for-the-tests'
//
// so that the format documented in the README is the one written.
const (
	testKey   = "k3y-0f-32-bytes-or-more--for-the-tests"
	knownID   = "alice@example.com"
	knownHash = "c82bd9ec7690e0e389d6017620e8c14dd8e10b7362c626da69a53019e82e2991"
)

// hmacHex computes a hash the way an analyst would, independently of the
// exporter's code.
func hmacHex(key, v string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(v))
	return hex.EncodeToString(m.Sum(nil))
}

func newPrivacy(t testing.TB, p schemas.Policy, key string) *Privacy {
	t.Helper()
	pr, err := NewPrivacy(p, []byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return pr
}

// policyOf treats every covered column of both tables with tr.
func policyOf(tr schemas.Treatment) schemas.Policy {
	return schemas.Policy{Endpoint: tr, Identity: tr, UsersUser: tr, UsersIdentity: tr}
}

func TestHashValueFormat(t *testing.T) {
	if got := HashValue([]byte(testKey), knownID); got != knownHash {
		t.Errorf("HashValue = %s, want %s", got, knownHash)
	}
	if got := hmacHex(testKey, knownID); got != knownHash {
		t.Fatalf("the test's own HMAC = %s, want %s", got, knownHash)
	}
	if got := HashValue([]byte(testKey), ""); got != hmacHex(testKey, "") || len(got) != 64 {
		t.Errorf("hash of the empty string = %q", got)
	}
}

func TestNewPrivacyErrors(t *testing.T) {
	short := "short-s3cr3t-key"
	tests := []struct {
		name string
		p    schemas.Policy
		key  string
		want error
	}{
		{"hash without key", schemas.Policy{Identity: schemas.Hash}, "", ErrNoHashKey},
		{"short key", schemas.Policy{UsersUser: schemas.Hash}, short, ErrShortHashKey},
		{"key one byte short", schemas.Policy{Endpoint: schemas.Hash}, strings.Repeat("k", MinHashKeyBytes-1), ErrShortHashKey},
		{"bad treatment", schemas.Policy{Endpoint: "mask"}, testKey, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewPrivacy(tt.p, []byte(tt.key))
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.key != "" && strings.Contains(err.Error(), tt.key) {
				t.Errorf("the error shows the key: %v", err)
			}
		})
	}
	// Dropping needs no key, and a key of exactly the minimum length is
	// enough.
	if _, err := NewPrivacy(schemas.Policy{Endpoint: schemas.Drop, Identity: schemas.Drop}, nil); err != nil {
		t.Errorf("drop without a key: %v", err)
	}
	if _, err := NewPrivacy(schemas.Policy{Endpoint: schemas.Hash}, bytes.Repeat([]byte{0}, MinHashKeyBytes)); err != nil {
		t.Errorf("key of %d bytes: %v", MinHashKeyBytes, err)
	}
}

// TestPrivacyNeverShowsKey: printing or encoding a Privacy, or options
// holding one, never shows the key.
func TestPrivacyNeverShowsKey(t *testing.T) {
	p := newPrivacy(t, policyOf(schemas.Hash), testKey)
	opts := PartOptions{Privacy: p}
	js, err := json.Marshal(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprint(p), fmt.Sprintf("%+v", p), fmt.Sprintf("%#v", p), fmt.Sprintf("%v", opts), fmt.Sprintf("%+v", opts), fmt.Sprintf("%#v", opts), string(js)} {
		for _, secret := range []string{testKey, hex.EncodeToString([]byte(testKey)), base64.StdEncoding.EncodeToString([]byte(testKey))} {
			if strings.Contains(s, secret) {
				t.Errorf("%q shows the key", s)
			}
		}
	}
	if got := p.String(); got != "privacy policy user_bindings.endpoint=hash user_bindings.identity=hash users.user=hash users.identity=hash" {
		t.Errorf("String() = %q", got)
	}
}

// policyBindings are bindings with every shape the policy must handle: an
// identity shared with the users table, a null identity and endpoint, an
// empty endpoint.
func policyBindings() []twilio.Binding {
	bs := testBindings(0, 20)
	bs[0].Identity = ptr(knownID)
	bs[0].Endpoint = ptr("fcm-token:APA91b-" + knownID)
	bs[3].Endpoint = ptr("")
	bs[5].Identity, bs[5].Endpoint = nil, nil
	return bs
}

// policyUsers are users rows: one addressed by identity (knownID), one by
// SID, one gone.
func policyUsers() []schemas.UserRow {
	sid := "US00000000000000000000000000000001"
	return []schemas.UserRow{
		{ServiceSID: "IS1", User: knownID, UserSID: &sid, Identity: ptr(knownID), Bindings: 1, State: schemas.UserRead},
		{ServiceSID: "IS1", User: sid, UserSID: &sid, Identity: ptr("bob"), Bindings: 0, State: schemas.UserRead},
		{ServiceSID: "IS1", User: "gone-user", Bindings: 0, State: schemas.UserGone},
	}
}

// treat is what the test expects a value to be written as.
func treat(tr schemas.Treatment, s *string) *string {
	switch {
	case s == nil || tr == schemas.Keep:
		return s
	case tr == schemas.Drop:
		return nil
	}
	return ptr(hmacHex(testKey, *s))
}

// stagePolicySnapshot writes bindings (in two parts) and users under
// opts into store, as the snapshot of date.
func stagePolicySnapshot(t *testing.T, store staging.Store, date time.Time, bs []twilio.Binding, users []schemas.UserRow, opts PartOptions) Snapshot {
	t.Helper()
	ctx := context.Background()
	meta := schemas.RowMeta{SnapshotDate: date, SyncedAt: date.Add(time.Hour)}
	s := Snapshot{Date: date, Store: store, RunID: "r", Tables: []Table{{Name: BindingsTable, Schema: opts.Privacy.BindingSchema()}}}
	for i, half := range [][]twilio.Binding{bs[:len(bs)/2], bs[len(bs)/2:]} {
		w, err := NewPartWriter(ctx, store, fmt.Sprintf("%s/part-%d.parquet", date.Format(time.DateOnly), i), meta, opts)
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
		s.Tables[0].Parts = append(s.Tables[0].Parts, info)
	}
	uw, err := NewUsersPartWriter(ctx, store, date.Format(time.DateOnly)+"/users.parquet", meta, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range users {
		if err := uw.Append(&users[i]); err != nil {
			t.Fatal(err)
		}
	}
	info, err := uw.Close()
	if err != nil {
		t.Fatal(err)
	}
	s.Tables = append(s.Tables, Table{Name: UsersTable, Schema: opts.Privacy.UsersSchema(), Parts: []PartInfo{info}})
	return s
}

// readPublished reads the bindings and the users of date from l, with the
// Arrow schema of their first files.
func readPublished(t *testing.T, l LocalWarehouse, date time.Time) (bindings []twilio.Binding, users []schemas.UserRow, bschema, uschema *arrow.Schema) {
	t.Helper()
	_, rows := readSnapshot(t, l, date)
	for _, r := range rows {
		bindings = append(bindings, r.Binding)
	}
	for _, dir := range []string{l.SnapshotDir(date), l.UsersSnapshotDir(date)} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.parquet"))
		if len(files) == 0 {
			t.Fatalf("no files in %s", dir)
		}
		sort.Strings(files)
		for _, name := range files {
			f, err := os.Open(name)
			if err != nil {
				t.Fatal(err)
			}
			st, _ := f.Stat()
			pf, err := openParquetFile(f, st.Size())
			if err != nil {
				t.Fatal(err)
			}
			fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
			if err != nil {
				t.Fatal(err)
			}
			s, err := fr.Schema()
			if err != nil {
				t.Fatal(err)
			}
			pf.Close()
			if dir == l.SnapshotDir(date) {
				bschema = s
				f.Close()
				break
			}
			uschema = s
			err = ReadUsersFile(context.Background(), f, st.Size(), func(u schemas.UserRow) error { users = append(users, u); return nil })
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	return bindings, users, bschema, uschema
}

func canonicalBindings(bs []twilio.Binding) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		js, _ := json.Marshal(b)
		out[i] = string(js)
	}
	sort.Strings(out)
	return out
}

func description(s *arrow.Schema, col string) string {
	f, _ := s.FieldsByName(col)
	if len(f) != 1 {
		return "(no column " + col + ")"
	}
	v, _ := f[0].Metadata.GetValue(schemas.DescriptionKey)
	return v
}

// TestPolicyRowsInLocalWarehouse runs each treatment on both tables
// through parts and the local warehouse and reads the rows back: kept
// values unchanged, hashed ones equal to an HMAC computed independently,
// dropped ones null; the other columns untouched, the descriptions and
// the file's metadata saying what was done.
func TestPolicyRowsInLocalWarehouse(t *testing.T) {
	for _, tr := range schemas.Treatments {
		t.Run(string(tr), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := newPrivacy(t, policyOf(tr), testKey)
			in, users := policyBindings(), policyUsers()
			inCopy := canonicalBindings(in)
			store := stagingtest.NewDir(t)
			l := LocalWarehouse{Path: t.TempDir()}
			s := stagePolicySnapshot(t, store, day1, in, users, PartOptions{Privacy: p, BatchRows: 7})
			if err := CheckPrivacy(ctx, s, p); err != nil {
				t.Fatal(err)
			}
			if err := l.Publish(ctx, s); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(canonicalBindings(in), inCopy) {
				t.Error("Append changed the caller's bindings")
			}

			gotB, gotU, bschema, uschema := readPublished(t, l, day1)
			want := make([]twilio.Binding, len(in))
			for i, b := range in {
				b.Endpoint, b.Identity = treat(tr, b.Endpoint), treat(tr, b.Identity)
				want[i] = b
			}
			if g, w := canonicalBindings(gotB), canonicalBindings(want); !reflect.DeepEqual(g, w) {
				t.Errorf("bindings:\n got %v\nwant %v", g, w)
			}
			wantU := policyUsers()
			for i := range wantU {
				u := &wantU[i]
				if v := treat(tr, &u.User); v != nil {
					u.User = *v
				} else {
					u.User = ""
				}
				u.Identity = treat(tr, u.Identity)
				u.SnapshotDate, u.SyncedAt = day1, day1.Add(time.Hour)
			}
			if !reflect.DeepEqual(gotU, wantU) {
				t.Errorf("users:\n got %+v\nwant %+v", gotU, wantU)
			}
			if tr == schemas.Hash {
				if *gotB[indexOfSID(gotB, in[0].SID)].Identity != knownHash || gotU[0].User != knownHash || *gotU[0].Identity != knownHash {
					t.Errorf("the known identity is not hashed to %s", knownHash)
				}
			}

			// What a reader of the files is told.
			words := map[schemas.Treatment]string{schemas.Hash: "HMAC-SHA-256", schemas.Drop: "always null"}[tr]
			for _, d := range []string{description(bschema, schemas.ColEndpoint), description(bschema, schemas.ColIdentity), description(uschema, schemas.ColUser), description(uschema, schemas.ColIdentity)} {
				if words != "" && !strings.Contains(d, words) || words == "" && (strings.Contains(d, "Hashed") || strings.Contains(d, "Dropped")) {
					t.Errorf("description %q does not say the column is %s", d, tr)
				}
			}
			if d := description(bschema, schemas.ColSID); d != schemas.Description(schemas.ColSID) {
				t.Errorf("description of sid = %q", d)
			}
			tag, _ := bschema.Metadata().GetValue(PrivacyMetadataKey)
			wantTag := map[schemas.Treatment]string{
				schemas.Hash: "user_bindings.endpoint=hash user_bindings.identity=hash key_id=" + KeyID([]byte(testKey)),
				schemas.Drop: "user_bindings.endpoint=drop user_bindings.identity=drop",
			}[tr]
			if tag != wantTag {
				t.Errorf("%s of the bindings = %q, want %q", PrivacyMetadataKey, tag, wantTag)
			}
		})
	}
}

func indexOfSID(bs []twilio.Binding, sid *string) int {
	for i, b := range bs {
		if b.SID != nil && sid != nil && *b.SID == *sid {
			return i
		}
	}
	return -1
}

// TestHashSameAcrossDaysAndTables: one identity hashes to the same value
// in both tables and on two days, whatever else the snapshots hold, so
// joins and counts across them work.
func TestHashSameAcrossDaysAndTables(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := LocalWarehouse{Path: t.TempDir()}
	store := stagingtest.NewDir(t)
	p := schemas.Policy{Endpoint: schemas.Hash, Identity: schemas.Hash, UsersUser: schemas.Hash, UsersIdentity: schemas.Hash}
	for i, day := range []time.Time{day1, day2} {
		// A new Privacy per day, as a new process would make.
		opts := PartOptions{Privacy: newPrivacy(t, p, testKey)}
		bs := testBindings(i*100, 30)
		bs[7].Identity = ptr(knownID)
		if err := l.Publish(ctx, stagePolicySnapshot(t, store, day, bs, policyUsers(), opts)); err != nil {
			t.Fatal(err)
		}
	}
	var seen []string
	for _, day := range []time.Time{day1, day2} {
		bs, users, _, _ := readPublished(t, l, day)
		found := false
		for _, b := range bs {
			found = found || (b.Identity != nil && *b.Identity == knownHash)
		}
		if !found {
			t.Errorf("%s: no binding with the identity hashed to %s", day.Format(time.DateOnly), knownHash)
		}
		seen = append(seen, users[0].User, *users[0].Identity)
	}
	for _, v := range seen {
		if v != knownHash {
			t.Errorf("users table holds %q for the identity, want %s", v, knownHash)
		}
	}
}

// TestKeyAndClearValuesNeverWritten writes and publishes under a policy
// that hashes or drops every covered column and reads every byte under
// staging and the warehouse: neither the key (in any common encoding) nor
// a clear endpoint or identity is there. A control run that keeps the
// columns proves that the search finds such values when they are written.
func TestKeyAndClearValuesNeverWritten(t *testing.T) {
	t.Parallel()
	clear := []string{knownID, "fcm-token:APA91b-" + knownID}
	secrets := []string{testKey, hex.EncodeToString([]byte(testKey)), base64.StdEncoding.EncodeToString([]byte(testKey))}
	scan := func(t *testing.T, p schemas.Policy) map[string]bool {
		ctx := context.Background()
		root := t.TempDir()
		store, err := staging.NewDir(filepath.Join(root, "staging"))
		if err != nil {
			t.Fatal(err)
		}
		l := LocalWarehouse{Path: filepath.Join(root, "warehouse")}
		opts := PartOptions{Privacy: newPrivacy(t, p, testKey), BatchRows: 5}
		s := stagePolicySnapshot(t, store, day1, policyBindings(), policyUsers(), opts)
		if err := l.Publish(ctx, s); err != nil {
			t.Fatal(err)
		}
		// A part rewritten without some rows, as the worker does.
		if _, err := FilterPart(ctx, store, s.Tables[0].Parts[0].Name, "filtered.parquet", func(r *schemas.Row) bool { return true }, opts); err != nil {
			t.Fatal(err)
		}
		found := map[string]bool{}
		files := 0
		err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			files++
			for _, s := range append(append([]string(nil), secrets...), clear...) {
				if bytes.Contains(data, []byte(s)) {
					found[s] = true
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if files < 6 {
			t.Fatalf("only %d files written", files)
		}
		return found
	}
	if found := scan(t, policyOf(schemas.Keep)); !found[knownID] || !found[clear[1]] {
		t.Fatalf("the control run that keeps the columns found %v: the search cannot see values in the files", found)
	}
	for _, p := range []schemas.Policy{policyOf(schemas.Hash), policyOf(schemas.Drop), {Endpoint: schemas.Drop, Identity: schemas.Hash, UsersUser: schemas.Hash, UsersIdentity: schemas.Drop}} {
		if found := scan(t, p); len(found) > 0 {
			t.Errorf("%v: found in the files: %v", p, found)
		}
	}
}

// TestEnablingPolicyKeepsPastPartitions: a policy set from one day on
// changes only the partitions published from then on; the files of the
// days before stay byte for byte as they were.
func TestEnablingPolicyKeepsPastPartitions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := LocalWarehouse{Path: t.TempDir()}
	store := stagingtest.NewDir(t)
	if err := l.Publish(ctx, stagePolicySnapshot(t, store, day1, policyBindings(), policyUsers(), PartOptions{})); err != nil {
		t.Fatal(err)
	}
	before := dirBytes(t, l.SnapshotDir(day1), l.UsersSnapshotDir(day1))
	p := newPrivacy(t, policyOf(schemas.Hash), testKey)
	if err := l.Publish(ctx, stagePolicySnapshot(t, store, day2, policyBindings(), policyUsers(), PartOptions{Privacy: p})); err != nil {
		t.Fatal(err)
	}
	if after := dirBytes(t, l.SnapshotDir(day1), l.UsersSnapshotDir(day1)); !reflect.DeepEqual(after, before) {
		t.Error("publishing under a new policy changed the files of an earlier day")
	}
	old, _, _, _ := readPublished(t, l, day1)
	if !reflect.DeepEqual(canonicalBindings(old), canonicalBindings(policyBindings())) {
		t.Error("the earlier day no longer holds what it was written with")
	}
	now, _, _, _ := readPublished(t, l, day2)
	if i := indexOfSID(now, policyBindings()[0].SID); *now[i].Identity != knownHash {
		t.Errorf("day 2 identity = %q, want the hash", *now[i].Identity)
	}
}

// dirBytes returns the content of every file under dirs, by path.
func dirBytes(t *testing.T, dirs ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := os.ReadFile(path)
			out[path] = string(data)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestFilterPartKeepsStoredPolicy: rewriting a part copies its rows as
// stored, under the policy it was written with, whatever opts says: a hash
// is never hashed again, and the part's metadata carries over, so that
// CheckPrivacy sees what the rows really are.
func TestFilterPartKeepsStoredPolicy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := newMemStore()
	hashed := newPrivacy(t, schemas.Policy{Endpoint: schemas.Drop, Identity: schemas.Hash}, testKey)
	bs := policyBindings()
	writePart(t, store, "src.parquet", bs, PartOptions{Privacy: hashed})
	src := readAll(t, store, "src.parquet")
	for _, opts := range []PartOptions{{Privacy: hashed}, {}, {Privacy: newPrivacy(t, policyOf(schemas.Hash), "another-key-of-at-least-32-bytes!!")}} {
		info, err := FilterPart(ctx, store, "src.parquet", "dst.parquet", func(r *schemas.Row) bool { return r.SID == nil || *r.SID != *bs[2].SID }, opts)
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, store, info.Name)
		want := append(append([]schemas.Row(nil), src[:2]...), src[3:]...)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%v: filtered rows differ from the stored ones", opts.Privacy)
		}
		tag, err := partTag(ctx, store, info.Name)
		if err != nil {
			t.Fatal(err)
		}
		if want := hashed.tag(false); tag != want {
			t.Errorf("%v: filtered part's policy = %q, want %q", opts.Privacy, tag, want)
		}
		if err := store.Delete(ctx, info.Name); err != nil {
			t.Fatal(err)
		}
	}
	if *src[0].Identity != knownHash || src[0].Endpoint != nil {
		t.Errorf("source row 0 = %+v", src[0].Binding)
	}
}

// TestCheckPrivacy: a snapshot whose parts were written under another
// treatment or another key than configured is refused, naming the part;
// parts written before policies existed count as keeping every column.
func TestCheckPrivacy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newPrivacy(t, schemas.Policy{Identity: schemas.Hash, UsersIdentity: schemas.Hash}, testKey)
	store := newMemStore()
	s := stagePolicySnapshot(t, store, day1, policyBindings(), policyUsers(), PartOptions{Privacy: p})
	if err := CheckPrivacy(ctx, s, p); err != nil {
		t.Errorf("same policy: %v", err)
	}
	// The users part is written at publishing under the configured
	// policy; a changed users policy leaves the bindings parts valid.
	if err := CheckPrivacy(ctx, s, newPrivacy(t, schemas.Policy{Identity: schemas.Hash, UsersIdentity: schemas.Hash, UsersUser: schemas.Drop}, testKey)); !errors.Is(err, ErrPrivacyMismatch) || !strings.Contains(err.Error(), "users.parquet") {
		t.Errorf("users policy changed: err = %v", err)
	}
	otherKey := "0ther-key-0f-32-bytes-or-more-for-tests"
	for name, q := range map[string]*Privacy{
		"other treatment": newPrivacy(t, schemas.Policy{Identity: schemas.Drop, UsersIdentity: schemas.Hash}, testKey),
		"other key":       newPrivacy(t, schemas.Policy{Identity: schemas.Hash, UsersIdentity: schemas.Hash}, otherKey),
		"no policy":       nil,
	} {
		err := CheckPrivacy(ctx, s, q)
		if !errors.Is(err, ErrPrivacyMismatch) || !strings.Contains(err.Error(), "part-0.parquet") || !strings.Contains(err.Error(), "--force") {
			t.Errorf("%s: err = %v, want ErrPrivacyMismatch naming the part and what to do", name, err)
		}
		if err != nil && (strings.Contains(err.Error(), testKey) || strings.Contains(err.Error(), otherKey)) {
			t.Errorf("%s: the error shows a key: %v", name, err)
		}
	}
	// Parts without a policy (written before there were policies) pass a
	// configuration that keeps every column, whichever key it names.
	old := stagePolicySnapshot(t, newMemStore(), day1, policyBindings(), policyUsers(), PartOptions{})
	for _, q := range []*Privacy{nil, newPrivacy(t, schemas.Policy{}, testKey)} {
		if err := CheckPrivacy(ctx, old, q); err != nil {
			t.Errorf("parts without a policy, config %v: %v", q, err)
		}
	}
}

// TestBindingSchemaOfTag reads back every tag this package writes and
// refuses others.
func TestBindingSchemaOfTag(t *testing.T) {
	for _, p := range []schemas.Policy{{}, {Endpoint: schemas.Hash}, {Identity: schemas.Drop}, {Endpoint: schemas.Drop, Identity: schemas.Hash}, policyOf(schemas.Hash)} {
		pr := newPrivacy(t, p, testKey)
		got, err := bindingSchemaOfTag(pr.tag(false))
		if err != nil {
			t.Fatalf("%v: %v", p, err)
		}
		if !got.Equal(pr.BindingSchema()) || !reflect.DeepEqual(got.Metadata(), pr.BindingSchema().Metadata()) {
			t.Errorf("%v: schema of its tag differs", p)
		}
	}
	for _, bad := range []string{
		"user_bindings.endpoint=encrypt user_bindings.identity=keep",
		"user_bindings.endpoint=hash user_bindings.identity=keep",
		"user_bindings.endpoint=hash user_bindings.identity=keep key_id=XYZ",
		"user_bindings.endpoint=drop user_bindings.identity=keep key_id=0123456789abcdef",
		"users.user=drop",
	} {
		if _, err := bindingSchemaOfTag(bad); err == nil {
			t.Errorf("tag %q accepted", bad)
		}
	}
}

// openParquetFile opens a Parquet file with the low-level reader.
func openParquetFile(r io.ReaderAt, size int64) (*file.Reader, error) {
	return file.NewParquetReader(io.NewSectionReader(r, 0, size))
}

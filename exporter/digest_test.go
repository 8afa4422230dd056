package exporter

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio"
)

var (
	digestDay  = time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	digestPrev = time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
)

func TestRecordRoundTrip(t *testing.T) {
	for i := range 40 {
		r := schemas.Row{Binding: testBinding(i), SyncedAt: time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)}
		got, err := decodeRecord(appendRecord(nil, &r))
		if err != nil {
			t.Fatalf("binding %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("binding %d:\n got %+v\nwant %+v", i, got, r)
		}
	}
	// Every cut of a record, and garbage after it, is an error.
	r := schemas.Row{Binding: testBinding(3), SyncedAt: time.Unix(1, 0)}
	rec := appendRecord(nil, &r)
	for n := range len(rec) {
		if _, err := decodeRecord(rec[:n]); !errors.Is(err, errBadRecord) {
			t.Errorf("record cut at %d of %d bytes: err = %v", n, len(rec), err)
		}
	}
	if _, err := decodeRecord(append(rec, 0)); !errors.Is(err, errBadRecord) {
		t.Errorf("record with a trailing byte: err = %v", err)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	for i := range 5 {
		r := schemas.Row{Binding: testBinding(i), SyncedAt: time.Unix(int64(i), 0)}
		f.Add(appendRecord(nil, &r))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeRecord(data)
		if err != nil {
			return
		}
		// What decodes encodes to a record that decodes the same (the
		// bytes may differ: a number may have been written longer than
		// needed), and that encoding is stable.
		again := appendRecord(nil, &r)
		r2, err := decodeRecord(again)
		if err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("decode, encode, decode changed %+v into %+v (%v)", r, r2, err)
		}
		if third := appendRecord(nil, &r2); !bytes.Equal(third, again) {
			t.Errorf("encoding is not stable: %x then %x", again, third)
		}
	})
}

func TestRecordOrder(t *testing.T) {
	rec := func(svc, sid *string, endpoint string) []byte {
		return appendRecord(nil, &schemas.Row{Binding: twilio.Binding{ServiceSID: svc, SID: sid, Endpoint: &endpoint}})
	}
	// Nulls first, then by service, then by sid (not by the length that
	// prefixes them), then by the rest of the record.
	in := [][]byte{
		rec(ptr("IS2"), ptr("BS1"), "a"),
		rec(ptr("IS1"), ptr("BS10"), "a"),
		rec(ptr("IS1"), ptr("BS9"), "a"),
		rec(ptr("IS1"), nil, "a"),
		rec(nil, ptr("BS1"), "a"),
		rec(ptr("IS1"), ptr("BS10"), "0"),
		rec(ptr("IS1"), ptr("BS2"), "a"),
	}
	got := slices.Clone(in)
	slices.SortFunc(got, compareRecords)
	want := [][]byte{in[4], in[3], in[5], in[1], in[6], in[2], in[0]}
	if !slices.EqualFunc(got, want, bytes.Equal) {
		t.Errorf("order:\n got %q\nwant %q", got, want)
	}
}

// rowsOf returns rows for bindings, read at synced.
func rowsOf(bs []twilio.Binding, synced time.Time) []schemas.Row {
	out := make([]schemas.Row, len(bs))
	for i, b := range bs {
		out[i] = schemas.Row{Binding: b, SyncedAt: synced}
	}
	return out
}

func sliceSource(rows []schemas.Row) RowSource {
	return func(ctx context.Context, fn func(*schemas.Row) error) error {
		for i := range rows {
			if err := fn(&rows[i]); err != nil {
				return err
			}
		}
		return nil
	}
}

func sortedRows(rows []schemas.Row, date time.Time) []schemas.Row {
	out := slices.Clone(rows)
	for i := range out {
		out[i].SnapshotDate = date
	}
	slices.SortFunc(out, func(a, b schemas.Row) int {
		return compareRecords(appendRecord(nil, &a), appendRecord(nil, &b))
	})
	return out
}

func readDigest(t *testing.T, ref DigestRef) []schemas.Row {
	t.Helper()
	var got []schemas.Row
	if err := ReadDigest(context.Background(), ref, func(r schemas.Row) error {
		got = append(got, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestWriteDigestSortsOnDisk(t *testing.T) {
	// Shuffled rows with repeated keys, sorted in memory, in a few runs,
	// and in more runs than one merge reads (two passes).
	var bs []twilio.Binding
	for i := range 400 {
		b := testBinding((i * 7919) % 400)
		if i%50 == 0 {
			b.Endpoint = ptr(fmt.Sprintf("twin-%d", i)) // same key, other values
		}
		bs = append(bs, b)
	}
	rows := rowsOf(bs, time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC))
	want := sortedRows(rows, digestDay)
	for _, sortBytes := range []int64{0, 20_000, 1} {
		t.Run(fmt.Sprintf("sort_bytes=%d", sortBytes), func(t *testing.T) {
			tmp := t.TempDir()
			store := newMemStore()
			info, err := WriteDigest(context.Background(), store, "d/x.digest", digestDay, sliceSource(rows), DigestOptions{TempDir: tmp, SortBytes: sortBytes})
			if err != nil {
				t.Fatal(err)
			}
			if info.Rows != int64(len(rows)) || info.Bytes != int64(len(store.objects["d/x.digest"])) {
				t.Errorf("info = %+v for %d rows and %d bytes", info, len(rows), len(store.objects["d/x.digest"]))
			}
			got := readDigest(t, DigestRef{Store: store, Name: info.Name, Date: digestDay, Info: info})
			if !reflect.DeepEqual(got, want) {
				t.Errorf("digest rows differ from the sorted input (%d rows, want %d)", len(got), len(want))
			}
			if left, _ := os.ReadDir(tmp); len(left) != 0 {
				t.Errorf("the sort left %d entries in its temporary directory", len(left))
			}
		})
	}
}

func TestWriteDigestFromParts(t *testing.T) {
	dir, err := staging.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p1 := writePart(t, dir, "p/1.parquet", testBindings(50, 60), PartOptions{})
	p2 := writePart(t, dir, "p/2.parquet", testBindings(0, 50), PartOptions{})
	info, err := WriteDigest(context.Background(), dir, "d.digest", digestDay, PartsSource(dir, []PartInfo{p1, p2}), DigestOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	want := sortedRows(rowsOf(testBindings(0, 110), testMeta.SyncedAt), digestDay)
	if got := readDigest(t, DigestRef{Store: dir, Name: info.Name, Date: digestDay, Info: info}); !reflect.DeepEqual(got, want) {
		t.Errorf("digest of the parts differs from their rows")
	}
	// The same rows from files give the same bytes: a digest rebuilt from
	// a warehouse equals the one written from the parts.
	files := t.TempDir()
	for i, p := range []PartInfo{p1, p2} {
		data, err := dir.ReadAll(context.Background(), p.Name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(fmt.Sprintf("%s/part-%05d.parquet", files, i), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	again, err := WriteDigest(context.Background(), dir, "again.digest", digestDay, FilesSource(files), DigestOptions{TempDir: t.TempDir(), SortBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if again.CRC32C != info.CRC32C || again.Bytes != info.Bytes {
		t.Errorf("digest from files %+v differs from the digest from parts %+v", again, info)
	}
	if _, err := WriteDigest(context.Background(), dir, "none.digest", digestDay, FilesSource(files+"/missing"), DigestOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("digest of a missing directory: err = %v", err)
	}
}

func TestDigestDamage(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	rows := rowsOf(testBindings(0, 300), testMeta.SyncedAt)
	info, err := WriteDigest(ctx, store, "d.digest", digestDay, sliceSource(rows), DigestOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	good := slices.Clone(store.objects["d.digest"])
	read := func(data []byte, ref DigestRef) error {
		store.objects["d.digest"] = data
		ref.Store, ref.Name = store, "d.digest"
		return ReadDigest(ctx, ref, func(schemas.Row) error { return nil })
	}
	cases := []struct {
		name string
		data []byte
		ref  DigestRef
	}{
		{"another snapshot's", good, DigestRef{Date: digestPrev}},
		{"not a digest", append([]byte("PAR1"), good[4:]...), DigestRef{Date: digestDay}},
		{"cut short", good[:len(good)/2], DigestRef{Date: digestDay}},
		{"cut before its end mark", good[:len(good)-1], DigestRef{Date: digestDay}},
		{"a byte flipped", flip(good, len(good)/2), DigestRef{Date: digestDay}},
		{"other than recorded", good, DigestRef{Date: digestDay, Info: DigestInfo{Bytes: info.Bytes, CRC32C: info.CRC32C + 1}}},
		{"longer than recorded", append(slices.Clone(good), 0), DigestRef{Date: digestDay, Info: info}},
	}
	for _, c := range cases {
		if err := read(c.data, c.ref); !errors.Is(err, ErrDigestDamaged) {
			t.Errorf("%s: err = %v, want ErrDigestDamaged", c.name, err)
		}
	}
	if err := read(good, DigestRef{Date: digestDay, Info: info}); err != nil {
		t.Errorf("intact digest: %v", err)
	}
	delete(store.objects, "d.digest")
	if err := ReadDigest(ctx, DigestRef{Store: store, Name: "d.digest", Date: digestDay}, func(schemas.Row) error { return nil }); !errors.Is(err, staging.ErrNotExist) {
		t.Errorf("missing digest: err = %v", err)
	}
}

func flip(b []byte, i int) []byte {
	out := slices.Clone(b)
	out[i] ^= 0x40
	return out
}

// failingReads is a store whose objects fail to read after the first
// bytes, as a network read might.
type failingReads struct{ *memStore }

type failingObject struct{ staging.Object }

// ReadAt serves the first 100 bytes, then fails.
func (o failingObject) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) <= 100 {
		return o.Object.ReadAt(p, off)
	}
	n := 0
	if off < 100 {
		n, _ = o.Object.ReadAt(p[:100-off], off)
	}
	return n, errors.New("connection reset")
}

func (f failingReads) Open(ctx context.Context, name string) (staging.Object, error) {
	obj, err := f.memStore.Open(ctx, name)
	return failingObject{obj}, err
}

func TestDigestReadFailureIsNotDamage(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	rows := rowsOf(testBindings(0, 3000), testMeta.SyncedAt)
	if _, err := WriteDigest(ctx, store, "d.digest", digestDay, sliceSource(rows), DigestOptions{}); err != nil {
		t.Fatal(err)
	}
	err := ReadDigest(ctx, DigestRef{Store: failingReads{store}, Name: "d.digest", Date: digestDay}, func(schemas.Row) error { return nil })
	if err == nil || errors.Is(err, ErrDigestDamaged) || !strings.Contains(err.Error(), "connection reset") {
		t.Errorf("err = %v, want the read failure, not damage", err)
	}
}

// change is a change row reduced to what a test compares.
type change struct {
	kind, sid, endpoint string
	cols                []string
	prev                bool
	synced              time.Time
}

func readChanges(t *testing.T, store staging.Store, name string) []schemas.ChangeRow {
	t.Helper()
	obj, err := store.Open(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	var out []schemas.ChangeRow
	if err := ReadChangesFile(context.Background(), obj, obj.Size(), func(c schemas.ChangeRow) error {
		out = append(out, c)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWriteChanges(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	oldSync := time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC)
	newSync := time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)
	// Bindings with a key: testBinding(i) has none when i%5 == 1.
	var old []twilio.Binding
	for i := range 20 {
		if i%5 != 1 {
			old = append(old, testBinding(i))
		}
	}
	// A twin: a key held twice by the old snapshot, once by the new one.
	twin := testBinding(7)
	twin.Endpoint = ptr("twin endpoint, longer than the original's")
	old = append(old, twin)

	cur := slices.Clone(old[:len(old)-1])
	cur = slices.DeleteFunc(cur, func(b twilio.Binding) bool { return *b.SID == *testBinding(10).SID || *b.SID == *testBinding(12).SID })
	updated := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	cur[0].Endpoint, cur[0].DateUpdated = ptr("new-token"), &updated // changed
	cur[1].MessageTypes = nil                                        // testBinding(2): [] -> null is a change
	cur = append(cur, testBinding(100), testBinding(102))            // added

	write := func(name string, date time.Time, bs []twilio.Binding, synced time.Time) DigestRef {
		info, err := WriteDigest(ctx, store, name, date, sliceSource(rowsOf(bs, synced)), DigestOptions{TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		return DigestRef{Store: store, Name: name, Date: date, Info: info}
	}
	prevRef := write("prev.digest", digestPrev, old, oldSync)
	curRef := write("cur.digest", digestDay, cur, newSync)

	info, err := WriteChanges(ctx, ChangesOptions{Previous: &prevRef, Current: curRef, Store: store, Name: "changes.parquet"})
	if err != nil {
		t.Fatal(err)
	}
	rows := readChanges(t, store, "changes.parquet")
	var got []change
	for _, r := range rows {
		if !r.SnapshotDate.Equal(digestDay) || r.PreviousSnapshotDate == nil || !r.PreviousSnapshotDate.Equal(digestPrev) {
			t.Errorf("row %s %s: snapshot %v previous %v", r.Change, *r.Binding.SID, r.SnapshotDate, r.PreviousSnapshotDate)
		}
		got = append(got, change{kind: r.Change, sid: deref(r.Binding.SID), endpoint: deref(r.Binding.Endpoint), cols: r.ChangedColumns, prev: true, synced: r.SyncedAt})
	}
	sid := func(i int) string { return deref(testBinding(i).SID) }
	want := []change{
		{kind: schemas.ChangeChanged, sid: sid(0), endpoint: "new-token", cols: []string{schemas.ColDateUpdated, schemas.ColEndpoint}, synced: newSync},
		{kind: schemas.ChangeChanged, sid: sid(2), endpoint: deref(testBinding(2).Endpoint), cols: []string{schemas.ColMessageTypes}, synced: newSync},
		{kind: schemas.ChangeRemoved, sid: sid(10), endpoint: deref(testBinding(10).Endpoint), cols: []string{}, synced: oldSync},
		{kind: schemas.ChangeRemoved, sid: sid(12), endpoint: deref(testBinding(12).Endpoint), cols: []string{}, synced: oldSync},
		{kind: schemas.ChangeAdded, sid: sid(100), endpoint: deref(testBinding(100).Endpoint), cols: []string{}, synced: newSync},
		{kind: schemas.ChangeAdded, sid: sid(102), endpoint: deref(testBinding(102).Endpoint), cols: []string{}, synced: newSync},
		// The first occurrence of a repeated key (in record order: the
		// original, whose endpoint is shorter) is matched, unchanged; the
		// twin is left over and removed.
		{kind: schemas.ChangeRemoved, sid: sid(7), endpoint: *twin.Endpoint, cols: []string{}, synced: oldSync},
	}
	for i := range want {
		want[i].prev = true
	}
	key := func(c change) string { return c.kind + c.sid + c.endpoint }
	slices.SortFunc(got, func(a, b change) int { return cmp.Compare(key(a), key(b)) })
	slices.SortFunc(want, func(a, b change) int { return cmp.Compare(key(a), key(b)) })
	if !reflect.DeepEqual(got, want) {
		t.Errorf("changes:\n got %+v\nwant %+v", got, want)
	}
	if info.Part.Rows != int64(len(want)) || info.Counts[schemas.ChangeChanged] != 2 || info.Counts[schemas.ChangeRemoved] != 3 || info.Counts[schemas.ChangeAdded] != 2 {
		t.Errorf("info = %+v", info)
	}
	// Rows come in digest order: by service, then sid.
	for i := 1; i < len(rows); i++ {
		a := appendRecord(nil, &schemas.Row{Binding: rows[i-1].Binding})
		b := appendRecord(nil, &schemas.Row{Binding: rows[i].Binding})
		if compareKeys(a, b) > 0 {
			t.Errorf("row %d comes before row %d in key order", i, i-1)
		}
	}
	// The removed row carries every old value.
	for _, r := range rows {
		if r.Change == schemas.ChangeRemoved && *r.Binding.SID == sid(10) && !reflect.DeepEqual(r.Binding, testBinding(10)) {
			t.Errorf("removed row holds %+v, want the old values %+v", r.Binding, testBinding(10))
		}
	}

	// Without a previous digest every binding is initial.
	info, err = WriteChanges(ctx, ChangesOptions{Current: curRef, Store: store, Name: "initial.parquet"})
	if err != nil {
		t.Fatal(err)
	}
	initial := readChanges(t, store, "initial.parquet")
	if len(initial) != len(cur) || info.Counts[schemas.ChangeInitial] != int64(len(cur)) {
		t.Fatalf("%d initial rows, want %d", len(initial), len(cur))
	}
	for _, r := range initial {
		if r.Change != schemas.ChangeInitial || r.PreviousSnapshotDate != nil || len(r.ChangedColumns) != 0 {
			t.Errorf("initial row %+v", r)
		}
	}

	// Equal snapshots read at other times have no changes.
	sameRef := write("same.digest", digestDay, old, newSync)
	info, err = WriteChanges(ctx, ChangesOptions{Previous: &prevRef, Current: sameRef, Store: store, Name: "none.parquet"})
	if err != nil {
		t.Fatal(err)
	}
	if info.Part.Rows != 0 || len(readChanges(t, store, "none.parquet")) != 0 {
		t.Errorf("equal snapshots gave %d changes", info.Part.Rows)
	}

	// A damaged digest writes nothing.
	store.objects["prev.digest"] = flip(store.objects["prev.digest"], 40)
	prevRef.Info = DigestInfo{}
	if _, err := WriteChanges(ctx, ChangesOptions{Previous: &prevRef, Current: curRef, Store: store, Name: "bad.parquet"}); !errors.Is(err, ErrDigestDamaged) {
		t.Errorf("changes from a damaged digest: err = %v", err)
	}
	if _, ok := store.objects["bad.parquet"]; ok {
		t.Error("a part of changes was committed from a damaged digest")
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// The shortcut of compareKeys for keys of equal lengths orders records
// exactly as decoding their keys does, whatever the keys: null, empty,
// of other lengths, longer than a one-byte length prefix.
func TestCompareKeysShortcutAgreesWithDecoding(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	key := func() *string {
		switch rng.IntN(8) {
		case 0:
			return nil
		case 1:
			s := ""
			return &s
		case 2:
			s := strings.Repeat("x", 120+rng.IntN(20)) // around the one-byte prefix's limit
			return &s
		}
		alphabet := "0123456789abcdef"
		n := 34
		if rng.IntN(4) == 0 {
			n = 30 + rng.IntN(8)
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rng.IntN(2)] // few letters, so that prefixes are often equal
		}
		s := string(b)
		return &s
	}
	var recs [][]byte
	for range 400 {
		var r schemas.Row
		r.ServiceSID, r.SID = key(), key()
		recs = append(recs, appendRecord(nil, &r))
	}
	sign := func(c int) int { return min(max(c, -1), 1) }
	for _, a := range recs {
		for _, b := range recs {
			if got, want := sign(compareKeys(a, b)), sign(compareKeysDecoded(a, b)); got != want {
				ra, _ := decodeRecord(a)
				rb, _ := decodeRecord(b)
				t.Fatalf("compareKeys(%v/%v, %v/%v) = %d, decoding the keys gives %d", str(ra.ServiceSID), str(ra.SID), str(rb.ServiceSID), str(rb.SID), got, want)
			}
		}
	}
}

func str(s *string) string {
	if s == nil {
		return "<null>"
	}
	return *s
}

package exporter

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/staging/stagingtest"
	"github.com/bindsync/bindsync/twilio"
	"github.com/klauspost/compress/s2"
)

// runsWorld returns bindings with every shape testBinding makes, keys that
// repeat with other values, a long endpoint and rows in no order.
func runsWorld(n int) []twilio.Binding {
	var bs []twilio.Binding
	for i := range n {
		b := testBinding((i * 7919) % n)
		switch {
		case i%41 == 0:
			b.Endpoint = ptr(fmt.Sprintf("twin-%d", i)) // same key as another row, other values
		case i%97 == 0:
			b.Endpoint = ptr(strings.Repeat("e", 300_000)) // a record larger than a quarter block
		}
		bs = append(bs, b)
	}
	return bs
}

// writeParts writes bs as parts of 150 rows each, written with opts.
func writeParts(t *testing.T, store staging.Store, bs []twilio.Binding, opts PartOptions) []PartInfo {
	t.Helper()
	var parts []PartInfo
	for i := 0; len(bs) > 0; i++ {
		n := min(150, len(bs))
		parts = append(parts, writePart(t, store, fmt.Sprintf("snap/parts/p-%03d.parquet", i), bs[:n], opts))
		bs = bs[n:]
	}
	return parts
}

// digestBytes returns the digest of parts as WriteDigest writes it from the
// parts' rows, the reference that runs must reproduce.
func digestBytes(t *testing.T, store staging.Store, parts []PartInfo) []byte {
	t.Helper()
	info, err := WriteDigest(context.Background(), store, "ref.digest", digestDay, PartsSource(store, parts), DigestOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	data, err := store.ReadAll(context.Background(), info.Name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func partsDigest(t *testing.T, store staging.Store, parts []PartInfo, opts DigestOptions) ([]byte, DigestInfo, DigestBuild) {
	t.Helper()
	if opts.TempDir == "" {
		opts.TempDir = t.TempDir()
	}
	info, build, err := WritePartsDigest(context.Background(), store, "runs.digest", digestDay, parts, opts)
	if err != nil {
		t.Fatal(err)
	}
	data, err := store.ReadAll(context.Background(), info.Name)
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(opts.TempDir); len(left) != 0 {
		t.Errorf("the digest left %d entries in its temporary directory", len(left))
	}
	return data, info, build
}

func TestPartsDigestFromRunsEqualsReadBack(t *testing.T) {
	privacy, err := NewPrivacy(schemas.Policy{Endpoint: schemas.Hash, Identity: schemas.Drop}, bytes.Repeat([]byte{7}, MinHashKeyBytes))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		store func(t *testing.T) staging.Store
		part  PartOptions
		sort  DigestOptions
	}{
		{"one run a part", func(t *testing.T) staging.Store { return stagingtest.NewDir(t) }, PartOptions{}, DigestOptions{}},
		{"several runs a part", func(t *testing.T) staging.Store { return stagingtest.NewDir(t) }, PartOptions{RunBytes: 8_000}, DigestOptions{}},
		// Far more runs than one merge reads: merged in two passes.
		{"two merge passes", func(t *testing.T) staging.Store { return stagingtest.NewDir(t) }, PartOptions{RunBytes: 1}, DigestOptions{}},
		// A store other than a local directory: runs are copied first.
		{"remote store", func(t *testing.T) staging.Store { return newMemStore() }, PartOptions{RunBytes: 8_000}, DigestOptions{}},
		{"remote store, two merge passes", func(t *testing.T) staging.Store { return newMemStore() }, PartOptions{RunBytes: 1}, DigestOptions{}},
		{"privacy policy", func(t *testing.T) staging.Store { return stagingtest.NewDir(t) }, PartOptions{RunBytes: 8_000, Privacy: privacy}, DigestOptions{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			store := tt.store(t)
			parts := writeParts(t, store, runsWorld(600), tt.part)
			want := digestBytes(t, store, parts)
			got, info, build := partsDigest(t, store, parts, tt.sort)
			if !bytes.Equal(got, want) {
				t.Errorf("digest merged from runs (%d bytes) differs from the digest of the parts read back (%d bytes)", len(got), len(want))
			}
			if info.Rows != 600 {
				t.Errorf("digest rows = %d, want 600", info.Rows)
			}
			if build.FromRuns != len(parts) || len(build.ReadBack) != 0 || build.RunsFailed != nil {
				t.Errorf("build = %+v, want all %d parts from their runs", build, len(parts))
			}
		})
	}
}

func TestFilterPartWritesRuns(t *testing.T) {
	store := stagingtest.NewDir(t)
	src := writePart(t, store, "snap/parts/src.parquet", runsWorld(300), PartOptions{})
	keep := func(r *schemas.Row) bool { return r.Endpoint == nil || !strings.HasPrefix(*r.Endpoint, "endpoint-1") }
	dst, err := FilterPart(context.Background(), store, src.Name, "snap/parts/dst.parquet", keep, PartOptions{RunBytes: 8_000})
	if err != nil {
		t.Fatal(err)
	}
	if dst.Rows == 0 || dst.Rows == src.Rows {
		t.Fatalf("the filter kept %d of %d rows: the test needs some of each", dst.Rows, src.Rows)
	}
	parts := []PartInfo{dst}
	got, _, build := partsDigest(t, store, parts, DigestOptions{})
	if want := digestBytes(t, store, parts); !bytes.Equal(got, want) {
		t.Error("digest merged from the filtered part's runs differs from the part read back")
	}
	if build.FromRuns != 1 {
		t.Errorf("build = %+v, want the filtered part from its runs", build)
	}
}

// TestPartsDigestWithoutUsableRuns damages the runs of one part in every
// way a footer shows, and checks that this part alone is read back, with
// the same digest.
func TestPartsDigestWithoutUsableRuns(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name   string
		damage func(t *testing.T, store staging.Store, parts []PartInfo)
		why    string
	}{
		{"missing", func(t *testing.T, store staging.Store, parts []PartInfo) {
			if err := store.Delete(ctx, RunsName(parts[1].Name)); err != nil {
				t.Fatal(err)
			}
		}, "missing"},
		{"another part's", func(t *testing.T, store staging.Store, parts []PartInfo) {
			copyObj(t, store, RunsName(parts[0].Name), RunsName(parts[1].Name))
		}, "they are the runs of"},
		{"of an earlier version of the part", func(t *testing.T, store staging.Store, parts []PartInfo) {
			// The part is written again with other rows under its name;
			// its old runs stay.
			old := readObj(t, store, RunsName(parts[1].Name))
			parts[1] = writePart(t, store, parts[1].Name, testBindings(5000, 150), PartOptions{RunBytes: 8_000})
			putObj(t, store, RunsName(parts[1].Name), old)
		}, "they are the runs of"},
		{"truncated", func(t *testing.T, store staging.Store, parts []PartInfo) {
			data := readObj(t, store, RunsName(parts[1].Name))
			putObj(t, store, RunsName(parts[1].Name), data[:len(data)-3])
		}, "not runs"},
		{"too short", func(t *testing.T, store staging.Store, parts []PartInfo) {
			putObj(t, store, RunsName(parts[1].Name), []byte("bsdgruns"))
		}, "too short"},
		{"footer damaged", func(t *testing.T, store staging.Store, parts []PartInfo) {
			data := readObj(t, store, RunsName(parts[1].Name))
			putObj(t, store, RunsName(parts[1].Name), flip(data, len(data)-runsTrailer-2))
		}, "checksum"},
		{"huge footer length", func(t *testing.T, store staging.Store, parts []PartInfo) {
			data := readObj(t, store, RunsName(parts[1].Name))
			data[len(data)-runsTrailer+7] = 0x7f
			putObj(t, store, RunsName(parts[1].Name), data)
		}, "a footer of"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			store := stagingtest.NewDir(t)
			parts := writeParts(t, store, runsWorld(450), PartOptions{RunBytes: 8_000})
			tt.damage(t, store, parts)
			want := digestBytes(t, store, parts)
			got, _, build := partsDigest(t, store, parts, DigestOptions{})
			if !bytes.Equal(got, want) {
				t.Error("digest differs from the digest of the parts read back")
			}
			if build.FromRuns != len(parts)-1 || len(build.ReadBack) != 1 || !strings.Contains(build.ReadBack[0], tt.why) ||
				!strings.Contains(build.ReadBack[0], parts[1].Name) {
				t.Errorf("build = %+v, want every part but %s from its runs, read back for %q", build, parts[1].Name, tt.why)
			}
		})
	}
}

// TestPartsDigestRunsDamagedInside damages a run's records, which only the
// merge finds: the digest starts over from the parts.
func TestPartsDigestRunsDamagedInside(t *testing.T) {
	store := stagingtest.NewDir(t)
	parts := writeParts(t, store, runsWorld(450), PartOptions{RunBytes: 8_000})
	want := digestBytes(t, store, parts)
	data := readObj(t, store, RunsName(parts[2].Name))
	putObj(t, store, RunsName(parts[2].Name), flip(data, 40))
	got, _, build := partsDigest(t, store, parts, DigestOptions{})
	if !bytes.Equal(got, want) {
		t.Error("digest differs from the digest of the parts read back")
	}
	if build.RunsFailed == nil || !errors.Is(build.RunsFailed, errRunsUnusable) || !strings.Contains(build.RunsFailed.Error(), parts[2].Name) {
		t.Errorf("RunsFailed = %v, want the damaged run of %s named", build.RunsFailed, parts[2].Name)
	}
}

// TestPartsDigestRunShortOfItsCount gives a part runs whose footer is
// well formed and adds up to the part, but whose run holds a record fewer
// than the footer announces: only the merge finds it, and the digest
// starts over from the parts.
func TestPartsDigestRunShortOfItsCount(t *testing.T) {
	ctx := context.Background()
	store := stagingtest.NewDir(t)
	parts := writeParts(t, store, runsWorld(450), PartOptions{})
	want := digestBytes(t, store, parts)
	r := newPartRuns(ctx, store, parts[1].Name, 0)
	for _, row := range readAll(t, store, parts[1].Name)[1:] {
		if err := r.add(&row.Binding, row.SyncedAt); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.spill(); err != nil {
		t.Fatal(err)
	}
	r.runs[0].records++
	if err := r.finish(parts[1]); err != nil {
		t.Fatal(err)
	}
	got, _, build := partsDigest(t, store, parts, DigestOptions{})
	if !bytes.Equal(got, want) {
		t.Error("digest differs from the digest of the parts read back")
	}
	if build.RunsFailed == nil || !strings.Contains(build.RunsFailed.Error(), "announced") || !strings.Contains(build.RunsFailed.Error(), parts[1].Name) {
		t.Errorf("RunsFailed = %v, want the short run of %s named", build.RunsFailed, parts[1].Name)
	}
}

func TestPartRunsLifecycle(t *testing.T) {
	ctx := context.Background()
	store := stagingtest.NewDir(t)
	// An aborted part leaves no runs, even once some were written.
	w, err := NewPartWriter(ctx, store, "snap/parts/a.parquet", testMeta, PartOptions{RunBytes: 2_000})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append(testBindings(0, 100)); err != nil {
		t.Fatal(err)
	}
	if w.runs.sink == nil {
		t.Fatal("no run was written: the test needs one")
	}
	w.Abort()
	if names, _ := store.List(ctx, ""); len(names) != 0 {
		t.Errorf("store after Abort holds %v", names)
	}
	// A part without rows has runs too (none of them), and is its own
	// digest's source.
	empty := writePart(t, store, "snap/parts/empty.parquet", nil, PartOptions{})
	full := writePart(t, store, "snap/parts/full.parquet", testBindings(0, 40), PartOptions{})
	_, info, build := partsDigest(t, store, []PartInfo{empty, full}, DigestOptions{})
	if info.Rows != 40 || build.FromRuns != 2 {
		t.Errorf("digest of %d rows, build %+v; want 40 rows from 2 parts' runs", info.Rows, build)
	}
	// DeletePart removes the part and its runs, and does not mind runs
	// already gone.
	if err := DeletePart(ctx, store, full.Name); err != nil {
		t.Fatal(err)
	}
	if err := store.Delete(ctx, RunsName(empty.Name)); err != nil {
		t.Fatal(err)
	}
	if err := DeletePart(ctx, store, empty.Name); err != nil {
		t.Fatal(err)
	}
	if names, _ := store.List(ctx, "snap/"); len(names) != 0 {
		t.Errorf("store after DeletePart holds %v", names)
	}
	if err := DeletePart(ctx, store, full.Name); !errors.Is(err, staging.ErrNotExist) {
		t.Errorf("DeletePart of a missing part: err = %v, want ErrNotExist", err)
	}
}

func readObj(t *testing.T, store staging.Store, name string) []byte {
	t.Helper()
	data, err := store.ReadAll(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func putObj(t *testing.T, store staging.Store, name string, data []byte) {
	t.Helper()
	w, err := store.Create(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func copyObj(t *testing.T, store staging.Store, from, to string) {
	t.Helper()
	putObj(t, store, to, readObj(t, store, from))
}

// TestRecordBufferSortAgreesWithCompareRecords sorts records with keys
// that tie on their first 16 bytes, null and empty fields, other lengths,
// several services and long keys, and checks the order is compareRecords'.
func TestRecordBufferSortAgreesWithCompareRecords(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(options ...*string) *string { return options[rng.IntN(len(options))] }
	sids := []*string{nil, ptr(""), ptr("BS0123456789abcdef"), ptr("BS0123456789abcdef0"), ptr("BS0123456789abcdee"), ptr("BS0123456789abcd"), ptr("BS\x00"), ptr("BS")}
	services := []*string{nil, ptr(""), ptr("ISa"), ptr("ISb"), ptr("IS" + strings.Repeat("b", 32)), ptr("IS" + strings.Repeat("a", 32))}
	long := ptr(strings.Repeat("L", 200))
	for round := range 50 {
		var b recordBuffer
		for i := range 300 {
			bd := testBinding(rng.IntN(1000))
			bd.ServiceSID = pick(services...)
			switch rng.IntN(4) {
			case 0:
				bd.SID = pick(sids...)
			case 1:
				bd.SID = ptr(fmt.Sprintf("BS%032x", rng.IntN(50)))
			case 2:
				// Bytes that differ anywhere in the first 16, or after.
				sid := make([]byte, rng.IntN(20))
				for j := range sid {
					sid[j] = "\x000az\x7f\xff"[rng.IntN(6)]
				}
				bd.SID = ptr(string(sid))
			}
			if round%10 == 9 && i == 150 {
				bd.SID = long // a key the short form cannot hold
			}
			b.add(appendBindingRecord(nil, &bd, time.Unix(int64(rng.IntN(3)), 0)))
		}
		want := slices.Clone(b.recs)
		slices.SortFunc(want, compareRecords)
		b.sort()
		for i := range want {
			if !bytes.Equal(b.recs[i], want[i]) {
				t.Fatalf("round %d: record %d out of compareRecords' order", round, i)
			}
		}
	}
}

func TestArenaBlocks(t *testing.T) {
	b := newBlock()
	if len(b) != arenaChunk || cap(b) != arenaChunk {
		t.Fatalf("block of %d bytes (cap %d), want %d", len(b), cap(b), arenaChunk)
	}
	for i := range b {
		b[i] = byte(i)
	}
	if last := arenaChunk - 1; b[last] != byte(last) {
		t.Error("block does not keep what is written")
	}
	freeBlock(b)
	// A block of the heap is left alone.
	h := make([]byte, arenaChunk)
	freeBlock(h)
	h[0], h[arenaChunk-1] = 1, 2
	if h[0] != 1 || h[arenaChunk-1] != 2 {
		t.Error("a heap block was disturbed")
	}
	// A buffer reused after reset and freed at the end keeps its records
	// whole until then.
	var buf recordBuffer
	for round := range 3 {
		for i := range 3000 {
			buf.add([]byte(fmt.Sprintf("%d-%0500d", round, i)))
		}
		for i, rec := range buf.recs {
			if want := fmt.Sprintf("%d-%0500d", round, i); string(rec) != want {
				t.Fatalf("round %d: record %d is %.20q…", round, i, rec)
			}
		}
		if round == 0 && len(buf.blocks) < 2 {
			t.Fatalf("%d blocks: the test needs several", len(buf.blocks))
		}
		blocks := len(buf.blocks)
		buf.reset()
		if round > 0 && len(buf.blocks) != blocks {
			t.Errorf("reset dropped blocks")
		}
	}
	buf.free()
	if buf.blocks != nil || buf.recs != nil {
		t.Error("free left memory behind")
	}
}

// TestRunBlocks: runs are written in blocks of runBlock, and runs written
// in larger blocks, up to maxRunBlock (as earlier versions wrote them),
// read back the same records; a block larger than that is damage.
func TestRunBlocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 2))
	var recs [][]byte
	for range 3000 {
		rec := make([]byte, 1+rng.IntN(300))
		for i := range rec {
			rec[i] = byte('a' + rng.IntN(4)) // compressible, as records are
		}
		recs = append(recs, rec)
	}
	write := func(block int) []byte {
		var out bytes.Buffer
		enc := s2.NewWriter(&out, s2.WriterBlockSize(block))
		w := &recordWriter{enc: enc, buf: bufio.NewWriterSize(enc, recordReadBuffer)}
		if block == runBlock {
			w = newRunWriter(&out)
		}
		for _, rec := range recs {
			if err := w.write(rec); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.finish(); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	read := func(data []byte) ([][]byte, error) {
		r := newRunReader(bytes.NewReader(data))
		var got [][]byte
		for {
			rec, err := r.next()
			if errors.Is(err, errStreamEnd) {
				return got, nil
			}
			if err != nil {
				return got, err
			}
			got = append(got, bytes.Clone(rec))
		}
	}
	for _, block := range []int{runBlock, maxRunBlock} {
		got, err := read(write(block))
		if err != nil {
			t.Fatalf("blocks of %d: %v", block, err)
		}
		if !slices.EqualFunc(got, recs, bytes.Equal) {
			t.Fatalf("blocks of %d: %d records read back, not the %d written", block, len(got), len(recs))
		}
	}
	if got, err := read(write(4 * maxRunBlock)); err == nil {
		t.Fatalf("blocks of %d read back (%d records), want an error", 4*maxRunBlock, len(got))
	}
}

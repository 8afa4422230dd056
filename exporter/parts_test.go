package exporter

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/staging/stagingtest"
)

// openParquet opens a part with the low-level reader to inspect metadata.
func openParquet(t *testing.T, store staging.Store, name string) (*file.Reader, func()) {
	t.Helper()
	obj, err := store.Open(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	pf, err := file.NewParquetReader(io.NewSectionReader(obj, 0, obj.Size()))
	if err != nil {
		obj.Close()
		t.Fatal(err)
	}
	return pf, func() { pf.Close(); obj.Close() }
}

func TestPartRoundTrip(t *testing.T) {
	tests := []struct {
		name          string
		rows          int
		opts          PartOptions
		wantRowGroups []int64
	}{
		{"empty", 0, PartOptions{}, nil},
		{"one row", 1, PartOptions{}, []int64{1}},
		{"uneven batches and groups", 3000, PartOptions{BatchRows: 300, RowGroupRows: 700},
			[]int64{700, 700, 700, 700, 200}},
		{"last group partial", 2500, PartOptions{BatchRows: 256, RowGroupRows: 1024},
			[]int64{1024, 1024, 452}},
		{"batch larger than group", 1500, PartOptions{BatchRows: 700, RowGroupRows: 500},
			[]int64{500, 500, 500}},
		{"defaults", 2000, PartOptions{}, []int64{2000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			opts := tt.opts
			opts.Allocator = mem
			store := stagingtest.NewDir(t)
			bs := testBindings(0, tt.rows)

			info := writePart(t, store, "parts/p1.parquet", bs, opts)
			mem.AssertSize(t, 0)

			// Size and checksum, computed while writing, are those of
			// the stored file.
			data, err := store.ReadAll(context.Background(), "parts/p1.parquet")
			if err != nil {
				t.Fatal(err)
			}
			if want := (PartInfo{Name: "parts/p1.parquet", Rows: int64(tt.rows), Bytes: int64(len(data)), CRC32C: crc32.Checksum(data, staging.CRC32CTable)}); info != want {
				t.Errorf("PartInfo = %+v, want %+v", info, want)
			}

			got := readAll(t, store, "parts/p1.parquet")
			want := wantRows(bs, testMeta)
			if len(got) != len(want) {
				t.Fatalf("read %d rows, want %d", len(got), len(want))
			}
			for i := range want {
				if !reflect.DeepEqual(got[i], want[i]) {
					t.Fatalf("row %d:\ngot  %+v\nwant %+v", i, got[i], want[i])
				}
			}

			pf, done := openParquet(t, store, "parts/p1.parquet")
			defer done()
			md := pf.MetaData()
			var groups []int64
			for g := 0; g < md.NumRowGroups(); g++ {
				rg := md.RowGroup(g)
				groups = append(groups, rg.NumRows())
				for c := 0; c < rg.NumColumns(); c++ {
					cc, err := rg.ColumnChunk(c)
					if err != nil {
						t.Fatal(err)
					}
					if cc.Compression() != compress.Codecs.Zstd {
						t.Errorf("row group %d column %d: compression %v, want zstd", g, c, cc.Compression())
					}
				}
			}
			if !reflect.DeepEqual(groups, tt.wantRowGroups) {
				t.Errorf("row groups = %v, want %v", groups, tt.wantRowGroups)
			}
			fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
			if err != nil {
				t.Fatal(err)
			}
			sc, err := fr.Schema()
			if err != nil {
				t.Fatal(err)
			}
			if err := sameFields(sc, schemas.Binding()); err != nil {
				t.Errorf("schema read back: %v", err)
			}
		})
	}
}

// sameFields compares names, types, nullability and descriptions; the
// reader adds Parquet field ids to the metadata, which do not matter.
func sameFields(got, want *arrow.Schema) error {
	if got.NumFields() != want.NumFields() {
		return fmt.Errorf("%d fields, want %d", got.NumFields(), want.NumFields())
	}
	desc := func(f arrow.Field) string {
		if i := f.Metadata.FindKey(schemas.DescriptionKey); i >= 0 {
			return f.Metadata.Values()[i]
		}
		return ""
	}
	for i, g := range got.Fields() {
		w := want.Field(i)
		if g.Name != w.Name || !arrow.TypeEqual(g.Type, w.Type) || g.Nullable != w.Nullable || desc(g) != desc(w) {
			return fmt.Errorf("field %d is %s (%q), want %s (%q)", i, g, desc(g), w, desc(w))
		}
	}
	return nil
}

func TestPartCompressionOption(t *testing.T) {
	store := stagingtest.NewDir(t)
	writePart(t, store, "p", testBindings(0, 10), PartOptions{Compression: compress.Codecs.Snappy})
	pf, done := openParquet(t, store, "p")
	defer done()
	cc, err := pf.MetaData().RowGroup(0).ColumnChunk(0)
	if err != nil {
		t.Fatal(err)
	}
	if cc.Compression() != compress.Codecs.Snappy {
		t.Errorf("compression = %v, want snappy", cc.Compression())
	}
}

func TestPartWriterAbort(t *testing.T) {
	ctx := context.Background()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	store := stagingtest.NewDir(t)
	w, err := NewPartWriter(ctx, store, "parts/p.parquet", testMeta, PartOptions{BatchRows: 100, RowGroupRows: 250, Allocator: mem})
	if err != nil {
		t.Fatal(err)
	}
	// Enough rows for a flushed row group and a buffered one.
	if err := w.Append(testBindings(0, 420)); err != nil {
		t.Fatal(err)
	}
	if w.Rows() != 420 {
		t.Errorf("Rows = %d, want 420", w.Rows())
	}
	w.Abort()
	w.Abort() // a second Abort is harmless
	mem.AssertSize(t, 0)

	if names, err := store.List(ctx, ""); err != nil || len(names) != 0 {
		t.Errorf("List after Abort = %v, %v; want nothing", names, err)
	}
	if err := w.Append(testBindings(0, 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Abort: err = %v, want ErrClosed", err)
	}
	if _, err := w.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("Close after Abort: err = %v, want ErrClosed", err)
	}
}

func TestPartWriterCloseTwice(t *testing.T) {
	store := stagingtest.NewDir(t)
	w, err := NewPartWriter(context.Background(), store, "p", testMeta, PartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: err = %v, want ErrClosed", err)
	}
	w.Abort() // after Close, Abort must not remove the committed part
	if got := readAll(t, store, "p"); len(got) != 0 {
		t.Errorf("empty part has %d rows", len(got))
	}
}

func TestPartWriterCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	store := stagingtest.NewDir(t)
	w, err := NewPartWriter(ctx, store, "p", testMeta, PartOptions{BatchRows: 10, Allocator: mem})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append(testBindings(0, 25)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := w.Append(testBindings(25, 10)); !errors.Is(err, context.Canceled) {
		t.Errorf("Append after cancel: err = %v, want context.Canceled", err)
	}
	if _, err := w.Close(); !errors.Is(err, context.Canceled) {
		t.Errorf("Close after cancel: err = %v, want context.Canceled", err)
	}
	mem.AssertSize(t, 0)
	if names, _ := store.List(context.Background(), ""); len(names) != 0 {
		t.Errorf("canceled part was committed: %v", names)
	}
}

func TestReadPartErrors(t *testing.T) {
	ctx := context.Background()
	store := stagingtest.NewDir(t)
	writePart(t, store, "good", testBindings(0, 50), PartOptions{BatchRows: 10})
	w, err := store.Create(ctx, "garbage")
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "this is not parquet")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	stop := errors.New("stop here")
	calls := 0
	err = ReadPart(ctx, store, "good", func(schemas.Row) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 3 {
		t.Errorf("callback error: err = %v after %d calls, want stop after 3", err, calls)
	}
	if err := ReadPart(ctx, store, "missing", func(schemas.Row) error { return nil }); !errors.Is(err, staging.ErrNotExist) {
		t.Errorf("missing part: err = %v, want ErrNotExist", err)
	}
	if err := ReadPart(ctx, store, "garbage", func(schemas.Row) error { return nil }); err == nil || !strings.Contains(err.Error(), "garbage") {
		t.Errorf("garbage part: err = %v, want an error naming it", err)
	}
}

func TestFilterPart(t *testing.T) {
	ctx := context.Background()
	bs := testBindings(0, 1200)
	dropUser := *bs[7].UserSID
	tests := []struct {
		name string
		keep func(r *schemas.Row) bool
	}{
		{"drop one user", func(r *schemas.Row) bool { return r.UserSID == nil || *r.UserSID != dropUser }},
		{"drop every null-sid row", func(r *schemas.Row) bool { return r.SID != nil }},
		{"keep all", func(r *schemas.Row) bool { return true }},
		{"drop all", func(r *schemas.Row) bool { return false }},
	}
	store := newMemStore()
	writePart(t, store, "src", bs, PartOptions{BatchRows: 100, RowGroupRows: 400})
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			opts := PartOptions{BatchRows: 100, RowGroupRows: 400, Allocator: mem}
			var want []schemas.Row
			for _, r := range wantRows(bs, testMeta) {
				if tt.keep(&r) {
					want = append(want, r)
				}
			}
			dst := fmt.Sprintf("dst-%d", i)
			info, err := FilterPart(ctx, store, "src", dst, tt.keep, opts)
			if err != nil {
				t.Fatal(err)
			}
			mem.AssertSize(t, 0)
			if info.Name != dst || info.Rows != int64(len(want)) {
				t.Errorf("PartInfo = %+v, want %s with %d rows", info, dst, len(want))
			}
			got := readAll(t, store, dst)
			if len(got) != len(want) {
				t.Fatalf("kept %d rows, want %d", len(got), len(want))
			}
			for i := range want {
				if !reflect.DeepEqual(got[i], want[i]) {
					t.Fatalf("row %d:\ngot  %+v\nwant %+v", i, got[i], want[i])
				}
			}
		})
	}
	if src := readAll(t, store, "src"); !reflect.DeepEqual(src, wantRows(bs, testMeta)) {
		t.Errorf("source changed: %d rows", len(src))
	}
}

func TestFilterPartErrors(t *testing.T) {
	ctx := context.Background()
	store := stagingtest.NewDir(t)
	writePart(t, store, "src", testBindings(0, 10), PartOptions{})
	keep := func(*schemas.Row) bool { return true }
	if _, err := FilterPart(ctx, store, "src", "src", keep, PartOptions{}); err == nil {
		t.Error("FilterPart onto its own source succeeded")
	}
	if _, err := FilterPart(ctx, store, "missing", "dst", keep, PartOptions{}); !errors.Is(err, staging.ErrNotExist) {
		t.Errorf("missing source: err = %v, want ErrNotExist", err)
	}
	names, err := store.List(ctx, "")
	if err != nil || !reflect.DeepEqual(names, []string{"src", RunsName("src")}) {
		t.Errorf("store holds %v, %v; want only src and its runs", names, err)
	}
}

func BenchmarkPartWriter(b *testing.B) {
	const rowsPerPart = 50_000
	bs := testBindings(0, 1000)
	store := newMemStore()
	b.ReportAllocs()
	for b.Loop() {
		w, err := NewPartWriter(context.Background(), store, "bench", testMeta, PartOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for written := 0; written < rowsPerPart; written += len(bs) {
			if err := w.Append(bs); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rowsPerPart)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// TestPartEncodings: columns whose values never repeat are written without
// a dictionary, the others with one, every column with zstd; the columns of
// random values have no min/max statistics, the others do.
func TestPartEncodings(t *testing.T) {
	store := stagingtest.NewDir(t)
	writePart(t, store, "p", testBindings(0, 500), PartOptions{})
	pf, done := openParquet(t, store, "p")
	defer done()
	rg := pf.MetaData().RowGroup(0)
	seen := map[string]bool{}
	for i := range rg.NumColumns() {
		cc, err := rg.ColumnChunk(i)
		if err != nil {
			t.Fatal(err)
		}
		col := cc.PathInSchema().String()
		top, _, _ := strings.Cut(col, ".")
		seen[top] = true
		if cc.Compression() != compress.Codecs.Zstd {
			t.Errorf("column %s: compression %v, want zstd", col, cc.Compression())
		}
		wantDict := !slices.Contains(schemas.UniqueColumns, top)
		if cc.HasDictionaryPage() != wantDict {
			t.Errorf("column %s: dictionary page %v, want %v", col, cc.HasDictionaryPage(), wantDict)
		}
		wantStats := !slices.Contains(noStatsColumns, top)
		hasMinMax := false
		if set, err := cc.StatsSet(); err != nil {
			t.Fatalf("column %s: %v", col, err)
		} else if set {
			st, err := cc.Statistics()
			if err != nil {
				t.Fatalf("column %s: %v", col, err)
			}
			hasMinMax = st.HasMinMax()
		}
		if hasMinMax != wantStats {
			t.Errorf("column %s: min/max statistics %v, want %v", col, hasMinMax, wantStats)
		}
	}
	for _, col := range append([]string{schemas.ColAccountSID, schemas.ColUserSID}, schemas.UniqueColumns...) {
		if !seen[col] {
			t.Errorf("no column %s in the part", col)
		}
	}
}

// failingStore is a store whose writers fail every write.
type failingStore struct {
	staging.Store
	err error
}

func (s failingStore) Create(ctx context.Context, name string) (staging.Writer, error) {
	w, err := s.Store.Create(ctx, name)
	if err != nil {
		return nil, err
	}
	return failingWriter{w, s.err}, nil
}

type failingWriter struct {
	staging.Writer
	err error
}

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

// Batches are encoded by the writer's own goroutine: a write that fails
// there is returned by a later Append or by Close, and nothing is
// committed, whether the writer is then closed or aborted. (Arrow's
// Parquet writer leaves some of its own buffers unreleased after a failed
// write, so the allocator is not checked here; the Go allocator's memory
// goes to the garbage collector anyway.)
func TestPartWriterEncodingFailure(t *testing.T) {
	boom := errors.New("disk full")
	for _, end := range []string{"close", "abort"} {
		t.Run(end, func(t *testing.T) {
			ctx := context.Background()
			dir := stagingtest.NewDir(t)
			store := failingStore{dir, boom}
			w, err := NewPartWriter(ctx, store, "p", testMeta, PartOptions{BatchRows: 100, RowGroupRows: 200})
			if err != nil {
				t.Fatal(err)
			}
			// Row groups of 200 rows are written out as they fill: enough
			// of them pass the writer's 256 KiB buffer and reach the store.
			var appendErr error
			for i := 0; i < 400 && appendErr == nil; i++ {
				appendErr = w.Append(testBindings(i*100, 100))
			}
			switch end {
			case "close":
				_, err := w.Close()
				if appendErr == nil {
					appendErr = err
				} else if err == nil {
					t.Error("Close after a failed Append succeeded")
				}
			case "abort":
				w.Abort()
			}
			if end == "close" || appendErr != nil {
				if !errors.Is(appendErr, boom) || !strings.Contains(appendErr.Error(), `write part "p"`) {
					t.Errorf("err = %v, want the store's error naming the part", appendErr)
				}
			}
			if end == "abort" && appendErr == nil {
				t.Error("40,000 rows appended without reaching the failing store")
			}
			if names, _ := dir.List(ctx, ""); len(names) != 0 {
				t.Errorf("a part that failed was committed: %v", names)
			}
		})
	}
}

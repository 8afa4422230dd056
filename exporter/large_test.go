package exporter

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging/stagingtest"
	"github.com/bindsync/bindsync/twilio"
)

// heapSampler records the largest live heap (HeapAlloc right after a
// collection) seen above a baseline: what the writer or reader retains,
// which is what grows with the data when memory is not bounded. Sampling,
// not timing: the result does not depend on the speed of the machine.
type heapSampler struct {
	base, peak uint64
}

func newHeapSampler() *heapSampler {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return &heapSampler{base: ms.HeapAlloc}
}

func (h *heapSampler) sample() {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapAlloc > h.base && ms.HeapAlloc-h.base > h.peak {
		h.peak = ms.HeapAlloc - h.base
	}
}

// bigEndpointBinding is binding i with a distinct endpoint of size bytes.
// The endpoint repeats a short pattern, so the part stays small on disk
// while Arrow and the Parquet encoder see every byte.
func bigEndpointBinding(i, size int) twilio.Binding {
	b := testBinding(i)
	pattern := fmt.Sprintf("%08d", i)
	e := strings.Repeat(pattern, size/len(pattern)+1)[:size]
	b.Endpoint = &e
	return b
}

// TestPartLargeRows writes 2,300 bindings with 1 MiB endpoints, 2.3 GB of
// strings: more than Arrow's 32-bit offsets address in one batch (this
// used to panic) and more than a reader can decode in one batch. Batches
// and row groups are bounded in bytes, so the part is written and read
// back whole, with memory far below the data's size.
func TestPartLargeRows(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("writes and reads 2.3 GB of strings (skipped with -short and -race)")
	}
	const (
		rows     = 2300
		size     = 1 << 20
		perWrite = 10
		// The data is 2.3 GB; a batch is 16 MiB and a row group 64 MiB.
		maxHeap = 384 << 20
	)
	ctx := context.Background()
	store := stagingtest.NewDir(t)
	heap := newHeapSampler()
	w, err := NewPartWriter(ctx, store, "big", testMeta, PartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < rows; i += perWrite {
		bs := make([]twilio.Binding, 0, perWrite)
		for j := i; j < min(i+perWrite, rows); j++ {
			bs = append(bs, bigEndpointBinding(j, size))
		}
		if err := w.Append(bs); err != nil {
			t.Fatal(err)
		}
		if i%(5*perWrite) == 0 {
			heap.sample()
		}
	}
	info, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	heap.sample()
	t.Logf("part: %d rows, %d bytes; heap peak while writing %d MiB", info.Rows, info.Bytes, heap.peak>>20)
	if info.Rows != rows {
		t.Errorf("part has %d rows, want %d", info.Rows, rows)
	}
	if heap.peak > maxHeap {
		t.Errorf("heap grew by %d MiB while writing, want at most %d MiB", heap.peak>>20, maxHeap>>20)
	}

	pf, done := openParquet(t, store, "big")
	md := pf.MetaData()
	for g := 0; g < md.NumRowGroups(); g++ {
		if n := md.RowGroup(g).TotalByteSize(); n > DefaultRowGroupBytes+size {
			t.Errorf("row group %d holds %d bytes, more than %d and a row", g, n, DefaultRowGroupBytes)
		}
	}
	done()

	heap = newHeapSampler()
	i := 0
	err = ReadPart(ctx, store, "big", func(r schemas.Row) error {
		want := schemas.Row{Binding: bigEndpointBinding(i, size), SnapshotDate: testMeta.SnapshotDate, SyncedAt: testMeta.SyncedAt}
		if !reflect.DeepEqual(r, want) {
			return fmt.Errorf("row %d differs", i)
		}
		i++
		if i%(5*perWrite) == 0 {
			heap.sample()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("heap peak while reading %d MiB", heap.peak>>20)
	if i != rows {
		t.Errorf("read %d rows, want %d", i, rows)
	}
	if heap.peak > maxHeap {
		t.Errorf("heap grew by %d MiB while reading, want at most %d MiB", heap.peak>>20, maxHeap>>20)
	}
}

// peakAllocator counts the Arrow and Parquet memory in use and its peak.
type peakAllocator struct {
	mu        sync.Mutex
	a         memory.Allocator
	cur, peak int64
}

func (p *peakAllocator) add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cur += n
	p.peak = max(p.peak, p.cur)
}

func (p *peakAllocator) Allocate(n int) []byte {
	p.add(int64(n))
	return p.a.Allocate(n)
}

func (p *peakAllocator) Reallocate(n int, b []byte) []byte {
	p.add(int64(n - len(b)))
	return p.a.Reallocate(n, b)
}

func (p *peakAllocator) Free(b []byte) {
	p.add(-int64(len(b)))
	p.a.Free(b)
}

// TestPartArrowMemoryBounded is the quick form of TestPartLargeRows: 120
// rows of 1 MiB, far fewer than a batch's 4096 rows, must not all be held
// in Arrow memory at once; the batch ends at DefaultBatchBytes.
func TestPartArrowMemoryBounded(t *testing.T) {
	const rows, size = 120, 1 << 20
	mem := &peakAllocator{a: memory.NewGoAllocator()}
	w, err := NewPartWriter(context.Background(), newMemStore(), "p", testMeta, PartOptions{Allocator: mem})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < rows; i += 10 {
		bs := make([]twilio.Binding, 0, 10)
		for j := i; j < i+10; j++ {
			bs = append(bs, bigEndpointBinding(j, size))
		}
		if err := w.Append(bs); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// A batch of 16 MiB takes up to twice that while its builder grows.
	if limit := int64(4 * DefaultBatchBytes); mem.peak > limit {
		t.Errorf("Arrow and Parquet memory peaked at %d MiB for %d MiB of rows, want at most %d MiB", mem.peak>>20, rows*size>>20, limit>>20)
	}
	if mem.cur != 0 {
		t.Errorf("%d bytes still allocated after Close", mem.cur)
	}
}

// TestPartHugeValue writes one 100 MB field that does not compress between
// ordinary rows: the part is readable by bindsync's own reader (Arrow's
// default page limits would refuse it).
func TestPartHugeValue(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("writes a 100 MB field (skipped with -short and -race)")
	}
	store := stagingtest.NewDir(t)
	raw := make([]byte, 75_000_000)
	rng := rand.NewChaCha8([32]byte{1})
	rng.Read(raw)
	huge := base64.StdEncoding.EncodeToString(raw) // 100 MB
	raw = nil
	bs := testBindings(0, 5)
	bs[2].Endpoint = &huge
	writePart(t, store, "huge", bs, PartOptions{})
	got := readAll(t, store, "huge")
	want := wantRows(bs, testMeta)
	if len(got) != len(want) {
		t.Fatalf("read %d rows, want %d", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("row %d differs", i)
		}
	}
}

// TestPartValueTooLarge checks that a field over MaxValueBytes is refused
// with a clear error, before any row of the same Append is written, and
// that the writer goes on.
func TestPartValueTooLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a 128 MiB field")
	}
	ctx := context.Background()
	store := stagingtest.NewDir(t)
	w, err := NewPartWriter(ctx, store, "p", testMeta, PartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append(testBindings(0, 3)); err != nil {
		t.Fatal(err)
	}
	bad := testBindings(3, 3)
	tooLong := strings.Repeat("x", MaxValueBytes+1)
	bad[1].Identity = &tooLong
	err = w.Append(bad)
	if !errors.Is(err, ErrValueTooLarge) || !strings.Contains(err.Error(), "identity") || !strings.Contains(err.Error(), "binding 2 of 3") {
		t.Fatalf("err = %v, want ErrValueTooLarge naming identity and the binding", err)
	}
	if w.Rows() != 3 {
		t.Errorf("Rows = %d after a refused Append, want 3", w.Rows())
	}
	if err := w.Append(testBindings(6, 2)); err != nil {
		t.Fatalf("Append after a refused one: %v", err)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, store, "p")
	want := append(wantRows(testBindings(0, 3), testMeta), wantRows(testBindings(6, 2), testMeta)...)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("part holds %d rows, want the 5 accepted ones", len(got))
	}
}

// TestPartRowGroupBytes checks the row group cuts by bytes: every group
// fits RowGroupBytes (or is one row), and none could have taken the next
// row.
func TestPartRowGroupBytes(t *testing.T) {
	const rows = 500
	bs := make([]twilio.Binding, rows)
	for i := range bs {
		bs[i] = bigEndpointBinding(i, 100+(i*37)%2000)
	}
	bs[100] = bigEndpointBinding(100, 50_000) // larger than a group
	opts := PartOptions{BatchRows: 64, BatchBytes: 20_000, RowGroupRows: 40, RowGroupBytes: 30_000}
	store := stagingtest.NewDir(t)
	writePart(t, store, "p", bs, opts)
	if got := readAll(t, store, "p"); !reflect.DeepEqual(got, wantRows(bs, testMeta)) {
		t.Fatalf("rows differ after the round trip")
	}
	pf, done := openParquet(t, store, "p")
	defer done()
	md := pf.MetaData()
	next := 0
	for g := 0; g < md.NumRowGroups(); g++ {
		n := int(md.RowGroup(g).NumRows())
		var size int64
		for _, b := range bs[next : next+n] {
			size += bindingBytes(&b)
		}
		if n > opts.RowGroupRows || (n > 1 && size > opts.RowGroupBytes) {
			t.Errorf("row group %d: %d rows, %d bytes; bounds are %d rows, %d bytes", g, n, size, opts.RowGroupRows, opts.RowGroupBytes)
		}
		if end := next + n; end < rows && n < opts.RowGroupRows && size+bindingBytes(&bs[end]) <= opts.RowGroupBytes {
			t.Errorf("row group %d (%d rows, %d bytes) was cut although row %d fits", g, n, size, end)
		}
		next += n
	}
	if next != rows {
		t.Errorf("row groups hold %d rows, want %d", next, rows)
	}
}

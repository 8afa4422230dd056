package exporter

import (
	"bufio"
	"bytes"
	"cmp"
	"container/heap"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Bounds of the external sort.
const (
	// DefaultSortBytes is the memory the sort fills with records before it
	// writes them out as a sorted run: the figure that bounds the memory
	// of building a digest, whatever the number of bindings. It is half a
	// row group (DefaultRowGroupBytes), so that publishing needs less
	// memory than reading.
	DefaultSortBytes = DefaultRowGroupBytes / 2
	// mergeFanIn is how many runs one merge reads at once; more runs are
	// merged in several passes. Each open run costs about 90 KiB (runBlock).
	mergeFanIn = 32
	// arenaChunk is the size of the blocks records are copied into, so
	// that a run of small records is a few large allocations.
	arenaChunk = 1 << 20
	// recordOverhead is what a record costs in memory beyond its bytes
	// (its slice header), in the sort's accounting.
	recordOverhead = 24
)

// recordBuffer holds copies of records in large blocks, which it reuses
// once emptied, and counts the memory they take.
type recordBuffer struct {
	recs   [][]byte
	used   int64
	blocks [][]byte // the arena blocks, reused after reset
	block  int      // index in blocks of the block being filled
	chunk  []byte   // the free tail of that block
	keys   []sortKey
}

// add copies rec into the buffer.
func (b *recordBuffer) add(rec []byte) {
	b.used += int64(len(rec)) + recordOverhead
	if len(rec) >= arenaChunk/4 {
		// A large record gets memory of its own, so that a block is
		// never mostly wasted.
		b.recs = append(b.recs, slices.Clone(rec))
		return
	}
	if len(rec) > len(b.chunk) {
		if b.chunk != nil { // a block is in use: take the next
			b.block++
		}
		if b.block == len(b.blocks) {
			b.blocks = append(b.blocks, newBlock())
		}
		b.chunk = b.blocks[b.block]
	}
	n := copy(b.chunk, rec)
	b.recs = append(b.recs, b.chunk[:n:n])
	b.chunk = b.chunk[n:]
}

// sort orders the records by compareRecords. Records are compared
// through a small key of their own first (the rank of their service_sid
// among the buffer's, and the first 16 bytes of their sid), in an array
// that stays in the processor's cache, instead of in the records spread
// over the arena: only records whose keys tie are compared whole.
func (b *recordBuffer) sort() {
	keys, ok := b.sortKeys()
	if !ok {
		slices.SortFunc(b.recs, compareRecords)
		return
	}
	slices.SortFunc(keys, func(x, y sortKey) int {
		switch {
		case x.svc != y.svc:
			return cmp.Compare(x.svc, y.svc)
		case x.hi != y.hi:
			return cmp.Compare(x.hi, y.hi)
		case x.lo != y.lo:
			return cmp.Compare(x.lo, y.lo)
		}
		return compareRecords(x.rec, y.rec)
	})
	for i := range keys {
		b.recs[i] = keys[i].rec
	}
	clear(keys)
	b.keys = keys[:0]
}

// sortKey is a record with a key whose order never contradicts
// compareRecords: svc ranks the record's service_sid (null first), hi
// and lo are the first 16 bytes of its sid (big-endian, zero-padded; 0
// for null). Equal keys say nothing: the records decide.
type sortKey struct {
	svc    uint32
	hi, lo uint64
	rec    []byte
}

// sortKeys returns the records' keys; false when a record's key fields
// are not in the short form (a length under 128), where the records are
// sorted by compareRecords alone.
func (b *recordBuffer) sortKeys() ([]sortKey, bool) {
	keys := slices.Grow(b.keys[:0], len(b.recs))
	// Services get an ID in order of appearance (0 for null), looked up
	// only when it changes from one record to the next, then are ranked.
	ids := map[string]uint32{}
	var names []string // by ID - 1
	var last []byte
	var lastID uint32
	for _, rec := range b.recs {
		svc, svcNull, sid, ok := shortKey(rec)
		if !ok {
			clear(keys)
			return nil, false
		}
		switch {
		case svcNull:
			lastID, last = 0, nil
		case lastID == 0 || !bytes.Equal(svc, last):
			id, seen := ids[string(svc)]
			if !seen {
				names = append(names, string(svc))
				id = uint32(len(names))
				ids[string(svc)] = id
			}
			lastID, last = id, svc
		}
		var pad [16]byte
		copy(pad[:], sid)
		keys = append(keys, sortKey{svc: lastID, hi: binary.BigEndian.Uint64(pad[:8]), lo: binary.BigEndian.Uint64(pad[8:]), rec: rec})
	}
	// Rank: null stays 0, the others from 1 in byte order.
	rank := make([]uint32, len(names)+1)
	order := make([]uint32, len(names))
	for i := range order {
		order[i] = uint32(i + 1)
	}
	slices.SortFunc(order, func(x, y uint32) int { return strings.Compare(names[x-1], names[y-1]) })
	for r, id := range order {
		rank[id] = uint32(r + 1)
	}
	for i := range keys {
		keys[i].svc = rank[keys[i].svc]
	}
	return keys, true
}

// shortKey returns the key fields of a record whose service_sid and sid
// each take a length byte under 128 (or are null); false otherwise.
func shortKey(rec []byte) (svc []byte, svcNull bool, sid []byte, ok bool) {
	field := func() ([]byte, bool, bool) {
		if len(rec) == 0 || rec[0] >= 0x80 {
			return nil, false, false
		}
		n := int(rec[0])
		if n == 0 {
			rec = rec[1:]
			return nil, true, true
		}
		if len(rec) < n {
			return nil, false, false
		}
		f := rec[1:n]
		rec = rec[n:]
		return f, false, true
	}
	svc, svcNull, ok = field()
	if !ok {
		return nil, false, nil, false
	}
	sid, _, ok = field()
	return svc, svcNull, sid, ok
}

// reset empties the buffer, keeping its blocks for the next records.
func (b *recordBuffer) reset() {
	clear(b.recs)
	b.recs, b.used, b.block, b.chunk = b.recs[:0], 0, 0, nil
}

// free releases the buffer's memory: its records must no longer be used.
func (b *recordBuffer) free() {
	for _, block := range b.blocks {
		freeBlock(block)
	}
	*b = recordBuffer{}
}

// writeRecords writes recs to w as one run and finishes it.
func writeRecords(w *recordWriter, recs [][]byte) error {
	for _, rec := range recs {
		if err := w.write(rec); err != nil {
			w.abort()
			return err
		}
	}
	return w.finish()
}

// sortRun is a sorted run to merge: a run file of the sort's own, or a run
// of a part's runs (see partRuns).
type sortRun struct {
	name string // for errors: a file path or a store URI
	// open returns the run's compressed stream and what to close after.
	open func() (io.Reader, io.Closer, error)
	// records is the number of records the run must hold, or -1.
	records int64
	// done, if set, is called once the run is read to its end: a run file
	// of the sort's own is removed then.
	done func()
	// fromPart says the run was written beside a part, not by this sort.
	fromPart bool
}

// tempRun is the run file name of the sort's own, removed once read.
func tempRun(name string) sortRun {
	return sortRun{name: name, records: -1, done: func() { os.Remove(name) }, open: func() (io.Reader, io.Closer, error) {
		f, err := os.Open(name)
		if err != nil {
			return nil, nil, err
		}
		return f, f, nil
	}}
}

// sorter sorts records of any number with bounded memory: records fill a
// buffer of about limit bytes, which is sorted and written to a run file
// in dir when full; the runs, and any sorted runs added with addRuns, are
// then merged, in passes of mergeFanIn runs, into one sorted stream.
// Fewer records than fit the buffer, without runs added, never touch the
// disk.
type sorter struct {
	dir     string
	release func()
	limit   int64
	buf     recordBuffer
	runs    []sortRun
	seq     int
}

// newSorter starts a sort whose runs go to a new directory under tempDir
// (os.TempDir when empty, see TempDir); close removes it.
func newSorter(tempDir string, limit int64) (*sorter, error) {
	if limit <= 0 {
		limit = DefaultSortBytes
	}
	dir, release, err := TempDir(tempDir, "bindsync-sort-")
	if err != nil {
		return nil, fmt.Errorf("sort: %w", err)
	}
	return &sorter{dir: dir, release: release, limit: limit}, nil
}

// add copies rec into the sort.
func (s *sorter) add(rec []byte) error {
	s.buf.add(rec)
	if s.buf.used < s.limit {
		return nil
	}
	return s.spill()
}

// addRuns adds runs that are already sorted to the merge.
func (s *sorter) addRuns(runs []sortRun) { s.runs = append(s.runs, runs...) }

// spill writes the buffered records, sorted, as a new run.
func (s *sorter) spill() error {
	if len(s.buf.recs) == 0 {
		return nil
	}
	s.buf.sort()
	name, err := s.writeRun(func(w *recordWriter) error { return writeRecords(w, s.buf.recs) })
	if err != nil {
		return err
	}
	s.runs = append(s.runs, tempRun(name))
	s.buf.reset()
	return nil
}

// writeRun writes a new run file with fill, which must finish or abort
// the run.
func (s *sorter) writeRun(fill func(*recordWriter) error) (string, error) {
	s.seq++
	name := filepath.Join(s.dir, fmt.Sprintf("run-%06d", s.seq))
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("sort: %w", err)
	}
	buf := bufio.NewWriterSize(f, recordReadBuffer)
	err = fill(newRunWriter(buf))
	if err == nil {
		err = buf.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", fmt.Errorf("sort: write run %s: %w", name, err)
	}
	return name, nil
}

// sorted ends the input and returns the records in order. The stream is
// valid until close.
func (s *sorter) sorted() (recordStream, error) {
	if len(s.runs) == 0 {
		s.buf.sort()
		return &memStream{recs: s.buf.recs}, nil
	}
	if err := s.spill(); err != nil {
		return nil, err
	}
	s.buf.free()
	// Merge in passes until one merge can read every run.
	for len(s.runs) > mergeFanIn {
		var next []sortRun
		for start := 0; start < len(s.runs); start += mergeFanIn {
			group := s.runs[start:min(start+mergeFanIn, len(s.runs))]
			if len(group) == 1 {
				next = append(next, group[0])
				continue
			}
			name, err := s.mergeRuns(group)
			if err != nil {
				return nil, err
			}
			next = append(next, tempRun(name))
		}
		s.runs = next
	}
	return openMerge(s.runs)
}

// mergeRuns merges runs into a new run file; the runs of its own are
// removed as they are read.
func (s *sorter) mergeRuns(runs []sortRun) (string, error) {
	m, err := openMerge(runs)
	if err != nil {
		return "", err
	}
	defer m.close()
	return s.writeRun(func(w *recordWriter) error {
		for {
			rec, err := m.next()
			if err == io.EOF {
				return w.finish()
			}
			if err == nil {
				err = w.write(rec)
			}
			if err != nil {
				w.abort()
				return err
			}
		}
	})
}

// close removes the runs and releases the buffer.
func (s *sorter) close() {
	s.buf.free()
	s.release()
}

// recordStream yields records in order; next returns io.EOF after the
// last one, and a record stays valid until the following call.
type recordStream interface {
	next() ([]byte, error)
	close()
}

// memStream yields records held in memory.
type memStream struct {
	recs [][]byte
	i    int
}

func (m *memStream) next() ([]byte, error) {
	if m.i >= len(m.recs) {
		return nil, io.EOF
	}
	m.i++
	return m.recs[m.i-1], nil
}

func (m *memStream) close() {}

// mergeStream merges sorted runs with a heap of their heads.
type mergeStream struct {
	h   runHeap
	cur *runHead // the head returned last, advanced on the next call
}

type runHead struct {
	run sortRun
	c   io.Closer
	r   *recordReader
	rec []byte
}

type runHeap []*runHead

func (h runHeap) Len() int           { return len(h) }
func (h runHeap) Less(i, j int) bool { return compareRecords(h[i].rec, h[j].rec) < 0 }
func (h runHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *runHeap) Push(x any)        { *h = append(*h, x.(*runHead)) }
func (h *runHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func openMerge(runs []sortRun) (*mergeStream, error) {
	m := &mergeStream{}
	for _, run := range runs {
		in, c, err := run.open()
		if err != nil {
			m.close()
			return nil, run.failed(err)
		}
		head := &runHead{run: run, c: c, r: newRunReader(in)}
		ok, err := head.advance()
		if err != nil {
			head.release()
			m.close()
			return nil, run.failed(err)
		}
		if ok {
			m.h = append(m.h, head)
		} else {
			head.done()
		}
	}
	heap.Init(&m.h)
	return m, nil
}

// failed describes a failure to read the run; for a run of a part, it
// wraps errRunsUnusable.
func (r sortRun) failed(err error) error {
	if r.fromPart {
		return fmt.Errorf("%w: read run %s: %w", errRunsUnusable, r.name, err)
	}
	return fmt.Errorf("sort: read run %s: %w", r.name, err)
}

// advance reads the run's next record; false at its end, where the run
// must have held the records it announced.
func (r *runHead) advance() (bool, error) {
	rec, err := r.r.next()
	if err == io.EOF {
		if r.run.records >= 0 && r.r.n != r.run.records {
			return false, fmt.Errorf("%w: %d records, %d announced", errBadRecord, r.r.n, r.run.records)
		}
		return false, nil
	}
	if err != nil {
		return false, err
	}
	r.rec = rec
	return true, nil
}

func (r *runHead) release() {
	r.r.close()
	if r.c != nil {
		r.c.Close()
	}
}

// done releases a run read to its end; a run of the sort's own goes at
// once, so that its disk space comes back before the whole merge ends.
func (r *runHead) done() {
	r.release()
	if r.run.done != nil {
		r.run.done()
	}
}

func (m *mergeStream) next() ([]byte, error) {
	if m.cur != nil {
		// The record handed out last is no longer in use: move its run on.
		ok, err := m.cur.advance()
		if err != nil {
			return nil, m.cur.run.failed(err)
		}
		if ok {
			heap.Fix(&m.h, 0)
		} else {
			heap.Pop(&m.h).(*runHead).done()
		}
		m.cur = nil
	}
	if len(m.h) == 0 {
		return nil, io.EOF
	}
	m.cur = m.h[0]
	return m.cur.rec, nil
}

func (m *mergeStream) close() {
	for _, h := range m.h {
		h.release()
	}
	m.h, m.cur = nil, nil
}

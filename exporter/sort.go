package exporter

import (
	"bufio"
	"container/heap"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
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
	// merged in several passes. Each open run costs about half a megabyte.
	mergeFanIn = 32
	// arenaChunk is the size of the blocks records are copied into, so
	// that a run of small records is a few large allocations.
	arenaChunk = 1 << 20
	// recordOverhead is what a record costs in memory beyond its bytes
	// (its slice header), in the sort's accounting.
	recordOverhead = 24
)

// sorter sorts records of any number with bounded memory: records fill a
// buffer of about limit bytes, which is sorted and written to a run file
// in dir when full; the runs are then merged, in passes of mergeFanIn
// runs, into one sorted stream. Fewer records than fit the buffer never
// touch the disk.
type sorter struct {
	dir     string
	release func()
	limit   int64

	recs  [][]byte
	used  int64
	chunk []byte // the free tail of the current arena block

	runs []string
	seq  int
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
	if len(rec) > len(s.chunk) {
		if len(rec) >= arenaChunk/4 {
			// A large record gets a block of its own, so that a block
			// is never mostly wasted.
			s.recs = append(s.recs, slices.Clone(rec))
			s.used += int64(len(rec)) + recordOverhead
			return s.maybeSpill()
		}
		s.chunk = make([]byte, arenaChunk)
	}
	n := copy(s.chunk, rec)
	s.recs = append(s.recs, s.chunk[:n:n])
	s.chunk = s.chunk[n:]
	s.used += int64(n) + recordOverhead
	return s.maybeSpill()
}

func (s *sorter) maybeSpill() error {
	if s.used < s.limit {
		return nil
	}
	return s.spill()
}

// spill writes the buffered records, sorted, as a new run.
func (s *sorter) spill() error {
	if len(s.recs) == 0 {
		return nil
	}
	slices.SortFunc(s.recs, compareRecords)
	name, err := s.writeRun(func(w *recordWriter) error {
		for _, rec := range s.recs {
			if err := w.write(rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.runs = append(s.runs, name)
	clear(s.recs)
	s.recs, s.used, s.chunk = s.recs[:0], 0, nil
	return nil
}

// writeRun writes a new run file with fill.
func (s *sorter) writeRun(fill func(*recordWriter) error) (string, error) {
	s.seq++
	name := filepath.Join(s.dir, fmt.Sprintf("run-%06d", s.seq))
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("sort: %w", err)
	}
	buf := bufio.NewWriterSize(f, recordReadBuffer)
	w := newRunWriter(buf)
	if err = fill(w); err != nil {
		w.abort()
	} else {
		err = w.finish()
	}
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
		slices.SortFunc(s.recs, compareRecords)
		return &memStream{recs: s.recs}, nil
	}
	if err := s.spill(); err != nil {
		return nil, err
	}
	// Merge in passes until one merge can read every run.
	for len(s.runs) > mergeFanIn {
		var next []string
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
			next = append(next, name)
		}
		s.runs = next
	}
	return openMerge(s.runs)
}

// mergeRuns merges runs into a new run and removes them.
func (s *sorter) mergeRuns(runs []string) (string, error) {
	m, err := openMerge(runs)
	if err != nil {
		return "", err
	}
	defer m.close()
	name, err := s.writeRun(func(w *recordWriter) error {
		for {
			rec, err := m.next()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if err := w.write(rec); err != nil {
				return err
			}
		}
	})
	if err != nil {
		return "", err
	}
	for _, r := range runs {
		os.Remove(r)
	}
	return name, nil
}

// close removes the runs and releases the buffer.
func (s *sorter) close() {
	s.recs, s.chunk = nil, nil
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

// mergeStream merges sorted run files with a heap of their heads.
type mergeStream struct {
	h   runHeap
	cur *runHead // the head returned last, advanced on the next call
}

type runHead struct {
	f   *os.File
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

func openMerge(runs []string) (*mergeStream, error) {
	m := &mergeStream{}
	for _, name := range runs {
		f, err := os.Open(name)
		if err != nil {
			m.close()
			return nil, fmt.Errorf("sort: %w", err)
		}
		r := newRunReader(f)
		head := &runHead{f: f, r: r}
		ok, err := head.advance()
		if err != nil {
			head.release()
			m.close()
			return nil, fmt.Errorf("sort: read run %s: %w", name, err)
		}
		if ok {
			m.h = append(m.h, head)
		} else {
			head.release()
		}
	}
	heap.Init(&m.h)
	return m, nil
}

// advance reads the run's next record; false at its end.
func (r *runHead) advance() (bool, error) {
	rec, err := r.r.next()
	if err == io.EOF {
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
	r.f.Close()
}

func (m *mergeStream) next() ([]byte, error) {
	if m.cur != nil {
		// The record handed out last is no longer in use: move its run on.
		ok, err := m.cur.advance()
		if err != nil {
			return nil, fmt.Errorf("sort: read run %s: %w", m.cur.f.Name(), err)
		}
		if ok {
			heap.Fix(&m.h, 0)
		} else {
			// A run read to its end is no longer needed: its disk space
			// goes back at once, not when the whole merge ends.
			done := heap.Pop(&m.h).(*runHead)
			done.release()
			os.Remove(done.f.Name())
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

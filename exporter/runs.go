package exporter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"time"

	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio"
)

// A part of bindings is written with its runs: the records of its rows
// (see appendRecord), as the part holds them, in sorted runs of about
// DefaultPartRunBytes, stored beside it as RunsName(part). The digest of a
// snapshot is merged from its parts' runs, so that publishing does not
// read the parts back and sort their rows. Runs are only an accelerator:
// a part whose runs are missing, damaged or not its own is read back
// instead, with the same result.
//
// The object is the runs one after the other, each an S2 record stream
// (newRunWriter), then a footer: uvarint(version), the part's name
// (uvarint(len) and bytes), rows, bytes (uvarints) and CRC32C (4 bytes,
// little-endian), uvarint(number of runs) and, for each run, its offset,
// length and records (uvarints); then the CRC32C of the footer and its
// length (4 bytes each, little-endian) and runsMagic. The footer names
// the part by its size and checksum, which are known only once it is
// written: runs that belong to another version of the part never match.

// runsMagic ends every runs object.
const runsMagic = "bsdgruns"

// runsVersion is the format version of runs objects.
const runsVersion = 1

// DefaultPartRunBytes is the memory a part writer fills with records
// before it writes them as a sorted run (outside the Go heap, see
// arena.go): about 40,000 records of bindings, so that a part of a
// million rows makes some 25 runs, one merge pass.
const DefaultPartRunBytes = 8 << 20

// maxRunsFooter bounds the footer read back: far more than the footer of
// the largest part takes (a few bytes a run), so a larger length means
// damage.
const maxRunsFooter = 16 << 20

// runsTrailer is the size of the fixed end of a runs object.
const runsTrailer = 4 + 4 + len(runsMagic)

// errRunsUnusable is returned (wrapped) when a part's runs cannot be used
// for its digest; the part is then read back.
var errRunsUnusable = errors.New("runs unusable")

// RunsName returns the name of the runs object written beside the part
// name.
func RunsName(part string) string { return part + ".runs" }

// DeletePart deletes the part name and the runs beside it. An error
// wrapping staging.ErrNotExist means the part was missing; missing runs
// are not an error.
func DeletePart(ctx context.Context, store staging.Store, name string) error {
	if err := store.Delete(ctx, RunsName(name)); err != nil && !errors.Is(err, staging.ErrNotExist) {
		return err
	}
	return store.Delete(ctx, name)
}

// runInfo locates one run in a runs object.
type runInfo struct {
	off, len, records int64
}

// partRuns writes the runs of a part as its rows are appended.
type partRuns struct {
	ctx   context.Context
	store staging.Store
	name  string // of the runs object
	limit int64

	sink staging.Writer // created with the first run
	out  *countingWriter
	buf  recordBuffer
	rec  []byte
	runs []runInfo
}

func newPartRuns(ctx context.Context, store staging.Store, part string, limit int64) *partRuns {
	if limit <= 0 {
		limit = DefaultPartRunBytes
	}
	return &partRuns{ctx: ctx, store: store, name: RunsName(part), limit: limit}
}

// add adds the record of a row of the part.
func (r *partRuns) add(bd *twilio.Binding, syncedAt time.Time) error {
	r.rec = appendBindingRecord(r.rec[:0], bd, syncedAt)
	r.buf.add(r.rec)
	if r.buf.used < r.limit {
		return nil
	}
	return r.spill()
}

// spill writes the buffered records, sorted, as the next run.
func (r *partRuns) spill() error {
	if len(r.buf.recs) == 0 {
		return nil
	}
	if err := r.create(); err != nil {
		return err
	}
	r.buf.sort()
	start := r.out.n
	if err := writeRecords(newRunWriter(r.out), r.buf.recs); err != nil {
		return fmt.Errorf("write runs %q: %w", r.name, err)
	}
	r.runs = append(r.runs, runInfo{off: start, len: r.out.n - start, records: int64(len(r.buf.recs))})
	r.buf.reset()
	return nil
}

// create starts the object, once.
func (r *partRuns) create() error {
	if r.sink != nil {
		return nil
	}
	sink, err := r.store.Create(r.ctx, r.name)
	if err != nil {
		return fmt.Errorf("write runs %q: %w", r.name, err)
	}
	r.sink, r.out = sink, &countingWriter{w: sink}
	return nil
}

// finish writes the last run and the footer naming part, and commits the
// object.
func (r *partRuns) finish(part PartInfo) error {
	if err := r.spill(); err != nil {
		return err
	}
	r.buf.free()
	if err := r.create(); err != nil {
		return err
	}
	footer := binary.AppendUvarint(nil, runsVersion)
	footer = binary.AppendUvarint(footer, uint64(len(part.Name)))
	footer = append(footer, part.Name...)
	footer = binary.AppendUvarint(footer, uint64(part.Rows))
	footer = binary.AppendUvarint(footer, uint64(part.Bytes))
	footer = binary.LittleEndian.AppendUint32(footer, part.CRC32C)
	footer = binary.AppendUvarint(footer, uint64(len(r.runs)))
	for _, run := range r.runs {
		footer = binary.AppendUvarint(footer, uint64(run.off))
		footer = binary.AppendUvarint(footer, uint64(run.len))
		footer = binary.AppendUvarint(footer, uint64(run.records))
	}
	trailer := binary.LittleEndian.AppendUint32(nil, crc32.Checksum(footer, staging.CRC32CTable))
	trailer = binary.LittleEndian.AppendUint32(trailer, uint32(len(footer)))
	trailer = append(trailer, runsMagic...)
	if _, err := r.out.Write(append(footer, trailer...)); err != nil {
		r.abort()
		return fmt.Errorf("write runs %q: %w", r.name, err)
	}
	err := r.sink.Close()
	r.sink = nil
	if err != nil {
		return fmt.Errorf("commit runs %q: %w", r.name, err)
	}
	return nil
}

// abort discards the runs.
func (r *partRuns) abort() {
	r.buf.free()
	if r.sink != nil {
		r.sink.Abort()
		r.sink = nil
	}
}

// openPartRuns returns the runs of part p, checked against p, for a merge.
// The runs of a store other than a local directory are copied into dir
// first, in large reads, so that the merge does not wait on a request for
// every block. An error wrapping errRunsUnusable means the part must be
// read back instead.
func openPartRuns(ctx context.Context, store staging.Store, p PartInfo, dir string) ([]sortRun, error) {
	name := RunsName(p.Name)
	uri := store.URI(name)
	unusable := func(format string, args ...any) ([]sortRun, error) {
		return nil, fmt.Errorf("%w: %s: %s", errRunsUnusable, uri, fmt.Sprintf(format, args...))
	}
	obj, err := store.Open(ctx, name)
	if err != nil {
		if errors.Is(err, staging.ErrNotExist) {
			return unusable("missing")
		}
		return nil, fmt.Errorf("open runs %s: %w", uri, err)
	}
	defer obj.Close()
	runs, why, err := readRunsFooter(obj, p)
	if err != nil {
		return nil, fmt.Errorf("read runs %s: %w", uri, err)
	}
	if why != "" {
		return unusable("%s", why)
	}
	open := func() (staging.Object, error) { return store.Open(ctx, name) }
	var done func()
	if _, local := store.(*staging.Dir); !local && len(runs) > 0 {
		path, err := copyObject(obj, dir)
		if err != nil {
			return nil, fmt.Errorf("copy runs %s to %s: %w", uri, dir, err)
		}
		open = func() (staging.Object, error) { return openFileObject(path) }
		// The copy goes once its last run is read, so that the
		// temporary directory holds about one copy of the runs, merged
		// or not, whatever the passes of the merge.
		left := len(runs)
		done = func() {
			if left--; left == 0 {
				os.Remove(path)
			}
		}
	}
	out := make([]sortRun, len(runs))
	for i, run := range runs {
		out[i] = sortRun{
			name:     fmt.Sprintf("%s (run %d of %d)", uri, i+1, len(runs)),
			records:  run.records,
			fromPart: true,
			done:     done,
			open: func() (io.Reader, io.Closer, error) {
				o, err := open()
				if err != nil {
					return nil, nil, err
				}
				return io.NewSectionReader(o, run.off, run.len), o, nil
			},
		}
	}
	return out, nil
}

// readRunsFooter reads and checks the footer of a runs object against
// the part p it must describe: why says what does not match, err is a
// failure to read.
func readRunsFooter(obj staging.Object, p PartInfo) (runs []runInfo, why string, err error) {
	bad := func(format string, args ...any) ([]runInfo, string, error) {
		return nil, fmt.Sprintf(format, args...), nil
	}
	size := obj.Size()
	if size < int64(runsTrailer) {
		return bad("%d bytes, too short for runs", size)
	}
	trailer := make([]byte, runsTrailer)
	if _, err := obj.ReadAt(trailer, size-int64(runsTrailer)); err != nil {
		return nil, "", err
	}
	if string(trailer[8:]) != runsMagic {
		return bad("not runs")
	}
	sum, n := binary.LittleEndian.Uint32(trailer), int64(binary.LittleEndian.Uint32(trailer[4:]))
	if n > maxRunsFooter || n > size-int64(runsTrailer) {
		return bad("a footer of %d bytes in %d", n, size)
	}
	end := size - int64(runsTrailer) - n // where the runs end
	footer := make([]byte, n)
	if _, err := obj.ReadAt(footer, end); err != nil {
		return nil, "", err
	}
	if crc32.Checksum(footer, staging.CRC32CTable) != sum {
		return bad("the footer's checksum does not match")
	}
	d := recordDecoder{data: footer}
	if v := d.uvarint(); d.err == nil && v != runsVersion {
		return bad("format version %d, this bindsync reads %d", v, runsVersion)
	}
	part := d.bytes(d.uvarint())
	rows, nbytes := d.uvarint(), d.uvarint()
	crc := binary.LittleEndian.Uint32(d.bytes(4))
	count := d.uvarint()
	if d.err != nil {
		return bad("%v", d.err)
	}
	if string(part) != p.Name || int64(rows) != p.Rows || int64(nbytes) != p.Bytes || crc != p.CRC32C {
		return bad("they are the runs of %q (%d rows, %d bytes, CRC32C %08x), not of %q (%d rows, %d bytes, %08x)",
			part, rows, nbytes, crc, p.Name, p.Rows, p.Bytes, p.CRC32C)
	}
	if count > uint64(len(d.data)) { // every run takes at least three bytes
		return bad("%d runs in a footer of %d bytes", count, n)
	}
	runs = make([]runInfo, count)
	var off, records int64
	for i := range runs {
		r := runInfo{off: int64(d.uvarint()), len: int64(d.uvarint()), records: int64(d.uvarint())}
		if d.err != nil {
			return bad("%v", d.err)
		}
		if r.off != off || r.len <= 0 || r.len > end-off || r.records <= 0 || r.records > p.Rows-records {
			return bad("run %d of %d does not fit: offset %d, %d bytes, %d records", i+1, count, r.off, r.len, r.records)
		}
		off += r.len
		records += r.records
		runs[i] = r
	}
	if len(d.data) != 0 {
		return bad("%d bytes after the footer's last run", len(d.data))
	}
	if off != end || records != p.Rows {
		return bad("the runs hold %d bytes and %d records, the part %d rows in %d bytes of runs", off, records, p.Rows, end)
	}
	return runs, "", nil
}

// copyObject copies obj into a new file in dir, a few megabytes per read,
// and returns its path.
func copyObject(obj staging.Object, dir string) (string, error) {
	f, err := os.CreateTemp(dir, "part-runs-")
	if err != nil {
		return "", err
	}
	_, err = io.CopyBuffer(f, io.NewSectionReader(obj, 0, obj.Size()), make([]byte, 4<<20))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// fileObject is a local file read as a staging.Object.
type fileObject struct {
	*os.File
	size int64
}

func (f fileObject) Size() int64 { return f.size }

func openFileObject(path string) (staging.Object, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return fileObject{File: f, size: st.Size()}, nil
}

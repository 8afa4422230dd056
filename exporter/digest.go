package exporter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
)

// A digest is a snapshot's bindings, every row as it was written to the
// snapshot's parts, sorted by (service_sid, sid) and stored compactly in
// staging: what the next snapshot's changes are computed from, so that
// the previous snapshot never has to be read back from a warehouse. It
// holds every value of every row, since a removed binding's row in the
// changes table carries its last values.
//
// The file is the 8 bytes digestMagic, a format version (uvarint), the
// snapshot date as days since 1970-01-01 (varint), then a zstd stream of
// records (see appendRecord) ending with an end mark and the count of
// records, so that a digest cut short is never taken for a smaller one.

// digestMagic starts every digest file.
const digestMagic = "bsdigest"

// digestVersion is the format version this package writes and reads.
const digestVersion = 1

// ErrDigestDamaged is returned (wrapped, naming the digest) when a digest
// does not read back: not a digest, another snapshot's, of an unknown
// version, cut short, or damaged.
var ErrDigestDamaged = errors.New("digest is damaged")

// DigestInfo describes a written digest.
type DigestInfo struct {
	Name string `json:"name"`
	// Rows is the number of rows (bindings) it holds.
	Rows  int64 `json:"rows"`
	Bytes int64 `json:"bytes"`
	// CRC32C is the Castagnoli checksum of its bytes, as for a part.
	CRC32C uint32 `json:"crc32c"`
}

// DigestOptions bound the building of a digest.
type DigestOptions struct {
	// TempDir holds the runs of the external sort (os.TempDir when
	// empty): at most about the compressed size of the digest.
	TempDir string
	// SortBytes is the memory filled with rows before a run is written
	// (DefaultSortBytes when zero). It bounds the memory of the sort.
	SortBytes int64
}

// RowSource calls fn for every row of a snapshot, in any order, and stops
// at fn's first error. The row may be valid only until fn returns.
type RowSource func(ctx context.Context, fn func(*schemas.Row) error) error

// PartsSource is the rows of parts in store.
func PartsSource(store staging.Store, parts []PartInfo) RowSource {
	return func(ctx context.Context, fn func(*schemas.Row) error) error {
		for _, p := range parts {
			if err := visitPart(ctx, store, p.Name, fn); err != nil {
				return err
			}
		}
		return nil
	}
}

// FilesSource is the rows of the Parquet files *.parquet in dir (a
// partition of a local warehouse table), in name order. A missing dir is
// an error wrapping fs.ErrNotExist.
func FilesSource(dir string) RowSource {
	return func(ctx context.Context, fn func(*schemas.Row) error) error {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.IsDir() || !strings.HasSuffix(e.Name(), ".parquet") {
				continue
			}
			if err := readFile(ctx, filepath.Join(dir, e.Name()), fn); err != nil {
				return err
			}
		}
		return nil
	}
}

func readFile(ctx context.Context, path string, fn func(*schemas.Row) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := visitParquetFile(ctx, f, st.Size(), fn); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// WriteDigest writes the digest of the snapshot of date, whose rows src
// yields, as the object name of store, replacing any object of that name
// once it is complete. Memory is bounded by opts.SortBytes whatever the
// number of rows: rows beyond it are sorted on disk in opts.TempDir.
func WriteDigest(ctx context.Context, store staging.Store, name string, date time.Time, src RowSource, opts DigestOptions) (DigestInfo, error) {
	s, err := newSorter(opts.TempDir, opts.SortBytes)
	if err != nil {
		return DigestInfo{}, fmt.Errorf("write digest %q: %w", name, err)
	}
	defer s.close()
	var rec []byte
	err = src(ctx, func(r *schemas.Row) error {
		rec = appendRecord(rec[:0], r)
		return s.add(rec)
	})
	if err != nil {
		return DigestInfo{}, fmt.Errorf("write digest %q: read the snapshot's rows: %w", name, err)
	}
	stream, err := s.sorted()
	if err != nil {
		return DigestInfo{}, fmt.Errorf("write digest %q: %w", name, err)
	}
	defer stream.close()
	return writeDigestFrom(ctx, store, name, date, stream, -1)
}

// DigestBuild says how WritePartsDigest built a digest.
type DigestBuild struct {
	// FromRuns is the number of parts whose runs were merged.
	FromRuns int
	// ReadBack lists the parts read back and sorted instead, with why
	// their runs could not be used.
	ReadBack []string
	// RunsFailed is why the runs were given up on for every part, after
	// they failed during the merge (nil when they did not).
	RunsFailed error
}

// WritePartsDigest writes the digest of the snapshot of date whose rows
// are those of parts, as the object name of store: the same digest as
// WriteDigest with PartsSource(store, parts), merged from the sorted runs
// written beside each part (RunsName). A part whose runs are missing,
// damaged or another version's is read back and sorted; runs that fail
// during the merge (damage that their footer did not show) make the whole
// digest start over from the parts. Memory is bounded as for WriteDigest.
func WritePartsDigest(ctx context.Context, store staging.Store, name string, date time.Time, parts []PartInfo, opts DigestOptions) (DigestInfo, DigestBuild, error) {
	info, build, err := writePartsDigest(ctx, store, name, date, parts, opts)
	if err == nil || ctx.Err() != nil || !errors.Is(err, errRunsUnusable) {
		return info, build, err
	}
	build = DigestBuild{RunsFailed: err}
	info, err = WriteDigest(ctx, store, name, date, PartsSource(store, parts), opts)
	return info, build, err
}

func writePartsDigest(ctx context.Context, store staging.Store, name string, date time.Time, parts []PartInfo, opts DigestOptions) (DigestInfo, DigestBuild, error) {
	var build DigestBuild
	fail := func(err error) (DigestInfo, DigestBuild, error) {
		return DigestInfo{}, build, fmt.Errorf("write digest %q: %w", name, err)
	}
	s, err := newSorter(opts.TempDir, opts.SortBytes)
	if err != nil {
		return fail(err)
	}
	defer s.close()
	var rows int64
	var rec []byte
	for _, p := range parts {
		rows += p.Rows
		runs, err := openPartRuns(ctx, store, p, s.dir)
		if err == nil {
			s.addRuns(runs)
			build.FromRuns++
			continue
		}
		if !errors.Is(err, errRunsUnusable) {
			return fail(err)
		}
		build.ReadBack = append(build.ReadBack, err.Error())
		err = visitPart(ctx, store, p.Name, func(r *schemas.Row) error {
			rec = appendRecord(rec[:0], r)
			return s.add(rec)
		})
		if err != nil {
			return fail(fmt.Errorf("read the snapshot's rows: %w", err))
		}
	}
	stream, err := s.sorted()
	if err != nil {
		return fail(err)
	}
	defer stream.close()
	info, err := writeDigestFrom(ctx, store, name, date, stream, rows)
	if err != nil && build.FromRuns > 0 && errors.Is(err, errRecordsOutOfOrder) {
		err = fmt.Errorf("%w: %w", errRunsUnusable, err)
	}
	return info, build, err
}

// errRecordsOutOfOrder is returned (wrapped) when a digest's records do
// not come in order.
var errRecordsOutOfOrder = errors.New("records out of order")

// writeDigestFrom writes the records of stream, which must be sorted, as
// a digest. When want is not negative, the digest is committed only if it
// holds want records: runs merged must add up to their parts' rows (the
// footers' counts were checked, so only damage makes them differ).
func writeDigestFrom(ctx context.Context, store staging.Store, name string, date time.Time, stream recordStream, want int64) (DigestInfo, error) {
	sink, err := store.Create(ctx, name)
	if err != nil {
		return DigestInfo{}, fmt.Errorf("write digest %q: %w", name, err)
	}
	counter := &countingWriter{w: sink, crc: crc32.New(staging.CRC32CTable)}
	buf := bufio.NewWriterSize(counter, writeBufferSize)
	fail := func(err error) (DigestInfo, error) {
		sink.Abort()
		return DigestInfo{}, fmt.Errorf("write digest %q: %w", name, err)
	}
	if _, err := buf.Write(digestHeader(date)); err != nil {
		return fail(err)
	}
	w, err := newRecordWriter(buf)
	if err != nil {
		return fail(err)
	}
	var prev []byte
	for {
		if err := ctx.Err(); err != nil {
			w.abort()
			return fail(err)
		}
		rec, err := stream.next()
		if err == io.EOF {
			break
		}
		if err == nil && prev != nil && compareRecords(prev, rec) > 0 {
			err = errRecordsOutOfOrder
		}
		if err == nil {
			err = w.write(rec)
		}
		if err != nil {
			w.abort()
			return fail(err)
		}
		prev = append(prev[:0], rec...)
	}
	if want >= 0 && w.n != want {
		w.abort()
		return fail(fmt.Errorf("%w: %d records merged, the parts hold %d rows", errRunsUnusable, w.n, want))
	}
	if err := w.finish(); err != nil {
		return fail(err)
	}
	if err := buf.Flush(); err != nil {
		return fail(err)
	}
	if err := sink.Close(); err != nil {
		return DigestInfo{}, fmt.Errorf("commit digest %q: %w", name, err)
	}
	return DigestInfo{Name: name, Rows: w.n, Bytes: counter.n, CRC32C: counter.crc.Sum32()}, nil
}

func digestHeader(date time.Time) []byte {
	h := []byte(digestMagic)
	h = binary.AppendUvarint(h, digestVersion)
	return binary.AppendVarint(h, epochDay(date))
}

// epochDay is the UTC calendar day of t as days since 1970-01-01.
func epochDay(t time.Time) int64 {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix() / 86400
}

// DigestRef names a digest to read: the object Name of Store, which must
// be the digest of the snapshot of Date. When Info is set (Bytes not
// zero), the object must also have its size and CRC32C.
type DigestRef struct {
	Store staging.Store
	Name  string
	Date  time.Time
	Info  DigestInfo
}

// CheckDigest reports, as an error wrapping ErrDigestDamaged, whether the
// digest ref names differs from what ref.Info recorded; an error wrapping
// staging.ErrNotExist if it is missing. It does not read the records.
func CheckDigest(ctx context.Context, ref DigestRef) error {
	crc, size, err := ref.Store.Checksum(ctx, ref.Name)
	if err != nil {
		return fmt.Errorf("check digest %s: %w", ref.Store.URI(ref.Name), err)
	}
	if ref.Info.Bytes != 0 && (size != ref.Info.Bytes || crc != ref.Info.CRC32C) {
		return fmt.Errorf("check digest %s: %w: %d bytes with CRC32C %08x, recorded %d bytes with %08x",
			ref.Store.URI(ref.Name), ErrDigestDamaged, size, crc, ref.Info.Bytes, ref.Info.CRC32C)
	}
	return nil
}

// digestReader reads the records of a digest.
type digestReader struct {
	obj  staging.Object
	in   *ioErrors
	r    *recordReader
	uri  string
	prev []byte
}

// openDigest opens the digest ref names and checks its header.
func openDigest(ctx context.Context, ref DigestRef) (*digestReader, error) {
	uri := ref.Store.URI(ref.Name)
	if ref.Info.Bytes != 0 {
		// A local store reads the whole object to checksum it: only
		// worth it when there is a record to compare with.
		if err := CheckDigest(ctx, ref); err != nil {
			return nil, err
		}
	}
	obj, err := ref.Store.Open(ctx, ref.Name)
	if err != nil {
		return nil, fmt.Errorf("open digest %s: %w", uri, err)
	}
	raw := &ioErrors{r: io.NewSectionReader(obj, 0, obj.Size())}
	in := bufio.NewReaderSize(raw, recordReadBuffer)
	damaged := func(format string, args ...any) (*digestReader, error) {
		obj.Close()
		if raw.err != nil {
			return nil, fmt.Errorf("open digest %s: %w", uri, raw.err)
		}
		return nil, fmt.Errorf("open digest %s: %w: %s", uri, ErrDigestDamaged, fmt.Sprintf(format, args...))
	}
	magic := make([]byte, len(digestMagic))
	if _, err := io.ReadFull(in, magic); err != nil || !bytes.Equal(magic, []byte(digestMagic)) {
		return damaged("not a digest")
	}
	version, err := binary.ReadUvarint(in)
	if err != nil || version != digestVersion {
		return damaged("format version %d, this bindsync reads %d", version, digestVersion)
	}
	day, err := binary.ReadVarint(in)
	if err != nil {
		return damaged("no snapshot date")
	}
	if want := epochDay(ref.Date); day != want {
		return damaged("it is the digest of %s, not %s", time.Unix(day*86400, 0).UTC().Format(time.DateOnly), ref.Date.UTC().Format(time.DateOnly))
	}
	r, err := newRecordReader(in)
	if err != nil {
		obj.Close()
		return nil, fmt.Errorf("open digest %s: %w", uri, err)
	}
	return &digestReader{obj: obj, in: raw, r: r, uri: uri}, nil
}

// next returns the digest's next record, io.EOF after the last. Damage,
// records out of order included, is an error wrapping ErrDigestDamaged.
func (d *digestReader) next() ([]byte, error) {
	rec, err := d.r.next()
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil {
		return nil, d.damaged(err)
	}
	if d.prev != nil && compareRecords(d.prev, rec) > 0 {
		return nil, d.damaged(errors.New("records out of order"))
	}
	d.prev = append(d.prev[:0], rec...)
	return rec, nil
}

// damaged describes a failure to read: damage of what the object holds,
// unless reading the object itself failed (that error is passed on, so a
// caller can tell a passing failure from a digest that must be rebuilt).
func (d *digestReader) damaged(err error) error {
	if d.in.err != nil {
		return fmt.Errorf("read digest %s: %w", d.uri, d.in.err)
	}
	return fmt.Errorf("read digest %s: %w: %w", d.uri, ErrDigestDamaged, err)
}

func (d *digestReader) close() {
	d.r.close()
	d.obj.Close()
}

// ReadDigest calls fn for every row of the digest ref names, in digest
// order, with snapshot_date set to ref.Date. It is for tests and tools: it
// copies every row, where the changes decode records as views.
func ReadDigest(ctx context.Context, ref DigestRef, fn func(schemas.Row) error) error {
	d, err := openDigest(ctx, ref)
	if err != nil {
		return err
	}
	defer d.close()
	date := ref.Date.UTC().Truncate(24 * time.Hour)
	for {
		rec, err := d.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		row, err := decodeRecord(rec)
		if err != nil {
			return d.damaged(err)
		}
		row.SnapshotDate = date
		if err := fn(row); err != nil {
			return err
		}
	}
}

// ioErrors remembers the last error of a reader other than io.EOF, so that
// a failure to read the object (a network error) is told apart from damage
// in what it holds.
type ioErrors struct {
	r   io.Reader
	err error
}

func (e *ioErrors) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

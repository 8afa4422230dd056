// Package exporter owns the Parquet part files of a snapshot and the
// publishing seam: it writes binding and user rows into part files in a
// staging store, reads and filters them back, defines a Snapshot (a list
// of tables of parts) and the Publisher interface, and implements the
// local warehouse publisher. It knows Arrow and Parquet but nothing of
// Twilio's HTTP API: rows arrive as twilio.Binding values and leave as
// schemas.Row values.
package exporter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio"
)

// Default bounds of a part file, in rows and in bytes. Rows keep scans
// efficient when rows are small; bytes keep memory bounded and every batch
// and row group readable whatever the field sizes (a binding can carry a
// megabyte-long endpoint). A record batch of 2048 ordinary rows is about
// 1.5 MB of Arrow memory, well under DefaultBatchBytes (a part writer
// holds two: one filling, one being encoded); a row group is cut at
// DefaultRowGroupBytes, some 22,000 ordinary rows (about 700 bytes each)
// before DefaultRowGroupRows, and is what the writer buffers and a reader
// decodes at a time: it bounds the memory of both. Halving both from 4096
// rows and 32 MiB took some 14 MiB off the peak RSS of a run of 5 million
// bindings, at about the same CPU (README, Memory).
const (
	DefaultBatchRows     = 2048
	DefaultBatchBytes    = 8 << 20
	DefaultRowGroupRows  = 64 * 1024
	DefaultRowGroupBytes = 16 << 20
)

// dataPageBytes is the size at which a column's Parquet data page is cut
// (Arrow's default is 1 MiB). Every column of the open row group fills a
// page of its own before compressing it, so the pages being filled are
// most of a part writer's memory: at 256 KiB, a run of 5 million bindings
// peaked at 91 MiB of anonymous memory instead of 114, with files no
// larger (README, Memory).
const dataPageBytes = 256 << 10

// noStatsColumns are written without min/max statistics: their values are
// random (SIDs, push tokens, URLs holding SIDs), so a row group's range
// spans nearly every value and lets no reader skip it, while comparing
// every long value cost some 3% of a run's CPU. The timestamps and the
// repeating columns keep theirs.
var noStatsColumns = []string{schemas.ColSID, schemas.ColEndpoint, schemas.ColURL}

// MaxBatchBytes caps PartOptions.BatchBytes. A string column of a batch
// holds at most BatchBytes plus one value (MaxValueBytes), which must stay
// well below the 2 GiB that Arrow's 32-bit offsets address, and a Parquet
// page (cut between the values of one batch) must stay below the page size
// that readers accept (256 MiB by default in Arrow's reader).
const MaxBatchBytes = 64 << 20

// MaxValueBytes is the largest string a part accepts in one field (an
// endpoint, an identity, one message type). A longer one is refused with
// ErrValueTooLarge rather than written into a part that readers would
// reject. A Twilio response is capped below this size, so a field this
// large only comes from a misbehaving server.
const MaxValueBytes = 128 << 20

// rowOverhead is what a row costs beyond its strings in the byte estimate:
// offsets, validity bits, timestamps and dates.
const rowOverhead = 128

// writeBufferSize batches the Parquet writer's many small writes into
// larger ones for the staging store.
const writeBufferSize = 256 * 1024

// zstdLevel is the zstd level of parts: 1, zstd's fastest.
const zstdLevel = 1

// Sentinel errors of the exporter.
var (
	// ErrClosed is returned by a PartWriter used after Close or Abort.
	ErrClosed = errors.New("part writer is closed")
	// ErrValueTooLarge is returned (wrapped, naming the column and the
	// size) by Append for a row with a field longer than MaxValueBytes.
	// Nothing of that Append call is written, and the writer stays usable.
	ErrValueTooLarge = errors.New("value too large for a part")

	// errExchangeUnsupported reports a filesystem without atomic
	// directory exchange; LocalWarehouse then falls back to two renames.
	errExchangeUnsupported = errors.New("atomic rename exchange not supported")
)

// PartOptions tunes how a part file is written. The zero value selects the
// defaults.
type PartOptions struct {
	// BatchRows is the number of rows buffered in Arrow before they are
	// handed to the Parquet writer (default DefaultBatchRows).
	BatchRows int
	// BatchBytes also ends a batch once its rows hold this many bytes
	// (default DefaultBatchBytes, at most MaxBatchBytes), so that a batch
	// of large rows never overflows Arrow's 32-bit string offsets and
	// memory does not grow with field sizes. Sizes are estimated from the
	// rows' strings.
	BatchBytes int64
	// RowGroupRows is the maximum number of rows of a Parquet row group
	// (default DefaultRowGroupRows). The writer buffers one row group.
	RowGroupRows int
	// RowGroupBytes bounds a row group by its rows' estimated size before
	// compression (default DefaultRowGroupBytes): the writer buffers one
	// row group (compressed) and a reader decodes one at a time. A row
	// group exceeds it only when a single row does.
	RowGroupBytes int64
	// Compression is the Parquet codec. The zero value (Uncompressed)
	// selects zstd: parts are always compressed.
	Compression compress.Compression
	// Allocator provides Arrow memory (default memory.DefaultAllocator);
	// tests pass a checked allocator to prove nothing leaks.
	Allocator memory.Allocator
	// RunBytes is the memory a part of bindings fills with the records of
	// its rows before it writes them, sorted, as a run beside the part
	// (RunsName; default DefaultPartRunBytes): what the snapshot's digest
	// is merged from.
	RunBytes int64
	// Privacy is the privacy policy applied to every row appended, so that
	// a hashed or dropped value never reaches a part; nil keeps every
	// column. FilterPart copies rows as they are stored and ignores it.
	Privacy *Privacy
}

func (o PartOptions) withDefaults() PartOptions {
	if o.BatchRows <= 0 {
		o.BatchRows = DefaultBatchRows
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = DefaultBatchBytes
	}
	o.BatchBytes = min(o.BatchBytes, MaxBatchBytes)
	if o.RowGroupRows <= 0 {
		o.RowGroupRows = DefaultRowGroupRows
	}
	if o.RowGroupBytes <= 0 {
		o.RowGroupBytes = DefaultRowGroupBytes
	}
	if o.Compression == compress.Codecs.Uncompressed {
		o.Compression = compress.Codecs.Zstd
	}
	if o.Allocator == nil {
		o.Allocator = memory.DefaultAllocator
	}
	return o
}

// PartInfo describes a committed part file; it is what checkpoints and
// publishers record about a part.
type PartInfo struct {
	Name  string `json:"name"`
	Rows  int64  `json:"rows"`
	Bytes int64  `json:"bytes"`
	// CRC32C is the Castagnoli checksum of the file's bytes, computed as
	// they were written (staging.CRC32CTable); staging.Store.Checksum
	// gives the stored object's, to detect a damaged part.
	CRC32C uint32 `json:"crc32c"`
}

// PartWriter streams binding rows into one Parquet part file in a staging
// store. Memory is bounded by two Arrow batches (one being filled, one
// being encoded) plus one buffered row group, each bounded in rows and in
// bytes, whatever the number of rows and the size of their fields.
// Nothing is visible under the part's name until Close succeeds. A
// PartWriter is not safe for concurrent use; every writer must end with
// Close or Abort.
//
// A full batch is encoded into Parquet by a goroutine of the writer's own
// while the caller fills the next, so that encoding and compressing (most
// of a part's cost) use a second core. An encoding error is returned by
// the Append after it, or by Close.
type PartWriter struct {
	ctx     context.Context
	name    string
	users   bool      // it holds user rows (UsersPartWriter), not bindings
	mask    *masker   // the privacy policy of appended rows; nil keeps all
	runs    *partRuns // the sorted runs of a part of bindings
	meta    schemas.RowMeta
	opts    PartOptions
	sink    staging.Writer
	counter *countingWriter
	buf     *bufio.Writer
	fw      *pqarrow.FileWriter
	b       *array.RecordBuilder
	sizes   []int64 // estimated bytes of each row in b
	pending int64   // estimated bytes of the rows in b
	rows    int64   // rows appended in total
	err     error   // first write error; the part is then unusable
	done    bool

	// The encoder: started by the first flush, it receives batches on
	// jobs (unbuffered: one batch is encoded while the next is filled)
	// and owns fw, rgRows and rgBytes until it stops. It stops when jobs
	// is closed or at its first error (encErr), and then closes stopped.
	jobs    chan encodeJob
	stopped chan struct{}
	encErr  error
	rgRows  int   // rows in the open row group
	rgBytes int64 // estimated bytes of the open row group
}

// encodeJob is a batch for the encoder and the estimated size of each of
// its rows.
type encodeJob struct {
	rec   arrow.RecordBatch
	sizes []int64
}

// NewPartWriter starts the part file name in store. Every row gets the
// columns of meta, and is written under the privacy policy of
// opts.Privacy. ctx bounds the whole life of the writer.
func NewPartWriter(ctx context.Context, store staging.Store, name string, meta schemas.RowMeta, opts PartOptions) (*PartWriter, error) {
	w, err := newPartWriter(ctx, store, name, opts.Privacy.BindingSchema(), meta, opts)
	if err != nil {
		return nil, err
	}
	w.mask = opts.Privacy.newMasker()
	w.runs = newPartRuns(ctx, store, name, opts.RunBytes)
	return w, nil
}

// newPartWriter starts a part of rows of schema, without a privacy
// policy: the caller sets mask when rows are to be masked.
func newPartWriter(ctx context.Context, store staging.Store, name string, schema *arrow.Schema, meta schemas.RowMeta, opts PartOptions) (*PartWriter, error) {
	opts = opts.withDefaults()
	sink, err := store.Create(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("create part %q: %w", name, err)
	}
	counter := &countingWriter{w: sink, crc: crc32.New(staging.CRC32CTable)}
	// The buffer is not an io.Closer, so closing the Parquet writer does
	// not close the staging writer: Close commits it explicitly.
	buf := bufio.NewWriterSize(counter, writeBufferSize)
	popts := []parquet.WriterProperty{
		parquet.WithCompression(opts.Compression),
		parquet.WithMaxRowGroupLength(int64(opts.RowGroupRows)),
		parquet.WithDataPageSize(dataPageBytes),
		parquet.WithAllocator(opts.Allocator),
	}
	if opts.Compression == compress.Codecs.Zstd {
		// zstd's fastest level: on binding rows it is about a third
		// faster than the default level and its files are no larger.
		popts = append(popts, parquet.WithCompressionLevel(zstdLevel))
	}
	for _, col := range schemas.UniqueColumns {
		// Dictionary pages of values that never repeat cost a hash per
		// value and a fallback to plain pages once full: plain is both
		// faster and smaller there. The other columns repeat (one
		// account, a few services, types and credentials, a user's
		// identity per binding) and keep their dictionaries.
		popts = append(popts, parquet.WithDictionaryFor(col, false))
	}
	for _, col := range noStatsColumns {
		popts = append(popts, parquet.WithStatsFor(col, false))
	}
	props := parquet.NewWriterProperties(popts...)
	arrowProps := pqarrow.NewArrowWriterProperties(
		pqarrow.WithStoreSchema(),
		pqarrow.WithAllocator(opts.Allocator),
	)
	fw, err := pqarrow.NewFileWriter(schema, buf, props, arrowProps)
	if err != nil {
		sink.Abort()
		return nil, fmt.Errorf("start parquet part %q: %w", name, err)
	}
	return &PartWriter{
		ctx:     ctx,
		name:    name,
		meta:    meta,
		opts:    opts,
		sink:    sink,
		counter: counter,
		buf:     buf,
		fw:      fw,
		b:       array.NewRecordBuilder(opts.Allocator, schema),
	}, nil
}

// Append adds bindings to the part, as the privacy policy of the writer's
// PartOptions writes them (bs is not changed). Rows are encoded into
// Parquet whenever a batch is full (BatchRows or BatchBytes). A binding
// with a field longer than MaxValueBytes fails the whole call with
// ErrValueTooLarge before any of its rows is added; any other error leaves
// the writer unusable, and the caller should Abort it.
func (w *PartWriter) Append(bs []twilio.Binding) error {
	if w.users {
		return fmt.Errorf("append bindings to part %q: it holds other rows", w.name)
	}
	for i := range bs {
		if err := checkValues(&bs[i]); err != nil {
			return fmt.Errorf("append to part %q: binding %d of %d: %w", w.name, i+1, len(bs), err)
		}
	}
	for i := range bs {
		if err := w.add(w.meta, w.mask.binding(&bs[i])); err != nil {
			return err
		}
	}
	return nil
}

// checkValues refuses a binding with a string longer than MaxValueBytes,
// naming the column.
func checkValues(bd *twilio.Binding) error {
	check := func(col string, n int) error {
		if n > MaxValueBytes {
			return fmt.Errorf("%w: %s is %d bytes, more than %d", ErrValueTooLarge, col, n, MaxValueBytes)
		}
		return nil
	}
	strs := []struct {
		col string
		s   *string
	}{
		{schemas.ColSID, bd.SID}, {schemas.ColAccountSID, bd.AccountSID}, {schemas.ColServiceSID, bd.ServiceSID},
		{schemas.ColEndpoint, bd.Endpoint}, {schemas.ColIdentity, bd.Identity}, {schemas.ColUserSID, bd.UserSID},
		{schemas.ColCredentialSID, bd.CredentialSID}, {schemas.ColBindingType, bd.BindingType}, {schemas.ColURL, bd.URL},
	}
	for _, c := range strs {
		if c.s != nil {
			if err := check(c.col, len(*c.s)); err != nil {
				return err
			}
		}
	}
	for _, mt := range bd.MessageTypes {
		if err := check(schemas.ColMessageTypes, len(mt)); err != nil {
			return err
		}
	}
	return nil
}

// bindingBytes estimates what a binding row takes in Arrow memory and in
// an uncompressed Parquet column chunk: its strings plus a fixed overhead.
func bindingBytes(bd *twilio.Binding) int64 {
	n := int64(rowOverhead)
	for _, s := range []*string{bd.SID, bd.AccountSID, bd.ServiceSID, bd.Endpoint, bd.Identity, bd.UserSID, bd.CredentialSID, bd.BindingType, bd.URL} {
		if s != nil {
			n += int64(len(*s))
		}
	}
	for _, mt := range bd.MessageTypes {
		n += int64(len(mt)) + 4
	}
	return n
}

// add appends one row as it is, with its own meta columns, flushing a
// full batch. The privacy policy is the caller's to apply.
func (w *PartWriter) add(meta schemas.RowMeta, bd *twilio.Binding) error {
	if err := w.addRow(bindingBytes(bd), func(b *array.RecordBuilder) { schemas.AppendBinding(b, meta, bd) }); err != nil {
		return err
	}
	if w.runs != nil {
		if err := w.runs.add(bd, meta.SyncedAt); err != nil {
			w.err = fmt.Errorf("write part %q: %w", w.name, err)
			return w.err
		}
	}
	return nil
}

// addRow appends one row of the given estimated size built by fn,
// flushing a full batch.
func (w *PartWriter) addRow(size int64, fn func(*array.RecordBuilder)) error {
	if w.done {
		return fmt.Errorf("append to part %q: %w", w.name, ErrClosed)
	}
	if w.err != nil {
		return w.err
	}
	fn(w.b)
	w.sizes = append(w.sizes, size)
	w.pending += size
	w.rows++
	if len(w.sizes) >= w.opts.BatchRows || w.pending >= w.opts.BatchBytes {
		return w.flush()
	}
	return nil
}

// flush hands the buffered rows to the Parquet writer, cutting row groups
// at RowGroupRows rows or before they pass RowGroupBytes: a full group is
// encoded and written out before the next one starts, so only one group
// is ever buffered.
func (w *PartWriter) flush() error {
	if len(w.sizes) == 0 {
		return nil
	}
	if err := w.ctx.Err(); err != nil {
		w.err = fmt.Errorf("write part %q: %w", w.name, err)
		return w.err
	}
	rec := w.b.NewRecordBatch()
	reserveLike(w.b, rec)
	job := encodeJob{rec: rec, sizes: slices.Clone(w.sizes)}
	w.sizes, w.pending = w.sizes[:0], 0
	if w.jobs == nil {
		w.jobs, w.stopped = make(chan encodeJob), make(chan struct{})
		go w.encode()
	}
	select {
	case w.jobs <- job:
		return nil
	case <-w.stopped:
		rec.Release()
		w.err = w.encErr
		return w.err
	}
}

// encode is the encoder's goroutine: it writes each batch received into
// the Parquet writer until jobs is closed or a write fails.
func (w *PartWriter) encode() {
	defer close(w.stopped)
	for job := range w.jobs {
		err := w.writeGroups(job.rec, job.sizes)
		job.rec.Release()
		if err != nil {
			w.encErr = fmt.Errorf("write part %q: %w", w.name, err)
			return
		}
	}
}

// stopEncoder stops the encoder, once the batch it holds is written, and
// returns its error; after it, fw is the caller's again.
func (w *PartWriter) stopEncoder() error {
	if w.jobs == nil {
		return nil
	}
	close(w.jobs)
	<-w.stopped
	w.jobs = nil
	return w.encErr
}

// reserveLike makes room in the builders of b for a batch like rec, the
// batch they just built, and an eighth more: a builder left to grow from
// nothing reallocates each of its buffers some twenty times per batch.
func reserveLike(b *array.RecordBuilder, rec arrow.RecordBatch) {
	n := int(rec.NumRows())
	n += n / 8
	for i, fb := range b.Fields() {
		reserveBuilder(fb, rec.Column(i), n)
	}
}

func reserveBuilder(b array.Builder, like arrow.Array, n int) {
	b.Reserve(n)
	switch b := b.(type) {
	case *array.StringBuilder:
		if s, ok := like.(*array.String); ok {
			m := len(s.ValueBytes())
			b.ReserveData(m + m/8)
		}
	case *array.ListBuilder:
		if l, ok := like.(*array.List); ok && l.Len() > 0 {
			values := l.ListValues()
			m := values.Len() * n / l.Len()
			reserveBuilder(b.ValueBuilder(), values, m)
		}
	}
}

// writeGroups writes rec, whose rows have the given sizes, into the open
// row group and as many new ones as the bounds require.
func (w *PartWriter) writeGroups(rec arrow.RecordBatch, sizes []int64) error {
	for start := 0; start < len(sizes); {
		end := start
		for end < len(sizes) && w.rgRows+(end-start) < w.opts.RowGroupRows {
			// A row that does not fit goes to the next group, unless the
			// group would otherwise stay empty.
			if w.rgRows+(end-start) > 0 && w.rgBytes+sizes[end] > w.opts.RowGroupBytes {
				break
			}
			w.rgBytes += sizes[end]
			end++
		}
		if end == start {
			if err := w.fw.NewBufferedRowGroupChecked(); err != nil {
				return err
			}
			w.rgRows, w.rgBytes = 0, 0
			continue
		}
		if err := w.writeSlice(rec, start, end); err != nil {
			return err
		}
		w.rgRows += end - start
		start = end
	}
	return nil
}

// writeSlice writes rows [start, end) of rec into the open row group.
func (w *PartWriter) writeSlice(rec arrow.RecordBatch, start, end int) error {
	if start == 0 && end == int(rec.NumRows()) {
		return w.fw.WriteBuffered(rec)
	}
	part := rec.NewSlice(int64(start), int64(end))
	defer part.Release()
	return w.fw.WriteBuffered(part)
}

// Rows returns the number of rows appended so far.
func (w *PartWriter) Rows() int64 { return w.rows }

// Close writes the remaining rows and the Parquet footer and commits the
// part in the store, making it durable. A part with no rows is a valid
// Parquet file with no row groups. On error nothing is committed.
func (w *PartWriter) Close() (PartInfo, error) {
	if w.done {
		return PartInfo{}, fmt.Errorf("close part %q: %w", w.name, ErrClosed)
	}
	err := w.err
	if err == nil {
		err = w.flush()
	}
	w.done = true
	w.b.Release()
	if eerr := w.stopEncoder(); err == nil {
		err = eerr
	}
	if cerr := w.fw.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("finish parquet part %q: %w", w.name, cerr)
	}
	if err == nil {
		if ferr := w.buf.Flush(); ferr != nil {
			err = fmt.Errorf("write part %q: %w", w.name, ferr)
		}
	}
	info := PartInfo{Name: w.name, Rows: w.rows, Bytes: w.counter.n, CRC32C: w.counter.crc.Sum32()}
	if err == nil && w.runs != nil {
		// The runs are committed first: a part is never without them
		// for want of their commit (runs without their part are
		// harmless, as they name it).
		err = w.runs.finish(info)
	}
	if err != nil {
		if w.runs != nil {
			w.runs.abort()
		}
		w.sink.Abort()
		return PartInfo{}, err
	}
	if err := w.sink.Close(); err != nil {
		return PartInfo{}, fmt.Errorf("commit part %q: %w", w.name, err)
	}
	return info, nil
}

// Abort discards the part: nothing is committed and memory is released. It
// does nothing after Close or a previous Abort.
func (w *PartWriter) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.b.Release()
	_ = w.stopEncoder() // the part is discarded: its error does not matter
	// Closing the Parquet writer frees its buffered row group; the footer
	// it writes goes to a staging writer that is discarded right after.
	w.fw.Close()
	w.sink.Abort()
	if w.runs != nil {
		w.runs.abort()
	}
}

// countingWriter counts the bytes that reach the staging writer and, with
// a crc, checksums them, so a part's size and CRC32C are known without
// reading it back.
type countingWriter struct {
	w   io.Writer
	n   int64
	crc hash.Hash32
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if c.crc != nil {
		c.crc.Write(p[:n])
	}
	return n, err
}

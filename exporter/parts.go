// Package exporter turns binding rows into Parquet part files in a staging
// store, reads them back, and publishes a finished snapshot to readers. It
// knows Arrow and Parquet but nothing of Twilio's HTTP API: rows arrive as
// twilio.Binding values and leave as schemas.Row values.
package exporter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

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

// Default sizes of a part file. A record batch of 8192 rows is a few MB of
// Arrow memory; a row group of 128Ki rows keeps the encoded, compressed
// column chunks of one group (what the writer buffers) to a few MB too,
// while being large enough for efficient scans.
const (
	DefaultBatchRows    = 8192
	DefaultRowGroupRows = 64 * 1024
)

// writeBufferSize batches the Parquet writer's many small writes into
// larger ones for the staging store.
const writeBufferSize = 256 * 1024

// Sentinel errors of the exporter.
var (
	// ErrClosed is returned by a PartWriter used after Close or Abort.
	ErrClosed = errors.New("part writer is closed")

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
	// RowGroupRows is the maximum number of rows of a Parquet row group
	// (default DefaultRowGroupRows). The writer buffers one row group.
	RowGroupRows int
	// Compression is the Parquet codec. The zero value (Uncompressed)
	// selects zstd: parts are always compressed.
	Compression compress.Compression
	// Allocator provides Arrow memory (default memory.DefaultAllocator);
	// tests pass a checked allocator to prove nothing leaks.
	Allocator memory.Allocator
}

func (o PartOptions) withDefaults() PartOptions {
	if o.BatchRows <= 0 {
		o.BatchRows = DefaultBatchRows
	}
	if o.RowGroupRows <= 0 {
		o.RowGroupRows = DefaultRowGroupRows
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
}

// PartWriter streams binding rows into one Parquet part file in a staging
// store. Memory is bounded by one Arrow batch plus one buffered row group,
// whatever the number of rows. Nothing is visible under the part's name
// until Close succeeds. A PartWriter is not safe for concurrent use.
type PartWriter struct {
	ctx     context.Context
	name    string
	schema  *arrow.Schema
	meta    schemas.RowMeta
	opts    PartOptions
	sink    staging.Writer
	counter *countingWriter
	buf     *bufio.Writer
	fw      *pqarrow.FileWriter
	b       *array.RecordBuilder
	pending int   // rows in b
	rows    int64 // rows appended in total
	err     error // first write error; the part is then unusable
	done    bool
}

// NewPartWriter starts the part file name in store. Every row gets the
// columns of meta. ctx bounds the whole life of the writer.
func NewPartWriter(ctx context.Context, store staging.Store, name string, meta schemas.RowMeta, opts PartOptions) (*PartWriter, error) {
	return newPartWriter(ctx, store, name, schemas.Binding(), meta, opts)
}

func newPartWriter(ctx context.Context, store staging.Store, name string, schema *arrow.Schema, meta schemas.RowMeta, opts PartOptions) (*PartWriter, error) {
	opts = opts.withDefaults()
	sink, err := store.Create(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("create part %q: %w", name, err)
	}
	counter := &countingWriter{w: sink}
	// The buffer is not an io.Closer, so closing the Parquet writer does
	// not close the staging writer: Close commits it explicitly.
	buf := bufio.NewWriterSize(counter, writeBufferSize)
	props := parquet.NewWriterProperties(
		parquet.WithCompression(opts.Compression),
		parquet.WithMaxRowGroupLength(int64(opts.RowGroupRows)),
		parquet.WithAllocator(opts.Allocator),
	)
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
		schema:  schema,
		meta:    meta,
		opts:    opts,
		sink:    sink,
		counter: counter,
		buf:     buf,
		fw:      fw,
		b:       array.NewRecordBuilder(opts.Allocator, schema),
	}, nil
}

// Append adds bindings to the part. Rows are encoded into Parquet every
// BatchRows rows; an error leaves the writer unusable, and the caller should
// Abort it.
func (w *PartWriter) Append(bs []twilio.Binding) error {
	if w.schema != schemas.Binding() {
		return fmt.Errorf("append bindings to part %q: it holds other rows", w.name)
	}
	for i := range bs {
		if err := w.add(w.meta, &bs[i]); err != nil {
			return err
		}
	}
	return nil
}

// add appends one row with its own meta columns, flushing a full batch.
func (w *PartWriter) add(meta schemas.RowMeta, bd *twilio.Binding) error {
	return w.addRow(func(b *array.RecordBuilder) { schemas.AppendBinding(b, meta, bd) })
}

// addRow appends one row built by fn, flushing a full batch.
func (w *PartWriter) addRow(fn func(*array.RecordBuilder)) error {
	if w.done {
		return fmt.Errorf("append to part %q: %w", w.name, ErrClosed)
	}
	if w.err != nil {
		return w.err
	}
	fn(w.b)
	w.pending++
	w.rows++
	if w.pending >= w.opts.BatchRows {
		return w.flush()
	}
	return nil
}

// flush hands the buffered rows to the Parquet writer. Row groups are cut
// at RowGroupRows: a full group is encoded and written out before the next
// one starts, so only one group is ever buffered.
func (w *PartWriter) flush() error {
	if w.pending == 0 {
		return nil
	}
	if err := w.ctx.Err(); err != nil {
		w.err = fmt.Errorf("write part %q: %w", w.name, err)
		return w.err
	}
	rec := w.b.NewRecordBatch()
	defer rec.Release()
	w.pending = 0
	if err := w.startRowGroupIfFull(); err != nil {
		w.err = fmt.Errorf("write part %q: %w", w.name, err)
		return w.err
	}
	if err := w.fw.WriteBuffered(rec); err != nil {
		w.err = fmt.Errorf("write part %q: %w", w.name, err)
		return w.err
	}
	return nil
}

// startRowGroupIfFull closes a row group that reached RowGroupRows, so that
// WriteBuffered never has to split a record at offset zero.
func (w *PartWriter) startRowGroupIfFull() error {
	n, err := w.fw.RowGroupNumRows()
	if err != nil {
		return err
	}
	if n >= w.opts.RowGroupRows {
		return w.fw.NewBufferedRowGroupChecked()
	}
	return nil
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
	if cerr := w.fw.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("finish parquet part %q: %w", w.name, cerr)
	}
	if err == nil {
		if ferr := w.buf.Flush(); ferr != nil {
			err = fmt.Errorf("write part %q: %w", w.name, ferr)
		}
	}
	if err != nil {
		w.sink.Abort()
		return PartInfo{}, err
	}
	if err := w.sink.Close(); err != nil {
		return PartInfo{}, fmt.Errorf("commit part %q: %w", w.name, err)
	}
	return PartInfo{Name: w.name, Rows: w.rows, Bytes: w.counter.n}, nil
}

// Abort discards the part: nothing is committed and memory is released. It
// does nothing after Close or a previous Abort.
func (w *PartWriter) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.b.Release()
	// Closing the Parquet writer frees its buffered row group; the footer
	// it writes goes to a staging writer that is discarded right after.
	w.fw.Close()
	w.sink.Abort()
}

// countingWriter counts the bytes that reach the staging writer.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

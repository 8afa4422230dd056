package exporter

import (
	"context"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
)

// Bounds of what is decoded at a time when reading a part: at most
// readBatchRows rows, and fewer when the row group's rows are large, so
// that a batch holds about readBatchBytes (and never more than its row
// group, which the writer bounds by PartOptions.RowGroupBytes).
const (
	readBatchRows  = DefaultBatchRows
	readBatchBytes = DefaultBatchBytes
)

// maxPageBytes is the largest Parquet page the reader accepts, compressed
// or not. A part's pages hold at most one batch of one column plus one
// value (MaxBatchBytes + MaxValueBytes); Arrow's default limit on
// compressed pages (64 MiB) would reject a part holding a single field of
// 100 MB that does not compress.
const maxPageBytes = 512 << 20

// readBufferBytes is the buffer of the reader's stream over a column
// chunk: pages are read one at a time instead of whole column chunks.
const readBufferBytes = 1 << 20

// ReadPart calls fn for every row of the part name, in file order, decoding
// one record batch at a time so memory does not grow with the part. It stops
// at the first error of fn and returns it wrapped.
func ReadPart(ctx context.Context, store staging.Store, name string, fn func(schemas.Row) error) error {
	return visitPart(ctx, store, name, func(r *schemas.Row) error { return fn(r.Clone()) })
}

// ReadParquetFile calls fn for every row of the Parquet file of size bytes
// held by r. The file must have the columns of schemas.Binding (any extra
// columns are ignored); any Parquet file with those columns works, not only
// the parts this package writes.
func ReadParquetFile(ctx context.Context, r io.ReaderAt, size int64, fn func(schemas.Row) error) error {
	return visitParquetFile(ctx, r, size, func(r *schemas.Row) error { return fn(r.Clone()) })
}

// visitPart is ReadPart with a row valid only until fn returns
// (schemas.VisitBindings), sparing a copy of every field.
func visitPart(ctx context.Context, store staging.Store, name string, fn func(*schemas.Row) error) error {
	obj, err := store.Open(ctx, name)
	if err != nil {
		return fmt.Errorf("read part %q: %w", name, err)
	}
	defer obj.Close()
	if err := visitParquetFile(ctx, obj, obj.Size(), fn); err != nil {
		return fmt.Errorf("read part %q: %w", name, err)
	}
	return nil
}

// visitParquetFile is ReadParquetFile with a row valid only until fn
// returns.
func visitParquetFile(ctx context.Context, r io.ReaderAt, size int64, fn func(*schemas.Row) error) error {
	return readRecords(ctx, r, size, func(rec arrow.RecordBatch) error {
		var fnErr error
		err := schemas.VisitBindings(rec, func(row *schemas.Row) error {
			fnErr = fn(row)
			return fnErr
		})
		if err != nil && fnErr == nil {
			return fmt.Errorf("decode rows: %w", err)
		}
		return err
	})
}

// ReadUsersFile calls fn for every row of a users part file (schemas.Users).
func ReadUsersFile(ctx context.Context, r io.ReaderAt, size int64, fn func(schemas.UserRow) error) error {
	return readRecords(ctx, r, size, func(rec arrow.RecordBatch) error {
		rows, err := schemas.UsersFromRecord(rec)
		if err != nil {
			return fmt.Errorf("decode user rows: %w", err)
		}
		for _, row := range rows {
			if err := fn(row); err != nil {
				return err
			}
		}
		return nil
	})
}

// readRecords calls fn for every record batch of a Parquet file, one row
// group at a time, with batches sized from the row group's metadata so
// that memory stays bounded whatever the size of the rows.
func readRecords(ctx context.Context, r io.ReaderAt, size int64, fn func(arrow.RecordBatch) error) error {
	props := parquet.NewReaderProperties(memory.DefaultAllocator)
	props.MaxCompressedPageSize = maxPageBytes
	props.MaxUncompressedPageSize = maxPageBytes
	props.BufferedStreamEnabled = true
	props.BufferSize = readBufferBytes
	pf, err := file.NewParquetReader(io.NewSectionReader(r, 0, size), file.WithReadProps(props))
	if err != nil {
		return fmt.Errorf("open parquet file: %w", err)
	}
	defer pf.Close()
	for g := 0; g < pf.NumRowGroups(); g++ {
		md := pf.MetaData().RowGroup(g)
		fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: batchRows(md.NumRows(), md.TotalByteSize())}, memory.DefaultAllocator)
		if err != nil {
			return fmt.Errorf("open parquet file: %w", err)
		}
		if err := readGroup(ctx, fr, g, fn); err != nil {
			return err
		}
	}
	return nil
}

// batchRows is how many rows of a row group of rows rows and bytes bytes
// (uncompressed) to decode at a time: readBatchRows, or fewer so that a
// batch holds about readBatchBytes; at least one.
func batchRows(rows, bytes int64) int64 {
	n := int64(readBatchRows)
	if bytes > 0 && rows > 0 {
		// Divide first: rows*readBatchBytes could overflow for a huge group.
		perRow := max(1, bytes/rows)
		n = min(n, readBatchBytes/perRow)
	}
	return max(1, n)
}

// readGroup calls fn for every record batch of row group g.
func readGroup(ctx context.Context, fr *pqarrow.FileReader, g int, fn func(arrow.RecordBatch) error) error {
	rr, err := fr.GetRecordReader(ctx, nil, []int{g})
	if err != nil {
		return fmt.Errorf("read parquet file: row group %d: %w", g, err)
	}
	defer rr.Release()
	for rr.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(rr.RecordBatch()); err != nil {
			return err
		}
	}
	if err := rr.Err(); err != nil {
		return fmt.Errorf("read parquet file: row group %d: %w", g, err)
	}
	return nil
}

// FilterPart writes to dst a copy of the part src without the rows for
// which keep returns false, and commits it; src is left unchanged. It is how
// a user whose rows must be fetched again is dropped from a part. Every row
// keeps its own snapshot_date and synced_at, and is copied as it is
// stored: the privacy policy src was written under (its hashed and dropped
// columns, its metadata) carries over, and opts.Privacy is not applied
// again. dst must differ from src, so a crash at any point leaves src
// intact: the caller swaps names in its checkpoint once dst is committed.
func FilterPart(ctx context.Context, store staging.Store, src, dst string, keep func(r *schemas.Row) bool, opts PartOptions) (PartInfo, error) {
	if src == dst {
		return PartInfo{}, fmt.Errorf("filter part %q: destination must differ from source", src)
	}
	tag, err := partTag(ctx, store, src)
	if err != nil {
		return PartInfo{}, fmt.Errorf("filter part %q: %w", src, err)
	}
	schema, err := bindingSchemaOfTag(tag)
	if err != nil {
		return PartInfo{}, fmt.Errorf("filter part %q: %w", src, err)
	}
	w, err := newPartWriter(ctx, store, dst, schema, schemas.RowMeta{}, opts)
	if err != nil {
		return PartInfo{}, fmt.Errorf("filter part %q: %w", src, err)
	}
	w.runs = newPartRuns(ctx, store, dst, opts.RunBytes)
	err = ReadPart(ctx, store, src, func(r schemas.Row) error {
		if !keep(&r) {
			return nil
		}
		return w.add(schemas.RowMeta{SnapshotDate: r.SnapshotDate, SyncedAt: r.SyncedAt}, &r.Binding)
	})
	if err != nil {
		w.Abort()
		return PartInfo{}, fmt.Errorf("filter part %q into %q: %w", src, dst, err)
	}
	info, err := w.Close()
	if err != nil {
		return PartInfo{}, fmt.Errorf("filter part %q into %q: %w", src, dst, err)
	}
	return info, nil
}

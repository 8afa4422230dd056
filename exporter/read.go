package exporter

import (
	"context"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
)

// readBatchRows is the number of rows decoded at a time when reading a part.
const readBatchRows = DefaultBatchRows

// ReadPart calls fn for every row of the part name, in file order, decoding
// one record batch at a time so memory does not grow with the part. It stops
// at the first error of fn and returns it wrapped.
func ReadPart(ctx context.Context, store staging.Store, name string, fn func(schemas.Row) error) error {
	obj, err := store.Open(ctx, name)
	if err != nil {
		return fmt.Errorf("read part %q: %w", name, err)
	}
	defer obj.Close()
	if err := ReadParquetFile(ctx, obj, obj.Size(), fn); err != nil {
		return fmt.Errorf("read part %q: %w", name, err)
	}
	return nil
}

// ReadParquetFile calls fn for every row of the Parquet file of size bytes
// held by r. The file must have the columns of schemas.Binding (any extra
// columns are ignored); any Parquet file with those columns works, not only
// the parts this package writes.
func ReadParquetFile(ctx context.Context, r io.ReaderAt, size int64, fn func(schemas.Row) error) error {
	return readRecords(ctx, r, size, func(rec arrow.RecordBatch) error {
		rows, err := schemas.BindingsFromRecord(rec)
		if err != nil {
			return fmt.Errorf("decode rows: %w", err)
		}
		for _, row := range rows {
			if err := fn(row); err != nil {
				return err
			}
		}
		return nil
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

// readRecords calls fn for every record batch of a Parquet file.
func readRecords(ctx context.Context, r io.ReaderAt, size int64, fn func(arrow.RecordBatch) error) error {
	pf, err := file.NewParquetReader(io.NewSectionReader(r, 0, size))
	if err != nil {
		return fmt.Errorf("open parquet file: %w", err)
	}
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: readBatchRows}, memory.DefaultAllocator)
	if err != nil {
		return fmt.Errorf("open parquet file: %w", err)
	}
	rr, err := fr.GetRecordReader(ctx, nil, nil)
	if err != nil {
		return fmt.Errorf("read parquet file: %w", err)
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
		return fmt.Errorf("read parquet file: %w", err)
	}
	return nil
}

// FilterPart writes to dst a copy of the part src without the rows for
// which keep returns false, and commits it; src is left unchanged. It is how
// a user whose rows must be fetched again is dropped from a part. Every row
// keeps its own snapshot_date and synced_at. dst must differ from src, so a
// crash at any point leaves src intact: the caller swaps names in its
// checkpoint once dst is committed.
func FilterPart(ctx context.Context, store staging.Store, src, dst string, keep func(r *schemas.Row) bool, opts PartOptions) (PartInfo, error) {
	if src == dst {
		return PartInfo{}, fmt.Errorf("filter part %q: destination must differ from source", src)
	}
	w, err := NewPartWriter(ctx, store, dst, schemas.RowMeta{}, opts)
	if err != nil {
		return PartInfo{}, fmt.Errorf("filter part %q: %w", src, err)
	}
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

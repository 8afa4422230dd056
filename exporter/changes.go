package exporter

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
)

// ChangesTable is the table of a snapshot that holds one row per binding
// added, removed or changed since the previous published snapshot
// (schemas.Changes). In the local warehouse it is user_bindings_changes.
const ChangesTable = "changes"

// ChangesTableDir is the directory of the changes table under a local
// warehouse's Path.
const ChangesTableDir = TableDir + "_" + ChangesTable

// ChangesSnapshotDir returns the directory of the changes of the snapshot
// of date.
func (l LocalWarehouse) ChangesSnapshotDir(date time.Time) string {
	return filepath.Join(l.Path, ChangesTableDir, partitionName(date))
}

// ChangesOptions say which two digests to compare and where the changes
// go.
type ChangesOptions struct {
	// Previous is the digest of the snapshot compared with; nil makes
	// every binding of Current a row of kind initial (a baseline).
	Previous *DigestRef
	// Current is the digest of the snapshot whose changes are written.
	Current DigestRef
	// Store and Name say where the part of the changes is written.
	Store staging.Store
	Name  string
	// PartOptions bound the part as they bound the binding parts.
	PartOptions PartOptions
}

// ChangesInfo describes a written part of changes.
type ChangesInfo struct {
	Part PartInfo
	// Counts holds the rows by kind of change.
	Counts map[string]int64
}

// WriteChanges compares the digests of two snapshots and writes one row
// per binding added, removed or changed (or, without a previous digest,
// one initial row per binding) as the part opts.Name, in digest order.
// Bindings are matched on (service_sid, sid); a key that a snapshot holds
// more than once (which only a misbehaving server causes) is matched
// occurrence by occurrence in record order, and the occurrences left over
// are added or removed. Both digests are read as streams: memory does not
// grow with their size.
func WriteChanges(ctx context.Context, opts ChangesOptions) (ChangesInfo, error) {
	fail := func(err error) (ChangesInfo, error) {
		return ChangesInfo{}, fmt.Errorf("write changes of %s: %w", opts.Current.Date.UTC().Format(time.DateOnly), err)
	}
	cur, err := openDigest(ctx, opts.Current)
	if err != nil {
		return fail(err)
	}
	defer cur.close()
	var prev *digestReader
	var prevDate *time.Time
	if opts.Previous != nil {
		if prev, err = openDigest(ctx, *opts.Previous); err != nil {
			return fail(err)
		}
		defer prev.close()
		d := midnight(opts.Previous.Date)
		prevDate = &d
	}
	w, err := newChangesWriter(ctx, opts.Store, opts.Name, opts.PartOptions)
	if err != nil {
		return fail(err)
	}
	date := midnight(opts.Current.Date)
	counts := map[string]int64{}
	// Rows are views of the records, which stay valid until the next
	// record is read: the writer copies what it appends.
	var oldView, newView rowView
	emit := func(kind string, rec []byte, from *digestReader) error {
		row, err := newView.decode(rec)
		if err != nil {
			return from.damaged(err)
		}
		return w.append(kind, nil, date, prevDate, row)
	}
	err = mergeDigests(prev, cur, func(old, new []byte) error {
		switch {
		case prev == nil:
			counts[schemas.ChangeInitial]++
			return emit(schemas.ChangeInitial, new, cur)
		case new == nil:
			counts[schemas.ChangeRemoved]++
			return emit(schemas.ChangeRemoved, old, prev)
		case old == nil:
			counts[schemas.ChangeAdded]++
			return emit(schemas.ChangeAdded, new, cur)
		}
		o, err := oldView.decode(old)
		if err != nil {
			return prev.damaged(err)
		}
		n, err := newView.decode(new)
		if err != nil {
			return cur.damaged(err)
		}
		cols := changedColumns(&o.Binding, &n.Binding)
		if len(cols) == 0 {
			return nil
		}
		counts[schemas.ChangeChanged]++
		return w.append(schemas.ChangeChanged, cols, date, prevDate, n)
	})
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		w.Abort()
		return fail(err)
	}
	info, err := w.Close()
	if err != nil {
		return fail(err)
	}
	return ChangesInfo{Part: info, Counts: counts}, nil
}

// mergeDigests walks two digests in step and calls fn with each pair of
// records of one key (old, new), an old record alone (new nil) or a new
// one alone (old nil). A nil prev is a digest without records.
func mergeDigests(prev, cur *digestReader, fn func(old, new []byte) error) error {
	next := func(d *digestReader) ([]byte, error) {
		if d == nil {
			return nil, nil
		}
		rec, err := d.next()
		if err == io.EOF {
			return nil, nil
		}
		return rec, err
	}
	old, err := next(prev)
	if err != nil {
		return err
	}
	new, err := next(cur)
	if err != nil {
		return err
	}
	for old != nil || new != nil {
		c := 0
		switch {
		case old == nil:
			c = 1
		case new == nil:
			c = -1
		default:
			c = compareKeys(old, new)
		}
		switch {
		case c < 0:
			err = fn(old, nil)
		case c > 0:
			err = fn(nil, new)
		default:
			err = fn(old, new)
		}
		if err != nil {
			return err
		}
		if c <= 0 {
			if old, err = next(prev); err != nil {
				return err
			}
		}
		if c >= 0 {
			if new, err = next(cur); err != nil {
				return err
			}
		}
	}
	return nil
}

func midnight(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// changesWriter streams change rows into a part (schemas.Changes), with
// the bounds of a PartWriter.
type changesWriter struct{ p *PartWriter }

func newChangesWriter(ctx context.Context, store staging.Store, name string, opts PartOptions) (*changesWriter, error) {
	p, err := newPartWriter(ctx, store, name, schemas.Changes(), schemas.RowMeta{}, opts)
	if err != nil {
		return nil, err
	}
	return &changesWriter{p}, nil
}

func (w *changesWriter) append(kind string, cols []string, date time.Time, prev *time.Time, r *schemas.Row) error {
	c := schemas.ChangeRow{SnapshotDate: date, Change: kind, ChangedColumns: cols, PreviousSnapshotDate: prev, Binding: r.Binding, SyncedAt: r.SyncedAt}
	size := bindingBytes(&r.Binding) + 16
	for _, col := range cols {
		size += int64(len(col)) + 4
	}
	return w.p.addRow(size, func(b *array.RecordBuilder) { schemas.AppendChange(b, &c) })
}

// Close commits the part; see PartWriter.Close.
func (w *changesWriter) Close() (PartInfo, error) { return w.p.Close() }

// Abort discards the part; see PartWriter.Abort.
func (w *changesWriter) Abort() { w.p.Abort() }

// ReadChangesFile calls fn for every row of a changes part file
// (schemas.Changes).
func ReadChangesFile(ctx context.Context, r io.ReaderAt, size int64, fn func(schemas.ChangeRow) error) error {
	return readRecords(ctx, r, size, func(rec arrow.RecordBatch) error {
		rows, err := schemas.ChangesFromRecord(rec)
		if err != nil {
			return fmt.Errorf("decode change rows: %w", err)
		}
		for _, row := range rows {
			if err := fn(row); err != nil {
				return err
			}
		}
		return nil
	})
}

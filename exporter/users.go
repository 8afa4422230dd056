package exporter

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
)

// UsersPartWriter streams user rows (schemas.Users) into one Parquet part
// file, with the same guarantees as PartWriter.
type UsersPartWriter struct{ p *PartWriter }

// NewUsersPartWriter starts the users part file name in store.
func NewUsersPartWriter(ctx context.Context, store staging.Store, name string, meta schemas.RowMeta, opts PartOptions) (*UsersPartWriter, error) {
	p, err := newPartWriter(ctx, store, name, opts.Privacy.UsersSchema(), meta, opts)
	if err != nil {
		return nil, err
	}
	p.users, p.mask = true, opts.Privacy.newMasker()
	return &UsersPartWriter{p}, nil
}

// Append adds one user row, as the privacy policy of the writer's
// PartOptions writes it (u is not changed). A field longer than
// MaxValueBytes is refused with ErrValueTooLarge, and a row without a
// user with an error; the writer stays usable.
func (w *UsersPartWriter) Append(u *schemas.UserRow) error {
	if u.User == "" {
		return fmt.Errorf("append to part %q: a user row of service %q has no user", w.p.name, u.ServiceSID)
	}
	for _, s := range []*string{&u.ServiceSID, &u.User, u.UserSID, u.Identity, &u.State} {
		if s != nil && len(*s) > MaxValueBytes {
			return fmt.Errorf("append to part %q: user of service %q: %w: a field is %d bytes, more than %d", w.p.name, u.ServiceSID, ErrValueTooLarge, len(*s), MaxValueBytes)
		}
	}
	u = w.p.mask.user(u)
	size := int64(rowOverhead + len(u.ServiceSID) + len(u.User) + len(u.State))
	for _, s := range []*string{u.UserSID, u.Identity} {
		if s != nil {
			size += int64(len(*s))
		}
	}
	meta := w.p.meta
	return w.p.addRow(size, func(b *array.RecordBuilder) { schemas.AppendUser(b, meta, u) })
}

// Rows returns the number of rows appended so far.
func (w *UsersPartWriter) Rows() int64 { return w.p.Rows() }

// Close commits the part; see PartWriter.Close.
func (w *UsersPartWriter) Close() (PartInfo, error) { return w.p.Close() }

// Abort discards the part; see PartWriter.Abort.
func (w *UsersPartWriter) Abort() { w.p.Abort() }

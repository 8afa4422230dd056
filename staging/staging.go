// Package staging is the durable scratch space of a snapshot: Parquet part
// files and the checkpoint log live here until the snapshot is published.
// A Store is a flat namespace of objects addressed by slash-separated names,
// implemented by a local directory (Dir) and by a GCS bucket prefix (GCS).
package staging

import (
	"context"
	"errors"
	"hash/crc32"
	"io"
)

// Sentinel errors returned by every Store implementation.
var (
	// ErrNotExist is returned (wrapped) by Open and Delete when no object has the name.
	ErrNotExist = errors.New("object does not exist")
	// ErrExists is returned by PutIfAbsent when the name is already taken.
	ErrExists = errors.New("object already exists")
	// ErrLocked is returned by Lock when another process holds the lock.
	ErrLocked = errors.New("locked by another process")
)

// Writer receives the bytes of one object. Nothing is visible under the
// object's name until Close returns nil; after that the object is durable
// (fsynced locally, finalized on GCS). Abort discards what was written.
type Writer interface {
	io.Writer
	Close() error
	Abort()
}

// Object is an open object that can be read at any offset (Parquet readers
// need this).
type Object interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// Store is the staging area of bindsync. Every method is safe for concurrent use.
type Store interface {
	// Create starts writing the object name, replacing any object of that
	// name atomically when Close succeeds.
	Create(ctx context.Context, name string) (Writer, error)
	// PutIfAbsent writes data under name only if no object has that name;
	// otherwise it returns ErrExists and changes nothing. It is the commit
	// primitive of the checkpoint log.
	PutIfAbsent(ctx context.Context, name string, data []byte) error
	// Open opens the object name for reading; ErrNotExist if it is missing.
	Open(ctx context.Context, name string) (Object, error)
	// ReadAll returns the whole content of a small object; ErrNotExist if missing.
	ReadAll(ctx context.Context, name string) ([]byte, error)
	// List returns the names that start with prefix, sorted.
	List(ctx context.Context, prefix string) ([]string, error)
	// Delete removes name; ErrNotExist if it is missing.
	Delete(ctx context.Context, name string) error
	// Lock takes an exclusive lock called name that is released by the
	// returned function or when the process dies. ErrLocked if it is held.
	Lock(ctx context.Context, name string) (unlock func() error, err error)
	// Checksum returns the CRC32C (Castagnoli) checksum and the size of
	// the stored object name, so that a part can be checked against the
	// checksum recorded when it was written without downloading it where
	// the store keeps one (GCS keeps a CRC32C per object). ErrNotExist if
	// it is missing.
	Checksum(ctx context.Context, name string) (crc32c uint32, size int64, err error)
	// URI names the object for humans and for loaders: a file path for a
	// local directory, gs://bucket/prefix/name on GCS.
	URI(name string) string
}

// CRC32C is the table of the Castagnoli polynomial: the checksum GCS keeps
// per object, and the one bindsync records for every part it writes.
var CRC32CTable = crc32.MakeTable(crc32.Castagnoli)

// Package staging is the durable scratch space of a snapshot: Parquet part
// files and the checkpoint log live here until the snapshot is published.
// It holds the Store interface, a flat namespace of objects addressed by
// slash-separated names, the Locker interface of the named locks a run
// holds on the snapshot it works on (a lock is not storage, so it is an
// interface of its own), and the local directory store (Dir), which is
// both. The GCS store, a bucket prefix, is in package staging/gcs, so that
// what needs only these interfaces and Dir does not link the Google Cloud
// client; the gs:// URI rules it shares with the configuration
// (ParseGCSURI, ValidBucketName) stay here. The conformance suite every
// Store passes is in staging/stagingtest.
package staging

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"strings"
	"time"
)

// Sentinel errors returned by every Store implementation.
var (
	// ErrNotExist is returned (wrapped) by Open and Delete when no object has the name.
	ErrNotExist = errors.New("object does not exist")
	// ErrExists is returned by PutIfAbsent when the name is already taken.
	ErrExists = errors.New("object already exists")
	// ErrLocked is returned by Lock when another process holds the lock.
	ErrLocked = errors.New("locked by another process")
	// ErrLeaseLost is returned (wrapped) by Lease.Err and Lease.Release
	// when the lock stopped being held before it was released.
	ErrLeaseLost = errors.New("lock lease lost")
	// ErrBadName is returned (wrapped) for a name that could leave the
	// store's root or collide with the store's own hidden objects.
	ErrBadName = errors.New("invalid object name")
)

// CheckName rejects names that are not a clean relative slash path, or that
// have an element starting with "." (reserved for a store's temporary and
// lock objects), with an error wrapping ErrBadName. Every Store checks the
// names it is given with it.
func CheckName(name string) error {
	if !fs.ValidPath(name) || name == "." {
		return fmt.Errorf("%w %q: must be a relative slash-separated path without . or .. elements", ErrBadName, name)
	}
	for _, elem := range strings.Split(name, "/") {
		if strings.HasPrefix(elem, ".") {
			return fmt.Errorf("%w %q: elements starting with . are reserved", ErrBadName, name)
		}
	}
	return nil
}

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

// Locker hands out exclusive named locks. A run holds the lock of the
// snapshot it works on, so that two runs never write the same snapshot.
type Locker interface {
	// Lock takes the lock called name (a Store object name; it does not
	// collide with objects) and returns its Lease. It returns ErrLocked
	// (wrapped, naming the holder where known) when the lock is held, even
	// by the same process. The lease outlives ctx: only Release or the
	// death of the process ends it.
	Lock(ctx context.Context, name string) (Lease, error)
	// LockURI names where the lock called name lives (a file path or a
	// gs:// object), for messages that send an operator to it.
	LockURI(name string) string
}

// Lease is a held lock.
type Lease interface {
	// Lost is closed when the lock stopped being held without Release:
	// another process took it over or removed it, or it could not be
	// renewed before it expired. Another run may then work on what the
	// lock guarded, so the holder must stop at once. It is never closed
	// for a lock that only the holder's death can end (Dir).
	Lost() <-chan struct{}
	// Err says why the lease was lost, wrapping ErrLeaseLost, once Lost
	// is closed; nil before.
	Err() error
	// Release gives the lock up. It returns an error wrapping ErrLeaseLost
	// if the lease was lost meanwhile (the work done under it may have
	// overlapped another holder's). Later calls return nil. It is safe to
	// call concurrently with Lost and Err.
	Release() error
}

// LockTTL returns how long a lock of l can outlive a holder that died
// without releasing it: the lease time of a GCS lock (staging/gcs), 0 for
// a Dir, whose locks the kernel drops with their process. A run that finds
// its lock held waits a little longer than this before giving up, so that
// it takes over from a run that was killed.
func LockTTL(l Locker) time.Duration {
	if t, ok := l.(interface{ LockTTL() time.Duration }); ok {
		return t.LockTTL()
	}
	return 0
}

package staging

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
)

const (
	// tmpPrefix starts the name of a file being written; List skips it.
	tmpPrefix = ".tmp-"
	// lockDir holds the lock files under the root; List skips it.
	lockDir = ".locks"
)

// Modes of what Dir creates. Staging holds push endpoints and identities,
// which are personal data: only the owner may read them, whatever the
// process's umask.
const (
	fileMode = 0o600
	dirMode  = 0o700
)

// Dir is a Store in a local directory. Objects are plain files under the
// root, so they can be inspected with ls and read by other tools; files are
// created 0600 and directories 0700 (the root too, when Dir creates it).
// Names whose elements start with "." are reserved for the store's
// temporary and lock files.
type Dir struct {
	root string
}

var _ Store = (*Dir)(nil)

// NewDir returns the store rooted at root, creating the directory (0700)
// if needed. An existing root keeps its mode: its owner chose it.
func NewDir(root string) (*Dir, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("staging dir %q: %w", root, err)
	}
	if err := os.MkdirAll(abs, dirMode); err != nil {
		return nil, fmt.Errorf("staging dir: %w", err)
	}
	return &Dir{root: abs}, nil
}

// path returns the file path of a checked name.
func (d *Dir) path(name string) string {
	return filepath.Join(d.root, filepath.FromSlash(name))
}

// mkdirs creates the parent directories of the file p (under the root),
// syncing each parent whose listing changed so a crash cannot lose them.
func (d *Dir) mkdirs(p string) error {
	dir := filepath.Dir(p)
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	rel, err := filepath.Rel(d.root, dir)
	if err != nil {
		return err
	}
	cur := d.root
	for _, elem := range strings.Split(rel, string(filepath.Separator)) {
		next := filepath.Join(cur, elem)
		err := os.Mkdir(next, dirMode)
		switch {
		case err == nil:
			if err := SyncDir(cur); err != nil {
				return err
			}
		case !errors.Is(err, fs.ErrExist):
			return err
		}
		cur = next
	}
	return nil
}

// SyncDir fsyncs a directory so that renames, links and removals in it are
// durable.
func SyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// createTemp opens a new hidden temporary file next to the final path p.
func (d *Dir) createTemp(p string) (*os.File, error) {
	if err := d.mkdirs(p); err != nil {
		return nil, err
	}
	// CreateTemp makes files 0600 whatever the umask, which is what
	// objects keep once renamed or linked into place.
	return os.CreateTemp(filepath.Dir(p), tmpPrefix+filepath.Base(p)+"-*")
}

// Create starts writing name through a hidden temporary file in the same
// directory; Close syncs it and renames it over name.
func (d *Dir) Create(ctx context.Context, name string) (Writer, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("create %q: %w", name, err)
	}
	if err := CheckName(name); err != nil {
		return nil, err
	}
	p := d.path(name)
	f, err := d.createTemp(p)
	if err != nil {
		return nil, fmt.Errorf("create %q: %w", name, err)
	}
	return &dirWriter{f: f, final: p, name: name}, nil
}

// dirWriter is the Writer of Dir.Create.
type dirWriter struct {
	f     *os.File
	final string
	name  string
	done  bool
}

func (w *dirWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, fmt.Errorf("write %q: writer already closed", w.name)
	}
	return w.f.Write(p)
}

// Close makes the object durable: fsync the data, rename it into place and
// fsync the directory. On error the temporary file is removed.
func (w *dirWriter) Close() error {
	if w.done {
		return fmt.Errorf("close %q: writer already closed", w.name)
	}
	w.done = true
	tmp := w.f.Name()
	err := w.f.Sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, w.final)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("commit %q: %w", w.name, err)
	}
	if err := SyncDir(filepath.Dir(w.final)); err != nil {
		return fmt.Errorf("commit %q: %w", w.name, err)
	}
	return nil
}

// Abort discards the temporary file; it does nothing after Close.
func (w *dirWriter) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.f.Name())
}

// PutIfAbsent writes data to a synced temporary file and hard-links it to
// name: link(2) fails if name exists, which makes the check and the write
// one atomic step even across processes.
func (d *Dir) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %q: %w", name, err)
	}
	if err := CheckName(name); err != nil {
		return err
	}
	p := d.path(name)
	f, err := d.createTemp(p)
	if err != nil {
		return fmt.Errorf("put %q: %w", name, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("put %q: %w", name, err)
	}
	if err := os.Link(tmp, p); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("put %q: %w", name, ErrExists)
		}
		return fmt.Errorf("put %q: %w", name, err)
	}
	if err := os.Remove(tmp); err != nil {
		return fmt.Errorf("put %q: remove temporary file: %w", name, err)
	}
	if err := SyncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("put %q: %w", name, err)
	}
	return nil
}

// dirObject is an object opened for reading.
type dirObject struct {
	*os.File
	size int64
}

func (o *dirObject) Size() int64 { return o.size }

// Open opens name for reading.
func (d *Dir) Open(ctx context.Context, name string) (Object, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open %q: %w", name, err)
	}
	if err := CheckName(name); err != nil {
		return nil, err
	}
	f, err := os.Open(d.path(name))
	if err != nil {
		return nil, fmt.Errorf("open %q: %w", name, mapNotExist(err))
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = ErrNotExist
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %q: %w", name, err)
	}
	return &dirObject{File: f, size: st.Size()}, nil
}

// ReadAll returns the content of name.
func (d *Dir) ReadAll(ctx context.Context, name string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read %q: %w", name, err)
	}
	if err := CheckName(name); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(d.path(name))
	if err != nil {
		return nil, fmt.Errorf("read %q: %w", name, mapNotExist(err))
	}
	return data, nil
}

// mapNotExist turns "no such file" (and "is a directory": directories are
// not objects) into ErrNotExist, keeping other errors.
func mapNotExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.EISDIR) {
		return ErrNotExist
	}
	return err
}

// List walks only the directories that can hold names with the prefix and
// skips hidden entries (temporary files, locks).
func (d *Dir) List(ctx context.Context, prefix string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	// The directory part of the prefix must be a valid name itself, so a
	// prefix cannot reach outside the root.
	start := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = prefix[:i]
		if err := CheckName(start); err != nil {
			return nil, fmt.Errorf("list %q: %w", prefix, err)
		}
	}
	var names []string
	err := filepath.WalkDir(d.path(start), func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if name == "." {
			return nil
		}
		if strings.HasPrefix(e.Name(), ".") {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if e.IsDir() {
			// Descend only if names below can still match the prefix.
			if !strings.HasPrefix(name+"/", prefix) && !strings.HasPrefix(prefix, name+"/") {
				return filepath.SkipDir
			}
			return nil
		}
		if e.Type().IsRegular() && strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	sort.Strings(names)
	return names, nil
}

// Delete removes name and syncs its directory.
func (d *Dir) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete %q: %w", name, err)
	}
	if err := CheckName(name); err != nil {
		return err
	}
	p := d.path(name)
	st, err := os.Lstat(p)
	if err == nil && st.IsDir() {
		err = ErrNotExist
	}
	if err == nil {
		err = os.Remove(p)
	}
	if err != nil {
		return fmt.Errorf("delete %q: %w", name, mapNotExist(err))
	}
	if err := SyncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("delete %q: %w", name, err)
	}
	return nil
}

// Lock takes flock(2) on the file .locks/<name> under the root. The kernel
// drops the lock when the process dies, even by kill -9, so a crashed run
// never leaves a stale lock, and a live process never loses it: the lease's
// Lost channel is never closed. flock belongs to the open file, so a second
// Lock of the same name in the same process fails too. The lock file is
// never deleted: removing it could let two processes lock different inodes.
func (d *Dir) Lock(ctx context.Context, name string) (Lease, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("lock %q: %w", name, err)
	}
	if err := CheckName(name); err != nil {
		return nil, err
	}
	p := filepath.Join(d.root, lockDir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), dirMode); err != nil {
		return nil, fmt.Errorf("lock %q: %w", name, err)
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return nil, fmt.Errorf("lock %q: %w", name, err)
	}
	if err := flock(f, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %q: %w", name, ErrLocked)
		}
		return nil, fmt.Errorf("lock %q: %w", name, err)
	}
	return &dirLease{f: f, name: name, lost: make(chan struct{})}, nil
}

// LockURI returns the absolute path of the lock file of name.
func (d *Dir) LockURI(name string) string {
	return filepath.Join(d.root, lockDir, filepath.FromSlash(name))
}

// dirLease is a flock held through its open file.
type dirLease struct {
	f    *os.File
	name string
	lost chan struct{} // never closed
	once sync.Once
}

var _ Locker = (*Dir)(nil)

func (l *dirLease) Lost() <-chan struct{} { return l.lost }

func (l *dirLease) Err() error { return nil }

// Release closes the only descriptor of the lock file, which releases the
// lock.
func (l *dirLease) Release() error {
	var err error
	l.once.Do(func() {
		if cerr := l.f.Close(); cerr != nil {
			err = fmt.Errorf("unlock %q: %w", l.name, cerr)
		}
	})
	return err
}

// flock retries on EINTR, which a signal can cause even with LOCK_NB.
func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// Checksum reads the file name through CRC32C, a buffer at a time.
func (d *Dir) Checksum(ctx context.Context, name string) (uint32, int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, fmt.Errorf("checksum %q: %w", name, err)
	}
	if err := CheckName(name); err != nil {
		return 0, 0, err
	}
	f, err := os.Open(d.path(name))
	if err != nil {
		return 0, 0, fmt.Errorf("checksum %q: %w", name, mapNotExist(err))
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		if err == nil {
			err = ErrNotExist
		}
		return 0, 0, fmt.Errorf("checksum %q: %w", name, err)
	}
	h := crc32.New(CRC32CTable)
	n, err := io.Copy(h, &ctxReader{ctx: ctx, r: f})
	if err != nil {
		return 0, 0, fmt.Errorf("checksum %q: %w", name, err)
	}
	return h.Sum32(), n, nil
}

// ctxReader stops a long read when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// URI returns the absolute file path of name.
func (d *Dir) URI(name string) string {
	return d.path(name)
}

package exporter

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"golang.org/x/sys/unix"

	"github.com/bindsync/bindsync/staging"
)

// Snapshot is a complete snapshot ready to publish: its date and its
// tables, each made of committed parts in the staging store.
type Snapshot struct {
	// Date is the snapshot date; its UTC calendar day names the partition.
	Date time.Time
	// Store holds the parts.
	Store staging.Store
	// Tables are the tables of the snapshot, in the order they are
	// published: BindingsTable first, then the tables derived from it
	// (UsersTable, ChangesTable). A new table of the snapshot is one more
	// entry.
	Tables []Table
	// RunID identifies the run that produced the snapshot, for logs and
	// for publishers that need deterministic job names.
	RunID string
	// Journal keeps a publisher's progress durably; nil when the caller
	// has none. Publishers that do not need it ignore it.
	Journal Journal
	// Refresh marks a snapshot that replaces some derived tables of a
	// date published before (the changes of a later snapshot, computed
	// again when an older snapshot is published after it): its Tables
	// are published as usual, and a publisher of a table it does not
	// hold leaves that table alone instead of failing.
	Refresh bool
}

// Table is one table of a snapshot: the day's partition of that table is
// replaced by its parts.
type Table struct {
	// Name is the table's name in the snapshot (BindingsTable,
	// UsersTable); each publisher maps it to its destination.
	Name string
	// Schema is the Arrow schema of every part (schemas.Binding,
	// schemas.Users).
	Schema *arrow.Schema
	// Parts are the committed parts of the table, in any order.
	Parts []PartInfo
	// Version names the content of Parts when a table of one date may be
	// computed again with another content before it is published (the
	// changes, when the snapshot they compare with changes meanwhile). A
	// publisher that keeps its progress per table keeps it per version,
	// so that a new version is loaded afresh rather than taken for done.
	// Empty for tables whose parts are fixed once the snapshot is read.
	Version string
}

// Names of the tables of a snapshot.
const (
	// BindingsTable holds one row per binding (schemas.Binding).
	BindingsTable = "user_bindings"
	// UsersTable holds one row per user the snapshot read, found gone or
	// found missing (schemas.Users).
	UsersTable = "users"
)

// Table returns the table of s called name, and whether s has one.
func (s Snapshot) Table(name string) (Table, bool) {
	for _, t := range s.Tables {
		if t.Name == name {
			return t, true
		}
	}
	return Table{}, false
}

// Journal is a small durable key/value record kept with the snapshot's
// checkpoint. A publisher saves its progress there (for example BigQuery
// job IDs and attempt numbers), so a Publish retried after a crash resumes
// the same jobs instead of starting new ones.
type Journal interface {
	// Get returns the value saved under key, or "" if there is none.
	Get(key string) string
	// Set saves every pair of kv durably, all or nothing, before it
	// returns nil.
	Set(ctx context.Context, kv map[string]string) error
}

// Publisher makes a snapshot visible to readers atomically: readers see the
// previous complete snapshot of that date or the new one, never a mix.
// Publishing the same date again replaces it. Implementations must be
// idempotent: calling Publish again after a crash mid-publish must end in
// the same state.
type Publisher interface {
	Publish(ctx context.Context, s Snapshot) error
	// Describe names the destination for logs, e.g. "local warehouse /data".
	Describe() string
}

// Table and directory names of the local warehouse.
const (
	// TableDir is the directory of the user_bindings table under Path.
	TableDir = "user_bindings"
	// UsersTableDir is the directory of the users table under Path.
	UsersTableDir = TableDir + "_" + UsersTable
	// warehouseTmpDir holds snapshots being built; it is outside TableDir
	// so that readers globbing user_bindings/*/*.parquet never see them.
	warehouseTmpDir = ".tmp"
)

// tableDir is the directory under Path of the snapshot table name:
// TableDir for the bindings, TableDir_<name> for the others.
func tableDir(name string) string {
	if name == BindingsTable {
		return TableDir
	}
	return TableDir + "_" + name
}

// LocalWarehouse publishes snapshots as a Hive-partitioned directory of
// Parquet files that DuckDB, Spark or pandas can read directly:
//
//	<Path>/user_bindings/snapshot_date=YYYY-MM-DD/part-00000.parquet
//
// A snapshot is assembled under <Path>/.tmp and swapped in with one rename,
// so a reader sees the whole old or the whole new directory of a date.
//
// Files and directories are created with modes 0666 and 0777 less the
// process's umask, like any file a program writes: who may read the
// warehouse is the operator's choice (staging, which only bindsync reads,
// stays private).
type LocalWarehouse struct {
	// Path is the root directory of the warehouse.
	Path string
}

var _ Publisher = LocalWarehouse{}

// Describe names the warehouse for logs.
func (l LocalWarehouse) Describe() string { return "local warehouse " + l.Path }

// partitionName is the Hive directory name of the snapshot of date.
func partitionName(date time.Time) string {
	return "snapshot_date=" + date.UTC().Format(time.DateOnly)
}

// SnapshotDir returns the directory that holds the published snapshot of
// date (the UTC calendar day of date).
func (l LocalWarehouse) SnapshotDir(date time.Time) string {
	return filepath.Join(l.Path, TableDir, partitionName(date))
}

// Publish copies the parts of each table of s, ordered by name and
// renumbered part-00000.parquet, part-00001.parquet, ..., into a new
// directory and swaps it in place of the date's directory of that table.
// Leftovers of an earlier interrupted Publish of the same date are removed
// first, which makes a retry converge to the same state.
//
// Tables are published one after the other, in the order of s.Tables:
// each table's day changes atomically.
func (l LocalWarehouse) Publish(ctx context.Context, s Snapshot) error {
	part := partitionName(s.Date)
	if l.Path == "" {
		return fmt.Errorf("publish %s: warehouse path is empty", part)
	}
	if s.Store == nil {
		return fmt.Errorf("publish %s to %s: snapshot has no staging store", part, l.Describe())
	}
	for _, t := range s.Tables {
		if err := l.publish(ctx, s, tableDir(t.Name), t.Parts, part); err != nil {
			if t.Name == BindingsTable {
				return fmt.Errorf("publish %s to %s: %w", part, l.Describe(), err)
			}
			return fmt.Errorf("publish %s of %s to %s: %w", t.Name, part, l.Describe(), err)
		}
	}
	return nil
}

// UsersSnapshotDir returns the directory of the users of the snapshot of
// date.
func (l LocalWarehouse) UsersSnapshotDir(date time.Time) string {
	return filepath.Join(l.Path, UsersTableDir, partitionName(date))
}

func (l LocalWarehouse) publish(ctx context.Context, s Snapshot, table string, parts []PartInfo, part string) error {
	if l.Path == "" {
		return errors.New("warehouse path is empty")
	}
	if s.Store == nil {
		return errors.New("snapshot has no staging store")
	}
	tableDir := filepath.Join(l.Path, table)
	tmpRoot := filepath.Join(l.Path, warehouseTmpDir)
	for _, dir := range []string{tableDir, tmpRoot} {
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return err
		}
	}
	key := table + "_" + part // one table's leftovers never match another's
	if err := removeLeftovers(tmpRoot, key); err != nil {
		return err
	}

	// The trailing "." keeps one date's leftovers from matching another's
	// prefix in removeLeftovers.
	newDir, err := mkdirUnique(tmpRoot, key+".")
	if err != nil {
		return err
	}
	mode, err := createMode(newDir)
	if err != nil {
		os.RemoveAll(newDir)
		return err
	}
	if err := l.fill(ctx, newDir, s.Store, parts, mode); err != nil {
		os.RemoveAll(newDir)
		return err
	}
	if err := staging.SyncDir(newDir); err != nil {
		os.RemoveAll(newDir)
		return err
	}
	if err := ctx.Err(); err != nil {
		os.RemoveAll(newDir)
		return err
	}

	target := filepath.Join(tableDir, part)
	old, err := swapIn(newDir, target, tmpRoot, key)
	if err != nil {
		os.RemoveAll(newDir)
		return err
	}
	if err := staging.SyncDir(tableDir); err != nil {
		return err
	}
	if old != "" {
		// The previous snapshot is out of sight; a failure here only
		// leaves a leftover that the next Publish removes.
		if err := os.RemoveAll(old); err != nil {
			return fmt.Errorf("remove previous snapshot: %w", err)
		}
	}
	return staging.SyncDir(tmpRoot)
}

// mkdirUnique creates a new directory named prefix plus a random suffix in
// dir, with mode 0777 less the umask (os.MkdirTemp would make it 0700).
func mkdirUnique(dir, prefix string) (string, error) {
	for range 100 {
		name := filepath.Join(dir, prefix+rand.Text()[:12])
		err := os.Mkdir(name, 0o777)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", err
		}
	}
	return "", fmt.Errorf("create a directory in %s: too many name collisions", dir)
}

// createMode returns the permissions a file created in dir with mode 0666
// gets, by creating one: the umask can only be read by changing it, which
// would race with other goroutines creating files.
func createMode(dir string) (fs.FileMode, error) {
	probe := filepath.Join(dir, ".mode-probe")
	f, err := os.OpenFile(probe, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
	if err != nil {
		return 0, fmt.Errorf("probe file mode: %w", err)
	}
	st, err := f.Stat()
	f.Close()
	if rerr := os.Remove(probe); err == nil {
		err = rerr
	}
	if err != nil {
		return 0, fmt.Errorf("probe file mode: %w", err)
	}
	return st.Mode().Perm(), nil
}

// removeLeftovers deletes what an interrupted Publish of the same partition
// left under tmpRoot.
func removeLeftovers(tmpRoot, part string) error {
	entries, err := os.ReadDir(tmpRoot)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), part+".") {
			if err := os.RemoveAll(filepath.Join(tmpRoot, e.Name())); err != nil {
				return fmt.Errorf("remove leftover of an earlier publish: %w", err)
			}
		}
	}
	return nil
}

// fill puts the parts of s into dir as part-NNNNN.parquet, in name order,
// with the permissions mode.
func (l LocalWarehouse) fill(ctx context.Context, dir string, store staging.Store, parts []PartInfo, mode fs.FileMode) error {
	parts = append([]PartInfo(nil), parts...)
	sort.Slice(parts, func(i, j int) bool { return parts[i].Name < parts[j].Name })
	for i, p := range parts {
		if i > 0 && p.Name == parts[i-1].Name {
			return fmt.Errorf("part %q is listed twice", p.Name)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		dst := filepath.Join(dir, fmt.Sprintf("part-%05d.parquet", i))
		if err := placePart(ctx, store, p, dst, mode); err != nil {
			return fmt.Errorf("copy part %q: %w", p.Name, err)
		}
	}
	return nil
}

// placePart puts the part p at dst with the permissions mode: a hard link
// when the store is a local directory on the same filesystem (no copy, and
// staging files are never modified in place, only replaced by rename),
// else a streamed copy. A link shares the staging file's inode, private
// until then, so it is given mode; the staging directory, 0700, still
// keeps others from reaching it under its staging name.
func placePart(ctx context.Context, store staging.Store, p PartInfo, dst string, mode fs.FileMode) error {
	if d, ok := store.(*staging.Dir); ok {
		if err := os.Link(d.URI(p.Name), dst); err == nil {
			if err := os.Chmod(dst, mode); err != nil {
				return err
			}
			return checkSize(dst, p)
		}
		// Other filesystem, or links not allowed: copy instead.
	}
	obj, err := store.Open(ctx, p.Name)
	if err != nil {
		return err
	}
	defer obj.Close()
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, io.NewSectionReader(obj, 0, obj.Size()))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return checkSize(dst, p)
}

// checkSize guards against publishing a part that changed since it was
// committed. A zero Bytes means the size was not recorded.
func checkSize(path string, p PartInfo) error {
	if p.Bytes == 0 {
		return nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Size() != p.Bytes {
		return fmt.Errorf("part has %d bytes, the snapshot says %d", st.Size(), p.Bytes)
	}
	return nil
}

// swapIn makes newDir visible as target. If target already exists, the two
// are exchanged atomically with renameat2(RENAME_EXCHANGE), so readers go
// straight from the old snapshot to the new one; the old one is then at the
// returned path, for the caller to remove.
func swapIn(newDir, target, tmpRoot, part string) (old string, err error) {
	if _, err := os.Lstat(target); errors.Is(err, os.ErrNotExist) {
		return "", os.Rename(newDir, target)
	} else if err != nil {
		return "", err
	}
	err = renameExchange(newDir, target)
	if err == nil {
		return newDir, nil
	}
	if !errors.Is(err, errExchangeUnsupported) {
		return "", fmt.Errorf("exchange %s with %s: %w", newDir, target, err)
	}
	// The filesystem cannot exchange (some network and FUSE filesystems):
	// move the old snapshot away, then the new one in. Between the two
	// renames the date has no directory, so a reader may briefly see no
	// rows for it, but never a mix. A crash in between leaves the old one
	// under tmpRoot, removed by the next Publish, which puts the new one in.
	aside, err := os.MkdirTemp(tmpRoot, part+".")
	if err != nil {
		return "", err
	}
	old = filepath.Join(aside, "old")
	if err := os.Rename(target, old); err != nil {
		os.Remove(aside)
		return "", fmt.Errorf("move previous snapshot aside: %w", err)
	}
	if err := os.Rename(newDir, target); err != nil {
		// Put the previous snapshot back so readers keep seeing it.
		if rerr := os.Rename(old, target); rerr != nil {
			return "", fmt.Errorf("move new snapshot in: %w (and restoring the previous one failed: %v)", err, rerr)
		}
		os.Remove(aside)
		return "", fmt.Errorf("move new snapshot in: %w", err)
	}
	return aside, nil
}

// renameExchange swaps two paths atomically with renameat2(RENAME_EXCHANGE).
// It returns errExchangeUnsupported where the kernel or filesystem cannot do
// it. It is a variable so tests can take the fallback path.
var renameExchange = func(a, b string) error {
	err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("%w: %v", errExchangeUnsupported, err)
	}
	return err
}

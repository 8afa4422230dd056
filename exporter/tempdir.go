package exporter

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// tempLockName is the file inside a temporary directory whose flock(2)
// says that a process still uses the directory.
const tempLockName = ".in-use"

// TempDir makes a new directory named prefix plus a random suffix in
// parent (os.TempDir when empty), and holds it until release is called:
// release removes it. A process killed with kill -9 cannot remove its
// directories, so TempDir first removes every directory of the same
// prefix in parent that no living process holds (the kernel drops the
// holder's flock with the process). Directories held by this process are
// kept, as are those of other processes.
func TempDir(parent, prefix string) (dir string, release func(), err error) {
	if parent == "" {
		parent = os.TempDir()
	}
	sweepTemp(parent, prefix)
	// The directory is made and held under a name that a sweep ignores,
	// then renamed: a directory of the prefix is always held, so another
	// process's sweep never takes a new one for a leftover. The flock
	// stays with the open file across the rename.
	made, err := os.MkdirTemp(parent, ".new-"+prefix)
	if err != nil {
		return "", nil, fmt.Errorf("make a temporary directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(made, tempLockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err == nil {
		if err = flockNB(f); err != nil {
			f.Close()
		}
	}
	if err == nil {
		dir = filepath.Join(parent, strings.TrimPrefix(filepath.Base(made), ".new-"))
		if err = os.Rename(made, dir); err != nil {
			f.Close()
		}
	}
	if err != nil {
		os.RemoveAll(made)
		return "", nil, fmt.Errorf("make a temporary directory in %s: %w", parent, err)
	}
	return dir, func() {
		os.RemoveAll(dir)
		f.Close()
	}, nil
}

// sweepTemp removes the directories prefix* in parent that nobody holds.
// Failures are ignored: a leftover only costs disk space.
func sweepTemp(parent, prefix string) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		dir := filepath.Join(parent, e.Name())
		f, err := os.Open(filepath.Join(dir, tempLockName))
		if err != nil {
			// Not made by TempDir: not ours to remove.
			continue
		}
		if flockNB(f) == nil {
			os.RemoveAll(dir)
		}
		f.Close()
	}
}

// flockNB takes an exclusive flock on f without waiting, retrying on
// EINTR.
func flockNB(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err != syscall.EINTR {
			return err
		}
	}
}

package staging_test

// External tests of Dir: they use the shared Store suite of stagingtest,
// which imports staging, so an internal test could not import it.

import (
	"testing"

	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/staging/stagingtest"
)

// newDir returns a Dir in a fresh temporary directory.
func newDir(t *testing.T) *staging.Dir {
	t.Helper()
	d, err := staging.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestDirStore runs the shared Store suite on a local directory.
func TestDirStore(t *testing.T) {
	stagingtest.Run(t, func(t *testing.T) stagingtest.Store { return newDir(t) })
}

// TestBadNames adds to the shared suite's check that a refused name
// leaves nothing on disk.
func TestBadNames(t *testing.T) {
	d := newDir(t)
	stagingtest.BadNames(t, d)
	if disk := staging.FilesOnDisk(t, d); len(disk) != 0 {
		t.Errorf("files on disk = %v, want none", disk)
	}
}

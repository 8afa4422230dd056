package staging_test

// External tests of Dir: they use the shared Store suite of stagingtest,
// which imports staging, so an internal test could not import it.

import (
	"testing"

	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/staging/stagingtest"
)

// TestDirStore runs the shared Store suite on a local directory.
func TestDirStore(t *testing.T) {
	stagingtest.Run(t, func(t *testing.T) stagingtest.Store { return stagingtest.NewDir(t) })
}

// TestBadNames adds to the shared suite's check that a refused name
// leaves nothing on disk.
func TestBadNames(t *testing.T) {
	d := stagingtest.NewDir(t)
	stagingtest.BadNames(t, d)
	if disk := staging.FilesOnDisk(t, d); len(disk) != 0 {
		t.Errorf("files on disk = %v, want none", disk)
	}
}

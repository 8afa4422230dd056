package exporter

import (
	"os"
	"path/filepath"
	"testing"
)

func TestTempDirSweepsLeftoversOfKilledProcesses(t *testing.T) {
	parent := t.TempDir()
	// A directory of a process killed with kill -9: its lock file is
	// there, held by nobody.
	dead := filepath.Join(parent, "bindsync-sort-dead")
	if err := os.MkdirAll(dead, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{tempLockName, "run-000001"} {
		if err := os.WriteFile(filepath.Join(dead, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// One not made by TempDir, and one of another prefix.
	foreign := filepath.Join(parent, "bindsync-sort-foreign")
	other := filepath.Join(parent, "other-dead")
	for _, d := range []string{foreign, other} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(other, tempLockName), nil, 0o600); err != nil {
		t.Fatal(err)
	}

	alive, releaseAlive, err := TempDir(parent, "bindsync-sort-")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("the dead process's directory is still there (%v)", err)
	}
	// A second directory, while the first is held: the first stays.
	second, releaseSecond, err := TempDir(parent, "bindsync-sort-")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{alive, second, foreign, other} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s was removed: %v", d, err)
		}
	}
	if alive == second || filepath.Dir(alive) != parent {
		t.Errorf("directories %s and %s", alive, second)
	}
	releaseAlive()
	releaseSecond()
	for _, d := range []string{alive, second} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s is still there after release (%v)", d, err)
		}
	}
	entries, _ := os.ReadDir(parent)
	if len(entries) != 2 {
		t.Errorf("left in the parent: %v", entries)
	}
}

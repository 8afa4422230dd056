package staging

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

func newTestDir(t *testing.T) *Dir {
	t.Helper()
	d, err := NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func create(t *testing.T, d *Dir, name, content string) {
	t.Helper()
	w, err := d.Create(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, content); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// filesOnDisk lists every file under the root, hidden ones included, so
// tests can see leftovers that List hides.
func filesOnDisk(t *testing.T, d *Dir) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			rel, _ := filepath.Rel(d.root, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCreateCloseReadBack(t *testing.T) {
	ctx := context.Background()
	d := newTestDir(t)
	tests := []struct {
		name, content string
	}{
		{"a", "first"},
		{"snap/2025-01-02/part-00001.parquet", "PAR1...PAR1"},
		{"a", "replaced"}, // Create replaces an existing object.
		{"empty", ""},
	}
	for _, tt := range tests {
		create(t, d, tt.name, tt.content)
		got, err := d.ReadAll(ctx, tt.name)
		if err != nil || string(got) != tt.content {
			t.Errorf("ReadAll(%q) = %q, %v; want %q", tt.name, got, err, tt.content)
		}
		obj, err := d.Open(ctx, tt.name)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, obj.Size())
		if _, err := obj.ReadAt(buf, 0); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		obj.Close()
		if obj.Size() != int64(len(tt.content)) || string(buf) != tt.content {
			t.Errorf("Open(%q): size %d content %q, want %q", tt.name, obj.Size(), buf, tt.content)
		}
	}
	want := []string{"a", "empty", "snap/2025-01-02/part-00001.parquet"}
	if got := filesOnDisk(t, d); !reflect.DeepEqual(got, want) {
		t.Errorf("files on disk = %v, want %v (no temporary files)", got, want)
	}
}

func TestCreateNotVisibleUntilClose(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		finish   func(w Writer)
		wantOn   []string // prefixes of the files on disk afterwards
		wantList []string
	}{
		{"aborted", func(w Writer) { w.Abort() }, nil, nil},
		{"never closed", func(w Writer) {}, []string{"dir/.tmp-obj-"}, nil},
		{"abort after close is a no-op", func(w Writer) {
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			w.Abort()
		}, []string{"dir/obj"}, []string{"dir/obj"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTestDir(t)
			w, err := d.Create(ctx, "dir/obj")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write([]byte("data")); err != nil {
				t.Fatal(err)
			}
			names, err := d.List(ctx, "")
			if err != nil || len(names) != 0 {
				t.Errorf("List before Close = %v, %v; want nothing", names, err)
			}
			if _, err := d.Open(ctx, "dir/obj"); !errors.Is(err, ErrNotExist) {
				t.Errorf("Open before Close: err = %v, want ErrNotExist", err)
			}
			tt.finish(w)
			disk := filesOnDisk(t, d)
			if len(disk) != len(tt.wantOn) {
				t.Fatalf("files on disk = %v, want %v", disk, tt.wantOn)
			}
			for i := range disk {
				if !strings.HasPrefix(disk[i], tt.wantOn[i]) {
					t.Errorf("file on disk %q, want prefix %q", disk[i], tt.wantOn[i])
				}
			}
			names, err = d.List(ctx, "")
			if err != nil || !reflect.DeepEqual(names, tt.wantList) {
				t.Errorf("List = %v, %v; want %v", names, err, tt.wantList)
			}
		})
	}
}

func TestPutIfAbsent(t *testing.T) {
	ctx := context.Background()
	d := newTestDir(t)
	if err := d.PutIfAbsent(ctx, "log/000001.json", []byte("one")); err != nil {
		t.Fatal(err)
	}
	err := d.PutIfAbsent(ctx, "log/000001.json", []byte("other"))
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second PutIfAbsent: err = %v, want ErrExists", err)
	}
	got, err := d.ReadAll(ctx, "log/000001.json")
	if err != nil || string(got) != "one" {
		t.Errorf("content = %q, %v; want the first write", got, err)
	}
	if disk := filesOnDisk(t, d); !reflect.DeepEqual(disk, []string{"log/000001.json"}) {
		t.Errorf("files on disk = %v", disk)
	}
}

func TestURI(t *testing.T) {
	root := t.TempDir()
	d, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := d.URI("a/b.parquet"), filepath.Join(root, "a", "b.parquet"); got != want {
		t.Errorf("URI = %q, want %q", got, want)
	}
	if !filepath.IsAbs(d.URI("x")) {
		t.Errorf("URI %q is not absolute", d.URI("x"))
	}
}

// TestLockSameProcess adds to the shared suite's lock test that a second
// Dir on the same directory sees the lock: flock locks belong to the file,
// not to the Dir value.
func TestLockSameProcess(t *testing.T) {
	ctx := context.Background()
	d := newTestDir(t)
	lease, err := d.Lock(ctx, "snap/lock")
	if err != nil {
		t.Fatal(err)
	}
	d2, err := NewDir(d.root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d2.Lock(ctx, "snap/lock"); !errors.Is(err, ErrLocked) {
		t.Fatalf("Lock through a second Dir: err = %v, want ErrLocked", err)
	}
	if _, err := os.Stat(d2.LockURI("snap/lock")); err != nil {
		t.Errorf("LockURI does not name the lock file: %v", err)
	}
	if err := lease.Release(); err != nil {
		t.Fatal(err)
	}
	again, err := d2.Lock(ctx, "snap/lock")
	if err != nil {
		t.Fatalf("Lock through the second Dir after Release: %v", err)
	}
	if err := again.Release(); err != nil {
		t.Fatal(err)
	}
}

// lockHelperEnv makes the test binary act as a second process that holds a
// lock until it is killed.
const lockHelperEnv = "BINDSYNC_STAGING_LOCK_HELPER"

func TestLockHelperProcess(t *testing.T) {
	root := os.Getenv(lockHelperEnv)
	if root == "" {
		t.Skip("helper process for TestLockOtherProcess")
	}
	d, err := NewDir(root)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	if _, err := d.Lock(context.Background(), "run"); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin) // hold the lock until killed
	os.Exit(0)
}

func TestLockOtherProcess(t *testing.T) {
	ctx := context.Background()
	d := newTestDir(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelperProcess$")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+d.root)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "locked\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper said %q, %v", line, err)
	}
	if _, err := d.Lock(ctx, "run"); !errors.Is(err, ErrLocked) {
		t.Errorf("Lock held by another process: err = %v, want ErrLocked", err)
	}
	// kill -9: the kernel must release the lock with the process.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	lease, err := d.Lock(ctx, "run")
	if err != nil {
		t.Fatalf("Lock after the holder was killed: %v", err)
	}
	lease.Release()
}

// withUmask runs the rest of the test under umask mask. The umask belongs
// to the process, so the test must not run in parallel with others.
func withUmask(t *testing.T, mask int) {
	t.Helper()
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

// TestModes checks that staging files are readable by the owner only,
// whatever the umask: they hold push endpoints and identities.
func TestModes(t *testing.T) {
	withUmask(t, 0)
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "staging")
	d, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	create(t, d, "snapshots/2026-11-26/parts/p.parquet", "x")
	if err := d.PutIfAbsent(ctx, "snapshots/2026-11-26/_log/1.json", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	lease, err := d.Lock(ctx, "snapshots/2026-11-26/LOCK")
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()
	err = filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if st.IsDir() {
			want = fs.ModeDir | 0o700
		}
		if st.Mode() != want {
			t.Errorf("%s has mode %v, want %v", p, st.Mode(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestChecksumSeesDamage flips bytes of a stored file without changing
// its size: the checksum changes, the size does not.
func TestChecksumSeesDamage(t *testing.T) {
	ctx := context.Background()
	d := newTestDir(t)
	create(t, d, "p", strings.Repeat("parquet bytes ", 1000))
	sum, size, err := d.Checksum(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(d.URI("p"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{'X'}, 5000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	sum2, size2, err := d.Checksum(ctx, "p")
	if err != nil || sum2 == sum || size2 != size {
		t.Errorf("after damage: %08x, %d, %v; want another checksum than %08x and size %d", sum2, size2, err, sum, size)
	}
}

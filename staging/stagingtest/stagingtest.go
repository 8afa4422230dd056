// Package stagingtest is the conformance suite of staging stores: Run
// checks the staging.Store and staging.Locker contracts on any
// implementation, so that the local directory (staging.Dir) and the GCS
// store (staging/gcs) behave the same. It also exports the small helpers
// that store tests share. It is test support, imported only by tests.
package stagingtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/bindsync/bindsync/staging"
)

// Store is a staging.Store that is also a staging.Locker, as staging.Dir
// and gcs.Store are.
type Store interface {
	staging.Store
	staging.Locker
}

// UploadChunkSize is the upload chunk of the GCS store (its tests check
// that the two agree): the suite writes objects larger than it so that a
// multi-request upload is exercised, and reads across its boundary.
const UploadChunkSize = 8 << 20

// Run checks the Store contract on fresh, empty stores made by newStore,
// one subtest per part of the contract, so that every implementation
// behaves the same.
func Run(t *testing.T, newStore func(t *testing.T) Store) {
	tests := []struct {
		name string
		run  func(t *testing.T, s Store)
	}{
		{"create and read back", storeCreateReadBack},
		{"read at offsets", storeReadAt},
		{"large object", storeLargeObject},
		{"not visible until close", storeNotVisibleUntilClose},
		{"writer after close", storeWriterAfterClose},
		{"put if absent", storePutIfAbsent},
		{"put if absent concurrent", storePutIfAbsentConcurrent},
		{"not exist", storeNotExist},
		{"delete", storeDelete},
		{"list", storeList},
		{"bad names", storeBadNames},
		{"canceled context", storeCanceledContext},
		{"lock", storeLock},
		{"lock concurrent", storeLockConcurrent},
		{"checksum", storeChecksum},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, newStore(t)) })
	}
}

// NewDir returns a Dir store in a fresh temporary directory of t.
func NewDir(t testing.TB) *staging.Dir {
	t.Helper()
	d, err := staging.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// WriteObject stores content under name through Create.
func WriteObject(t *testing.T, s staging.Store, name, content string) {
	t.Helper()
	w, err := s.Create(t.Context(), name)
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

// readObject returns the whole content of name through Open and ReadAt.
func readObject(t *testing.T, s staging.Store, name string) string {
	t.Helper()
	obj, err := s.Open(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	buf := make([]byte, obj.Size())
	n, err := obj.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// ListAll returns the names of every object of s, sorted, through List.
func ListAll(t *testing.T, s staging.Store) []string {
	t.Helper()
	names, err := s.List(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func storeCreateReadBack(t *testing.T, s Store) {
	ctx := t.Context()
	tests := []struct {
		name, content string
	}{
		{"a", "first"},
		{"snap/2025-01-02/part-00001.parquet", "PAR1...PAR1"},
		{"a", "replaced"}, // Create replaces an existing object.
		{"empty", ""},
		{"log/000001.json", `{"seq":1}`},
	}
	for _, tt := range tests {
		WriteObject(t, s, tt.name, tt.content)
		got, err := s.ReadAll(ctx, tt.name)
		if err != nil || string(got) != tt.content {
			t.Errorf("ReadAll(%q) = %q, %v; want %q", tt.name, got, err, tt.content)
		}
		if got := readObject(t, s, tt.name); got != tt.content {
			t.Errorf("Open(%q) and ReadAt = %q, want %q", tt.name, got, tt.content)
		}
	}
	want := []string{"a", "empty", "log/000001.json", "snap/2025-01-02/part-00001.parquet"}
	if got := ListAll(t, s); !reflect.DeepEqual(got, want) {
		t.Errorf("List = %v, want %v", got, want)
	}
}

func storeReadAt(t *testing.T, s Store) {
	content := strings.Repeat("0123456789", 10)
	WriteObject(t, s, "obj", content)
	obj, err := s.Open(t.Context(), "obj")
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	if obj.Size() != 100 {
		t.Errorf("Size = %d, want 100", obj.Size())
	}
	tests := []struct {
		off     int64
		len     int
		want    string
		wantEOF bool
	}{
		{0, 10, "0123456789", false},
		{3, 4, "3456", false},
		{95, 5, "56789", false},
		{90, 10, "0123456789", false},
		{95, 10, "56789", true}, // short read at the end
		{99, 1, "9", false},
		{100, 1, "", true},
		{150, 4, "", true},
		{50, 0, "", false},
		{0, 100, content, false},
	}
	for _, tt := range tests {
		buf := make([]byte, tt.len)
		n, err := obj.ReadAt(buf, tt.off)
		if got := string(buf[:n]); got != tt.want || (err == io.EOF) != tt.wantEOF || (err != nil && err != io.EOF) {
			t.Errorf("ReadAt(len %d, off %d) = %q, %v; want %q, EOF %v", tt.len, tt.off, got, err, tt.want, tt.wantEOF)
		}
	}
	if _, err := obj.ReadAt(make([]byte, 1), -1); err == nil {
		t.Error("ReadAt at a negative offset succeeded")
	}

	// Parquet readers read columns in parallel.
	var wg sync.WaitGroup
	errs := make([]error, 10)
	for i := range 10 {
		wg.Go(func() {
			buf := make([]byte, 10)
			_, err := obj.ReadAt(buf, int64(i*10))
			if err == nil && string(buf) != "0123456789" {
				err = fmt.Errorf("got %q", buf)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent ReadAt at %d: %v", i*10, err)
		}
	}
}

// storeLargeObject writes more than one upload chunk of the GCS store, so
// that its multi-request upload is exercised, and reads across the chunk
// boundary.
func storeLargeObject(t *testing.T, s Store) {
	ctx := t.Context()
	const size = UploadChunkSize + 512<<10
	content := make([]byte, size)
	for i := range content {
		content[i] = byte(i % 251)
	}
	write := func(name string) staging.Writer {
		w, err := s.Create(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		for rest := content; len(rest) > 0; {
			n := min(len(rest), 1<<20)
			if _, err := w.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		return w
	}
	write("aborted").Abort()
	if err := write("big").Close(); err != nil {
		t.Fatal(err)
	}
	if got := ListAll(t, s); !reflect.DeepEqual(got, []string{"big"}) {
		t.Errorf("List = %v, want [big] (no aborted object)", got)
	}
	obj, err := s.Open(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	if obj.Size() != size {
		t.Fatalf("Size = %d, want %d", obj.Size(), size)
	}
	for _, off := range []int64{0, UploadChunkSize - 1000, size - 500} {
		buf := make([]byte, 2000)
		n, err := obj.ReadAt(buf, off)
		want := content[off:min(off+2000, size)]
		if !bytes.Equal(buf[:n], want) || (err != nil && err != io.EOF) {
			t.Errorf("ReadAt(off %d): %d bytes, %v; content differs: %v", off, n, err, !bytes.Equal(buf[:n], want))
		}
	}
	got, err := s.ReadAll(ctx, "big")
	if err != nil || !bytes.Equal(got, content) {
		t.Errorf("ReadAll: %d bytes, %v; want the %d bytes written", len(got), err, size)
	}
}

// storeChecksum checks that Checksum answers the CRC32C and size of what
// was written, through Create (in several chunks on GCS) and PutIfAbsent,
// and follows a replacement.
func storeChecksum(t *testing.T, s Store) {
	ctx := t.Context()
	large := make([]byte, UploadChunkSize+300<<10)
	for i := range large {
		large[i] = byte(i*7 + i/1000)
	}
	objects := []struct{ name, content string }{
		{"empty", ""},
		{"a/small", "123456789"},
		{"a/large", string(large)},
	}
	for _, o := range objects {
		WriteObject(t, s, o.name, o.content)
	}
	if err := s.PutIfAbsent(ctx, "log/1.json", []byte(`{"seq":1}`)); err != nil {
		t.Fatal(err)
	}
	objects = append(objects, struct{ name, content string }{"log/1.json", `{"seq":1}`})
	WriteObject(t, s, "a/small", "replaced")
	objects[1].content = "replaced"
	for _, o := range objects {
		sum, size, err := s.Checksum(ctx, o.name)
		want := crc32.Checksum([]byte(o.content), staging.CRC32CTable)
		if err != nil || sum != want || size != int64(len(o.content)) {
			t.Errorf("Checksum(%q) = %08x, %d, %v; want %08x, %d", o.name, sum, size, err, want, len(o.content))
		}
	}
	// The standard check value of CRC32C pins the polynomial.
	if got := crc32.Checksum([]byte("123456789"), staging.CRC32CTable); got != 0xe3069283 {
		t.Errorf("CRC32C(123456789) = %08x, want e3069283", got)
	}
}

func storeNotVisibleUntilClose(t *testing.T, s Store) {
	ctx := t.Context()
	tests := []struct {
		name     string
		data     string
		finish   func(t *testing.T, w staging.Writer)
		wantList []string
	}{
		{"aborted", "data", func(t *testing.T, w staging.Writer) { w.Abort() }, nil},
		{"aborted before writing", "", func(t *testing.T, w staging.Writer) { w.Abort() }, nil},
		{"never closed", "data", func(t *testing.T, w staging.Writer) {}, nil},
		{"abort after close is a no-op", "data", func(t *testing.T, w staging.Writer) {
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			w.Abort()
		}, []string{"dir/abort after close is a no-op"}},
	}
	for _, tt := range tests {
		name := "dir/" + tt.name
		w, err := s.Create(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, tt.data); err != nil {
			t.Fatal(err)
		}
		if names := ListAll(t, s); len(names) != 0 {
			t.Errorf("%s: List before Close = %v, want nothing", tt.name, names)
		}
		if _, err := s.Open(ctx, name); !errors.Is(err, staging.ErrNotExist) {
			t.Errorf("%s: Open before Close: err = %v, want ErrNotExist", tt.name, err)
		}
		tt.finish(t, w)
		if got := ListAll(t, s); !reflect.DeepEqual(got, tt.wantList) {
			t.Errorf("%s: List = %v, want %v", tt.name, got, tt.wantList)
		}
		if tt.wantList != nil {
			if err := s.Delete(ctx, name); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func storeWriterAfterClose(t *testing.T, s Store) {
	w, err := s.Create(t.Context(), "x")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("late")); err == nil {
		t.Error("Write after Close succeeded")
	}
	if err := w.Close(); err == nil {
		t.Error("second Close succeeded")
	}
	if got, err := s.ReadAll(t.Context(), "x"); err != nil || len(got) != 0 {
		t.Errorf("ReadAll = %q, %v; want an empty object", got, err)
	}
}

func storePutIfAbsent(t *testing.T, s Store) {
	ctx := t.Context()
	if err := s.PutIfAbsent(ctx, "log/000001.json", []byte("one")); err != nil {
		t.Fatal(err)
	}
	err := s.PutIfAbsent(ctx, "log/000001.json", []byte("other"))
	if !errors.Is(err, staging.ErrExists) {
		t.Fatalf("second PutIfAbsent: err = %v, want ErrExists", err)
	}
	got, err := s.ReadAll(ctx, "log/000001.json")
	if err != nil || string(got) != "one" {
		t.Errorf("content = %q, %v; want the first write", got, err)
	}
	// An object made by Create is taken as well.
	WriteObject(t, s, "created", "c")
	if err := s.PutIfAbsent(ctx, "created", []byte("p")); !errors.Is(err, staging.ErrExists) {
		t.Errorf("PutIfAbsent over a created object: err = %v, want ErrExists", err)
	}
	if err := s.PutIfAbsent(ctx, "log/000002.json", nil); err != nil {
		t.Errorf("PutIfAbsent of empty data: %v", err)
	}
	want := []string{"created", "log/000001.json", "log/000002.json"}
	if got := ListAll(t, s); !reflect.DeepEqual(got, want) {
		t.Errorf("List = %v, want %v", got, want)
	}
}

func storePutIfAbsentConcurrent(t *testing.T, s Store) {
	ctx := t.Context()
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = s.PutIfAbsent(ctx, "commit", fmt.Appendf(nil, "writer %d", i))
		})
	}
	wg.Wait()
	winner := OneWinner(t, errs, staging.ErrExists, "writer")
	got, err := s.ReadAll(ctx, "commit")
	if want := fmt.Sprintf("writer %d", winner); err != nil || string(got) != want {
		t.Errorf("content = %q, %v; want %q", got, err, want)
	}
}

func storeNotExist(t *testing.T, s Store) {
	ctx := t.Context()
	WriteObject(t, s, "dir/obj", "x")
	for _, name := range []string{"missing", "dir/missing", "dir", "nodir/x", "dir/ob"} {
		if _, err := s.Open(ctx, name); !errors.Is(err, staging.ErrNotExist) {
			t.Errorf("Open(%q): err = %v, want ErrNotExist", name, err)
		}
		if _, err := s.ReadAll(ctx, name); !errors.Is(err, staging.ErrNotExist) {
			t.Errorf("ReadAll(%q): err = %v, want ErrNotExist", name, err)
		}
		if err := s.Delete(ctx, name); !errors.Is(err, staging.ErrNotExist) {
			t.Errorf("Delete(%q): err = %v, want ErrNotExist", name, err)
		}
		if _, _, err := s.Checksum(ctx, name); !errors.Is(err, staging.ErrNotExist) {
			t.Errorf("Checksum(%q): err = %v, want ErrNotExist", name, err)
		}
	}
	if got := ListAll(t, s); !reflect.DeepEqual(got, []string{"dir/obj"}) {
		t.Errorf("List = %v, want [dir/obj]", got)
	}
}

func storeDelete(t *testing.T, s Store) {
	ctx := t.Context()
	WriteObject(t, s, "a/b", "x")
	WriteObject(t, s, "a/c", "y")
	if err := s.Delete(ctx, "a/b"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(ctx, "a/b"); !errors.Is(err, staging.ErrNotExist) {
		t.Errorf("Open after Delete: err = %v, want ErrNotExist", err)
	}
	if err := s.Delete(ctx, "a/b"); !errors.Is(err, staging.ErrNotExist) {
		t.Errorf("second Delete: err = %v, want ErrNotExist", err)
	}
	names, err := s.List(ctx, "a/")
	if err != nil || !reflect.DeepEqual(names, []string{"a/c"}) {
		t.Errorf("List = %v, %v; want [a/c]", names, err)
	}
	// A deleted name can be written again, even with PutIfAbsent.
	if err := s.PutIfAbsent(ctx, "a/b", []byte("again")); err != nil {
		t.Errorf("PutIfAbsent after Delete: %v", err)
	}
}

func storeList(t *testing.T, s Store) {
	ctx := t.Context()
	for _, name := range []string{
		"snap/2025-01-02/part-00010", "snap/2025-01-02/part-00002", "snap/2025-01-02/manifest",
		"snap/2025-01-03/part-00001", "snap.x", "snapshot", "other/f",
	} {
		WriteObject(t, s, name, name)
	}
	// Unfinished objects and locks must never be listed.
	w, err := s.Create(ctx, "snap/2025-01-02/part-00003")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, "unfinished"); err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	lease, err := s.Lock(ctx, "snap/2025-01-02/lock")
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()

	tests := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"other/f", "snap.x", "snap/2025-01-02/manifest", "snap/2025-01-02/part-00002",
			"snap/2025-01-02/part-00010", "snap/2025-01-03/part-00001", "snapshot"}},
		{"snap/", []string{"snap/2025-01-02/manifest", "snap/2025-01-02/part-00002",
			"snap/2025-01-02/part-00010", "snap/2025-01-03/part-00001"}},
		{"snap/2025-01-02/part-", []string{"snap/2025-01-02/part-00002", "snap/2025-01-02/part-00010"}},
		{"snap/2025-01", []string{"snap/2025-01-02/manifest", "snap/2025-01-02/part-00002",
			"snap/2025-01-02/part-00010", "snap/2025-01-03/part-00001"}},
		{"snap", []string{"snap.x", "snap/2025-01-02/manifest", "snap/2025-01-02/part-00002",
			"snap/2025-01-02/part-00010", "snap/2025-01-03/part-00001", "snapshot"}},
		{"snap/2025-01-02/manifest", []string{"snap/2025-01-02/manifest"}},
		{"missing/dir/x", nil},
		{"snap/2025-01-04/", nil},
		{"zzz", nil},
	}
	for _, tt := range tests {
		got, err := s.List(ctx, tt.prefix)
		if err != nil {
			t.Errorf("List(%q): %v", tt.prefix, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("List(%q) =\n%#v\nwant\n%#v", tt.prefix, got, tt.want)
		}
	}
}

// BadNames is the suite's check that every method refuses the names no
// Store accepts (staging.ErrBadName) and that nothing is stored, for a
// store's own test that checks more after it.
func BadNames(t *testing.T, s Store) {
	t.Helper()
	storeBadNames(t, s)
}

func storeBadNames(t *testing.T, s Store) {
	ctx := t.Context()
	for _, name := range []string{"", ".", "..", "../x", "a/../../x", "/etc/passwd", "a//b", "a/", "./a", ".hidden", "a/.tmp-x", ".locks/x"} {
		if _, err := s.Create(ctx, name); !errors.Is(err, staging.ErrBadName) {
			t.Errorf("Create(%q): err = %v, want ErrBadName", name, err)
		}
		if err := s.PutIfAbsent(ctx, name, nil); !errors.Is(err, staging.ErrBadName) {
			t.Errorf("PutIfAbsent(%q): err = %v, want ErrBadName", name, err)
		}
		if _, err := s.Open(ctx, name); !errors.Is(err, staging.ErrBadName) {
			t.Errorf("Open(%q): err = %v, want ErrBadName", name, err)
		}
		if _, err := s.ReadAll(ctx, name); !errors.Is(err, staging.ErrBadName) {
			t.Errorf("ReadAll(%q): err = %v, want ErrBadName", name, err)
		}
		if err := s.Delete(ctx, name); !errors.Is(err, staging.ErrBadName) {
			t.Errorf("Delete(%q): err = %v, want ErrBadName", name, err)
		}
		if _, err := s.Lock(ctx, name); !errors.Is(err, staging.ErrBadName) {
			t.Errorf("Lock(%q): err = %v, want ErrBadName", name, err)
		}
		if _, _, err := s.Checksum(ctx, name); !errors.Is(err, staging.ErrBadName) {
			t.Errorf("Checksum(%q): err = %v, want ErrBadName", name, err)
		}
	}
	for _, prefix := range []string{"../", "../../etc/pa", "/etc/", "a/../../", "a//"} {
		if _, err := s.List(ctx, prefix); !errors.Is(err, staging.ErrBadName) {
			t.Errorf("List(%q): err = %v, want ErrBadName", prefix, err)
		}
	}
	if got := ListAll(t, s); len(got) != 0 {
		t.Errorf("List = %v, want nothing", got)
	}
}

func storeCanceledContext(t *testing.T, s Store) {
	WriteObject(t, s, "x", "x")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	calls := []struct {
		name string
		call func() error
	}{
		{"Create", func() error { _, err := s.Create(ctx, "y"); return err }},
		{"PutIfAbsent", func() error { return s.PutIfAbsent(ctx, "y", nil) }},
		{"Open", func() error { _, err := s.Open(ctx, "x"); return err }},
		{"ReadAll", func() error { _, err := s.ReadAll(ctx, "x"); return err }},
		{"List", func() error { _, err := s.List(ctx, ""); return err }},
		{"Delete", func() error { return s.Delete(ctx, "x") }},
		{"Lock", func() error { _, err := s.Lock(ctx, "x"); return err }},
		{"Checksum", func() error { _, _, err := s.Checksum(ctx, "x"); return err }},
	}
	for _, c := range calls {
		if err := c.call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s: err = %v, want context.Canceled", c.name, err)
		}
	}
	if got := ListAll(t, s); !reflect.DeepEqual(got, []string{"x"}) {
		t.Errorf("List = %v, want [x] (nothing changed)", got)
	}
}

func storeLock(t *testing.T, s Store) {
	ctx := t.Context()
	lease, err := s.Lock(ctx, "snap/lock")
	if err != nil {
		t.Fatal(err)
	}
	// Held even against the same process.
	if _, err := s.Lock(ctx, "snap/lock"); !errors.Is(err, staging.ErrLocked) {
		t.Fatalf("second Lock: err = %v, want ErrLocked", err)
	}
	other, err := s.Lock(ctx, "snap/other")
	if err != nil {
		t.Fatalf("Lock of another name: %v", err)
	}
	if err := other.Release(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lease.Lost():
		t.Fatalf("lease lost while held: %v", lease.Err())
	default:
	}
	if err := lease.Err(); err != nil {
		t.Errorf("Err of a held lease = %v, want nil", err)
	}
	if err := lease.Release(); err != nil {
		t.Fatal(err)
	}
	if err := lease.Release(); err != nil {
		t.Errorf("second Release: %v", err)
	}
	again, err := s.Lock(ctx, "snap/lock")
	if err != nil {
		t.Fatalf("Lock after Release: %v", err)
	}
	if err := again.Release(); err != nil {
		t.Fatal(err)
	}
	if got := ListAll(t, s); len(got) != 0 {
		t.Errorf("List = %v, want no lock objects", got)
	}
}

func storeLockConcurrent(t *testing.T, s Store) {
	ctx := t.Context()
	const n = 8
	leases := make([]staging.Lease, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { leases[i], errs[i] = s.Lock(ctx, "run") })
	}
	wg.Wait()
	winner := OneWinner(t, errs, staging.ErrLocked, "locker")
	if err := leases[winner].Release(); err != nil {
		t.Fatal(err)
	}
}

// OneWinner checks that exactly one of errs is nil and every other is
// lost (staging.ErrExists, staging.ErrLocked), and returns the index of the winner. what
// names a contender in messages.
func OneWinner(t *testing.T, errs []error, lost error, what string) int {
	t.Helper()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("%s: %d and %d both won", what, winner, i)
			}
			winner = i
		case !errors.Is(err, lost):
			t.Errorf("%s %d: err = %v, want %v", what, i, err, lost)
		}
	}
	if winner < 0 {
		t.Fatalf("no %s won", what)
	}
	return winner
}

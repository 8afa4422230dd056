package exporter

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/staging/stagingtest"
	"github.com/bindsync/bindsync/twilio"
)

var (
	day1 = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	day2 = time.Date(2025, 6, 2, 0, 0, 0, 0, time.UTC)
)

// stagedSnapshot writes each slice of bindings as one part, named so that
// name order is the order of groups, and returns the snapshot.
func stagedSnapshot(t *testing.T, store staging.Store, date time.Time, prefix string, groups ...[]twilio.Binding) Snapshot {
	t.Helper()
	s := Snapshot{Date: date, Store: store, RunID: "run-" + prefix, Tables: []Table{{Name: BindingsTable, Schema: schemas.Binding()}}}
	// Register the parts in reverse to check that Publish orders them.
	for i := len(groups) - 1; i >= 0; i-- {
		name := prefix + "/part-" + string(rune('a'+i)) + ".parquet"
		s.Tables[0].Parts = append(s.Tables[0].Parts, writePart(t, store, name, groups[i], PartOptions{BatchRows: 100}))
	}
	return s
}

// readSnapshot reads every Parquet file of a published date in file order,
// the way a reader of the warehouse would.
func readSnapshot(t *testing.T, l LocalWarehouse, date time.Time) ([]string, []schemas.Row) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(l.SnapshotDir(date), "*.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	var names []string
	var rows []schemas.Row
	for _, p := range files {
		names = append(names, filepath.Base(p))
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		st, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		err = ReadParquetFile(context.Background(), f, st.Size(), func(r schemas.Row) error {
			rows = append(rows, r)
			return nil
		})
		f.Close()
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
	}
	return names, rows
}

func concat(groups ...[]twilio.Binding) []twilio.Binding {
	var out []twilio.Binding
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

func tmpEntries(t *testing.T, l LocalWarehouse) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(l.Path, ".tmp"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestLocalWarehousePublish(t *testing.T) {
	ctx := context.Background()
	stores := []struct {
		name  string
		store func(t *testing.T) staging.Store
	}{
		{"local dir (hard links)", func(t *testing.T) staging.Store { return stagingtest.NewDir(t) }},
		{"other store (copies)", func(t *testing.T) staging.Store { return newMemStore() }},
	}
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			store := st.store(t)
			l := LocalWarehouse{Path: filepath.Join(t.TempDir(), "warehouse")}
			a, b, c := testBindings(0, 250), testBindings(250, 10), testBindings(260, 0)

			// First publish of day 1: three parts, one of them empty.
			if err := l.Publish(ctx, stagedSnapshot(t, store, day1, "v1", a, b, c)); err != nil {
				t.Fatal(err)
			}
			names, rows := readSnapshot(t, l, day1)
			if want := []string{"part-00000.parquet", "part-00001.parquet", "part-00002.parquet"}; !reflect.DeepEqual(names, want) {
				t.Errorf("files = %v, want %v", names, want)
			}
			if want := wantRows(concat(a, b, c), testMeta); !reflect.DeepEqual(rows, want) {
				t.Errorf("day 1 has %d rows, want the %d published", len(rows), len(want))
			}
			if got := l.SnapshotDir(day1); got != filepath.Join(l.Path, "user_bindings", "snapshot_date=2025-06-01") {
				t.Errorf("SnapshotDir = %q", got)
			}

			// Publishing day 1 again replaces it.
			d := testBindings(1000, 42)
			if err := l.Publish(ctx, stagedSnapshot(t, store, day1, "v2", d)); err != nil {
				t.Fatal(err)
			}
			names, rows = readSnapshot(t, l, day1)
			if !reflect.DeepEqual(names, []string{"part-00000.parquet"}) {
				t.Errorf("after republish files = %v, want one part", names)
			}
			if want := wantRows(d, testMeta); !reflect.DeepEqual(rows, want) {
				t.Errorf("after republish day 1 has %d rows, want only the %d new ones", len(rows), len(want))
			}

			// Another date leaves day 1 alone.
			e := testBindings(2000, 7)
			if err := l.Publish(ctx, stagedSnapshot(t, store, day2, "v3", e)); err != nil {
				t.Fatal(err)
			}
			if _, rows := readSnapshot(t, l, day1); len(rows) != len(d) {
				t.Errorf("day 1 has %d rows after publishing day 2, want %d", len(rows), len(d))
			}
			if _, rows := readSnapshot(t, l, day2); !reflect.DeepEqual(rows, wantRows(e, testMeta)) {
				t.Errorf("day 2 has %d rows, want %d", len(rows), len(e))
			}

			if left := tmpEntries(t, l); len(left) != 0 {
				t.Errorf("leftovers in .tmp: %v", left)
			}
			all, err := filepath.Glob(filepath.Join(l.Path, "user_bindings", "*", "*.parquet"))
			if err != nil || len(all) != 2 {
				t.Errorf("warehouse files = %v, %v; want one per date", all, err)
			}
		})
	}
}

func TestLocalWarehouseRemovesLeftovers(t *testing.T) {
	ctx := context.Background()
	store := stagingtest.NewDir(t)
	l := LocalWarehouse{Path: t.TempDir()}
	// What a publish killed halfway would leave, for day 1 and for day 2.
	for _, dir := range []string{"user_bindings_snapshot_date=2025-06-01.123", "user_bindings_snapshot_date=2025-06-01.456/old", "user_bindings_snapshot_date=2025-06-02.789"} {
		p := filepath.Join(l.Path, ".tmp", dir)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "part-00000.parquet"), []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bs := testBindings(0, 20)
	if err := l.Publish(ctx, stagedSnapshot(t, store, day1, "v1", bs)); err != nil {
		t.Fatal(err)
	}
	if _, rows := readSnapshot(t, l, day1); len(rows) != len(bs) {
		t.Errorf("day 1 has %d rows, want %d", len(rows), len(bs))
	}
	// Only the leftovers of the published date are removed: day 2 may be
	// being published by someone else.
	if left := tmpEntries(t, l); !reflect.DeepEqual(left, []string{"user_bindings_snapshot_date=2025-06-02.789"}) {
		t.Errorf(".tmp holds %v, want only the day 2 leftover", left)
	}
}

func TestLocalWarehouseFailureKeepsPrevious(t *testing.T) {
	ctx := context.Background()
	store := stagingtest.NewDir(t)
	l := LocalWarehouse{Path: t.TempDir()}
	old := testBindings(0, 30)
	if err := l.Publish(ctx, stagedSnapshot(t, store, day1, "v1", old)); err != nil {
		t.Fatal(err)
	}
	bad := stagedSnapshot(t, store, day1, "v2", testBindings(100, 5), testBindings(200, 5))
	tests := []struct {
		name     string
		mutate   func(s Snapshot) Snapshot
		canceled bool
	}{
		{"missing part", func(s Snapshot) Snapshot {
			s.Tables[0].Parts = append(append([]PartInfo(nil), s.Tables[0].Parts...), PartInfo{Name: "v2/part-z.parquet", Rows: 1, Bytes: 10})
			return s
		}, false},
		{"size mismatch", func(s Snapshot) Snapshot {
			s.Tables[0].Parts = append([]PartInfo(nil), s.Tables[0].Parts...)
			s.Tables[0].Parts[0].Bytes++
			return s
		}, false},
		{"duplicate part", func(s Snapshot) Snapshot {
			s.Tables[0].Parts = append(append([]PartInfo(nil), s.Tables[0].Parts...), s.Tables[0].Parts[0])
			return s
		}, false},
		{"canceled", func(s Snapshot) Snapshot { return s }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctx
			if tt.canceled {
				c, cancel := context.WithCancel(ctx)
				cancel()
				ctx = c
			}
			err := l.Publish(ctx, tt.mutate(bad))
			if err == nil {
				t.Fatal("Publish succeeded")
			}
			if !strings.Contains(err.Error(), "snapshot_date=2025-06-01") {
				t.Errorf("error %q does not name the partition", err)
			}
			if _, rows := readSnapshot(t, l, day1); !reflect.DeepEqual(rows, wantRows(old, testMeta)) {
				t.Errorf("previous snapshot changed: %d rows, want %d", len(rows), len(old))
			}
			if left := tmpEntries(t, l); len(left) != 0 {
				t.Errorf("leftovers in .tmp: %v", left)
			}
		})
	}
}

func TestLocalWarehouseEmptySnapshot(t *testing.T) {
	ctx := context.Background()
	store := stagingtest.NewDir(t)
	l := LocalWarehouse{Path: t.TempDir()}
	if err := l.Publish(ctx, stagedSnapshot(t, store, day1, "v1", testBindings(0, 5))); err != nil {
		t.Fatal(err)
	}
	// A day with no bindings at all replaces the old rows with none.
	if err := l.Publish(ctx, Snapshot{Date: day1, Store: store, Tables: []Table{{Name: BindingsTable}}}); err != nil {
		t.Fatal(err)
	}
	names, rows := readSnapshot(t, l, day1)
	if len(names) != 0 || len(rows) != 0 {
		t.Errorf("empty snapshot has files %v and %d rows", names, len(rows))
	}
	if _, err := os.Stat(l.SnapshotDir(day1)); err != nil {
		t.Errorf("empty snapshot has no directory: %v", err)
	}
}

func TestLocalWarehouseInvalid(t *testing.T) {
	ctx := context.Background()
	if err := (LocalWarehouse{}).Publish(ctx, Snapshot{Date: day1, Store: newMemStore(), Tables: []Table{{Name: BindingsTable}}}); err == nil {
		t.Error("Publish with an empty path succeeded")
	}
	if err := (LocalWarehouse{Path: t.TempDir()}).Publish(ctx, Snapshot{Date: day1, Tables: []Table{{Name: BindingsTable}}}); err == nil {
		t.Error("Publish without a store succeeded")
	}
	if got := (LocalWarehouse{Path: "/data/wh"}).Describe(); got != "local warehouse /data/wh" {
		t.Errorf("Describe = %q", got)
	}
}

// TestLocalWarehouseReadersNeverSeeTmp lists the table the way readers do
// while the same date is published again and again: no file outside the
// Hive layout may ever show up.
func TestLocalWarehouseReadersNeverSeeTmp(t *testing.T) {
	ctx := context.Background()
	store := stagingtest.NewDir(t)
	l := LocalWarehouse{Path: t.TempDir()}
	small := stagedSnapshot(t, store, day1, "small", testBindings(0, 3))
	big := stagedSnapshot(t, store, day1, "big", testBindings(0, 3), testBindings(3, 3), testBindings(6, 3))
	if err := l.Publish(ctx, small); err != nil {
		t.Fatal(err)
	}

	valid := regexp.MustCompile(`^user_bindings/snapshot_date=2025-06-01/part-0000[0-2]\.parquet$`)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			// Walk the whole table, as a recursive glob (user_bindings/**)
			// or Hive partition discovery would.
			filepath.WalkDir(filepath.Join(l.Path, "user_bindings"), func(p string, e fs.DirEntry, err error) error {
				if err != nil || e.IsDir() {
					return nil // entries vanish while the swap runs
				}
				rel, _ := filepath.Rel(l.Path, p)
				if !valid.MatchString(filepath.ToSlash(rel)) {
					bad = append(bad, rel)
				}
				return nil
			})
		}
	}()
	for i := range 30 {
		s := small
		if i%2 == 0 {
			s = big
		}
		if err := l.Publish(ctx, s); err != nil {
			t.Error(err)
			break
		}
	}
	close(stop)
	wg.Wait()
	if len(bad) != 0 {
		t.Errorf("readers saw files outside the table layout: %v", bad)
	}
}

func TestSwapIn(t *testing.T) {
	tests := []struct {
		name        string
		noExchange  bool
		targetExist bool
	}{
		{"new date", false, false},
		{"replace by exchange", false, true},
		{"replace without exchange support", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.noExchange {
				orig := renameExchange
				renameExchange = func(a, b string) error { return errExchangeUnsupported }
				defer func() { renameExchange = orig }()
			}
			root := t.TempDir()
			tmpRoot := filepath.Join(root, ".tmp")
			newDir := filepath.Join(tmpRoot, "snapshot_date=2025-06-01.1")
			target := filepath.Join(root, "user_bindings", "snapshot_date=2025-06-01")
			mustWrite(t, filepath.Join(newDir, "new"))
			if tt.targetExist {
				mustWrite(t, filepath.Join(target, "old"))
			} else if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				t.Fatal(err)
			}

			old, err := swapIn(newDir, target, tmpRoot, "snapshot_date=2025-06-01")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(target, "new")); err != nil {
				t.Errorf("new snapshot not in place: %v", err)
			}
			if _, err := os.Stat(filepath.Join(target, "old")); err == nil {
				t.Error("old snapshot still in place")
			}
			if !tt.targetExist {
				if old != "" {
					t.Errorf("old = %q, want none", old)
				}
				return
			}
			if !strings.HasPrefix(old, tmpRoot+string(filepath.Separator)) {
				t.Errorf("old snapshot moved to %q, want under %s", old, tmpRoot)
			}
			found := false
			filepath.Walk(old, func(p string, info os.FileInfo, err error) error {
				found = found || (err == nil && info.Name() == "old")
				return nil
			})
			if !found {
				t.Errorf("old snapshot not found under %s", old)
			}
		})
	}
}

func mustWrite(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(filepath.Base(path)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPublishFollowsUmask checks that the warehouse's files and
// directories get 0666 and 0777 less the umask, whether parts are linked
// from a local staging directory (whose files are 0600) or copied from
// another store. The umask belongs to the process: this test must not run
// in parallel with others.
func TestPublishFollowsUmask(t *testing.T) {
	for _, mask := range []int{0o022, 0o027, 0o077} {
		for _, linked := range []bool{true, false} {
			t.Run(fmt.Sprintf("umask %03o linked %v", mask, linked), func(t *testing.T) {
				old := syscall.Umask(mask)
				defer syscall.Umask(old)
				var store staging.Store = newMemStore()
				if linked {
					store = stagingtest.NewDir(t)
				}
				l := LocalWarehouse{Path: filepath.Join(t.TempDir(), "warehouse")}
				snap := stagedSnapshot(t, store, day1, "p", testBindings(0, 10), testBindings(10, 5))
				snap.Tables = append(snap.Tables, Table{Name: UsersTable, Parts: []PartInfo{snap.Tables[0].Parts[0]}})
				if err := l.Publish(context.Background(), snap); err != nil {
					t.Fatal(err)
				}
				wantFile := fs.FileMode(0o666 &^ mask)
				wantDir := fs.ModeDir | fs.FileMode(0o777&^mask)
				n := 0
				err := filepath.WalkDir(l.Path, func(p string, e fs.DirEntry, err error) error {
					if err != nil {
						return err
					}
					st, err := os.Stat(p)
					if err != nil {
						return err
					}
					want := wantFile
					if st.IsDir() {
						want = wantDir
					}
					if st.Mode() != want {
						t.Errorf("%s has mode %v, want %v", p, st.Mode(), want)
					}
					n++
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				// Root, .tmp, two tables with a date each, three files.
				if n != 9 {
					t.Errorf("checked %d paths, want 9", n)
				}
			})
		}
	}
}

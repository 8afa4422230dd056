// Package snapshottest holds what tests need to compare a published
// snapshot with the fake Twilio world it was read from: the bindings a
// selection of services and users should yield, the rows of a local
// warehouse snapshot, and one canonical text form of a binding so that two
// sorted lists compare field by field (nulls, empty lists, timestamps).
package snapshottest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

// Selection is one configured service: all its users, or the listed ones
// (SIDs or identities), with an optional binding type filter.
type Selection struct {
	Service string
	All     bool
	Users   []string
	Types   []string
}

// UsersOf lists the users of s as a run addresses them: by SID for all
// users, as configured otherwise.
func UsersOf(w *twiliotest.World, s Selection) []string {
	if !s.All {
		return s.Users
	}
	var out []string
	for _, u := range w.Service(s.Service).Users {
		out = append(out, u.SID)
	}
	return out
}

// Want returns the bindings of the world that a run of the selections
// must publish, in canonical form, sorted.
func Want(w *twiliotest.World, sel []Selection) []string {
	var out []string
	for _, s := range sel {
		for _, u := range UsersOf(w, s) {
			for _, b := range w.Bindings(s.Service, u, s.Types) {
				out = append(out, Canonical(b))
			}
		}
	}
	sort.Strings(out)
	return out
}

// Canonical renders a binding as JSON: a null and an empty list differ,
// and timestamps are in one form.
func Canonical(b twilio.Binding) string {
	data, err := json.Marshal(b)
	if err != nil {
		panic(err)
	}
	return string(data)
}

// ReadLocal returns the rows of the snapshot of day in a local warehouse,
// in canonical form, sorted. Every row must carry that snapshot date and
// a sync time.
func ReadLocal(t testing.TB, warehouse string, day time.Time) []string {
	t.Helper()
	var out []string
	eachFile(t, exporter.LocalWarehouse{Path: warehouse}.SnapshotDir(day), func(f *os.File, size int64) error {
		return exporter.ReadParquetFile(context.Background(), f, size, func(r schemas.Row) error {
			if !r.SnapshotDate.Equal(day) || r.SyncedAt.IsZero() {
				return fmt.Errorf("row with snapshot_date %v synced_at %v", r.SnapshotDate, r.SyncedAt)
			}
			out = append(out, Canonical(r.Binding))
			return nil
		})
	})
	sort.Strings(out)
	return out
}

// Equal fails t unless got and want, both sorted, are the same rows: every
// binding exactly once, every field equal.
func Equal(t testing.TB, got, want []string) {
	t.Helper()
	if len(want) == 0 {
		t.Fatal("the test world has no bindings to compare")
	}
	if len(got) != len(want) {
		t.Errorf("published %d rows, want %d", len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Fatalf("first difference at row %d:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
}

// WantUsers returns the user rows a run of the selections must publish, as
// "service|user|bindings|state", sorted; gone lists users deleted in the
// world (by the key the run addresses them with), who are "gone" with no
// bindings.
func WantUsers(w *twiliotest.World, sel []Selection, states map[string]string) []string {
	var out []string
	for _, s := range sel {
		for _, u := range UsersOf(w, s) {
			if st := states[u]; st != "" {
				out = append(out, fmt.Sprintf("%s|%s|0|%s", s.Service, u, st))
				continue
			}
			out = append(out, fmt.Sprintf("%s|%s|%d|read", s.Service, u, len(w.Bindings(s.Service, u, s.Types))))
		}
	}
	sort.Strings(out)
	return out
}

// ReadLocalUsers returns the user rows of the snapshot of day in a local
// warehouse, as WantUsers renders them, sorted. Every user read must carry
// its SID, and the identity the world gives it.
func ReadLocalUsers(t testing.TB, warehouse string, w *twiliotest.World, day time.Time) []string {
	t.Helper()
	var out []string
	eachFile(t, exporter.LocalWarehouse{Path: warehouse}.UsersSnapshotDir(day), func(f *os.File, size int64) error {
		return exporter.ReadUsersFile(context.Background(), f, size, func(u schemas.UserRow) error {
			if !u.SnapshotDate.Equal(day) {
				return fmt.Errorf("user row with snapshot_date %v", u.SnapshotDate)
			}
			if u.State == schemas.UserRead && u.Bindings > 0 {
				wu := w.Service(u.ServiceSID).User(u.User)
				if wu == nil || u.UserSID == nil || *u.UserSID != wu.SID || u.Identity == nil || *u.Identity != wu.Identity {
					return fmt.Errorf("user row %+v: SID or identity missing or wrong", u)
				}
			}
			out = append(out, fmt.Sprintf("%s|%s|%d|%s", u.ServiceSID, u.User, u.Bindings, u.State))
			return nil
		})
	})
	sort.Strings(out)
	return out
}

// eachFile calls read for every Parquet file of dir, which must hold some.
func eachFile(t testing.TB, dir string, read func(f *os.File, size int64) error) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.parquet"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no parquet files in %s (%v)", dir, err)
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := f.Stat()
		if err == nil {
			err = read(f, fi.Size())
		}
		f.Close()
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
	}
}

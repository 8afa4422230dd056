package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

// interruptedEnv runs a snapshot that is interrupted after some pages, so
// that its checkpoint holds several committed parts, done and in-flight
// users; it returns the environment and the options to resume with.
func interruptedEnv(t *testing.T, seed int64) (*env, Options) {
	t.Helper()
	e := newEnv(t, twiliotest.WorldSpec{Seed: seed, Services: 2, UsersPerService: 40, MaxBindingsPerUser: 90}, twiliotest.Faults{})
	opts := e.options()
	opts.PageSize = 20
	opts.PartRows = 250
	opts.Concurrency = 4
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := Run(ctx, &interrupting{Source: e.client, n: 70, cancel: cancel}, opts, day); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v", err)
	}
	l, err := checkpoint.Open(context.Background(), e.store, day)
	if err != nil {
		t.Fatal(err)
	}
	if st := l.State(); len(st.Parts) < 3 || st.UsersDone == 0 {
		t.Fatalf("test setup: %d parts, %d users done; want several", len(st.Parts), st.UsersDone)
	}
	return e, opts
}

func (e *env) stagingPath(name string) string { return e.store.URI(name) }

// TestDamagedPartIsReadAgain: a part with bytes flipped (same size), or a
// part gone, is never published; its users are read again and the
// snapshot is exact.
func TestDamagedPartIsReadAgain(t *testing.T) {
	t.Parallel()
	for _, damage := range []string{"flipped", "missing", "short"} {
		t.Run(damage, func(t *testing.T) {
			e, opts := interruptedEnv(t, 61)
			l, _ := checkpoint.Open(context.Background(), e.store, day)
			victim := l.State().Parts[1].Name
			path := e.stagingPath(victim)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			switch damage {
			case "flipped":
				for i := len(data) / 3; i < len(data)/3+16; i++ {
					data[i] ^= 0xff
				}
				err = os.WriteFile(path, data, 0o600)
			case "missing":
				err = os.Remove(path)
			case "short":
				err = os.WriteFile(path, data[:len(data)/2], 0o600)
			}
			if err != nil {
				t.Fatal(err)
			}
			res, err := Run(context.Background(), e.client, opts, day)
			if err != nil {
				t.Fatal(err)
			}
			if res.Summary.Status != "succeeded" {
				t.Errorf("status = %q", res.Summary.Status)
			}
			e.checkExact()
		})
	}
}

// TestHoleInTheLogIsAnErrorWithAdviceThatWorks: a damaged checkpoint entry
// stops the run with advice; following either half of it (moving the entry
// and every later one away, or --force) ends in an exact snapshot.
func TestHoleInTheLogIsAnErrorWithAdviceThatWorks(t *testing.T) {
	t.Parallel()
	for _, follow := range []string{"move entries away", "force"} {
		t.Run(follow, func(t *testing.T) {
			e, opts := interruptedEnv(t, 63)
			logDir := e.stagingPath(checkpoint.Dir(day) + "/_log")
			names, err := filepath.Glob(filepath.Join(logDir, "*.json"))
			if err != nil || len(names) < 6 {
				t.Fatalf("test setup: %d log entries (%v)", len(names), err)
			}
			sort.Strings(names)
			hole := len(names) / 2
			if err := os.WriteFile(names[hole], []byte("{not json"), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = Run(context.Background(), e.client, opts, day)
			if err == nil || !strings.Contains(err.Error(), "--force") || !strings.Contains(err.Error(), filepath.Base(names[hole])) {
				t.Fatalf("err = %v, want advice naming the entry and --force", err)
			}
			switch follow {
			case "move entries away":
				aside := t.TempDir()
				for _, n := range names[hole:] {
					if err := os.Rename(n, filepath.Join(aside, filepath.Base(n))); err != nil {
						t.Fatal(err)
					}
				}
			case "force":
				opts.Force = true
			}
			if _, err := Run(context.Background(), e.client, opts, day); err != nil {
				t.Fatal(err)
			}
			e.checkExact()
		})
	}
}

// TestNullBindingTypeStaysNullAndIsCounted: a binding without its required
// binding_type keeps a null (never a made-up ""), and the run counts it.
func TestNullBindingTypeStaysNullAndIsCounted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, twiliotest.WorldSpec{Seed: 65, Services: 1, UsersPerService: 10, MaxBindingsPerUser: 30}, twiliotest.Faults{})
	svc := e.world.Services[0]
	victim := ""
	for _, u := range svc.Users {
		if len(e.world.Bindings(svc.SID, u.SID, nil)) >= 2 {
			victim = u.SID
			break
		}
	}
	e.srv.SetFaults(twiliotest.Faults{NullBindingTypeUsers: []string{victim}})
	res, err := Run(context.Background(), e.client, e.options(), day)
	if err != nil {
		t.Fatal(err)
	}
	n := int64(len(e.world.Bindings(svc.SID, victim, nil)))
	if got := res.Summary.ContractViolations[schemas.ViolationBindingTypeNull]; got != n {
		t.Errorf("binding_type_null violations = %d, want %d (%v)", got, n, res.Summary.ContractViolations)
	}
	nulls := 0
	files, _ := filepath.Glob(filepath.Join(e.warehouse.SnapshotDir(day), "*.parquet"))
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		err = exporter.ReadParquetFile(context.Background(), f, st.Size(), func(r schemas.Row) error {
			if r.BindingType == nil {
				if *r.UserSID != victim {
					return fmt.Errorf("null binding_type on user %s", *r.UserSID)
				}
				nulls++
			} else if *r.BindingType == "" {
				return errors.New("a made-up empty binding_type")
			}
			return nil
		})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if int64(nulls) != n {
		t.Errorf("%d rows with a null binding_type, want %d", nulls, n)
	}
}

// TestManyFailedUsersStayBounded: when every user fails with a long
// message, the summary names at most MaxNamedFailures of them with short
// reasons, counts them all, and the checkpoint stays small.
func TestManyFailedUsersStayBounded(t *testing.T) {
	t.Parallel()
	const users = MaxNamedFailures + 100
	e := newEnv(t, twiliotest.WorldSpec{Seed: 67, Services: 1, UsersPerService: users, MaxBindingsPerUser: 1}, twiliotest.Faults{})
	fail := map[string]int{}
	e.services = []Service{{SID: e.world.Services[0].SID}}
	for _, u := range e.world.Services[0].Users {
		fail[u.SID] = 400
		e.services[0].Users = append(e.services[0].Users, u.SID)
	}
	// Messages of 4 KB, well past what a reason keeps (600 bytes), and
	// 1,100 of them: the default 64 KB would make this test read 70 MB.
	e.srv.SetFaults(twiliotest.Faults{FailUsers: fail, HostileErrors: true, HostileErrorBytes: 4 << 10})
	res, err := Run(context.Background(), e.client, e.options(), day)
	if !errors.Is(err, ErrUsersFailed) {
		t.Fatalf("err = %v", err)
	}
	if res.Summary.UsersFailedCount != users || len(res.Summary.UsersFailed) != MaxNamedFailures {
		t.Errorf("failed count %d, named %d; want %d and %d", res.Summary.UsersFailedCount, len(res.Summary.UsersFailed), users, MaxNamedFailures)
	}
	for _, f := range res.Summary.UsersFailed {
		if len(f.Reason) > 600 {
			t.Fatalf("a reason of %d bytes", len(f.Reason))
		}
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("(%d)", users)) {
		t.Errorf("error does not count every failed user: %.200s", err)
	}
	var size int64
	filepath.Walk(e.stagingPath(checkpoint.Dir(day)), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			size += fi.Size()
		}
		return nil
	})
	if size > 4<<20 {
		t.Errorf("checkpoint of %d bytes for %d failed users", size, users)
	}
}

package worker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/internal/snapshottest"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

var day = time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)

type env struct {
	t         *testing.T
	world     *twiliotest.World
	srv       *twiliotest.Server
	client    *twilio.Client
	store     *staging.Dir
	warehouse exporter.LocalWarehouse
	services  []Service
}

func newEnv(t *testing.T, spec twiliotest.WorldSpec, faults twiliotest.Faults) *env {
	t.Helper()
	world := twiliotest.NewWorld(spec)
	srv := twiliotest.NewServer(twiliotest.Options{World: world, AccountSID: world.AccountSID, AuthToken: twiliotest.DefaultAuthToken, Faults: faults})
	t.Cleanup(srv.Close)
	client := newClient(t, srv.URL(), world.AccountSID, twiliotest.DefaultAuthToken)
	dir := t.TempDir()
	store, err := staging.NewDir(filepath.Join(dir, "staging"))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, world: world, srv: srv, client: client, store: store, warehouse: exporter.LocalWarehouse{Path: filepath.Join(dir, "warehouse")}}
	// Service 0 whole through the Users API, user by user (walk_test.go
	// reads it with the service strategy); service 1 by a list of users
	// (special identities, SIDs) with a filter.
	e.services = []Service{{SID: world.Services[0].SID, AllUsers: true, Strategy: StrategyPerUser}}
	if len(world.Services) > 1 {
		s := world.Services[1]
		var users []string
		for i, u := range s.Users {
			switch {
			case slices.Contains(twiliotest.SpecialIdentities, u.Identity):
				users = append(users, u.Identity)
			case i%3 == 0:
				users = append(users, u.SID)
			}
		}
		if len(s.Users) >= 2*len(twiliotest.SpecialIdentities) && len(users) < len(twiliotest.SpecialIdentities) {
			t.Fatalf("test setup: special identities missing from %v", users)
		}
		e.services = append(e.services, Service{SID: s.SID, Users: users, BindingTypes: []string{"gcm", "fcm"}})
	}
	return e
}

func newClient(t *testing.T, url, user, pass string) *twilio.Client {
	t.Helper()
	c, err := twilio.New(twilio.Config{BaseURL: url, Username: user, Password: pass, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond, MaxAttempts: 8})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *env) options() Options {
	return Options{
		Services:    e.services,
		PageSize:    50,
		Concurrency: 8,
		Store:       e.store,
		Locker:      e.store,
		Publishers:  []exporter.Publisher{e.warehouse},
		BatchRows:   100,
	}
}

// selections describes the environment's services for snapshottest.
func (e *env) selections() []snapshottest.Selection {
	var out []snapshottest.Selection
	for _, s := range e.services {
		out = append(out, snapshottest.Selection{Service: s.SID, All: s.AllUsers, Users: s.Users, Types: s.BindingTypes})
	}
	return out
}

func (e *env) want() []string { return snapshottest.Want(e.world, e.selections()) }

func (e *env) published() []string { return snapshottest.ReadLocal(e.t, e.warehouse.Path, day) }

// checkExact asserts the published snapshot holds every binding of the
// world exactly once, every field equal, and every user once with its
// number of bindings.
func (e *env) checkExact() {
	e.t.Helper()
	snapshottest.Equal(e.t, e.published(), e.want())
	e.checkUsers(nil)
}

// checkUsers asserts the published users table; states names the users
// that are not read (gone, not_found).
func (e *env) checkUsers(states map[string]string) {
	e.t.Helper()
	snapshottest.Equal(e.t, snapshottest.ReadLocalUsers(e.t, e.warehouse.Path, e.world, day), snapshottest.WantUsers(e.world, e.selections(), states))
}

func TestRunPublishesEveryBindingOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, twiliotest.WorldSpec{Seed: 1, Services: 2, UsersPerService: 60, MaxBindingsPerUser: 130},
		twiliotest.Faults{Seed: 3, Rate429: 0.05, Rate503: 0.03, RateDrop: 0.02, RateTruncate: 0.02, RetryAfterEvery: 2, RetryAfter: time.Millisecond})
	opts := e.options()
	opts.PartRows = 500 // several parts
	core, logs := observer.New(zap.InfoLevel)
	opts.Logger = zap.New(core)
	res, err := Run(context.Background(), e.client, opts, day)
	if err != nil {
		t.Fatal(err)
	}
	e.checkExact()
	// The digest is merged from the runs written beside every part.
	digest := logs.FilterMessage("wrote the snapshot's digest").All()
	if len(digest) != 1 || digest[0].ContextMap()["parts_merged_from_runs"] != int64(len(res.Parts)) || digest[0].ContextMap()["parts_read_back"] != int64(0) {
		t.Errorf("digest log = %v, want all %d parts merged from their runs", digest, len(res.Parts))
	}
	opts.Logger = nil
	if res.Summary.Status != "succeeded" || res.Summary.UsersDone == 0 {
		t.Errorf("summary = %+v", res.Summary)
	}
	if len(res.Parts) < 2 {
		t.Errorf("parts = %d, want several with part_rows 500", len(res.Parts))
	}
	st := e.srv.Stats()
	if st.PagesServedTwice != 0 {
		t.Errorf("%d pages fetched twice in a clean run", st.PagesServedTwice)
	}
	if st.ByStatus[429] == 0 || st.ByStatus[503] == 0 {
		t.Errorf("faults not exercised: %v", st.ByStatus)
	}
	// Staging holds no part once published; the checkpoint says published.
	if names, _ := e.store.List(context.Background(), checkpoint.Dir(day)+"/parts/"); len(names) != 0 {
		t.Errorf("parts left in staging: %v", names)
	}

	// A second run of the same date does nothing.
	again, err := Run(context.Background(), e.client, opts, day)
	if err != nil || !again.AlreadyPublished {
		t.Fatalf("second run: %+v, %v", again, err)
	}
	// --force reads it again and replaces it, still exact.
	opts.Force = true
	if _, err := Run(context.Background(), e.client, opts, day); err != nil {
		t.Fatal(err)
	}
	e.checkExact()
}

// interrupting wraps a Source and cancels the run after n bindings pages.
type interrupting struct {
	Source
	n      int64
	pages  atomic.Int64
	cancel context.CancelFunc

	mu    sync.Mutex
	users map[string]int // bindings requests by user
}

func (s *interrupting) ListBindings(ctx context.Context, q twilio.BindingsQuery) (*twilio.BindingsPage, error) {
	s.mu.Lock()
	if s.users == nil {
		s.users = map[string]int{}
	}
	s.users[q.ServiceSID+"/"+q.User]++
	s.mu.Unlock()
	p, err := s.Source.ListBindings(ctx, q)
	if s.n > 0 && s.pages.Add(1) == s.n {
		s.cancel()
	}
	return p, err
}

func TestResumeAfterInterruption(t *testing.T) {
	t.Parallel()
	for _, revoke := range []bool{false, true} {
		name := "tokens kept"
		if revoke {
			name = "tokens revoked"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, twiliotest.WorldSpec{Seed: 5, Services: 2, UsersPerService: 40, MaxBindingsPerUser: 100}, twiliotest.Faults{})
			opts := e.options()
			// Pages of 10 give most users several, so that users are in
			// flight when the run is interrupted, whichever services the
			// fetchers are reading then.
			opts.PageSize = 10
			opts.PartRows = 300
			opts.Concurrency = 4
			ctx, cancel := context.WithCancel(context.Background())
			first := &interrupting{Source: e.client, n: 100, cancel: cancel}
			res, err := Run(ctx, first, opts, day)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("interrupted run: err = %v", err)
			}
			if res.Summary.Status != "interrupted" {
				t.Errorf("status = %q", res.Summary.Status)
			}
			if _, err := os.Stat(e.warehouse.SnapshotDir(day)); !os.IsNotExist(err) {
				t.Fatalf("an interrupted run published: %v", err)
			}
			l, err := checkpoint.Open(context.Background(), e.store, day)
			if err != nil {
				t.Fatal(err)
			}
			st := l.State()
			if st.UsersDone == 0 || len(st.InFlight) == 0 {
				t.Fatalf("checkpoint after interruption: %d users done, %d in flight; want some of each", st.UsersDone, len(st.InFlight))
			}
			if revoke {
				e.srv.RevokeTokens()
			}

			second := &interrupting{Source: e.client}
			if _, err := Run(context.Background(), second, opts, day); err != nil {
				t.Fatal(err)
			}
			e.checkExact()
			// Users finished by the first run were not fetched again.
			for _, svc := range e.services {
				users := svc.Users
				if svc.AllUsers {
					users = nil
					for _, u := range e.world.Service(svc.SID).Users {
						users = append(users, u.SID)
					}
				}
				for _, u := range users {
					ref := checkpoint.UserRef{Service: svc.SID, User: u}
					if l.IsDone(ref) && second.users[ref.String()] > 0 {
						t.Errorf("user %s finished before the interruption was fetched again", ref)
					}
				}
			}
		})
	}
}

func TestFailedUserNamedAndNotPublished(t *testing.T) {
	t.Parallel()
	e := newEnv(t, twiliotest.WorldSpec{Seed: 9, Services: 2, UsersPerService: 20, MaxBindingsPerUser: 60}, twiliotest.Faults{})
	victim := e.world.Services[1].Users[0].SID // listed by SID (index 0)
	if !slices.Contains(e.services[1].Users, victim) {
		t.Fatalf("test setup: %s not listed", victim)
	}
	e.srv.SetFaults(twiliotest.Faults{FailUsers: map[string]int{victim: 500}})
	opts := e.options()
	res, err := Run(context.Background(), e.client, opts, day)
	if !errors.Is(err, ErrUsersFailed) {
		t.Fatalf("err = %v, want ErrUsersFailed", err)
	}
	if !strings.Contains(err.Error(), `"`+victim+`"`) || len(res.Failed) != 1 || res.Failed[0].User != victim {
		t.Errorf("failure does not name the user: %v / %+v", err, res.Failed)
	}
	if _, err := os.Stat(e.warehouse.SnapshotDir(day)); !os.IsNotExist(err) {
		t.Fatal("a failed run published")
	}
	before := e.srv.Stats().BindingsRequests
	e.srv.SetFaults(twiliotest.Faults{})
	res, err = Run(context.Background(), e.client, opts, day)
	if err != nil {
		t.Fatal(err)
	}
	e.checkExact()
	// Only the failed user was read again.
	if got := e.srv.Stats().BindingsRequests - before; got != res.Summary.Pages || res.Summary.UsersDone != 1 {
		t.Errorf("rerun read %d users in %d requests, want only the failed user", res.Summary.UsersDone, got)
	}
}

func TestConfiguredUserMissingIsNotFound(t *testing.T) {
	t.Parallel()
	e := newEnv(t, twiliotest.WorldSpec{Seed: 11, Services: 2, UsersPerService: 20, MaxBindingsPerUser: 40}, twiliotest.Faults{})
	gone := e.services[1].Users[2]
	e.srv.DeleteUser(e.services[1].SID, gone)
	res, err := Run(context.Background(), e.client, e.options(), day)
	if err != nil {
		t.Fatal(err)
	}
	if res.Summary.UsersNotFound != 1 || res.Summary.UsersGone != 0 {
		t.Errorf("users not found = %d, gone = %d; want 1 and 0", res.Summary.UsersNotFound, res.Summary.UsersGone)
	}
	e.checkUsers(map[string]string{gone: "not_found"})
	got := e.published()
	for _, b := range e.world.Bindings(e.services[1].SID, gone, nil) {
		for _, g := range got {
			if g == snapshottest.Canonical(b) {
				t.Fatalf("binding of the deleted user published: %s", g)
			}
		}
	}
}

func TestBadCredentialsStopAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, twiliotest.WorldSpec{Seed: 1, Services: 1, UsersPerService: 50, MaxBindingsPerUser: 10}, twiliotest.Faults{})
	bad := newClient(t, e.srv.URL(), e.world.AccountSID, "wrong-token")
	_, err := Run(context.Background(), bad, e.options(), day)
	if !errors.Is(err, twilio.ErrUnauthorized) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
	if strings.Contains(err.Error(), "wrong-token") {
		t.Errorf("error shows the token: %v", err)
	}
	if n := e.srv.Stats().Requests; n > 2 {
		t.Errorf("%d requests after a 401; want the run to stop at once", n)
	}
}

func TestSecondRunOfSameSnapshotLocked(t *testing.T) {
	t.Parallel()
	e := newEnv(t, twiliotest.WorldSpec{Seed: 1, Services: 1, UsersPerService: 5, MaxBindingsPerUser: 10}, twiliotest.Faults{})
	lease, err := e.store.Lock(context.Background(), checkpoint.Dir(day)+"/LOCK")
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()
	_, err = Run(context.Background(), e.client, e.options(), day)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("err = %v, want ErrLocked", err)
	}
	// The message names the lock file where it really is, and what to do.
	file := filepath.Join(e.store.URI(""), ".locks", "snapshots", day.Format(time.DateOnly), "LOCK")
	if _, serr := os.Stat(file); serr != nil {
		t.Fatalf("lock file: %v", serr)
	}
	for _, want := range []string{"lock " + file + " is held", "bindsync status", "released when its process ends"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	_, err = Publish(context.Background(), e.options(), day)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), file) {
		t.Errorf("Publish: err = %v, want ErrLocked naming %s", err, file)
	}
}

func TestUnfinishedUserLeftOutIsDropped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, twiliotest.WorldSpec{Seed: 21, Services: 2, UsersPerService: 60, MaxBindingsPerUser: 200}, twiliotest.Faults{})
	e.services = e.services[1:] // the listed service only
	opts := e.options()
	opts.PageSize = 10
	opts.PartRows = 50
	opts.Concurrency = 3
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := Run(ctx, &interrupting{Source: e.client, n: 25, cancel: cancel}, opts, day); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v", err)
	}
	l, err := checkpoint.Open(context.Background(), e.store, day)
	if err != nil {
		t.Fatal(err)
	}
	var dropped []string
	for u, f := range l.State().InFlight {
		if len(f.Parts) > 0 {
			dropped = append(dropped, u.User)
		}
	}
	if len(dropped) == 0 {
		t.Fatal("no unfinished user with committed rows: the test proves nothing")
	}
	// The next run's configuration no longer lists those users.
	e.services[0].Users = slices.DeleteFunc(slices.Clone(e.services[0].Users), func(u string) bool { return slices.Contains(dropped, u) })
	opts.Services = e.services
	if _, err := Run(context.Background(), e.client, opts, day); err != nil {
		t.Fatal(err)
	}
	e.checkExact() // want() no longer includes the dropped users
}

func TestRunWaitsForALockReleased(t *testing.T) {
	t.Parallel()
	e := newEnv(t, twiliotest.WorldSpec{Seed: 1, Services: 1, UsersPerService: 5, MaxBindingsPerUser: 10}, twiliotest.Faults{})
	lease, err := e.store.Lock(context.Background(), checkpoint.Dir(day)+"/LOCK")
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	go func() {
		// Release the lock once the run has found it taken.
		for logs.FilterMessageSnippet("snapshot locked by another run").Len() == 0 {
			time.Sleep(10 * time.Millisecond)
		}
		lease.Release()
	}()
	opts := e.options()
	opts.LockWait = time.Minute
	opts.Logger = zap.New(core)
	res, err := Run(context.Background(), e.client, opts, day)
	if err != nil {
		t.Fatalf("run waiting for the lock: %v", err)
	}
	if res.Summary.Status != "succeeded" {
		t.Errorf("status = %q", res.Summary.Status)
	}
	e.checkExact()
}

// failingStore refuses to create part files after the first n (the
// runs beside them are still created).
type failingStore struct {
	staging.Store
	n       atomic.Int64
	allowed int64
}

var errDiskFull = errors.New("no space left on device")

func (s *failingStore) Create(ctx context.Context, name string) (staging.Writer, error) {
	if strings.Contains(name, "/parts/") && strings.HasSuffix(name, ".parquet") && s.n.Add(1) > s.allowed {
		return nil, errDiskFull
	}
	return s.Store.Create(ctx, name)
}

func TestWriterFailureStopsTheRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, twiliotest.WorldSpec{Seed: 13, Services: 1, UsersPerService: 200, MaxBindingsPerUser: 60}, twiliotest.Faults{Latency: time.Millisecond})
	opts := e.options()
	opts.Store = &failingStore{Store: e.store, allowed: 1}
	opts.PartRows = 100
	opts.Concurrency = 4
	res, err := Run(context.Background(), e.client, opts, day)
	if !errors.Is(err, errDiskFull) {
		t.Fatalf("err = %v, want the store's error", err)
	}
	if res.Summary.Status != "failed" {
		t.Errorf("status = %q, want failed", res.Summary.Status)
	}
	// The fetchers stopped soon after the writer failed instead of reading
	// every user.
	if got, all := e.srv.Stats().BindingsRequests, int64(len(e.world.Services[0].Users)); got >= all {
		t.Errorf("%d bindings requests after the writer failed, at least one per user (%d): the run went on", got, all)
	}
	// What was committed before the failure is kept for the next run.
	l, err := checkpoint.Open(context.Background(), e.store, day)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.State().Parts) != 1 {
		t.Errorf("committed parts = %d, want the one written before the failure", len(l.State().Parts))
	}
	opts.Store = e.store
	if _, err := Run(context.Background(), e.client, opts, day); err != nil {
		t.Fatal(err)
	}
	e.checkExact()
}

func TestSmallerPagesThanAskedAreNotedAndRead(t *testing.T) {
	t.Parallel()
	world := twiliotest.NewWorld(twiliotest.WorldSpec{Seed: 17, Services: 1, UsersPerService: 20, MaxBindingsPerUser: 130})
	srv := twiliotest.NewServer(twiliotest.Options{World: world, PageSizeCap: 20})
	t.Cleanup(srv.Close)
	e := newEnv(t, twiliotest.WorldSpec{Seed: 17, Services: 1, UsersPerService: 20, MaxBindingsPerUser: 130}, twiliotest.Faults{})
	e.srv, e.client = srv, newClient(t, srv.URL(), world.AccountSID, twiliotest.DefaultAuthToken)
	core, logs := observer.New(zap.InfoLevel)
	opts := e.options()
	opts.PageSize = 50
	opts.Logger = zap.New(core)
	if _, err := Run(context.Background(), e.client, opts, day); err != nil {
		t.Fatal(err)
	}
	e.checkExact()
	noted := logs.FilterMessageSnippet("fewer bindings per page").All()
	if len(noted) != 1 || noted[0].ContextMap()["page_size"] != int64(20) {
		t.Errorf("page size notes = %v, want one saying 20", noted)
	}
}

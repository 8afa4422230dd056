package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

// walkEnv is an environment whose every service is read whole (users:
// all) with the given strategy; service 1, when there is one, with the
// binding type filter gcm, fcm.
func walkEnv(t *testing.T, spec twiliotest.WorldSpec, faults twiliotest.Faults, strategy Strategy) *env {
	t.Helper()
	e := newEnv(t, spec, faults)
	e.services = nil
	for i, s := range e.world.Services {
		svc := Service{SID: s.SID, AllUsers: true, Strategy: strategy}
		if i == 1 {
			svc.BindingTypes = []string{"gcm", "fcm"}
		}
		e.services = append(e.services, svc)
	}
	return e
}

// fixedClock makes two runs stamp the same synced_at.
func fixedClock() time.Time { return time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC) }

// allRows returns every row of the published bindings table, every column
// (snapshot_date and synced_at included) as JSON, sorted.
func (e *env) allRows() []string {
	e.t.Helper()
	return readTable(e.t, e.warehouse.SnapshotDir(day), func(f *os.File, size int64, add func(any)) error {
		return exporter.ReadParquetFile(context.Background(), f, size, func(r schemas.Row) error { add(r); return nil })
	})
}

// allUsers returns every row of the published users table, every column,
// as JSON, sorted.
func (e *env) allUsers() []string {
	e.t.Helper()
	return readTable(e.t, e.warehouse.UsersSnapshotDir(day), func(f *os.File, size int64, add func(any)) error {
		return exporter.ReadUsersFile(context.Background(), f, size, func(u schemas.UserRow) error { add(u); return nil })
	})
}

func readTable(t *testing.T, dir string, read func(f *os.File, size int64, add func(any)) error) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.parquet"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no parquet files in %s (%v)", dir, err)
	}
	var out []string
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		err = read(f, st.Size(), func(v any) {
			data, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, string(data))
		})
		f.Close()
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
	}
	sort.Strings(out)
	return out
}

// sameRows fails t unless got and want, sorted, are equal row for row.
func sameRows(t *testing.T, table string, got, want []string) {
	t.Helper()
	if len(want) == 0 {
		t.Fatalf("%s: nothing to compare", table)
	}
	if len(got) != len(want) {
		t.Errorf("%s: %d rows, want %d", table, len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Fatalf("%s: first difference at row %d:\n got %s\nwant %s", table, i, got[i], want[i])
		}
	}
}

// TestServiceWalkPublishesTheRowsOfThePerUserWalk publishes one world
// (several services, the special and control identities, users without
// bindings, a binding type filter, bindings whose binding_type is null or
// missing, 429s and 503s) with both strategies, and compares every column
// of every row of both tables.
func TestServiceWalkPublishesTheRowsOfThePerUserWalk(t *testing.T) {
	t.Parallel()
	spec := twiliotest.WorldSpec{Seed: 71, Services: 3, UsersPerService: 45, MaxBindingsPerUser: 130, ControlIdentities: true}
	world := twiliotest.NewWorld(spec)
	var nullTypes []string
	for _, s := range world.Services {
		nullTypes = append(nullTypes, s.Users[3].SID, s.Users[20].Identity)
	}
	faults := twiliotest.Faults{Seed: 5, Rate429: 0.03, Rate503: 0.02, RetryAfter: time.Millisecond, NullBindingTypeUsers: nullTypes}
	results := map[Strategy]*Result{}
	envs := map[Strategy]*env{}
	for _, strategy := range []Strategy{StrategyPerUser, StrategyService} {
		e := walkEnv(t, spec, faults, strategy)
		opts := e.options()
		opts.UsersPageSize = 7
		opts.PartRows = 400
		opts.Now = fixedClock
		res, err := Run(context.Background(), e.client, opts, day)
		if err != nil {
			t.Fatalf("strategy %s: %v", strategy, err)
		}
		results[strategy], envs[strategy] = res, e
	}
	per, walk := envs[StrategyPerUser], envs[StrategyService]
	sameRows(t, "bindings", walk.allRows(), per.allRows())
	sameRows(t, "users", walk.allUsers(), per.allUsers())

	a, b := results[StrategyPerUser].Summary, results[StrategyService].Summary
	if a.ContractViolations[schemas.ViolationBindingTypeNull] == 0 || fmt.Sprint(a.ContractViolations) != fmt.Sprint(b.ContractViolations) {
		t.Errorf("contract violations: per user %v, service walk %v; want the same, some", a.ContractViolations, b.ContractViolations)
	}
	if a.UsersDone != b.UsersDone || a.Bindings != b.Bindings || b.UsersTotal != a.UsersTotal {
		t.Errorf("summaries: per user %d/%d users, %d bindings; service walk %d/%d users, %d bindings",
			a.UsersDone, a.UsersTotal, a.Bindings, b.UsersDone, b.UsersTotal, b.Bindings)
	}
	st := walk.srv.Stats()
	if st.BindingsRequests != 0 || st.UserFetches != 0 || st.ServiceBindingsRequests == 0 {
		t.Errorf("service walk: %d user bindings requests, %d user fetches, %d service bindings requests; want none, none, some",
			st.BindingsRequests, st.UserFetches, st.ServiceBindingsRequests)
	}
	if st.ByStatus[429] == 0 || st.ByStatus[503] == 0 {
		t.Errorf("faults not exercised: %v", st.ByStatus)
	}
	// Staging keeps neither parts nor users files once published.
	for _, dir := range []string{"/parts/", "/walks/"} {
		if names, _ := walk.store.List(context.Background(), checkpoint.Dir(day)+dir); len(names) != 0 {
			t.Errorf("left in staging: %v", names)
		}
	}
}

// TestServiceWalkRequests: a service read whole costs one Users page per
// hundred users and one Bindings page per fifty bindings, nothing per user.
func TestServiceWalkRequests(t *testing.T) {
	t.Parallel()
	e := walkEnv(t, twiliotest.WorldSpec{Seed: 73, Services: 2, UsersPerService: 450, MaxBindingsPerUser: 3}, twiliotest.Faults{}, StrategyAuto)
	e.services[1].BindingTypes = nil
	opts := e.options()
	opts.UsersPageSize = 100
	opts.PageSize = 50
	res, err := Run(context.Background(), e.client, opts, day)
	if err != nil {
		t.Fatal(err)
	}
	e.checkExact()
	ceil := func(n, d int) int64 { return int64((n + d - 1) / d) }
	var users, pages int64
	for _, s := range e.world.Services {
		bindings := 0
		for _, u := range s.Users {
			bindings += u.NumBindings
		}
		users += ceil(len(s.Users), 100)
		pages += max(1, ceil(bindings, 50))
	}
	st := e.srv.Stats()
	if st.UsersRequests != users || st.ServiceBindingsRequests != pages || st.Requests != users+pages {
		t.Errorf("requests: %d Users pages, %d Bindings pages, %d in all; want %d, %d and %d",
			st.UsersRequests, st.ServiceBindingsRequests, st.Requests, users, pages, users+pages)
	}
	if n := int64(2 * 450); res.Summary.UsersDone != n || st.Requests*10 > n {
		t.Errorf("%d users in %d requests; want %d users in under a tenth as many requests", res.Summary.UsersDone, st.Requests, n)
	}
}

// walkInterrupting cancels the run after n pages of the service-wide
// lists, and records the first page each service's list was asked for.
type walkInterrupting struct {
	Source
	n      int64
	pages  atomic.Int64
	cancel context.CancelFunc
	// atEnd cancels once a service's last page is served instead.
	atEnd bool

	mu    sync.Mutex
	first map[string]string // service -> Next of its first request
	asked map[string]int
}

func (s *walkInterrupting) ListServiceBindings(ctx context.Context, q twilio.ServiceBindingsQuery) (*twilio.ServiceBindingsPage, error) {
	s.mu.Lock()
	if s.first == nil {
		s.first, s.asked = map[string]string{}, map[string]int{}
	}
	if _, ok := s.first[q.ServiceSID]; !ok {
		s.first[q.ServiceSID] = q.Next
	}
	s.asked[q.ServiceSID]++
	s.mu.Unlock()
	p, err := s.Source.ListServiceBindings(ctx, q)
	switch {
	case s.atEnd && err == nil && p.Next == "":
		s.cancel()
	case s.n > 0 && s.pages.Add(1) == s.n:
		s.cancel()
	}
	return p, err
}

// TestServiceWalkResumes kills a walk in the middle of its Bindings list
// (or after its last page, before its users are recorded) and resumes it:
// the next run asks for the page the checkpoint saved, not the first one,
// and the snapshot is exact, no row twice; with the tokens revoked, the
// walk drops its rows and starts over, still exact.
func TestServiceWalkResumes(t *testing.T) {
	t.Parallel()
	const usersPerService = 40
	for _, tt := range []struct {
		name   string
		revoke bool
		atEnd  bool
	}{{"mid-list", false, false}, {"tokens revoked", true, false}, {"after the last page", false, true}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := walkEnv(t, twiliotest.WorldSpec{Seed: 75, Services: 2, UsersPerService: usersPerService, MaxBindingsPerUser: 80}, twiliotest.Faults{}, StrategyService)
			opts := e.options()
			opts.PageSize = 20
			opts.PartRows = 150
			opts.UsersPageSize = 30
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			first := &walkInterrupting{Source: e.client, n: 30, cancel: cancel}
			if tt.atEnd {
				first = &walkInterrupting{Source: e.client, cancel: cancel, atEnd: true}
			}
			res, err := Run(ctx, first, opts, day)
			if !errors.Is(err, context.Canceled) || res.Summary.Status != "interrupted" {
				t.Fatalf("interrupted run: %v, %+v", err, res)
			}
			l, err := checkpoint.Open(context.Background(), e.store, day)
			if err != nil {
				t.Fatal(err)
			}
			st := l.State()
			saved := map[string]checkpoint.Walk{}
			for svc, w := range st.Walks {
				saved[svc] = *w
			}
			resumable, ended := 0, 0
			for _, w := range saved {
				if len(w.Parts) > 0 && (w.Next != "" || w.End) {
					resumable++
				}
				if w.End {
					ended++
				}
			}
			if resumable == 0 || len(st.Parts) == 0 || tt.atEnd && ended == 0 {
				t.Fatalf("checkpoint after the interruption: walks %+v, %d parts; want a walk to resume", saved, len(st.Parts))
			}
			if tt.revoke {
				e.srv.RevokeTokens()
			}
			second := &walkInterrupting{Source: e.client}
			res, err = Run(context.Background(), second, opts, day)
			if err != nil {
				t.Fatal(err)
			}
			e.checkExact()
			for svc, w := range saved {
				switch {
				case w.End && second.asked[svc] != 0:
					t.Errorf("service %s: its list was read to the end before; asked %d pages again", svc, second.asked[svc])
				case w.End:
				case second.first[svc] != w.Next:
					t.Errorf("service %s: resumed at %q, want the saved page %q", svc, second.first[svc], w.Next)
				case tt.revoke && w.Next != "" && second.asked[svc] < 2:
					t.Errorf("service %s: the saved token was rejected, but the list was not read again from its first page", svc)
				}
			}
			if !tt.revoke && !tt.atEnd {
				// Pages fetched twice are those after the last commit at most.
				if twice := e.srv.Stats().PagesServedTwice; twice > first.pages.Load() {
					t.Errorf("%d pages fetched twice", twice)
				}
			}
			if res.Summary.UsersDone != int64(2*usersPerService) {
				t.Errorf("users done = %d, want every user of both services", res.Summary.UsersDone)
			}
		})
	}
}

// hidingUsers leaves users out of the Users list, as if they were created
// after it was read, and answers 404 to GetUser for the deleted ones.
type hidingUsers struct {
	Source
	hidden  map[string]bool // SIDs
	deleted map[string]bool // identities
	mu      sync.Mutex
	lookups map[string]int
}

func (s *hidingUsers) ListUsers(ctx context.Context, q twilio.UsersQuery) (*twilio.UsersPage, error) {
	p, err := s.Source.ListUsers(ctx, q)
	if err == nil {
		p.Users = slices.DeleteFunc(p.Users, func(u twilio.User) bool { return s.hidden[u.SID] })
	}
	return p, err
}

func (s *hidingUsers) GetUser(ctx context.Context, service, user string) (*twilio.User, error) {
	s.mu.Lock()
	if s.lookups == nil {
		s.lookups = map[string]int{}
	}
	s.lookups[user]++
	s.mu.Unlock()
	if s.deleted[user] {
		return nil, fmt.Errorf("get user %q: %w", user, twilio.ErrNotFound)
	}
	return s.Source.GetUser(ctx, service, user)
}

// TestServiceWalkUsersNotListed: a binding whose user the Users list did
// not hold is looked up once by identity; its rows get the user's SID and
// it gets its row in the users table. A user that Twilio no longer knows
// has none of its rows published, and is gone.
func TestServiceWalkUsersNotListed(t *testing.T) {
	t.Parallel()
	e := walkEnv(t, twiliotest.WorldSpec{Seed: 77, Services: 1, UsersPerService: 40, MaxBindingsPerUser: 120}, twiliotest.Faults{}, StrategyService)
	svc := e.world.Services[0]
	// The user created meanwhile has an identity that must be escaped in
	// the lookup; the deleted one has bindings over several pages.
	created := svc.User("a/b")
	var deleted *twiliotest.User
	for i := range svc.Users {
		if u := &svc.Users[i]; deleted == nil && u.NumBindings >= 45 {
			deleted = u
		}
	}
	if created == nil || created.NumBindings == 0 || deleted == nil {
		t.Fatal("test setup: no user a/b with bindings, or none with several pages")
	}
	src := &hidingUsers{Source: e.client, hidden: map[string]bool{created.SID: true, deleted.SID: true}, deleted: map[string]bool{deleted.Identity: true}}
	opts := e.options()
	opts.PageSize = 20
	res, err := Run(context.Background(), src, opts, day)
	if err != nil {
		t.Fatal(err)
	}
	if src.lookups[created.Identity] != 1 || src.lookups[deleted.Identity] != 1 || len(src.lookups) != 2 {
		t.Errorf("lookups = %v, want each hidden identity once", src.lookups)
	}
	if res.Summary.UsersGone != 1 || res.Summary.UsersDone != int64(len(svc.Users)-1) {
		t.Errorf("summary: %d done, %d gone; want %d and 1", res.Summary.UsersDone, res.Summary.UsersGone, len(svc.Users)-1)
	}
	e.checkUsersExcept(deleted)
	var want []string
	for _, u := range svc.Users {
		if u.SID != deleted.SID {
			want = append(want, e.bindingsOf(svc.SID, u.SID)...)
		}
	}
	sort.Strings(want)
	sameRows(t, "bindings", e.published(), want)
}

// checkUsersExcept checks the users table of a walk of the first service
// where deleted is gone, named by its identity.
func (e *env) checkUsersExcept(deleted *twiliotest.User) {
	e.t.Helper()
	got := map[string]string{}
	for _, u := range e.publishedUsers() {
		got[u.User] = fmt.Sprintf("%d|%s|%s|%s", u.Bindings, u.State, deref(u.UserSID), deref(u.Identity))
	}
	svc := e.world.Services[0]
	if len(got) != len(svc.Users) {
		e.t.Errorf("%d user rows, want %d", len(got), len(svc.Users))
	}
	for _, u := range svc.Users {
		want := fmt.Sprintf("%d|read|%s|%s", u.NumBindings, u.SID, u.Identity)
		key := u.SID
		if u.SID == deleted.SID {
			want, key = "0|gone|(null)|"+u.Identity, u.Identity
		}
		if got[key] != want {
			e.t.Errorf("user %s: row %q, want %q", key, got[key], want)
		}
	}
}

// TestServiceWalkContract: what the per-user walk refuses, the walk
// refuses too: a list that loops, a next page of another service, a page
// over the size limit. The walk fails with a reason naming the list,
// nothing of the bad page is written, and a rerun without the fault is
// exact.
func TestServiceWalkContract(t *testing.T) {
	t.Parallel()
	type tc struct {
		name   string
		faults twiliotest.Faults
		proxy  bool
		want   []string
	}
	var tests []tc
	for _, f := range twiliotest.PagingFaults {
		tests = append(tests, tc{name: "paging " + string(f), faults: twiliotest.Faults{ServiceBindingsPaging: f}, want: []string{"paging loop", "bindings of service"}})
	}
	tests = append(tests,
		tc{name: "next page of another service", proxy: true, want: []string{"next_page_url", "/v2/Services/IS" + strings.Repeat("f", 32) + "/Bindings"}},
		tc{name: "huge field", faults: twiliotest.Faults{HugeField: 4 << 20}, want: []string{"too large"}},
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := walkEnv(t, twiliotest.WorldSpec{Seed: 79, Services: 1, UsersPerService: 30, MaxBindingsPerUser: 90}, tt.faults, StrategyService)
			if tt.faults.HugeField > 0 {
				victim := e.world.Services[0].Users[12]
				e.srv.SetFaults(twiliotest.Faults{HugeField: tt.faults.HugeField, BodyFaultUsers: []string{victim.SID}})
			}
			client := e.client
			if tt.proxy {
				client = foreignNextProxy(t, e)
			} else if tt.faults.HugeField > 0 {
				c, err := twilio.New(twilio.Config{BaseURL: e.srv.URL(), Username: e.world.AccountSID, Password: twiliotest.DefaultAuthToken, MaxBodyBytes: 1 << 20})
				if err != nil {
					t.Fatal(err)
				}
				client = c
			}
			opts := e.options()
			opts.PageSize = 20
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := Run(ctx, client, opts, day)
			if !errors.Is(err, ErrUsersFailed) || ctx.Err() != nil {
				t.Fatalf("err = %v, want the walk failed", err)
			}
			if len(res.Failed) != 1 || res.Failed[0].User != checkpoint.ServiceWalkUser {
				t.Fatalf("failed = %+v, want the walk", res.Failed)
			}
			for _, w := range append(tt.want, "(its Bindings list)") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q: %v", w, err)
				}
			}
			if n := e.srv.Stats().Requests; n > 2000 {
				t.Errorf("%d requests: the walk went on too long", n)
			}
			if _, err := os.Stat(e.warehouse.SnapshotDir(day)); !os.IsNotExist(err) {
				t.Fatal("a run whose walk failed published")
			}
			e.srv.SetFaults(twiliotest.Faults{})
			if _, err := Run(context.Background(), e.client, opts, day); err != nil {
				t.Fatal(err)
			}
			e.checkExact()
		})
	}
}

// foreignNextProxy returns a client of a proxy to e's server that makes
// every next_page_url of the service-wide list name another service.
func foreignNextProxy(t *testing.T, e *env) *twilio.Client {
	t.Helper()
	other := "IS" + strings.Repeat("f", 32)
	h := e.srv.Handler()
	ts := newRewritingServer(t, h, func(path string, body []byte) []byte {
		if !strings.HasSuffix(path, "/Bindings") || !strings.Contains(path, "/Services/") || strings.Contains(path, "/Users/") {
			return body
		}
		var page map[string]any
		if json.Unmarshal(body, &page) != nil {
			return body
		}
		meta, _ := page["meta"].(map[string]any)
		if next, ok := meta["next_page_url"].(string); ok {
			meta["next_page_url"] = strings.Replace(next, e.world.Services[0].SID, other, 1)
		}
		out, _ := json.Marshal(page)
		return out
	})
	return newClient(t, ts, e.world.AccountSID, twiliotest.DefaultAuthToken)
}

// TestServiceWalkUserListedTwice: a Users list that repeats users still
// gives every user one row, and the walk is exact.
func TestServiceWalkUserListedTwice(t *testing.T) {
	t.Parallel()
	e := walkEnv(t, twiliotest.WorldSpec{Seed: 81, Services: 1, UsersPerService: 40, MaxBindingsPerUser: 30}, twiliotest.Faults{}, StrategyService)
	opts := e.options()
	opts.UsersPageSize = 7
	res, err := Run(context.Background(), &repeatingUsers{Source: e.client}, opts, day)
	if err != nil {
		t.Fatal(err)
	}
	e.checkExact()
	if res.Summary.UsersTotal != 40 || res.Summary.UsersDone != 40 {
		t.Errorf("users: %d total, %d done; want 40 once each", res.Summary.UsersTotal, res.Summary.UsersDone)
	}
}

// TestServiceWalkDamagedPart: a damaged part holding rows of a walk sends
// the walk back to its first page, in the same run, and the snapshot is
// exact; a damaged users file does the same.
func TestServiceWalkDamagedPart(t *testing.T) {
	t.Parallel()
	for _, victim := range []string{"part", "users file"} {
		t.Run(victim, func(t *testing.T) {
			t.Parallel()
			e := walkEnv(t, twiliotest.WorldSpec{Seed: 83, Services: 2, UsersPerService: 50, MaxBindingsPerUser: 90}, twiliotest.Faults{}, StrategyService)
			e.services = append(e.services[:1], Service{SID: e.world.Services[1].SID, AllUsers: true, Strategy: StrategyPerUser})
			opts := e.options()
			opts.PageSize = 20
			opts.PartRows = 200
			// A first run that fails one user of the other service: the
			// walk is finished and its parts committed, nothing published.
			e.srv.SetFaults(twiliotest.Faults{FailUsers: map[string]int{e.world.Services[1].Users[0].SID: 500}})
			if _, err := Run(context.Background(), e.client, opts, day); !errors.Is(err, ErrUsersFailed) {
				t.Fatalf("first run: %v", err)
			}
			e.srv.SetFaults(twiliotest.Faults{})
			l, _ := checkpoint.Open(context.Background(), e.store, day)
			st := l.State()
			done := st.WalksDone[e.services[0].SID]
			if done == nil || len(done.Parts) < 2 {
				t.Fatalf("test setup: walk %+v, want it finished over several parts", done)
			}
			name := done.Parts[1]
			if victim == "users file" {
				name = done.UsersFile.Name
			}
			path := e.stagingPath(name)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			data[len(data)/2] ^= 0xff
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			before := e.srv.Stats().ServiceBindingsRequests
			res, err := Run(context.Background(), e.client, opts, day)
			if err != nil {
				t.Fatal(err)
			}
			if res.Summary.Status != "succeeded" || e.srv.Stats().ServiceBindingsRequests-before == 0 {
				t.Errorf("status %q, walk read again in %d requests", res.Summary.Status, e.srv.Stats().ServiceBindingsRequests-before)
			}
			e.checkExact()
		})
	}
}

// TestStrategyChangedWithinASnapshot: a service keeps, within a snapshot,
// the way it was begun (user by user), a walk in progress is given up when
// its service is read user by user now or no longer configured, and a
// finished walk stands; every case ends exact.
func TestStrategyChangedWithinASnapshot(t *testing.T) {
	t.Parallel()
	spec := twiliotest.WorldSpec{Seed: 85, Services: 2, UsersPerService: 60, MaxBindingsPerUser: 60}
	interrupt := func(t *testing.T, e *env, opts Options, walks bool) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var src Source = &interrupting{Source: e.client, n: 40, cancel: cancel}
		if walks {
			src = &walkInterrupting{Source: e.client, n: 12, cancel: cancel}
		}
		if _, err := Run(ctx, src, opts, day); !errors.Is(err, context.Canceled) {
			t.Fatalf("interrupted run: %v", err)
		}
	}
	t.Run("begun per user, then service", func(t *testing.T) {
		t.Parallel()
		e := walkEnv(t, spec, twiliotest.Faults{}, StrategyPerUser)
		opts := e.options()
		opts.PageSize, opts.PartRows = 20, 100
		interrupt(t, e, opts, false)
		l, _ := checkpoint.Open(context.Background(), e.store, day)
		begun := l.State().PerUser
		if len(begun) == 0 {
			t.Fatal("test setup: no service begun")
		}
		for i := range opts.Services {
			opts.Services[i].Strategy = StrategyService
		}
		src := &walkInterrupting{Source: e.client}
		if _, err := Run(context.Background(), src, opts, day); err != nil {
			t.Fatal(err)
		}
		e.checkExact()
		for _, svc := range opts.Services {
			switch n := src.asked[svc.SID]; {
			case begun[svc.SID] && n != 0:
				t.Errorf("service %s, begun user by user, was walked (%d requests)", svc.SID, n)
			case !begun[svc.SID] && n == 0:
				t.Errorf("service %s, not begun, was not walked", svc.SID)
			}
		}
	})
	t.Run("walk in progress, then per user", func(t *testing.T) {
		t.Parallel()
		e := walkEnv(t, spec, twiliotest.Faults{}, StrategyService)
		opts := e.options()
		opts.PageSize, opts.PartRows = 20, 100
		interrupt(t, e, opts, true)
		l, _ := checkpoint.Open(context.Background(), e.store, day)
		if len(l.State().Walks) == 0 {
			t.Fatal("test setup: no walk in progress")
		}
		for i := range opts.Services {
			opts.Services[i].Strategy = StrategyPerUser
		}
		if _, err := Run(context.Background(), e.client, opts, day); err != nil {
			t.Fatal(err)
		}
		e.checkExact()
	})
	t.Run("walk in progress, service left out", func(t *testing.T) {
		t.Parallel()
		e := walkEnv(t, spec, twiliotest.Faults{}, StrategyService)
		opts := e.options()
		opts.PageSize, opts.PartRows = 20, 100
		interrupt(t, e, opts, true)
		l, _ := checkpoint.Open(context.Background(), e.store, day)
		if len(l.State().Walks) == 0 {
			t.Fatal("test setup: no walk in progress")
		}
		e.services = e.services[1:]
		opts.Services = e.services
		if _, err := Run(context.Background(), e.client, opts, day); err != nil {
			t.Fatal(err)
		}
		e.checkExact()
	})
	t.Run("walk finished, then per user", func(t *testing.T) {
		t.Parallel()
		e := walkEnv(t, spec, twiliotest.Faults{}, StrategyService)
		e.services = append(e.services[:1], Service{SID: e.world.Services[1].SID, AllUsers: true, Strategy: StrategyPerUser})
		opts := e.options()
		e.srv.SetFaults(twiliotest.Faults{FailUsers: map[string]int{e.world.Services[1].Users[0].SID: 500}})
		if _, err := Run(context.Background(), e.client, opts, day); !errors.Is(err, ErrUsersFailed) {
			t.Fatalf("first run: %v", err)
		}
		e.srv.SetFaults(twiliotest.Faults{})
		opts.Services[0].Strategy = StrategyPerUser
		before := e.srv.Stats().BindingsRequests
		res, err := Run(context.Background(), e.client, opts, day)
		if err != nil {
			t.Fatal(err)
		}
		e.checkExact()
		if n := e.srv.Stats().BindingsRequests - before; n != res.Summary.Pages || res.Summary.UsersDone != 1 {
			t.Errorf("rerun read %d users in %d requests; want only the failed user", res.Summary.UsersDone, n)
		}
	})
}

// newRewritingServer serves h through rewrite, which may change the body
// of any answer, and returns its URL.
func newRewritingServer(t *testing.T, h http.Handler, rewrite func(path string, body []byte) []byte) string {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		body := rewrite(r.URL.Path, rec.Body.Bytes())
		for k, v := range rec.Header() {
			if k != "Content-Length" {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(rec.Code)
		w.Write(body)
	}))
	t.Cleanup(ts.Close)
	return ts.URL
}

// TestServiceWalkRowsNotAddingUp: when the rows committed for a walk do
// not add up to what its checkpoint says (a log edited by hand, a bug),
// the walk drops them and starts over rather than publish wrong counts.
func TestServiceWalkRowsNotAddingUp(t *testing.T) {
	t.Parallel()
	e := walkEnv(t, twiliotest.WorldSpec{Seed: 91, Services: 1, UsersPerService: 60, MaxBindingsPerUser: 150}, twiliotest.Faults{}, StrategyService)
	opts := e.options()
	opts.PageSize, opts.PartRows = 20, 100
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := Run(ctx, &walkInterrupting{Source: e.client, n: 15, cancel: cancel}, opts, day); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v", err)
	}
	l, err := checkpoint.Open(context.Background(), e.store, day)
	if err != nil {
		t.Fatal(err)
	}
	w := l.State().Walks[e.services[0].SID]
	if w == nil || len(w.Parts) == 0 || w.Next == "" {
		t.Fatalf("test setup: walk %+v, want one in the middle of its list", w)
	}
	w.Bindings++
	if err := l.Append(context.Background(), checkpoint.Entry{Kind: checkpoint.KindCommit, Walks: []checkpoint.Walk{*w}}); err != nil {
		t.Fatal(err)
	}
	second := &walkInterrupting{Source: e.client}
	if _, err := Run(context.Background(), second, opts, day); err != nil {
		t.Fatal(err)
	}
	e.checkExact()
	if got := second.first[e.services[0].SID]; got != "" {
		t.Errorf("resumed at %q, want the first page", got)
	}
}

package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/internal/snapshottest"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

// deletedWhileRead answers the first page of a user's bindings and then 404,
// as Twilio does for a user deleted between two pages.
type deletedWhileRead struct {
	Source
	victim string

	mu    sync.Mutex
	pages int
}

func (s *deletedWhileRead) ListBindings(ctx context.Context, q twilio.BindingsQuery) (*twilio.BindingsPage, error) {
	if q.User == s.victim {
		s.mu.Lock()
		s.pages++
		n := s.pages
		s.mu.Unlock()
		if n > 1 {
			return nil, fmt.Errorf("list bindings of user %q: %w", q.User, twilio.ErrNotFound)
		}
	}
	return s.Source.ListBindings(ctx, q)
}

func TestUserDeletedWhileReadHasNoRows(t *testing.T) {
	t.Parallel()
	for _, partRows := range []int{100_000, 5} { // rows in the open part; rows already committed
		t.Run(fmt.Sprintf("part_rows=%d", partRows), func(t *testing.T) {
			e := newEnv(t, twiliotest.WorldSpec{Seed: 31, Services: 1, UsersPerService: 12, MaxBindingsPerUser: 60}, twiliotest.Faults{})
			var victim string
			for _, u := range e.world.Services[0].Users {
				if len(e.world.Bindings(e.world.Services[0].SID, u.SID, nil)) > 25 {
					victim = u.SID
					break
				}
			}
			if victim == "" {
				t.Fatal("test setup: no user with more than one page")
			}
			opts := e.options()
			opts.PageSize = 10
			opts.PartRows = partRows
			src := &deletedWhileRead{Source: e.client, victim: victim}
			res, err := Run(context.Background(), src, opts, day)
			if err != nil {
				t.Fatal(err)
			}
			if src.pages < 2 {
				t.Fatalf("victim read in %d requests; the test proves nothing", src.pages)
			}
			if res.Summary.UsersGone != 1 {
				t.Errorf("users gone = %d, want 1", res.Summary.UsersGone)
			}
			e.checkUsers(map[string]string{victim: "gone"})
			want := snapshottest.Want(e.world, e.selections())
			var rest []string
			victims := map[string]bool{}
			for _, b := range e.world.Bindings(e.world.Services[0].SID, victim, nil) {
				victims[snapshottest.Canonical(b)] = true
			}
			for _, w := range want {
				if !victims[w] {
					rest = append(rest, w)
				}
			}
			snapshottest.Equal(t, e.published(), rest)
		})
	}
}

// repeatingUsers serves every Users page with its first user twice, and
// the first user of the service again on every later page.
type repeatingUsers struct {
	Source
	mu    sync.Mutex
	first *twilio.User
}

func (s *repeatingUsers) ListUsers(ctx context.Context, q twilio.UsersQuery) (*twilio.UsersPage, error) {
	p, err := s.Source.ListUsers(ctx, q)
	if err != nil || len(p.Users) == 0 {
		return p, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.first == nil {
		u := p.Users[0]
		s.first = &u
	}
	p.Users = append(p.Users, p.Users[0], *s.first)
	return p, nil
}

func TestUserNamedTwiceIsReadOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, twiliotest.WorldSpec{Seed: 33, Services: 2, UsersPerService: 40, MaxBindingsPerUser: 30}, twiliotest.Faults{})
	opts := e.options()
	opts.UsersPageSize = 7
	// The listed service names one of its users twice by SID.
	twice := e.services[1].Users[len(e.services[1].Users)-1]
	if !checkpoint.IsUserSID(twice) {
		t.Fatalf("test setup: %q is not a SID", twice)
	}
	opts.Services[1].Users = append(opts.Services[1].Users, twice)
	src := &countingSource{Source: &repeatingUsers{Source: e.client}}
	res, err := Run(context.Background(), src, opts, day)
	if err != nil {
		t.Fatal(err)
	}
	e.services[1].Users = e.services[1].Users[:len(e.services[1].Users)-1]
	e.checkExact()
	if n := res.Summary.UsersTotal; n != int64(len(e.world.Services[0].Users)+len(e.services[1].Users)) {
		t.Errorf("users total = %d, want every user once", n)
	}
	for u, n := range src.firstPages() {
		if n != 1 {
			t.Errorf("user %s: first page asked %d times, want once", u, n)
		}
	}
}

// countingSource counts first-page requests per user.
type countingSource struct {
	Source
	mu    sync.Mutex
	first map[string]int
}

func (s *countingSource) ListBindings(ctx context.Context, q twilio.BindingsQuery) (*twilio.BindingsPage, error) {
	if q.Next == "" {
		s.mu.Lock()
		if s.first == nil {
			s.first = map[string]int{}
		}
		s.first[q.ServiceSID+"/"+q.User]++
		s.mu.Unlock()
	}
	return s.Source.ListBindings(ctx, q)
}

func (s *countingSource) firstPages() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first
}

// panicking panics when asked for the bindings of one user.
type panicking struct {
	Source
	victim string
}

func (s *panicking) ListBindings(ctx context.Context, q twilio.BindingsQuery) (*twilio.BindingsPage, error) {
	if q.User == s.victim {
		var m map[string]int
		m["boom"]++ // a bug: assignment to a nil map
	}
	return s.Source.ListBindings(ctx, q)
}

func TestPanicInAFetcherFailsTheRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, twiliotest.WorldSpec{Seed: 35, Services: 1, UsersPerService: 30, MaxBindingsPerUser: 30}, twiliotest.Faults{})
	opts := e.options()
	opts.Concurrency = 3
	res, err := Run(context.Background(), &panicking{Source: e.client, victim: e.world.Services[0].Users[10].SID}, opts, day)
	if !errors.Is(err, ErrPanic) {
		t.Fatalf("err = %v, want ErrPanic", err)
	}
	if !strings.Contains(err.Error(), "assignment to entry in nil map") {
		t.Errorf("error does not name the panic: %v", err)
	}
	if res == nil || res.Summary.Status != "failed" {
		t.Fatalf("result = %+v, want a failed run", res)
	}
	// The checkpoint is consistent: the next run finishes the snapshot exactly.
	if _, err := Run(context.Background(), e.client, opts, day); err != nil {
		t.Fatal(err)
	}
	e.checkExact()
}

// panickingStore panics when a part file is created.
type panickingStore struct{ staging.Store }

func (s panickingStore) Create(ctx context.Context, name string) (staging.Writer, error) {
	if strings.Contains(name, "/parts/") {
		panic("disk driver bug")
	}
	return s.Store.Create(ctx, name)
}

func TestPanicInTheWriterFailsTheRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, twiliotest.WorldSpec{Seed: 37, Services: 1, UsersPerService: 30, MaxBindingsPerUser: 30}, twiliotest.Faults{})
	opts := e.options()
	opts.Store = panickingStore{e.store}
	_, err := Run(context.Background(), e.client, opts, day)
	if !errors.Is(err, ErrPanic) || !strings.Contains(err.Error(), "disk driver bug") {
		t.Fatalf("err = %v, want ErrPanic naming the panic", err)
	}
	l, err := checkpoint.Open(context.Background(), e.store, day)
	if err != nil {
		t.Fatal(err)
	}
	if l.State().LastRun().Status != "failed" {
		t.Errorf("last run status = %q, want failed", l.State().LastRun().Status)
	}
	opts.Store = e.store
	if _, err := Run(context.Background(), e.client, opts, day); err != nil {
		t.Fatal(err)
	}
	e.checkExact()
}

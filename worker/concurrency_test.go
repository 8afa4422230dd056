package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

// gateWait is how long a gate of the tests below waits for what a correct
// run does at once; a run that never does it fails then, instead of
// hanging. It bounds a failure, not a measured duration.
const gateWait = 30 * time.Second

var errGate = errors.New("gate not reached")

// wait blocks until ch is closed, or fails after gateWait.
func wait(ctx context.Context, ch <-chan struct{}, what string) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(gateWait):
		return fmt.Errorf("%w: %s", errGate, what)
	}
}

// listedAtOnce holds the first Users page of every service until every
// service has asked for it.
type listedAtOnce struct {
	Source
	services int

	mu    sync.Mutex
	seen  map[string]bool
	ready chan struct{}
}

func (s *listedAtOnce) ListUsers(ctx context.Context, q twilio.UsersQuery) (*twilio.UsersPage, error) {
	if q.Next == "" {
		s.mu.Lock()
		s.seen[q.ServiceSID] = true
		if len(s.seen) == s.services {
			close(s.ready)
		}
		s.mu.Unlock()
		if err := wait(ctx, s.ready, "the users of every service listed at once"); err != nil {
			return nil, err
		}
	}
	return s.Source.ListUsers(ctx, q)
}

// TestUsersOfEveryServiceListedAtOnce: the Users lists of all services
// are read at the same time, with either strategy: the first page of each
// is held until every service has asked for its own.
func TestUsersOfEveryServiceListedAtOnce(t *testing.T) {
	t.Parallel()
	for _, strategy := range []Strategy{StrategyPerUser, StrategyService} {
		t.Run(string(strategy), func(t *testing.T) {
			t.Parallel()
			e := walkEnv(t, twiliotest.WorldSpec{Seed: 87, Services: 4, UsersPerService: 30, MaxBindingsPerUser: 20}, twiliotest.Faults{}, strategy)
			opts := e.options()
			opts.Concurrency = 2
			src := &listedAtOnce{Source: e.client, services: len(e.services), seen: map[string]bool{}, ready: make(chan struct{})}
			if _, err := Run(context.Background(), src, opts, day); err != nil {
				t.Fatal(err)
			}
			e.checkExact()
		})
	}
}

// busyAcrossServices holds the second Users page of service a until every
// fetcher is reading a user of service b at once: the fetchers must find
// work in another service while one service's list waits. Until then,
// each request for b's bindings waits for the others.
type busyAcrossServices struct {
	Source
	a, b     string
	fetchers int

	mu      sync.Mutex
	waiting int
	full    chan struct{}
	held    bool
}

func (s *busyAcrossServices) ListUsers(ctx context.Context, q twilio.UsersQuery) (*twilio.UsersPage, error) {
	if q.ServiceSID == s.a && q.Next != "" {
		s.mu.Lock()
		s.held = true
		s.mu.Unlock()
		if err := wait(ctx, s.full, "every fetcher busy with another service while a Users list waits"); err != nil {
			return nil, err
		}
	}
	return s.Source.ListUsers(ctx, q)
}

func (s *busyAcrossServices) ListBindings(ctx context.Context, q twilio.BindingsQuery) (*twilio.BindingsPage, error) {
	s.mu.Lock()
	gate := q.ServiceSID == s.b && s.held && s.waiting < s.fetchers
	if gate {
		s.waiting++
		if s.waiting == s.fetchers {
			close(s.full)
		}
	}
	s.mu.Unlock()
	if gate {
		if err := wait(ctx, s.full, "every fetcher busy with another service while a Users list waits"); err != nil {
			return nil, err
		}
	}
	return s.Source.ListBindings(ctx, q)
}

// TestFetchersBusyAtServiceBoundaries: while one service's Users list
// waits for a page, every fetcher reads users of another service at once;
// no slot waits for the list.
func TestFetchersBusyAtServiceBoundaries(t *testing.T) {
	t.Parallel()
	e := walkEnv(t, twiliotest.WorldSpec{Seed: 89, Services: 2, UsersPerService: 60, MaxBindingsPerUser: 20}, twiliotest.Faults{}, StrategyPerUser)
	e.services[1].BindingTypes = nil
	opts := e.options()
	opts.Concurrency = 6
	opts.UsersPageSize = 10
	src := &busyAcrossServices{Source: e.client, a: e.services[0].SID, b: e.services[1].SID, fetchers: opts.Concurrency, full: make(chan struct{})}
	if _, err := Run(context.Background(), src, opts, day); err != nil {
		t.Fatal(err)
	}
	e.checkExact()
}

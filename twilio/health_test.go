package twilio

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock that only the client's sleeps move.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// install makes c read f and advance it by every wait.
func (f *fakeClock) install(c *Client) {
	f.now = testNow
	c.now = f.Now
	c.sleep = func(ctx context.Context, d time.Duration) error {
		f.mu.Lock()
		f.now = f.now.Add(d)
		f.mu.Unlock()
		return ctx.Err()
	}
}

func TestUnavailable(t *testing.T) {
	srv := newScriptServer(t, twilioError(503, 20503, "Service Unavailable"))
	c, _ := newTestClient(t, srv.URL, func(cfg *Config) {
		cfg.MaxAttempts = 100
		cfg.BackoffBase, cfg.BackoffMax = time.Second, 10*time.Second
		cfg.UnavailableAfter = 30 * time.Second
	})
	clock := &fakeClock{}
	clock.install(c)

	// Attempts at 0, 1, 3, 7, 15, 25 and 35 seconds: the seventh finds
	// Twilio failing for 35s, over UnavailableAfter.
	_, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice"})
	if !errors.Is(err, ErrUnavailable) || Retryable(err) {
		t.Fatalf("error = %v, want ErrUnavailable, not retryable", err)
	}
	want := "Twilio unavailable: no successful response for 30s; last error: twilio: GET " + bindingsPath("alice") + ": 503 Service Unavailable"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
	if n := len(srv.requests()); n != 7 {
		t.Errorf("server saw %d requests, want 7", n)
	}
	// Every later request fails at once, whatever it asks for.
	ctx := context.Background()
	_, err1 := c.ListUsers(ctx, UsersQuery{ServiceSID: testService})
	_, err2 := c.GetUser(ctx, testService, "bob")
	_, err3 := c.ListBindings(ctx, BindingsQuery{ServiceSID: testService, User: "bob"})
	for i, err := range []error{err1, err2, err3} {
		if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), want) {
			t.Errorf("later request %d: error = %v, want ErrUnavailable", i, err)
		}
	}
	if n := len(srv.requests()); n != 7 {
		t.Errorf("server saw %d requests after Twilio was declared unavailable, want none", n-7)
	}
}

func TestUnavailableResetBySuccess(t *testing.T) {
	busy := twilioError(503, 20503, "Service Unavailable")
	srv := newScriptServer(t,
		busy, busy, respond(200, pageBody(t, "")), // request A, at 0, 1 and 3s
		busy, busy, busy, // request B, at 3, 4 and 6s
		busy, busy, twilioError(404, 20404, "gone"), // request C, at 6, 7 and 9s
		busy, busy, busy, // request D, at 9, 10, 12s
		busy, busy, busy, // request E, at 12, 13, 15s: failing since 9s
	)
	c, _ := newTestClient(t, srv.URL, func(cfg *Config) {
		cfg.MaxAttempts = 3
		cfg.BackoffBase, cfg.BackoffMax = time.Second, 10*time.Second
		cfg.UnavailableAfter = 5 * time.Second
	})
	clock := &fakeClock{}
	clock.install(c)
	q := BindingsQuery{ServiceSID: testService, User: "alice"}
	ctx := context.Background()

	if _, err := c.ListBindings(ctx, q); err != nil {
		t.Fatalf("A: %v", err)
	}
	// Failing from 3s to 6s, after the success at 3s: not yet 5s.
	if _, err := c.ListBindings(ctx, q); errors.Is(err, ErrUnavailable) || !Retryable(err) {
		t.Fatalf("B: error = %v, want the 503 after three attempts", err)
	}
	// A 404 shows Twilio answering, and resets the clock too.
	if _, err := c.ListBindings(ctx, q); !errors.Is(err, ErrNotFound) {
		t.Fatalf("C: error = %v, want ErrNotFound", err)
	}
	if _, err := c.ListBindings(ctx, q); errors.Is(err, ErrUnavailable) || !Retryable(err) {
		t.Fatalf("D: error = %v, want the 503 after three attempts", err)
	}
	// Failing since 9s: E's third attempt, at 15s, finds 6s without a
	// success.
	if _, err := c.ListBindings(ctx, q); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("E: error = %v, want ErrUnavailable", err)
	}
	if n := len(srv.requests()); n != 15 {
		t.Errorf("server saw %d requests, want 15", n)
	}
}

func TestThrottlingIsNotUnavailability(t *testing.T) {
	srv := newScriptServer(t, twilioError(http.StatusTooManyRequests, 20429, "Too Many Requests"))
	c, _ := newTestClient(t, srv.URL, func(cfg *Config) {
		cfg.MaxAttempts = 10
		cfg.BackoffBase, cfg.BackoffMax = time.Second, 10*time.Second
		cfg.UnavailableAfter = time.Second
	})
	clock := &fakeClock{}
	clock.install(c)
	_, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice"})
	if errors.Is(err, ErrUnavailable) || !Retryable(err) {
		t.Errorf("error = %v, want the 429 after all attempts", err)
	}
}

func TestUnavailableDefault(t *testing.T) {
	c, err := New(Config{Username: testUsername, Password: testPassword})
	if err != nil {
		t.Fatal(err)
	}
	if c.health.after != 2*time.Minute || c.maxBody != 32<<20 {
		t.Errorf("UnavailableAfter %s, MaxBodyBytes %d; want 2m and 32 MiB by default", c.health.after, c.maxBody)
	}
	for _, cfg := range []Config{
		{Username: testUsername, Password: testPassword, UnavailableAfter: -time.Second},
		{Username: testUsername, Password: testPassword, MaxBodyBytes: -1},
	} {
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "negative") {
			t.Errorf("New(%+v) = %v, want a negative-value error", cfg, err)
		}
	}
}

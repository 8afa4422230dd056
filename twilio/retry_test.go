package twilio

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// truncatedChunked sends a 200 with a chunked body cut off mid-chunk.
func truncatedChunked(w http.ResponseWriter, _ *http.Request) {
	conn, buf, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	fmt.Fprint(buf, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n{\"meta\": {\"key\"")
	buf.Flush()
}

// shortBody sends body with a Content-Length larger than the body.
func shortBody(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)+100))
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, body)
	}
}

func TestRetries(t *testing.T) {
	ok := func(t *testing.T) http.HandlerFunc { return respond(http.StatusOK, pageBody(t, "", "BS1")) }
	busy := twilioError(http.StatusTooManyRequests, 20429, "Too Many Requests")
	tests := []struct {
		name     string
		handlers func(t *testing.T) []http.HandlerFunc
		reasons  []string
		waits    []time.Duration // BackoffBase 100ms, BackoffMax 10s, jitter = whole window
	}{
		{
			name: "429 with Retry-After seconds",
			handlers: func(t *testing.T) []http.HandlerFunc {
				return []http.HandlerFunc{twilioError(429, 20429, "Too Many Requests", "Retry-After", "7"), ok(t)}
			},
			reasons: []string{"429"}, waits: []time.Duration{7 * time.Second},
		},
		{
			name: "429 with Retry-After date",
			handlers: func(t *testing.T) []http.HandlerFunc {
				date := testNow.Add(3 * time.Second).Format(http.TimeFormat)
				return []http.HandlerFunc{twilioError(429, 20429, "Too Many Requests", "Retry-After", date), ok(t)}
			},
			reasons: []string{"429"}, waits: []time.Duration{3 * time.Second},
		},
		{
			name: "429 with Retry-After above BackoffMax",
			handlers: func(t *testing.T) []http.HandlerFunc {
				return []http.HandlerFunc{twilioError(429, 20429, "Too Many Requests", "Retry-After", "3600"), ok(t)}
			},
			reasons: []string{"429"}, waits: []time.Duration{10 * time.Second},
		},
		{
			name: "429 without Retry-After",
			handlers: func(t *testing.T) []http.HandlerFunc {
				return []http.HandlerFunc{busy, busy, ok(t)}
			},
			reasons: []string{"429", "429"}, waits: []time.Duration{100 * time.Millisecond, 200 * time.Millisecond},
		},
		{
			name: "503 then success",
			handlers: func(t *testing.T) []http.HandlerFunc {
				return []http.HandlerFunc{twilioError(503, 20503, "Service Unavailable"), ok(t)}
			},
			reasons: []string{"5xx"}, waits: []time.Duration{100 * time.Millisecond},
		},
		{
			name: "500, 502, 504 then success",
			handlers: func(t *testing.T) []http.HandlerFunc {
				return []http.HandlerFunc{respond(500, "oops"), respond(502, "<html>bad gateway</html>"), respond(504, ""), ok(t)}
			},
			reasons: []string{"5xx", "5xx", "5xx"},
			waits:   []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond},
		},
		{
			name:     "dropped connection then success",
			handlers: func(t *testing.T) []http.HandlerFunc { return []http.HandlerFunc{dropConnection, ok(t)} },
			reasons:  []string{"network"}, waits: []time.Duration{100 * time.Millisecond},
		},
		{
			name: "body shorter than Content-Length then success",
			handlers: func(t *testing.T) []http.HandlerFunc {
				return []http.HandlerFunc{shortBody(`{"meta": {"key": "bindings", "next_page`), ok(t)}
			},
			reasons: []string{"truncated"}, waits: []time.Duration{100 * time.Millisecond},
		},
		{
			name: "whole JSON but short of Content-Length then success",
			handlers: func(t *testing.T) []http.HandlerFunc {
				return []http.HandlerFunc{shortBody(pageBody(t, "", "BSwrong")), ok(t)}
			},
			reasons: []string{"truncated"}, waits: []time.Duration{100 * time.Millisecond},
		},
		{
			name:     "chunked body cut off then success",
			handlers: func(t *testing.T) []http.HandlerFunc { return []http.HandlerFunc{truncatedChunked, ok(t)} },
			reasons:  []string{"truncated"}, waits: []time.Duration{100 * time.Millisecond},
		},
		{
			name: "not JSON then success",
			handlers: func(t *testing.T) []http.HandlerFunc {
				return []http.HandlerFunc{respond(http.StatusOK, "<html>maintenance</html>"), ok(t)}
			},
			reasons: []string{"truncated"}, waits: []time.Duration{100 * time.Millisecond},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newScriptServer(t, tt.handlers(t)...)
			c, log := newTestClient(t, srv.URL, func(cfg *Config) { cfg.MaxAttempts = 6 })

			page, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice"})
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Bindings) != 1 || *page.Bindings[0].SID != "BS1" {
				t.Errorf("bindings = %+v, want BS1 from the last attempt", page.Bindings)
			}
			reasons, waits, sleeps := log.snapshot()
			if !reflect.DeepEqual(reasons, tt.reasons) || !reflect.DeepEqual(waits, tt.waits) {
				t.Errorf("retries = %q waiting %v, want %q waiting %v", reasons, waits, tt.reasons, tt.waits)
			}
			if !reflect.DeepEqual(sleeps, tt.waits) {
				t.Errorf("slept %v, want %v", sleeps, tt.waits)
			}
			if n := len(srv.requests()); n != len(tt.reasons)+1 {
				t.Errorf("server saw %d requests, want %d", n, len(tt.reasons)+1)
			}
		})
	}
}

func TestRetriesExhausted(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		is      error // a sentinel the error must wrap, if any
		status  int   // status of the APIError inside, 0 for none
	}{
		{"503", twilioError(503, 20503, "Service Unavailable"), nil, 503},
		{"429", twilioError(429, 20429, "Too Many Requests"), nil, 429},
		{"dropped connection", dropConnection, nil, 0},
		{"truncated body", shortBody(`{"meta":`), ErrBadResponse, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newScriptServer(t, tt.handler)
			c, log := newTestClient(t, srv.URL, func(cfg *Config) {
				cfg.MaxAttempts = 4
				cfg.BackoffBase, cfg.BackoffMax = time.Second, 3*time.Second
			})

			_, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice"})
			if want := "giving up after 4 attempts: twilio: GET " + bindingsPath("alice") + ": "; err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error = %v, want one containing %q", err, want)
			}
			assertNoSecret(t, err)
			if !Retryable(err) {
				t.Errorf("Retryable(%v) = false, want true", err)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error = %v, want it to wrap %v", err, tt.is)
			}
			var apiErr *APIError
			if got := errors.As(err, &apiErr); got != (tt.status != 0) || (got && apiErr.Status != tt.status) {
				t.Errorf("error = %v, want an APIError with status %d: %v", err, tt.status, got)
			}
			if n := len(srv.requests()); n != 4 {
				t.Errorf("server saw %d requests, want 4", n)
			}
			_, waits, _ := log.snapshot()
			if want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}; !reflect.DeepEqual(waits, want) {
				t.Errorf("waits = %v, want %v (exponential, capped at BackoffMax)", waits, want)
			}
		})
	}
}

func TestRequestTimeoutRetried(t *testing.T) {
	srv := newScriptServer(t,
		func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, // never answers
		respond(http.StatusOK, pageBody(t, "", "BS1")))
	c, log := newTestClient(t, srv.URL, func(cfg *Config) { cfg.RequestTimeout = 50 * time.Millisecond })

	if _, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice"}); err != nil {
		t.Fatal(err)
	}
	if reasons, _, _ := log.snapshot(); !reflect.DeepEqual(reasons, []string{"network"}) {
		t.Errorf("retry reasons = %q, want [network]", reasons)
	}
}

func TestCancelDuringBackoff(t *testing.T) {
	srv := newScriptServer(t, twilioError(429, 20429, "Too Many Requests", "Retry-After", "3600"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := New(Config{
		BaseURL: srv.URL, Username: testUsername, Password: testPassword, BackoffMax: 2 * time.Hour,
		Hooks: Hooks{OnRetry: func(string, int, time.Duration) { cancel() }},
	})
	if err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() {
		_, err := c.ListBindings(ctx, BindingsQuery{ServiceSID: testService, User: "alice"})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || Retryable(err) {
			t.Errorf("error = %v, want context.Canceled, not retryable", err)
		}
	case <-time.After(time.Minute): // the backoff is an hour: this catches a hang, not slowness
		t.Fatal("ListBindings still waiting an hour's backoff after its context was canceled")
	}
	if n := len(srv.requests()); n != 1 {
		t.Errorf("server saw %d requests, want 1", n)
	}
}

func TestCanceledContextNotRetried(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	srv := newScriptServer(t, func(w http.ResponseWriter, r *http.Request) {
		cancel()
		<-r.Context().Done()
	})
	c, log := newTestClient(t, srv.URL, nil)

	_, err := c.ListBindings(ctx, BindingsQuery{ServiceSID: testService, User: "alice"})
	if !errors.Is(err, context.Canceled) || Retryable(err) {
		t.Errorf("error = %v, want context.Canceled, not retryable", err)
	}
	if reasons, _, _ := log.snapshot(); len(reasons) != 0 {
		t.Errorf("retried %q after cancellation", reasons)
	}
}

func TestBackoffWindow(t *testing.T) {
	base, limit := 200*time.Millisecond, 30*time.Second
	tests := []struct {
		retry int
		want  time.Duration
	}{
		{0, 200 * time.Millisecond},
		{1, 400 * time.Millisecond},
		{4, 3200 * time.Millisecond},
		{7, 25600 * time.Millisecond},
		{8, 30 * time.Second},
		{61, 30 * time.Second},
		{62, 30 * time.Second},
		{1000, 30 * time.Second},
	}
	for _, tt := range tests {
		if got := backoffWindow(base, limit, tt.retry); got != tt.want {
			t.Errorf("backoffWindow(retry %d) = %v, want %v", tt.retry, got, tt.want)
		}
	}
}

func TestFullJitterRange(t *testing.T) {
	const window = 10 * time.Millisecond
	var below, above bool
	for range 1000 {
		d := fullJitter(window)
		if d < 0 || d >= window {
			t.Fatalf("fullJitter(%v) = %v, want within [0, %v)", window, d, window)
		}
		below = below || d < window/2
		above = above || d >= window/2
	}
	if !below || !above {
		t.Errorf("1000 draws all in one half of the window: not jittered")
	}
	if d := fullJitter(0); d != 0 {
		t.Errorf("fullJitter(0) = %v, want 0", d)
	}
}

func TestInFlightCapped(t *testing.T) {
	const limit, calls = 3, 8
	release := make(chan struct{})
	var atServer, peak atomic.Int32
	srv := newScriptServer(t, func(w http.ResponseWriter, r *http.Request) {
		n := atServer.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-release
		atServer.Add(-1)
		respond(http.StatusOK, pageBody(t, ""))(w, r)
	})
	c, _ := newTestClient(t, srv.URL, func(cfg *Config) { cfg.MaxInFlight = limit })

	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for range calls {
		wg.Go(func() {
			_, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice"})
			errs <- err
		})
	}
	// Every call ends up either held by the server or queued for a slot.
	for int(atServer.Load())+c.limit.waiting() < calls {
		time.Sleep(time.Millisecond)
	}
	if got := atServer.Load(); got != limit {
		t.Errorf("%d requests reached the server at once, want %d", got, limit)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := peak.Load(); got != limit {
		t.Errorf("server saw at most %d requests at once, want %d", got, limit)
	}
}

func TestAcquireHonoursContext(t *testing.T) {
	l := newLimiter(1, nil)
	slot, err := l.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("acquire with every slot taken and a canceled context = %v, want context.Canceled", err)
	}
	l.release(slot, outcomeOK, 0)
	if _, err := l.acquire(context.Background()); err != nil {
		t.Errorf("acquire after release = %v", err)
	}
}

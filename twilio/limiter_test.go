package twilio

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"testing"
)

// limitEvent is one call of Hooks.OnLimitChange.
type limitEvent struct {
	limit  int
	reason string
}

func (e limitEvent) String() string { return fmt.Sprintf("%d %s", e.limit, e.reason) }

// limiterRun drives a limiter step by step, as requests starting and
// ending would, and records the changes it reports.
type limiterRun struct {
	t      *testing.T
	l      *limiter
	events []limitEvent
}

func newLimiterRun(t *testing.T, max int) *limiterRun {
	r := &limiterRun{t: t}
	r.l = newLimiter(max, func(limit int, reason string) { r.events = append(r.events, limitEvent{limit, reason}) })
	return r
}

// fill starts requests until the cap is reached and returns their tickets,
// oldest first.
func (r *limiterRun) fill() []ticket {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // acquire still takes a free slot; it only refuses to wait
	var ts []ticket
	for {
		tk, err := r.l.acquire(ctx)
		if err != nil {
			return ts
		}
		ts = append(ts, tk)
	}
}

// start starts n requests, which must fit under the cap.
func (r *limiterRun) start(n int) []ticket {
	r.t.Helper()
	ts := make([]ticket, n)
	for i := range ts {
		var err error
		if ts[i], err = r.l.acquire(context.Background()); err != nil {
			r.t.Fatal(err)
		}
	}
	return ts
}

func (r *limiterRun) end(ts []ticket, o outcome, concurrent int) {
	for _, tk := range ts {
		r.l.release(tk, o, concurrent)
	}
}

// windows runs n full windows: the cap filled, then every request a
// success whose answer says concurrent (0: no header).
func (r *limiterRun) windows(n, concurrent int) {
	r.t.Helper()
	for range n {
		r.end(r.fill(), outcomeOK, concurrent)
	}
}

// throttleNewest fills the cap and answers the newest request 429 and the
// others 200: a probe that finds the account full.
func (r *limiterRun) throttleNewest() {
	r.t.Helper()
	ts := r.fill()
	r.l.release(ts[len(ts)-1], outcomeThrottled, 0)
	r.end(ts[:len(ts)-1], outcomeOK, 0)
}

func (r *limiterRun) want(limit int, events ...string) {
	r.t.Helper()
	if got := r.l.current(); got != limit {
		r.t.Errorf("limit = %d, want %d", got, limit)
	}
	var got []string
	for _, e := range r.events {
		got = append(got, e.String())
	}
	if !slices.Equal(got, events) {
		r.t.Errorf("changes reported = %q, want %q", got, events)
	}
	r.events = nil
}

func TestLimiterSlowStart(t *testing.T) {
	r := newLimiterRun(t, 40)
	r.want(8)
	r.windows(1, 0)
	r.want(16, "16 slow_start")
	r.windows(2, 0)
	r.want(40, "32 slow_start", "40 slow_start")
	r.windows(5, 0)
	r.want(40)

	small := newLimiterRun(t, 3)
	small.windows(3, 0)
	small.want(3)
}

// A window in which the caller never had as many requests in flight as the
// cap allows says nothing about the account: the cap stays.
func TestLimiterIgnoresWindowsItDidNotLimit(t *testing.T) {
	r := newLimiterRun(t, 64)
	for range 100 {
		r.end(r.start(7), outcomeOK, 0)
	}
	r.want(8)
	for range 100 {
		r.end(r.start(1), outcomeFailed, 0)
	}
	r.want(8)
}

// settled runs a limiter out of slow start: a 429 at 16 (so the ceiling is
// 15), then growth to limit, below the ceiling.
func settled(t *testing.T, max, limit int) *limiterRun {
	t.Helper()
	r := newLimiterRun(t, max)
	r.windows(1, 0)
	r.throttleNewest()
	r.windows(limit-8, 0)
	if r.l.current() != limit || r.l.ceiling != 15 {
		t.Fatalf("setup: limit %d, ceiling %d; want %d and 15", r.l.current(), r.l.ceiling, limit)
	}
	r.events = nil
	return r
}

func TestLimiterThrottledOncePerBurst(t *testing.T) {
	r := newLimiterRun(t, 16)
	r.windows(1, 0)
	r.want(16, "16 slow_start")
	ts := r.fill()
	// In slow start the cap goes back to the last window's, which passed.
	r.l.release(ts[15], outcomeThrottled, 0)
	r.want(8, "8 throttled")
	// The rest of the burst started before the decrease: no further cut.
	r.end(ts[8:15], outcomeThrottled, 0)
	r.want(8)
	r.end(ts[:8], outcomeOK, 0)
	// Below the ceiling (15) the cap grows by one per full window.
	r.windows(3, 0)
	r.want(11, "9 increase", "10 increase", "11 increase")
	// A request started after the decrease and refused lowers it again,
	// to the requests Twilio was serving: the 10 before it.
	late := r.fill()
	r.l.release(late[10], outcomeThrottled, 0)
	r.want(10, "10 throttled")
	r.end(late[:10], outcomeOK, 0)
	if r.l.ceiling != 10 {
		t.Errorf("ceiling = %d, want 10", r.l.ceiling)
	}
}

// Requests started together reach Twilio in any order, so a refused one may
// have few older requests in flight: the cap falls by half at most.
func TestLimiterThrottledByHalfAtMost(t *testing.T) {
	// A 429 right after a step up puts the cap back where it was; one more
	// in the next epoch says the account has less room than that.
	r := settled(t, 32, 15)
	r.throttleNewest()
	r.want(14, "14 throttled")
	ts := r.fill()
	r.l.release(ts[0], outcomeThrottled, 0) // no older request in flight
	r.want(7, "7 throttled")
	r.end(ts[1:], outcomeOK, 0)

	// Between half and the ceiling, the older requests set the cap.
	r = settled(t, 32, 15)
	r.throttleNewest()
	ts = r.fill()
	r.l.release(ts[9], outcomeThrottled, 0)
	r.want(9, "14 throttled", "9 throttled")
	r.end(slices.Delete(ts, 9, 10), outcomeOK, 0)
	// The new ceiling is 13, one below the cap the 429 came at.
	r.windows(4, 0)
	r.want(13, "10 increase", "11 increase", "12 increase", "13 increase")
	r.windows(probeAfter(13), 0)
	r.want(14, "14 probe")
}

// probeAfter and fullProbeAfter are the full windows at the ceiling before a
// probe at limit, without and with load headers showing the account full.
func probeAfter(limit int) int { return max(probeWindows, (probeSuccesses+limit-1)/limit) }

func fullProbeAfter(limit int) int {
	return max(fullProbeWindows, (fullProbeSuccesses+limit-1)/limit)
}

// Without load headers the limiter stays at its ceiling for a while, then
// tries one more.
func TestLimiterProbes(t *testing.T) {
	r := newLimiterRun(t, 64)
	r.throttleNewest() // at 8 in slow start: ceiling 7, back to half
	r.want(4, "4 throttled")
	r.windows(3, 0)
	r.want(7, "5 increase", "6 increase", "7 increase")
	r.windows(probeAfter(7)-1, 0)
	r.want(7)
	r.windows(1, 0)
	r.want(8, "8 probe")
	// The probe meets a 429: back to the ceiling, which holds.
	r.throttleNewest()
	r.want(7, "7 throttled")
	r.windows(probeAfter(7), 0)
	r.want(8, "8 probe")
	// This probe passes a full window: the account has more room, so the
	// next window probes again at once, until a 429.
	r.windows(1, 0)
	r.want(9, "9 probe")
	r.windows(1, 0)
	r.want(10, "10 probe")
	r.throttleNewest()
	r.want(9, "9 throttled")
	r.windows(probeAfter(9)-1, 0)
	r.want(9)

	// At a large cap the windows, not the successes, set the pace.
	big := newLimiterRun(t, 64)
	big.windows(3, 0)
	big.throttleNewest()
	big.want(32, "16 slow_start", "32 slow_start", "64 slow_start", "32 throttled")
	big.windows(63-32, 0)
	big.events = nil
	if big.l.current() != 63 || probeAfter(63) != probeWindows {
		t.Fatalf("limit %d, probeAfter(63) = %d", big.l.current(), probeAfter(63))
	}
	big.windows(probeWindows, 0)
	big.want(64, "64 probe")
}

// With Twilio-Concurrent-Requests, while the windows see the account full
// the limiter neither grows nor probes but rarely; a window that sees room
// grows and probes on the usual schedule, and a probe that passes goes on
// only while there is room.
func TestLimiterUsesConcurrentRequests(t *testing.T) {
	r := newLimiterRun(t, 32)
	// Before any 429 the header says nothing of a limit: slow start.
	r.windows(1, 5)
	r.want(16, "16 slow_start")
	ts := r.fill()
	r.end(ts[:15], outcomeOK, 12) // the account's limit: 12 in flight
	r.l.release(ts[15], outcomeThrottled, 12)
	r.want(8, "8 throttled")
	// Twilio counts fewer than 12: below the ceiling (15), grow.
	r.windows(2, 11)
	r.want(10, "9 increase", "10 increase")
	// Twilio counts 12, others' requests with ours: hold, below the ceiling
	// too, and probe only rarely.
	r.windows(fullProbeAfter(10)-1, 12)
	r.want(10)
	r.windows(1, 12)
	r.want(11, "11 probe")
	r.throttleNewest()
	r.want(10, "10 throttled")
	// Other systems leave: Twilio counts fewer than the limit, so the
	// limiter probes as it does without the header, and goes on while the
	// probes pass and show room.
	r.windows(probeAfter(10), 9)
	r.want(11, "11 probe")
	r.windows(2, 9)
	r.want(13, "12 probe", "13 probe")
	// A probe that passes while Twilio sees the account full stays there.
	r.windows(1, 12)
	r.want(13)
	r.windows(probeAfter(13), 12)
	r.want(13)
}

func TestLimiterBounds(t *testing.T) {
	r := newLimiterRun(t, 1)
	ts := r.start(1)
	r.l.release(ts[0], outcomeThrottled, 0)
	r.want(1)
	r.windows(probeWindows*3, 0)
	r.want(1)

	r = newLimiterRun(t, 2)
	r.throttleNewest()
	r.want(1, "1 throttled")
	r.throttleNewest()
	r.want(1) // not below one
}

// accountLoad reads the header as Twilio writes it, and ignores what it
// cannot use.
func TestAccountLoad(t *testing.T) {
	for v, want := range map[string]int{
		"": 0, "1": 1, " 37 ": 37, `"4"`: 4, "0": 0, "-3": 0, "2.5": 0, "many": 0, "99999999999": 0,
	} {
		h := http.Header{}
		if v != "" {
			h.Set("Twilio-Concurrent-Requests", v)
		}
		if got := accountLoad(h); got != want {
			t.Errorf("accountLoad(%q) = %d, want %d", v, got, want)
		}
	}
}

// The hook may call the client: it runs outside the limiter's lock.
func TestLimitChangeHookMayCallClient(t *testing.T) {
	var c *Client
	var seen []int
	srv := newScriptServer(t, respond(http.StatusOK, pageBody(t, "")))
	c, _ = newTestClient(t, srv.URL, func(cfg *Config) {
		cfg.MaxInFlight = 16
		cfg.Hooks.OnLimitChange = func(limit int, reason string) {
			if got := c.InFlightLimit(); got != limit {
				t.Errorf("InFlightLimit() = %d in the hook for %d", got, limit)
			}
			seen = append(seen, limit)
		}
	})
	// Eight requests at once fill the first window: slow start doubles.
	ts := make([]ticket, 8)
	for i := range ts {
		ts[i], _ = c.limit.acquire(context.Background())
	}
	for _, tk := range ts {
		c.limit.release(tk, outcomeOK, 0)
	}
	if !slices.Equal(seen, []int{16}) || c.InFlightLimit() != 16 {
		t.Errorf("hook saw %v, limit %d; want [16]", seen, c.InFlightLimit())
	}
}

// A change overtaken by a later one, on another goroutine, is not reported
// after it: the last value reported is the cap in force.
func TestLimitChangeHookDropsOvertakenChanges(t *testing.T) {
	var seen []string
	l := newLimiter(16, func(limit int, reason string) { seen = append(seen, limitEvent{limit, reason}.String()) })
	l.notify(limitChange{seq: 2, limit: 5, reason: "increase"})
	l.notify(limitChange{seq: 1, limit: 4, reason: "throttled"})
	l.notify(limitChange{seq: 3, limit: 6, reason: "increase"})
	if want := []string{"5 increase", "6 increase"}; !slices.Equal(seen, want) {
		t.Errorf("hook saw %q, want %q", seen, want)
	}
}

// waitInLine runs take, which waits for a slot of l, in a goroutine, and
// returns once n callers wait: callers queued this way queue in a known
// order.
func waitInLine(l *limiter, n int, take func()) {
	go take()
	for l.waiting() != n {
		runtime.Gosched()
	}
}

// busyLimiter returns a limiter of one slot and the ticket that holds it,
// so that the next callers queue.
func busyLimiter(t *testing.T) (*limiter, ticket) {
	t.Helper()
	l := newLimiter(1, nil)
	first, err := l.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return l, first
}

// Waiting callers get freed slots in the order they came, one per slot.
func TestLimiterFirstComeFirstServed(t *testing.T) {
	l, first := busyLimiter(t)
	got := make(chan string, 3)
	tickets := make(chan ticket, 3)
	for i, name := range []string{"a", "b", "c"} {
		waitInLine(l, i+1, func() {
			tk, err := l.acquire(context.Background())
			if err != nil {
				t.Error(err)
			}
			got <- name
			tickets <- tk
		})
	}
	// A caller whose context ends leaves the queue without taking a slot.
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error)
	waitInLine(l, 4, func() {
		_, err := l.acquire(ctx)
		gone <- err
	})
	cancel()
	if err := <-gone; !errors.Is(err, context.Canceled) || l.waiting() != 3 {
		t.Fatalf("canceled waiter: %v, %d still waiting", err, l.waiting())
	}

	l.release(first, outcomeOK, 0)
	var order []string
	for range 3 {
		order = append(order, <-got)
		if l.waiting() != 3-len(order) {
			t.Fatalf("after %d grants, %d waiting: one release must wake one caller", len(order), l.waiting())
		}
		l.release(<-tickets, outcomeOK, 0)
	}
	if !slices.Equal(order, []string{"a", "b", "c"}) {
		t.Errorf("slots granted in order %q, want a, b, c", order)
	}
	if l.inFlight != 0 {
		t.Errorf("%d slots still taken", l.inFlight)
	}
}

// A page of the Users list waits ahead of the bindings requests that came
// before it, behind the Users pages that did.
func TestLimiterUsersPagesWaitAhead(t *testing.T) {
	l, first := busyLimiter(t)
	got := make(chan string, 4)
	for i, w := range []struct {
		name  string
		ahead bool
	}{{"bindings-1", false}, {"bindings-2", false}, {"users-1", true}, {"users-2", true}} {
		waitInLine(l, i+1, func() {
			take := l.acquire
			if w.ahead {
				take = l.acquireAhead
			}
			tk, err := take(context.Background())
			if err != nil {
				t.Error(err)
			}
			got <- w.name
			l.release(tk, outcomeOK, 0)
		})
	}
	l.release(first, outcomeOK, 0)
	var order []string
	for range 4 {
		order = append(order, <-got)
	}
	if want := []string{"users-1", "users-2", "bindings-1", "bindings-2"}; !slices.Equal(order, want) {
		t.Errorf("slots went to %v, want %v", order, want)
	}
}

package twilio

import (
	"context"
	"fmt"
	"net/http"
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

func TestLimiterThrottledOncePerBurst(t *testing.T) {
	r := newLimiterRun(t, 16)
	r.windows(1, 0)
	r.want(16, "16 slow_start")
	ts := r.fill()
	// The newest request is refused first: the 15 before it are what
	// Twilio was serving.
	r.l.release(ts[15], outcomeThrottled, 16)
	r.want(15, "15 throttled")
	// The rest of the burst started before the decrease: no further cut.
	r.end(ts[8:15], outcomeThrottled, 16)
	r.want(15)
	r.end(ts[:8], outcomeOK, 16)
	// A request started after the decrease and refused lowers it again.
	late := r.fill()
	r.l.release(late[len(late)-1], outcomeThrottled, 0)
	r.want(14, "14 throttled")
	r.end(late[:len(late)-1], outcomeOK, 0)
}

// Requests started together reach Twilio in any order, so a refused one may
// have few older requests in flight: the cap falls by half at most.
func TestLimiterThrottledByHalfAtMost(t *testing.T) {
	r := newLimiterRun(t, 32)
	r.windows(2, 0)
	r.want(32, "16 slow_start", "32 slow_start")
	ts := r.fill()
	r.l.release(ts[0], outcomeThrottled, 0) // no older request in flight
	r.want(16, "16 throttled")
	r.end(ts[1:], outcomeOK, 0)

	// Between half and the ceiling, the older requests set the cap.
	r2 := newLimiterRun(t, 32)
	r2.windows(2, 0)
	ts = r2.fill()
	r2.l.release(ts[20], outcomeThrottled, 0)
	r2.want(20, "16 slow_start", "32 slow_start", "20 throttled")
	r2.end(slices.Delete(ts, 20, 21), outcomeOK, 0)
	// Below the ceiling (31) the cap grows by one per full window.
	r2.windows(3, 0)
	r2.want(23, "21 increase", "22 increase", "23 increase")
}

// Without load headers the limiter stays at its ceiling for probeWindows
// full windows, then tries one more.
func TestLimiterProbes(t *testing.T) {
	r := newLimiterRun(t, 32)
	r.throttleNewest() // at 8 during slow start: Twilio serves 7
	r.want(7, "7 throttled")
	r.windows(probeWindows-1, 0)
	r.want(7)
	r.windows(1, 0)
	r.want(8, "8 probe")
	// The probe meets a 429: back to the ceiling, which holds.
	r.throttleNewest()
	r.want(7, "7 throttled")
	r.windows(probeWindows, 0)
	r.want(8, "8 probe")
	// This probe passes a full window: the account has more room, so the
	// next window probes again at once, until a 429.
	r.windows(1, 0)
	r.want(9, "9 probe")
	r.windows(1, 0)
	r.want(10, "10 probe")
	r.throttleNewest()
	r.want(9, "9 throttled")
	r.windows(probeWindows-1, 0)
	r.want(9)
}

// With Twilio-Concurrent-Requests, a window that saw the account full holds
// the cap and probes only every fullProbeWindows windows; one that saw
// room grows it, above the ceiling too.
func TestLimiterUsesConcurrentRequests(t *testing.T) {
	r := newLimiterRun(t, 32)
	// Before any 429 the header says nothing of a limit: slow start.
	r.windows(1, 5)
	r.want(16, "16 slow_start")
	ts := r.fill()
	r.l.release(ts[15], outcomeThrottled, 12)
	r.end(ts[:15], outcomeOK, 12) // the account's limit: 12 in flight
	r.want(15, "15 throttled")
	r.throttleNewest()
	r.want(14, "14 throttled")
	r.windows(probeWindows, 12)
	r.want(14) // full: no probe after probeWindows
	r.windows(fullProbeWindows-probeWindows-1, 12)
	r.want(14)
	r.windows(1, 12)
	r.want(15, "15 probe")
	r.throttleNewest()
	r.want(14, "14 throttled")
	// Other systems leave: Twilio counts fewer than the limit, so there is
	// room, whatever the ceiling (13).
	r.windows(3, 9)
	r.want(17, "15 increase", "16 increase", "17 increase")
	r.windows(2, 12)
	r.want(17)
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

package twilio

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Shape of the concurrency limiter.
const (
	// initialLimit caps the requests in flight of the first window. The cap
	// then doubles with every full window until the first 429 (slow
	// start), so that a run does not open with a burst of MaxInFlight
	// requests on an account that other systems may be using: such a burst
	// makes their requests fail too.
	initialLimit = 8
	// probeWindows and probeSuccesses set how long the limiter stays at its
	// ceiling before it tries one request more: probeWindows full windows,
	// and at least probeSuccesses successes. A try that finds the account
	// full costs one 429, so 429s stay under 1/probeSuccesses of the
	// requests, while a limit of 64 is still tried every 16 round trips.
	probeWindows   = 16
	probeSuccesses = 256
	// fullProbeWindows and fullProbeSuccesses replace them while
	// Twilio-Concurrent-Requests shows the account full: a try could only
	// meet a 429, unless the account's limit itself was raised, which this
	// rare try notices.
	fullProbeWindows   = 128
	fullProbeSuccesses = 2048
)

// Response headers by which Twilio shows an account's load.
const (
	// concurrentRequestsHeader is the number of requests the account had in
	// flight when Twilio took the request, as Twilio counts them.
	concurrentRequestsHeader = "Twilio-Concurrent-Requests"
	// maxConcurrentRequests bounds what the limiter believes of the header.
	maxConcurrentRequests = 1 << 20
)

// outcome is how an HTTP attempt ended, as far as the limiter cares.
type outcome int

const (
	outcomeFailed    outcome = iota // any failure except throttling
	outcomeThrottled                // 429
	outcomeOK                       // 2xx, body read
)

// limiter caps the client's HTTP requests in flight and settles the cap at
// what the account allows, the way TCP and Netflix's concurrency-limits
// settle a window: Twilio answers 429 when an account has more requests in
// flight than its limit, and a request refused this way costs a round trip
// for nothing.
//
// The cap moves in windows: a window ends after as many successes as the
// cap, about one round trip's worth of requests. A window counts only when
// the cap held requests back at some point (otherwise the caller, not the
// cap, set the pace, and the window says nothing about the account).
//
//   - Slow start: from min(MaxInFlight, 8) the cap doubles every full
//     window until the first 429.
//   - A 429 lowers the cap at once. In slow start, to half, the level of
//     the last window; after a step up by one (growth or a probe, below),
//     to the level before it. Otherwise to the number of requests that
//     were already in flight when the refused one started and still were
//     when its answer came, those Twilio was serving as far as the client
//     can tell, but by half at most. The cap in force minus one becomes the
//     ceiling: Twilio was full with fewer requests than that. A 429 lowers
//     the cap once per burst: the answers of requests that started before
//     the last decrease are ignored, since they tell what is already
//     known. The cap never halves again and again on a burst of 429s, as
//     multiplicative decrease does.
//   - Below the ceiling the cap grows by one every full window, unless the
//     load header (below) shows the account full.
//   - At the ceiling it stays probeWindows full windows and probeSuccesses
//     successes, then tries one more (a probe). A probe that meets a 429
//     puts the cap back; one that passes a full window raises the ceiling,
//     and the next window probes again (unless the load header below says
//     the account is full), so the cap follows an account that has more
//     room than before.
//   - With the Twilio-Concurrent-Requests header, once a 429 has shown the
//     account limited, the largest value seen on a success is the account's
//     limit. While the windows' successes see the account at that limit,
//     growing could only meet a 429: the limiter holds, and probes only
//     after fullProbeWindows windows and fullProbeSuccesses successes, so
//     that a client alone on its account meets almost no 429 once settled.
//     A window that sees room grows or probes on the usual schedule.
//
// It keeps no clock: every decision follows from the order of requests and
// answers, which makes it deterministic to test, and its waiters are served
// first come, first served, pages of the Users list first.
type limiter struct {
	mu       sync.Mutex
	max      int
	limit    int
	inFlight int
	// waiters are the callers of acquire waiting for a slot, first come
	// first served (those of acquireAhead before the others): a freed slot
	// goes to the first of them, so that a release wakes one goroutine,
	// not all.
	waiters []*waiter

	lastSeq uint64
	active  []uint64 // sequence numbers of the requests in flight, ascending
	epoch   uint64   // decreases of the cap so far

	slowStart bool
	// ceiling is the highest cap believed safe: one below the cap at which
	// a 429 last came, or a cap that passed a full window since. 0 before
	// the first 429.
	ceiling   int
	throttled bool // a 429 has shown that the account has a limit
	account   int  // largest Twilio-Concurrent-Requests of a success
	risen     bool // the cap has grown since the last decrease

	winOK   int  // successes in the window
	winFull bool // the cap held requests back during the window
	winPeak int  // largest Twilio-Concurrent-Requests of the window's successes
	held    int  // full windows at the ceiling since the cap last changed

	onChange  func(limit int, reason string)
	changes   uint64 // number of the last change of the cap
	hookMu    sync.Mutex
	delivered uint64 // number of the last change passed to onChange
}

// waiter is a caller of acquire waiting for a slot.
type waiter struct {
	ready chan struct{} // closed once t is granted
	t     ticket
	ahead bool // queued ahead of the others (acquireAhead)
}

// ticket is what the limiter remembers of a request it let through.
type ticket struct {
	seq   uint64 // order of the start
	epoch uint64 // limiter.epoch at the start
}

// limitChange is a change of the cap for onChange; seq 0 means none.
type limitChange struct {
	seq    uint64
	limit  int
	reason string
}

func newLimiter(max int, onChange func(limit int, reason string)) *limiter {
	return &limiter{
		max:       max,
		limit:     min(max, initialLimit),
		slowStart: max > initialLimit,
		onChange:  onChange,
	}
}

// acquire blocks until a request may start, or returns ctx's error. A free
// slot is taken even when ctx is done; only waiting needs a live ctx.
func (l *limiter) acquire(ctx context.Context) (ticket, error) { return l.take(ctx, false) }

// acquireAhead is acquire for a request that waits ahead of those of
// acquire (behind earlier ones of its own kind): a page of the Users list,
// which the fetchers of bindings wait for. Queued behind a full cap of
// bindings requests, the list would advance by one page per round trip
// and more, fewer users than 64 fetchers read in that time.
func (l *limiter) acquireAhead(ctx context.Context) (ticket, error) { return l.take(ctx, true) }

func (l *limiter) take(ctx context.Context, ahead bool) (ticket, error) {
	l.mu.Lock()
	if l.inFlight < l.limit && len(l.waiters) == 0 {
		t := l.grant()
		l.mu.Unlock()
		return t, nil
	}
	// The cap holds this request back: the window counts.
	l.winFull = true
	if err := ctx.Err(); err != nil {
		l.mu.Unlock()
		return ticket{}, err
	}
	w := &waiter{ready: make(chan struct{}), ahead: ahead}
	i := len(l.waiters)
	if ahead {
		i = 0
		for i < len(l.waiters) && l.waiters[i].ahead {
			i++
		}
	}
	l.waiters = slices.Insert(l.waiters, i, w)
	l.mu.Unlock()

	select {
	case <-w.ready:
		return w.t, nil
	case <-ctx.Done():
	}
	l.mu.Lock()
	if i := slices.Index(l.waiters, w); i >= 0 {
		l.waiters = slices.Delete(l.waiters, i, i+1)
		l.mu.Unlock()
		return ticket{}, ctx.Err()
	}
	l.mu.Unlock()
	// The slot was granted as ctx ended: hand it on.
	l.release(w.t, outcomeFailed, 0)
	return ticket{}, ctx.Err()
}

// grant starts a request; l.mu is held.
func (l *limiter) grant() ticket {
	l.inFlight++
	if l.inFlight == l.limit {
		l.winFull = true
	}
	l.lastSeq++
	t := ticket{seq: l.lastSeq, epoch: l.epoch}
	l.active = append(l.active, t.seq)
	return t
}

// wake grants the free slots to the first waiters; l.mu is held.
func (l *limiter) wake() {
	for len(l.waiters) > 0 && l.inFlight < l.limit {
		w := l.waiters[0]
		l.waiters = slices.Delete(l.waiters, 0, 1)
		w.t = l.grant()
		close(w.ready)
	}
}

// release ends the request of t and adapts the cap to how it ended.
// concurrent is the Twilio-Concurrent-Requests of its answer, 0 if none.
func (l *limiter) release(t ticket, o outcome, concurrent int) {
	l.mu.Lock()
	l.inFlight--
	older, found := slices.BinarySearch(l.active, t.seq)
	if found {
		l.active = slices.Delete(l.active, older, older+1)
	}
	var ch limitChange
	switch o {
	case outcomeThrottled:
		ch = l.throttle(t, older)
	case outcomeOK:
		ch = l.succeed(concurrent)
	}
	l.wake()
	l.mu.Unlock()
	l.notify(ch)
}

// throttle lowers the cap after a 429 of the request of t, unless the cap
// was lowered after that request started. older is the number of requests
// started before it and still in flight.
//
// Within an epoch the cap only grows, so the cap now is the largest that
// was in force while the request was in flight: Twilio was full with fewer
// requests than that, and the cap minus one becomes the ceiling. In slow
// start the cap goes back to half, the level of the last window, which
// passed; after growing by one (an increase or a probe), back to the level
// before, which passed a window too. Otherwise (the account had less room
// than the cap already: other systems use it more) it falls to older, the
// requests Twilio was serving as far as the order of starts tells, but by
// half at most: requests started together reach Twilio in any order, so
// older can be anything from zero up when they do.
func (l *limiter) throttle(t ticket, older int) limitChange {
	l.throttled = true
	if t.epoch != l.epoch {
		return limitChange{}
	}
	slowStart, risen := l.slowStart, l.risen
	l.risen = false
	l.epoch++
	l.slowStart = false
	l.ceiling = max(1, l.limit-1)
	l.held = 0
	l.resetWindow()
	half := (l.limit + 1) / 2
	switch {
	case slowStart:
		return l.set(half, "throttled")
	case risen:
		return l.set(l.ceiling, "throttled")
	}
	return l.set(min(max(older, half), l.ceiling), "throttled")
}

// succeed counts a success, and ends the window when it is the last one.
func (l *limiter) succeed(concurrent int) limitChange {
	if concurrent > 0 {
		l.account = max(l.account, concurrent)
		l.winPeak = max(l.winPeak, concurrent)
	}
	l.winOK++
	if l.winOK < l.limit {
		return limitChange{}
	}
	full, peak := l.winFull, l.winPeak
	l.resetWindow()
	if !full {
		return limitChange{}
	}
	// Twilio saw the account full: one more request would be refused.
	accountFull := l.throttled && peak > 0 && peak >= l.account
	switch {
	case l.slowStart:
		return l.set(2*l.limit, "slow_start")
	case l.limit < l.ceiling && !accountFull:
		return l.set(l.limit+1, "increase")
	case l.limit > l.ceiling:
		// A probe passed a full window: the account has more room than
		// before, so look further at once, unless Twilio says it is full
		// now.
		l.ceiling = l.limit
		if !accountFull {
			return l.set(l.limit+1, "probe")
		}
	}
	l.held++
	windows, successes := probeWindows, probeSuccesses
	if accountFull {
		windows, successes = fullProbeWindows, fullProbeSuccesses
	}
	if l.held < max(windows, (successes+l.limit-1)/l.limit) {
		return limitChange{}
	}
	return l.set(l.limit+1, "probe")
}

func (l *limiter) resetWindow() {
	l.winOK, l.winFull, l.winPeak = 0, false, 0
}

// set makes n, within [1, max], the cap, and returns the change for
// onChange.
func (l *limiter) set(n int, reason string) limitChange {
	n = min(max(n, 1), l.max)
	if n == l.limit {
		return limitChange{}
	}
	l.risen = n > l.limit
	l.limit = n
	l.held = 0
	l.changes++
	return limitChange{seq: l.changes, limit: n, reason: reason}
}

// notify passes ch to onChange, outside l.mu so that the hook may call the
// client. Changes are numbered so that one overtaken by a later change is
// dropped: the last value the hook sees is always the cap in force.
func (l *limiter) notify(ch limitChange) {
	if ch.seq == 0 || l.onChange == nil {
		return
	}
	l.hookMu.Lock()
	defer l.hookMu.Unlock()
	if ch.seq <= l.delivered {
		return
	}
	l.delivered = ch.seq
	l.onChange(ch.limit, ch.reason)
}

// current is the cap now in force.
func (l *limiter) current() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.limit
}

// waiting is the number of callers queued for a slot.
func (l *limiter) waiting() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.waiters)
}

// accountLoad reads Twilio-Concurrent-Requests from an answer: the
// account's requests in flight as Twilio counts them, or 0 when the header
// is absent or not a positive integer.
func accountLoad(h http.Header) int {
	v := strings.Trim(strings.TrimSpace(h.Get(concurrentRequestsHeader)), `"`)
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n > maxConcurrentRequests {
		return 0
	}
	return n
}

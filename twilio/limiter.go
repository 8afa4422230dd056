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
	// probeWindows is how many full windows the limiter stays at its
	// ceiling before it tries one request more, when no load header says
	// whether the account has room. A try that finds the account full
	// costs one 429, so 429s stay near 1/(probeWindows·limit) of the
	// requests: about 1.5% at a limit of 4, less above.
	probeWindows = 16
	// fullProbeWindows replaces probeWindows while Twilio-Concurrent-Requests
	// shows the account full: a try could only meet a 429, unless the
	// account's limit itself was raised, which this rare try notices.
	fullProbeWindows = 128
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
//   - A 429 lowers the cap at once, to the number of requests that were
//     already in flight when the refused one started and were still in
//     flight when its answer came: those Twilio admitted, as far as the
//     client can see. The cap the refused request started under, minus
//     one, becomes the ceiling: Twilio was full with fewer requests than
//     that. A 429 lowers the cap once per burst: the answers of requests
//     that started before the last decrease are ignored, since they tell
//     what was already known. The cap never halves again and again on a
//     burst of 429s, as multiplicative decrease does.
//   - Below the ceiling the cap grows by one every full window.
//   - At the ceiling it stays probeWindows full windows, then tries one
//     more (a probe). A probe that meets a 429 puts the cap back; one that
//     passes a full window raises the ceiling, and the next window probes
//     again, so the cap follows an account that has more room than before.
//   - With the Twilio-Concurrent-Requests header, once a 429 has shown the
//     account limited, the largest value seen on a success is the account's
//     limit. A full window whose successes never saw it has room, and the
//     cap grows by one whatever the ceiling; a window that saw it holds the
//     cap, and probes only every fullProbeWindows windows, so that a client
//     alone on its account meets almost no 429 once settled.
//
// It keeps no clock: every decision follows from the order of requests and
// answers, which makes it deterministic to test.
type limiter struct {
	mu       sync.Mutex
	max      int
	limit    int
	inFlight int
	queued   int           // callers waiting in acquire
	changed  chan struct{} // closed, and replaced, whenever a slot may be free

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

	winOK   int  // successes in the window
	winFull bool // the cap held requests back during the window
	winPeak int  // largest Twilio-Concurrent-Requests of the window's successes
	held    int  // full windows at the ceiling since the cap last changed

	onChange  func(limit int, reason string)
	changes   uint64 // number of the last change of the cap
	hookMu    sync.Mutex
	delivered uint64 // number of the last change passed to onChange
}

// ticket is what the limiter remembers of a request it let through.
type ticket struct {
	seq   uint64 // order of the start
	epoch uint64 // limiter.epoch at the start
	limit int    // the cap at the start
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
		changed:   make(chan struct{}),
		onChange:  onChange,
	}
}

// acquire blocks until a request may start, or returns ctx's error.
func (l *limiter) acquire(ctx context.Context) (ticket, error) {
	for {
		l.mu.Lock()
		if l.inFlight < l.limit {
			l.inFlight++
			if l.inFlight == l.limit {
				l.winFull = true
			}
			l.lastSeq++
			t := ticket{seq: l.lastSeq, epoch: l.epoch, limit: l.limit}
			l.active = append(l.active, t.seq)
			l.mu.Unlock()
			return t, nil
		}
		l.winFull = true
		changed := l.changed
		l.queued++
		l.mu.Unlock()
		var err error
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-changed:
		}
		l.mu.Lock()
		l.queued--
		l.mu.Unlock()
		if err != nil {
			return ticket{}, err
		}
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
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	l.notify(ch)
}

// throttle lowers the cap after a 429 of the request of t, unless the cap
// was lowered after that request started. older is the number of requests
// started before it and still in flight.
//
// Within an epoch the cap only grows, so the cap now is the largest that
// was in force while the request was in flight: Twilio was full with fewer
// requests than that, and the cap minus one becomes the ceiling. After a
// failed probe that is the level that passed before. Otherwise (slow
// start, or an account that other systems now use more) the cap falls to
// older, the requests Twilio was serving as far as the order of starts
// tells, but by at most half: requests started together reach Twilio in
// any order, so older can be anything from zero up when they do.
func (l *limiter) throttle(t ticket, older int) limitChange {
	l.throttled = true
	if t.epoch != l.epoch {
		return limitChange{}
	}
	probing := l.ceiling > 0 && l.limit > l.ceiling
	l.epoch++
	l.slowStart = false
	l.ceiling = max(1, l.limit-1)
	l.held = 0
	l.resetWindow()
	if probing {
		return l.set(l.ceiling, "throttled")
	}
	return l.set(min(max(older, (l.limit+1)/2), l.ceiling), "throttled")
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
	headers := l.throttled && peak > 0
	switch {
	case headers && peak >= l.account:
		// Twilio saw the account full: one more would be refused.
		l.held++
		if l.held < fullProbeWindows {
			return limitChange{}
		}
		return l.set(l.limit+1, "probe")
	case headers:
		l.ceiling = max(l.ceiling, l.limit)
		return l.set(l.limit+1, "increase")
	case l.slowStart:
		return l.set(2*l.limit, "slow_start")
	case l.limit < l.ceiling:
		return l.set(l.limit+1, "increase")
	case l.limit > l.ceiling:
		// A probe passed a full window: the account has more room than
		// before, so look further at once.
		l.ceiling = l.limit
		return l.set(l.limit+1, "probe")
	}
	l.held++
	if l.held < probeWindows {
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
	return l.queued
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

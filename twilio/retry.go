package twilio

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"
)

// retryWait is how long to wait before retry number retry (0 for the first
// retry) after err. A Retry-After header wins, capped at BackoffMax;
// otherwise the wait is exponential backoff with full jitter: a random
// duration in [0, min(BackoffMax, BackoffBase·2^retry)).
func (c *Client) retryWait(retry int, err error) time.Duration {
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.hasRetryAfter {
		return min(apiErr.retryAfter, c.backoffMax)
	}
	return c.jitter(backoffWindow(c.backoffBase, c.backoffMax, retry))
}

// backoffWindow is min(limit, base·2^retry), safe from overflow.
func backoffWindow(base, limit time.Duration, retry int) time.Duration {
	if retry >= 62 || base > limit>>retry {
		return limit
	}
	return base << retry
}

// fullJitter draws a wait uniformly from [0, window).
func fullJitter(window time.Duration) time.Duration {
	if window <= 0 {
		return 0
	}
	return rand.N(window)
}

// sleepCtx waits for d or until ctx is done, whichever comes first, and
// returns ctx's error in the second case.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// growAfter is how many consecutive successful requests raise the
// concurrency limit by one.
const growAfter = 20

// outcome is how an HTTP attempt ended, as far as the limiter cares.
type outcome int

const (
	outcomeFailed    outcome = iota // any failure except throttling
	outcomeThrottled                // 429
	outcomeOK                       // 2xx, body read
)

// aimd caps the client's HTTP requests in flight. Twilio answers 429 when an
// account runs too many requests at once, so the cap adapts: it halves on
// every 429 (down to 1) and grows by one after growAfter consecutive
// successes (up to max): additive increase, multiplicative decrease.
type aimd struct {
	mu       sync.Mutex
	max      int
	limit    int
	inFlight int
	queued   int           // callers waiting in acquire
	streak   int           // consecutive successes since the limit last changed
	changed  chan struct{} // closed, and replaced, whenever a slot may be free
}

func newAIMD(max int) *aimd {
	return &aimd{max: max, limit: max, changed: make(chan struct{})}
}

// acquire blocks until a request may start, or returns ctx's error.
func (a *aimd) acquire(ctx context.Context) error {
	for {
		a.mu.Lock()
		if a.inFlight < a.limit {
			a.inFlight++
			a.mu.Unlock()
			return nil
		}
		changed := a.changed
		a.queued++
		a.mu.Unlock()
		var err error
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-changed:
		}
		a.mu.Lock()
		a.queued--
		a.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// release ends a request started by acquire and adapts the limit to how it
// ended.
func (a *aimd) release(o outcome) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inFlight--
	switch o {
	case outcomeThrottled:
		a.limit = max(1, a.limit/2)
		a.streak = 0
	case outcomeOK:
		a.streak++
		if a.streak >= growAfter && a.limit < a.max {
			a.limit++
			a.streak = 0
		}
	default:
		a.streak = 0
	}
	close(a.changed)
	a.changed = make(chan struct{})
}

// current is the limit now in force.
func (a *aimd) current() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.limit
}

// waiting is the number of callers queued for a slot.
func (a *aimd) waiting() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.queued
}

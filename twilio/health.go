package twilio

import (
	"fmt"
	"sync"
	"time"
)

// health decides when Twilio is unavailable: every attempt of the client
// has failed (server error, broken connection, truncated body) for at least
// after, with no successful answer between. From then on every request of
// the client fails at once, so a run stops within after instead of taking
// every remaining user through all its retries.
type health struct {
	after time.Duration

	mu           sync.Mutex
	failingSince time.Time // first failure since the last success; zero if none
	down         error     // set once; never cleared
}

// ok records an answer that shows Twilio working.
func (h *health) ok() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failingSince = time.Time{}
}

// failed records a failed attempt at now, with lastErr its (redacted)
// message, and returns the ErrUnavailable error once failures have lasted
// for h.after.
func (h *health) failed(now time.Time, lastErr string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down != nil {
		return h.down
	}
	if h.failingSince.IsZero() {
		h.failingSince = now
	}
	if now.Sub(h.failingSince) < h.after {
		return nil
	}
	h.down = fmt.Errorf("%w: no successful response for %s; last error: %s", ErrUnavailable, h.after, lastErr)
	return h.down
}

// err is the ErrUnavailable error once Twilio was declared unavailable,
// else nil.
func (h *health) err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.down
}

// countsAsDown reports whether a failure of the given retry reason counts
// towards unavailability. Throttling does not: a 429 shows Twilio answering.
func countsAsDown(reason string) bool {
	return reason == reasonServer || reason == reasonNetwork || reason == reasonTruncated
}

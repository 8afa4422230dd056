package twilio

import (
	"errors"
	"math/rand/v2"
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

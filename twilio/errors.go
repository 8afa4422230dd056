package twilio

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Sentinel errors. Returned errors wrap them, so test with errors.Is; the
// *APIError behind a status error is reachable with errors.As.
var (
	// ErrUnauthorized means Twilio answered 401 or 403: the credentials are
	// wrong or lack access to the service. It is never retried, because every
	// further request would fail the same way.
	ErrUnauthorized = errors.New("credentials rejected (check the account SID and auth token, or the API key SID and secret)")
	// ErrNotFound means Twilio answered 404, typically because the user or
	// the service was deleted after it was listed.
	ErrNotFound = errors.New("not found")
	// ErrPageTokenRejected means Twilio answered 400 to a request that
	// followed a Next page reference; the caller should restart that list
	// from its first page.
	ErrPageTokenRejected = errors.New("page token rejected")
	// ErrForeignNextPage means a next page reference pointed to another
	// host or another list than the one requested. It is refused so that
	// credentials never leave the configured Twilio host.
	ErrForeignNextPage = errors.New("next page is not on the Twilio host or not the same list")
	// ErrBadResponse means a 200 response could not be used: its body did
	// not decode (after retries), lacked the "meta" block or the list, or
	// (GetUser) did not describe the user asked for.
	ErrBadResponse = errors.New("malformed response")
	// ErrResponseTooLarge means a response body exceeded Config.MaxBodyBytes
	// after decompression. It is not retried: the same page would be as
	// large again.
	ErrResponseTooLarge = errors.New("response body too large")
	// ErrPagingLoop means a list walk guarded by a PageGuard met a next page
	// seen before, a page number that did not increase, or too many empty
	// pages in a row: following it would never end.
	ErrPagingLoop = errors.New("paging loop")
	// ErrUnavailable means every request of the client has failed for
	// Config.UnavailableAfter with no success between. The client then
	// fails every later request at once; like ErrUnauthorized, it calls for
	// stopping the run rather than trying the next user.
	ErrUnavailable = errors.New("Twilio unavailable")
)

// APIError is a non-2xx answer from Twilio. Code, Message and MoreInfo come
// from Twilio's JSON error body when there is one; otherwise Message holds
// the start of the body as text.
type APIError struct {
	Status   int    // HTTP status code
	Code     int    // Twilio error code, e.g. 20404; 0 when the body had none
	Message  string // Twilio's message, or the start of a non-JSON body
	MoreInfo string // link to Twilio's page about Code
	Method   string // HTTP method of the failed request
	Path     string // escaped URL path of the failed request, without the query

	retryAfter    time.Duration // from the Retry-After header
	hasRetryAfter bool
}

// Error reads as one sentence naming the request, the status and Twilio's
// explanation.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "twilio: %s %s: %d", e.Method, e.Path, e.Status)
	if text := http.StatusText(e.Status); text != "" {
		b.WriteString(" " + text)
	}
	switch {
	case e.Code != 0:
		fmt.Fprintf(&b, " (code %d: %s", e.Code, e.Message)
		if e.MoreInfo != "" {
			b.WriteString("; see " + e.MoreInfo)
		}
		b.WriteString(")")
	case e.Message != "":
		b.WriteString(": " + e.Message)
	}
	return b.String()
}

// transientError marks a failure that another attempt may not meet: a
// broken connection or a truncated body. Reason is the OnRetry reason.
type transientError struct {
	reason string
	err    error
}

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// Retry reasons passed to Hooks.OnRetry.
const (
	reasonThrottled = "429"
	reasonServer    = "5xx"
	reasonNetwork   = "network"
	reasonTruncated = "truncated"
)

// Retryable reports whether err is a transient failure: throttling (429), a
// server error (500, 502, 503, 504), a broken connection or a truncated
// response. The client has already retried such failures up to MaxAttempts;
// a true result tells the caller that trying the same list again later may
// succeed, while false (auth, not found, bad request, refused next page,
// cancellation) means it will not.
func Retryable(err error) bool {
	return retryReason(err) != ""
}

// retryReason classifies err for the retry loop: the OnRetry reason, or ""
// when another attempt would not help.
func retryReason(err error) string {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		switch apiErr.Status {
		case http.StatusTooManyRequests:
			return reasonThrottled
		case http.StatusInternalServerError, http.StatusBadGateway,
			http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return reasonServer
		}
		return ""
	}
	var t *transientError
	if errors.As(err, &t) {
		return t.reason
	}
	return ""
}

// statusError wraps a decoded error response in the sentinel its status
// means. paged tells whether the request followed a Next page reference.
func statusError(e *APIError, paged bool) error {
	switch {
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		return fmt.Errorf("%w: %w", ErrUnauthorized, e)
	case e.Status == http.StatusNotFound:
		return fmt.Errorf("%w: %w", ErrNotFound, e)
	case e.Status == http.StatusBadRequest && paged:
		return fmt.Errorf("%w: %w", ErrPageTokenRejected, e)
	}
	return e
}

// transportError wraps a failed round trip. The *url.Error layer is dropped
// because it repeats the whole URL; certificate failures are final, every
// other connection failure (refused, reset, EOF, timeout) is transient.
func transportError(method, path string, err error) error {
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		err = urlErr.Err
	}
	wrapped := fmt.Errorf("twilio: %s %s: %w", method, path, err)
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		return wrapped
	}
	return &transientError{reason: reasonNetwork, err: wrapped}
}

// truncatedError wraps a 200 body that could not be read or decoded.
func truncatedError(method, path string, err error) error {
	return &transientError{
		reason: reasonTruncated,
		err:    fmt.Errorf("twilio: %s %s: %w: %w", method, path, ErrBadResponse, err),
	}
}

// Limits on reading error responses. The body is read up to maxErrorBody
// bytes, enough for the JSON of a long, escaped message to decode; it is
// dropped once read. A non-JSON body is quoted up to maxErrorText bytes,
// and Twilio's message and more_info are kept up to maxErrorMessage bytes
// each, so that errors kept per failed user stay small whatever a server
// sends.
const (
	maxErrorBody    = 1 << 20
	maxErrorText    = 200
	maxErrorMessage = 512
)

// readAPIError builds the APIError of a non-2xx response, reading a bounded
// part of its body. A body that is not a Twilio error object still yields a
// useful error: its first bytes become the message. Credentials the body
// echoes are redacted before anything is cut, so no part of one survives.
// Control characters are kept: whoever prints the error escapes them.
func (c *Client) readAPIError(resp *http.Response, method, path string) *APIError {
	e := &APIError{Status: resp.StatusCode, Method: method, Path: c.Redact(path)}
	e.retryAfter, e.hasRetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), c.now())

	var data []byte
	if r, err := decodedBody(resp, method, path); err == nil {
		data, _ = io.ReadAll(io.LimitReader(r, maxErrorBody)) // a partial body still helps
	}
	var body struct {
		Code     int    `json:"code"`
		Message  string `json:"message"`
		MoreInfo string `json:"more_info"`
	}
	if json.Unmarshal(data, &body) == nil && (body.Code != 0 || body.Message != "") {
		e.Code = body.Code
		e.Message = capText(c.Redact(body.Message), maxErrorMessage)
		e.MoreInfo = capText(c.Redact(body.MoreInfo), maxErrorMessage)
		return e
	}
	e.Message = snippet([]byte(c.Redact(string(data))), maxErrorText)
	return e
}

// truncatedMark ends a text cut by capText.
const truncatedMark = "…(truncated)"

// capText returns s cut to at most n bytes, at a UTF-8 boundary, and marked
// as cut; s itself when it is short enough.
func capText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + truncatedMark
}

// snippet is the first n bytes of data as printable, single-line text.
func snippet(data []byte, n int) string {
	if len(data) > n {
		data = data[:n]
	}
	return strings.Join(strings.Fields(strings.ToValidUTF8(string(data), "?")), " ")
}

// parseRetryAfter reads a Retry-After header, in seconds or as an HTTP date
// (RFC 9110, section 10.2.3). ok is false when the header is absent or
// unreadable. A date in the past means no wait.
func parseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(maxDuration/time.Second) {
			return maxDuration, true
		}
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// maxDuration is the largest time.Duration.
const maxDuration = time.Duration(1<<63 - 1)

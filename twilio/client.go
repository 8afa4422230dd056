package twilio

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// DefaultBaseURL is where Twilio serves the Programmable Chat v2 API.
const DefaultBaseURL = "https://" + twilioHost

// Defaults applied by New to zero Config fields.
const (
	DefaultUserAgent      = "bindsync/dev"
	DefaultRequestTimeout = 30 * time.Second
	DefaultMaxAttempts    = 6
	DefaultBackoffBase    = 200 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
	DefaultMaxInFlight    = 16
)

// Config configures a Client. Zero fields take the defaults above.
type Config struct {
	// BaseURL is scheme and host only, e.g. "https://chat.twilio.com"; tests
	// point it at a local fake server. Every request goes to this host,
	// whatever host Twilio's next_page_url names.
	BaseURL string
	// Username and Password are sent as HTTP basic auth: an account SID and
	// auth token, or an API key SID and secret. They never appear in errors.
	Username, Password string
	// HTTPClient sends the requests. The client works on a copy that does not
	// follow redirects, so credentials cannot be sent to another host.
	HTTPClient *http.Client
	// UserAgent identifies bindsync to Twilio, e.g. "bindsync/1.4.0".
	UserAgent string
	// RequestTimeout bounds one HTTP attempt, body included.
	RequestTimeout time.Duration
	// MaxAttempts bounds the attempts per page, the first one included.
	MaxAttempts int
	// BackoffBase and BackoffMax shape the exponential backoff with full
	// jitter between attempts; BackoffMax also caps Retry-After.
	BackoffBase, BackoffMax time.Duration
	// MaxInFlight caps the requests in flight; the cap adapts below it when
	// Twilio answers 429 (see InFlightLimit).
	MaxInFlight int
	// RequestsPerSecond caps the rate of HTTP attempts, retries included;
	// 0 means no cap beyond MaxInFlight.
	RequestsPerSecond float64
	// Hooks observe requests, retries and concurrency, for logs and metrics.
	Hooks Hooks
}

// Hooks are optional observers. They are called synchronously from the
// goroutine making the request, so they must be cheap and safe for
// concurrent use.
type Hooks struct {
	// OnRequest is called before every HTTP attempt; kind is "users" or
	// "bindings".
	OnRequest func(kind string)
	// OnRetry is called before waiting to retry; reason is "429", "5xx",
	// "network" or "truncated", attempt is the number of the attempt that
	// failed (from 1), wait is the pause before the next one.
	OnRetry func(reason string, attempt int, wait time.Duration)
	// InFlight is called with +1 when an HTTP attempt starts and -1 when it
	// ends, to drive a gauge.
	InFlight func(delta int)
}

// Client reads the Users and User Bindings lists of Chat v2 services, one
// page per call. It is safe for concurrent use.
type Client struct {
	base           *url.URL // scheme and host only
	username       string
	password       string
	http           *http.Client
	userAgent      string
	requestTimeout time.Duration
	maxAttempts    int
	backoffBase    time.Duration
	backoffMax     time.Duration
	hooks          Hooks
	limit          *aimd
	rate           *rate.Limiter // nil: no rate cap

	// Seams replaced by tests, so that retries need no real waiting.
	sleep  func(ctx context.Context, d time.Duration) error
	jitter func(window time.Duration) time.Duration
	now    func() time.Time
}

// New checks cfg, fills in defaults and returns a Client. It fails when
// BaseURL is not an absolute http or https URL of a host, when a credential
// is empty, or when a number is negative.
func New(cfg Config) (*Client, error) {
	base, err := parseBaseURL(cmp.Or(cfg.BaseURL, DefaultBaseURL))
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.Username == "":
		return nil, errors.New("twilio: config: Username (account SID or API key SID) is empty")
	case cfg.Password == "":
		return nil, errors.New("twilio: config: Password (auth token or API key secret) is empty")
	case cfg.RequestTimeout < 0, cfg.BackoffBase < 0, cfg.BackoffMax < 0:
		return nil, errors.New("twilio: config: RequestTimeout, BackoffBase and BackoffMax must not be negative")
	case cfg.MaxAttempts < 0, cfg.MaxInFlight < 0, cfg.RequestsPerSecond < 0:
		return nil, errors.New("twilio: config: MaxAttempts, MaxInFlight and RequestsPerSecond must not be negative")
	}
	c := &Client{
		base:           base,
		username:       cfg.Username,
		password:       cfg.Password,
		userAgent:      cmp.Or(cfg.UserAgent, DefaultUserAgent),
		requestTimeout: cmp.Or(cfg.RequestTimeout, DefaultRequestTimeout),
		maxAttempts:    cmp.Or(cfg.MaxAttempts, DefaultMaxAttempts),
		backoffBase:    cmp.Or(cfg.BackoffBase, DefaultBackoffBase),
		backoffMax:     cmp.Or(cfg.BackoffMax, DefaultBackoffMax),
		hooks:          cfg.Hooks,
		limit:          newAIMD(cmp.Or(cfg.MaxInFlight, DefaultMaxInFlight)),
		sleep:          sleepCtx,
		jitter:         fullJitter,
		now:            time.Now,
	}
	if cfg.RequestsPerSecond > 0 {
		c.rate = rate.NewLimiter(rate.Limit(cfg.RequestsPerSecond), 1)
	}
	if c.backoffMax < c.backoffBase {
		return nil, fmt.Errorf("twilio: config: BackoffMax (%s) is below BackoffBase (%s)", c.backoffMax, c.backoffBase)
	}
	hc := http.Client{Transport: defaultTransport(c.limit.max)}
	if cfg.HTTPClient != nil {
		hc = *cfg.HTTPClient
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.http = &hc
	return c, nil
}

// defaultTransport bounds each step of a connection, so that a stuck
// connect or handshake fails over to a retry well before RequestTimeout, and
// keeps one idle connection per request the limiter may let through.
func defaultTransport(maxInFlight int) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   10 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   maxInFlight,
		ExpectContinueTimeout: time.Second,
	}
}

// parseBaseURL checks a BaseURL. Messages never echo userinfo, which may
// hold a secret.
func parseBaseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("twilio: config: BaseURL is not a valid URL")
	}
	switch {
	case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return nil, fmt.Errorf("twilio: config: BaseURL %q: must be an absolute http or https URL", withoutUserinfo(u))
	case u.User != nil:
		return nil, fmt.Errorf("twilio: config: BaseURL %q: must not hold credentials; set Username and Password", withoutUserinfo(u))
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("twilio: config: BaseURL %q: must be scheme and host only", withoutUserinfo(u))
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// InFlightLimit is the current cap on requests in flight: MaxInFlight,
// halved on every 429, grown back by one after 20 consecutive successes.
func (c *Client) InFlightLimit() int {
	return c.limit.current()
}

// BindingsQuery selects one page of a user's bindings.
type BindingsQuery struct {
	ServiceSID string
	// User is a user SID (US…) or an identity; either is sent as one path
	// segment.
	User string
	// BindingTypes filters by push technology (see BindingTypes); empty
	// means all.
	BindingTypes []string
	// PageSize asks for this many bindings per page; 0 leaves it to Twilio.
	// The page's Meta.PageSize is what Twilio granted.
	PageSize int
	// Next is "" for the first page, else a BindingsPage.Next of the same
	// service and user. Next already holds the filters and the page size,
	// so BindingTypes and PageSize are ignored when it is set.
	Next string
}

// BindingsPage is one page of a user's bindings.
type BindingsPage struct {
	Bindings []Binding
	Meta     Meta
	// Next is the reference of the following page, "" after the last one.
	// It is a path and query on the Twilio host, kept byte for byte, safe to
	// store in a checkpoint and to pass back, even after a restart. A page
	// may be empty and still have a Next.
	Next string
}

// ListBindings fetches one page of the bindings of q.User.
//
// Errors wrap ErrNotFound when the user or service does not exist,
// ErrUnauthorized on rejected credentials, ErrPageTokenRejected when Twilio
// refused q.Next (restart from the first page), ErrForeignNextPage when q.Next
// or the page's next_page_url names another list or host, and ErrBadResponse
// when the body was unusable. Retryable tells transient failures apart.
func (c *Client) ListBindings(ctx context.Context, q BindingsQuery) (*BindingsPage, error) {
	if q.ServiceSID == "" || q.User == "" {
		return nil, errors.New("twilio: list bindings: ServiceSID and User must not be empty")
	}
	if q.PageSize < 0 {
		return nil, fmt.Errorf("twilio: list bindings: PageSize must not be negative (got %d)", q.PageSize)
	}
	query := url.Values{}
	if len(q.BindingTypes) > 0 {
		query["BindingType"] = q.BindingTypes
	}
	addPageSize(query, q.PageSize)
	body, next, err := c.list(ctx, "bindings", bindingsResource(q.ServiceSID, q.User), query, q.Next)
	if err != nil {
		return nil, fmt.Errorf("list bindings of user %q in service %s: %w", q.User, q.ServiceSID, err)
	}
	return &BindingsPage{Bindings: body.Bindings, Meta: *body.Meta, Next: next}, nil
}

// UsersQuery selects one page of a service's users.
type UsersQuery struct {
	ServiceSID string
	// PageSize asks for this many users per page; 0 leaves it to Twilio.
	PageSize int
	// Next is "" for the first page, else a UsersPage.Next of the same
	// service; PageSize is then ignored.
	Next string
}

// UsersPage is one page of a service's users.
type UsersPage struct {
	Users []User
	Meta  Meta
	// Next is the reference of the following page, "" after the last one;
	// see BindingsPage.Next.
	Next string
}

// ListUsers fetches one page of the users of a service. Its errors follow
// ListBindings.
func (c *Client) ListUsers(ctx context.Context, q UsersQuery) (*UsersPage, error) {
	if q.ServiceSID == "" {
		return nil, errors.New("twilio: list users: ServiceSID must not be empty")
	}
	if q.PageSize < 0 {
		return nil, fmt.Errorf("twilio: list users: PageSize must not be negative (got %d)", q.PageSize)
	}
	query := url.Values{}
	addPageSize(query, q.PageSize)
	body, next, err := c.list(ctx, "users", usersResource(q.ServiceSID), query, q.Next)
	if err != nil {
		return nil, fmt.Errorf("list users of service %s: %w", q.ServiceSID, err)
	}
	return &UsersPage{Users: body.Users, Meta: *body.Meta, Next: next}, nil
}

func addPageSize(query url.Values, n int) {
	if n > 0 {
		query.Set("PageSize", strconv.Itoa(n))
	}
}

// listBody is the body of either list response; the list that was not
// asked for stays nil.
type listBody struct {
	Meta     *Meta     `json:"meta"`
	Bindings []Binding `json:"bindings"`
	Users    []User    `json:"users"`
}

// hasList reports whether the body holds the list named key, possibly empty.
func (b *listBody) hasList(key string) bool {
	switch key {
	case "bindings":
		return b.Bindings != nil
	case "users":
		return b.Users != nil
	}
	return false
}

// list fetches the page of res named by next, or the first page with query
// when next is "". key is both the hook kind and the list key of the body.
// It returns the body and the Next reference of the following page.
func (c *Client) list(ctx context.Context, key string, res resource, query url.Values, next string) (*listBody, string, error) {
	ref := firstPage(res, query)
	if next != "" {
		if err := checkPage(next, res); err != nil {
			return nil, "", err
		}
		ref = next
	}
	path, _, _ := strings.Cut(ref, "?")
	body, err := c.get(ctx, key, ref, next != "")
	if err != nil {
		return nil, "", err
	}
	if body.Meta == nil || !body.hasList(key) {
		return nil, "", fmt.Errorf("twilio: GET %s: %w: no \"meta\" object or %q list", path, ErrBadResponse, key)
	}
	if body.Meta.NextPageURL == nil || *body.Meta.NextPageURL == "" {
		return body, "", nil
	}
	following, err := nextPage(*body.Meta.NextPageURL, c.base, res)
	if err != nil {
		return nil, "", err
	}
	return body, following, nil
}

// get fetches ref, retrying transient failures with backoff up to
// maxAttempts. paged tells whether ref came from a Next reference.
func (c *Client) get(ctx context.Context, kind, ref string, paged bool) (*listBody, error) {
	path, _, _ := strings.Cut(ref, "?")
	for attempt := 1; ; attempt++ {
		body, err := c.attempt(ctx, kind, ref, path, paged)
		if err == nil {
			return body, nil
		}
		reason := retryReason(err)
		switch {
		case reason == "":
			return nil, err
		case ctx.Err() != nil:
			return nil, fmt.Errorf("twilio: %s %s: %w", http.MethodGet, path, ctx.Err())
		case attempt >= c.maxAttempts:
			return nil, fmt.Errorf("giving up after %d attempt%s: %w", attempt, plural(attempt), err)
		}
		wait := c.retryWait(attempt-1, err)
		if c.hooks.OnRetry != nil {
			c.hooks.OnRetry(reason, attempt, wait)
		}
		if err := c.sleep(ctx, wait); err != nil {
			return nil, fmt.Errorf("twilio: %s %s: waiting to retry: %w", http.MethodGet, path, err)
		}
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// maxTrailing bounds what is read after the JSON value of a 200 body to see
// whether the connection delivered the whole body.
const maxTrailing = 64 << 10

// attempt makes one HTTP request for ref, within the concurrency limit and
// the per-attempt timeout, and decodes a 200 body.
func (c *Client) attempt(ctx context.Context, kind, ref, path string, paged bool) (*listBody, error) {
	if c.rate != nil {
		if err := c.rate.Wait(ctx); err != nil {
			return nil, fmt.Errorf("twilio: %s %s: %w", http.MethodGet, path, err)
		}
	}
	if err := c.limit.acquire(ctx); err != nil {
		return nil, fmt.Errorf("twilio: %s %s: %w", http.MethodGet, path, err)
	}
	c.inFlight(+1)
	result := outcomeFailed
	defer func() {
		c.limit.release(result)
		c.inFlight(-1)
	}()
	if c.hooks.OnRequest != nil {
		c.hooks.OnRequest(kind)
	}

	ctx, cancel := context.WithTimeout(ctx, c.requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+ref, nil)
	if err != nil {
		return nil, fmt.Errorf("twilio: %s %s: %w", http.MethodGet, path, err)
	}
	req.SetBasicAuth(c.username, c.password)
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("Accept", "application/json")

	resp, err := c.http.Do(req)
	if err != nil {
		return nil, transportError(http.MethodGet, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode == http.StatusTooManyRequests {
			result = outcomeThrottled
		}
		return nil, statusError(readAPIError(resp, http.MethodGet, path, c.now()), paged)
	}

	body := new(listBody)
	if err := json.NewDecoder(resp.Body).Decode(body); err != nil {
		return nil, truncatedError(http.MethodGet, path, err)
	}
	// A body shorter than its Content-Length, or a chunked body cut off,
	// shows only when reading on past the JSON value.
	if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, maxTrailing)); err != nil {
		return nil, truncatedError(http.MethodGet, path, err)
	}
	result = outcomeOK
	return body, nil
}

func (c *Client) inFlight(delta int) {
	if c.hooks.InFlight != nil {
		c.hooks.InFlight(delta)
	}
}

package twilio

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/bindsync/bindsync/internal/wait"
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
	// DefaultMaxBodyBytes bounds a response body after decompression: a
	// page of 50 bindings is a few tens of kilobytes, so 32 MiB leaves a
	// wide margin and still keeps a hostile body from taking the memory.
	DefaultMaxBodyBytes = 32 << 20
	// DefaultUnavailableAfter is how long requests may keep failing, with no
	// success between, before the client declares Twilio unavailable.
	DefaultUnavailableAfter = 2 * time.Minute
)

// Page size limits documented by Twilio's OpenAPI file for Chat v2 (since
// 2025-10; the older reference page says 1000). A first page asking for more
// that Twilio rejects is asked again with these.
const (
	MaxBindingsPageSize = 50
	MaxUsersPageSize    = 100
)

// Config configures a Client. Zero fields take the defaults above.
type Config struct {
	// BaseURL is scheme and host only, e.g. "https://chat.twilio.com"; tests
	// point it at a local fake server. Every request goes to this host,
	// whatever host Twilio's next_page_url names.
	BaseURL string
	// Username and Password are sent as HTTP basic auth: an account SID and
	// auth token, or an API key SID and secret. The client never puts them
	// in errors, and removes the password and the basic-auth encoding from
	// any text a server echoes (see Client.Redact).
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
	// MaxInFlight caps the requests in flight. The cap in force adapts
	// below it to what the account allows (see InFlightLimit).
	MaxInFlight int
	// RequestsPerSecond caps the rate of HTTP attempts, retries included;
	// 0 means no cap beyond MaxInFlight.
	RequestsPerSecond float64
	// MaxBodyBytes bounds a response body after decompression; 0 means
	// DefaultMaxBodyBytes. A larger body fails its request at once, without
	// a retry, with an error wrapping ErrResponseTooLarge.
	MaxBodyBytes int64
	// UnavailableAfter is how long every attempt may fail (server errors,
	// broken connections, truncated bodies) with no successful answer
	// between before the client gives up on Twilio: the request then fails
	// with ErrUnavailable, and so does every later request of the client.
	// 0 means DefaultUnavailableAfter (2 minutes). Any answer that shows
	// Twilio working (a 200, or a 4xx other than 429) resets the clock; a 429
	// neither counts as a failure nor resets it.
	UnavailableAfter time.Duration
	// Hooks observe requests, retries, concurrency and page size fallbacks,
	// for logs and metrics.
	Hooks Hooks
}

// Hooks are optional observers. They are called synchronously from the
// goroutine making the request, so they must be cheap and safe for
// concurrent use.
type Hooks struct {
	// OnRequest is called before every HTTP attempt; kind is "users",
	// "bindings" (a user's bindings) or "service_bindings" (the service-wide
	// Bindings list) for the lists, "user" for GetUser.
	OnRequest func(kind string)
	// OnRetry is called before waiting to retry; reason is "429", "5xx",
	// "network" or "truncated", attempt is the number of the attempt that
	// failed (from 1), wait is the pause before the next one.
	OnRetry func(reason string, attempt int, wait time.Duration)
	// InFlight is called with +1 when an HTTP attempt starts and -1 when it
	// ends, to drive a gauge.
	InFlight func(delta int)
	// OnPageSizeFallback is called once per list kind ("users", "bindings"
	// or "service_bindings") for the life of the Client, when Twilio rejected a first
	// page asking for asked items and the client went on with used, the
	// documented maximum, for every later first page of that kind.
	OnPageSizeFallback func(kind string, asked, used int)
	// OnLimitChange is called whenever the cap on requests in flight (see
	// InFlightLimit) changes, with the new cap and why: "slow_start" (the
	// cap doubles until the first 429), "increase" (one more, below the
	// ceiling learned from 429s), "probe" (one more above the ceiling, to
	// learn whether the account has more room) or "throttled" (lowered
	// after a 429). The cap
	// at the start is InFlightLimit right after New. Unlike the other
	// hooks it may call the Client; when changes race, one overtaken by a
	// later one is not reported, so the last value passed is the cap in
	// force.
	OnLimitChange func(limit int, reason string)
}

// Client reads the Users, User Bindings and service-wide Bindings lists of
// Chat v2 services, one page per call. It is safe for concurrent use.
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
	limit          *limiter
	rate           *rate.Limiter // nil: no rate cap
	maxBody        int64
	health         *health
	secrets        []string // what Redact replaces, longest first

	// Set once Twilio rejected a first page's size for that kind of list.
	usersFallback, bindingsFallback, serviceBindingsFallback atomic.Bool

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
	case cfg.MaxBodyBytes < 0:
		return nil, fmt.Errorf("twilio: config: MaxBodyBytes must not be negative (got %d)", cfg.MaxBodyBytes)
	case cfg.UnavailableAfter < 0:
		return nil, fmt.Errorf("twilio: config: UnavailableAfter must not be negative (got %s)", cfg.UnavailableAfter)
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
		limit:          newLimiter(cmp.Or(cfg.MaxInFlight, DefaultMaxInFlight), cfg.Hooks.OnLimitChange),
		maxBody:        cmp.Or(cfg.MaxBodyBytes, DefaultMaxBodyBytes),
		health:         &health{after: cmp.Or(cfg.UnavailableAfter, DefaultUnavailableAfter)},
		secrets:        secretForms(cfg.Username, cfg.Password),
		sleep:          wait.Sleep,
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

// InFlightLimit is the current cap on requests in flight, at most
// MaxInFlight. It starts at min(MaxInFlight, 8), doubles with every round
// trip's worth of successes until Twilio first answers 429, then settles at
// what the account allows: a 429 lowers it to the requests Twilio was
// serving, and it tries one request more now and then to learn whether the
// account has more room, rarely while the Twilio-Concurrent-Requests header
// (when Twilio sends it) shows the account full. Hooks.OnLimitChange
// reports every change.
func (c *Client) InFlightLimit() int {
	return c.limit.current()
}

// BindingsQuery selects one page of a user's bindings.
type BindingsQuery struct {
	ServiceSID string
	// User is a user SID (US…) or an identity; either is sent as one path
	// segment.
	User string
	// UserSID is optional: the SID of User when User is an identity (see
	// GetUser). A next page must name the user exactly as User does, or by
	// UserSID when it is set; any other user is refused with
	// ErrForeignNextPage. When User is a SID, UserSID is empty or equal.
	UserSID string
	// BindingTypes filters by push technology (see BindingTypes); empty
	// means all.
	BindingTypes []string
	// PageSize asks for this many bindings per page; 0 leaves it to Twilio.
	// The page's Meta.PageSize is what Twilio granted. Above
	// MaxBindingsPageSize, a first page that Twilio rejects with 400 is
	// asked again with MaxBindingsPageSize, and every later first page of
	// the Client asks for that directly (see Hooks.OnPageSizeFallback).
	PageSize int
	// Next is "" for the first page, else a BindingsPage.Next of the same
	// service and user. Next already holds the filters and the page size,
	// so BindingTypes and PageSize are ignored when it is set.
	Next string
}

// BindingsPage is one page of a user's bindings.
type BindingsPage struct {
	Bindings []Binding
	// Meta is the page's paging block; its URLs pass through Redact.
	Meta Meta
	// Next is the reference of the following page, "" after the last one.
	// It is a path and query on the Twilio host, kept byte for byte, safe to
	// store in a checkpoint and to pass back, even after a restart. A page
	// may be empty and still have a Next; a PageGuard catches a list that
	// never ends.
	Next string
}

// ListBindings fetches one page of the bindings of q.User.
//
// Errors wrap ErrNotFound when the user or service does not exist,
// ErrUnauthorized on rejected credentials, ErrPageTokenRejected when Twilio
// refused q.Next (restart from the first page), ErrForeignNextPage when q.Next
// or the page's next_page_url names another list or host, ErrResponseTooLarge
// when the body exceeds MaxBodyBytes, ErrUnavailable when Twilio has failed
// for UnavailableAfter, and ErrBadResponse when the body was unusable.
// Retryable tells transient failures apart. Error text passes through Redact.
func (c *Client) ListBindings(ctx context.Context, q BindingsQuery) (*BindingsPage, error) {
	page, err := c.listBindings(ctx, q)
	if err != nil {
		return nil, c.redactError(err)
	}
	return page, nil
}

func (c *Client) listBindings(ctx context.Context, q BindingsQuery) (*BindingsPage, error) {
	switch {
	case q.ServiceSID == "" || q.User == "":
		return nil, errors.New("twilio: list bindings: ServiceSID and User must not be empty")
	case q.PageSize < 0:
		return nil, fmt.Errorf("twilio: list bindings: PageSize must not be negative (got %d)", q.PageSize)
	case q.UserSID != "" && !userSIDPattern.MatchString(q.UserSID):
		return nil, fmt.Errorf("twilio: list bindings of user %q: UserSID %q must match %s", q.User, q.UserSID, userSIDPattern)
	case q.UserSID != "" && userSIDPattern.MatchString(q.User) && q.User != q.UserSID:
		return nil, fmt.Errorf("twilio: list bindings: User %q is a SID other than UserSID %q", q.User, q.UserSID)
	}
	res := bindingsResource(q.ServiceSID, q.User)
	res.userSID = q.UserSID
	query := url.Values{}
	if len(q.BindingTypes) > 0 {
		query["BindingType"] = q.BindingTypes
	}
	body, next, err := page[bindingsBody](ctx, c, "bindings", res, query, q.PageSize, q.Next)
	if err != nil {
		return nil, fmt.Errorf("list bindings of user %q in service %s: %w", q.User, q.ServiceSID, err)
	}
	return &BindingsPage{Bindings: body.Bindings, Meta: *body.Meta, Next: next}, nil
}

// UsersQuery selects one page of a service's users.
type UsersQuery struct {
	ServiceSID string
	// PageSize asks for this many users per page; 0 leaves it to Twilio.
	// Above MaxUsersPageSize it falls back as BindingsQuery.PageSize does.
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
	page, err := c.listUsers(ctx, q)
	if err != nil {
		return nil, c.redactError(err)
	}
	return page, nil
}

func (c *Client) listUsers(ctx context.Context, q UsersQuery) (*UsersPage, error) {
	if q.ServiceSID == "" {
		return nil, errors.New("twilio: list users: ServiceSID must not be empty")
	}
	if q.PageSize < 0 {
		return nil, fmt.Errorf("twilio: list users: PageSize must not be negative (got %d)", q.PageSize)
	}
	body, next, err := page[usersBody](ctx, c, "users", usersResource(q.ServiceSID), url.Values{}, q.PageSize, q.Next)
	if err != nil {
		return nil, fmt.Errorf("list users of service %s: %w", q.ServiceSID, err)
	}
	return &UsersPage{Users: body.Users, Meta: *body.Meta, Next: next}, nil
}

// GetUser fetches one user of a service, named by SID (US…) or identity,
// with GET /v2/Services/{ServiceSid}/Users/{SidOrIdentity}: the way to learn
// the SID of a configured identity before reading its bindings by SID. The
// identity is escaped as one path segment. Requests are retried, limited and
// authenticated as the lists are.
//
// The answer must name a user SID matching ^US[0-9a-fA-F]{32}$, the SID
// asked for or the identity asked for, and the service; otherwise the error
// wraps ErrBadResponse. A user that does not exist wraps ErrNotFound; other
// errors follow ListBindings.
func (c *Client) GetUser(ctx context.Context, serviceSID, user string) (*User, error) {
	u, err := c.getUser(ctx, serviceSID, user)
	if err != nil {
		return nil, c.redactError(fmt.Errorf("get user %q of service %s: %w", user, serviceSID, err))
	}
	return u, nil
}

func (c *Client) getUser(ctx context.Context, serviceSID, user string) (*User, error) {
	if serviceSID == "" || user == "" {
		return nil, errors.New("twilio: serviceSID and user must not be empty")
	}
	path := userResource(serviceSID, user).escapedPath()
	u, err := get[User](ctx, c, "user", path, false)
	if err != nil {
		return nil, err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("twilio: GET %s: %w: %s", path, ErrBadResponse, fmt.Sprintf(format, args...))
	}
	bySID := userSIDPattern.MatchString(user)
	switch {
	case !userSIDPattern.MatchString(u.SID):
		return nil, bad("user sid %q does not match %s", u.SID, userSIDPattern)
	case bySID && u.SID != user:
		return nil, bad("answered user %q, not %q", u.SID, user)
	case !bySID && u.Identity == nil:
		return nil, bad("answered user %s without an identity, asked for %q", u.SID, user)
	case !bySID && *u.Identity != user:
		return nil, bad("answered identity %q, not %q", *u.Identity, user)
	case u.ServiceSID != nil && *u.ServiceSID != serviceSID:
		return nil, bad("answered a user of service %q, not %q", *u.ServiceSID, serviceSID)
	}
	return u, nil
}

// maxPageSize is the documented largest page of a list kind.
func maxPageSize(kind string) int {
	switch kind {
	case "users":
		return MaxUsersPageSize
	case "service_bindings":
		return MaxServiceBindingsPageSize
	}
	return MaxBindingsPageSize
}

func (c *Client) fallbackFlag(kind string) *atomic.Bool {
	switch kind {
	case "users":
		return &c.usersFallback
	case "service_bindings":
		return &c.serviceBindingsFallback
	}
	return &c.bindingsFallback
}

// page fetches the page of res named by next, or its first page asking for
// size items. A first page asking for more than the documented maximum and
// answered 400 is asked again with the maximum: Twilio's OpenAPI lowered
// the limits without notice, and whether the live API rejects or clamps
// larger sizes is not known. If the maximum passes, every later first page
// of that kind asks for it directly.
func page[T any, P listPage[T]](ctx context.Context, c *Client, kind string, res resource, query url.Values, size int, next string) (*T, string, error) {
	if next != "" {
		return list[T, P](ctx, c, kind, res, query, next)
	}
	limit := maxPageSize(kind)
	fallback := c.fallbackFlag(kind)
	if fallback.Load() && size > limit {
		size = limit
	}
	body, following, err := list[T, P](ctx, c, kind, res, withPageSize(query, size), "")
	if err == nil || size <= limit || !hasStatus(err, http.StatusBadRequest) {
		return body, following, err
	}
	body, following, retryErr := list[T, P](ctx, c, kind, res, withPageSize(query, limit), "")
	switch {
	case hasStatus(retryErr, http.StatusBadRequest):
		return nil, "", err // the page size was not what Twilio refused
	case retryErr != nil:
		return nil, "", retryErr
	}
	if fallback.CompareAndSwap(false, true) && c.hooks.OnPageSizeFallback != nil {
		c.hooks.OnPageSizeFallback(kind, size, limit)
	}
	return body, following, nil
}

// withPageSize is a copy of query asking for n items per page; 0 asks for
// Twilio's default.
func withPageSize(query url.Values, n int) url.Values {
	q := maps.Clone(query)
	if q == nil {
		q = url.Values{}
	}
	if n > 0 {
		q.Set("PageSize", strconv.Itoa(n))
	}
	return q
}

// hasStatus reports whether err holds an APIError with the given status.
func hasStatus(err error, status int) bool {
	var apiErr *APIError
	return errors.As(err, &apiErr) && apiErr.Status == status
}

// listPage is the body of a list response: usersBody, bindingsBody or
// serviceBindingsBody.
type listPage[T any] interface {
	*T
	// meta is the paging block, nil when the body had none.
	meta() *Meta
	// items is the name of the list in the body, and whether the body holds
	// it, possibly empty.
	items() (key string, ok bool)
}

type usersBody struct {
	Meta  *Meta  `json:"meta"`
	Users []User `json:"users"`
}

func (b *usersBody) meta() *Meta              { return b.Meta }
func (b *usersBody) items() (string, bool)    { return "users", b.Users != nil }
func (b *bindingsBody) meta() *Meta           { return b.Meta }
func (b *bindingsBody) items() (string, bool) { return "bindings", b.Bindings != nil }

type bindingsBody struct {
	Meta     *Meta     `json:"meta"`
	Bindings []Binding `json:"bindings"`
}

type serviceBindingsBody struct {
	Meta     *Meta            `json:"meta"`
	Bindings []ServiceBinding `json:"bindings"`
}

func (b *serviceBindingsBody) meta() *Meta           { return b.Meta }
func (b *serviceBindingsBody) items() (string, bool) { return "bindings", b.Bindings != nil }

// list fetches the page of res named by next, or the first page with query
// when next is "". kind names the list for hooks. It returns the body and
// the Next reference of the following page, which must name the same list
// with the same filters.
func list[T any, P listPage[T]](ctx context.Context, c *Client, kind string, res resource, query url.Values, next string) (*T, string, error) {
	ref := firstPage(res, query)
	if next != "" {
		if err := checkPage(next, res); err != nil {
			return nil, "", err
		}
		ref = next
	}
	path, _, _ := strings.Cut(ref, "?")
	body, err := get[T](ctx, c, kind, ref, next != "")
	if err != nil {
		return nil, "", err
	}
	m := P(body).meta()
	if key, ok := P(body).items(); m == nil || !ok {
		return nil, "", fmt.Errorf("twilio: GET %s: %w: no \"meta\" object or %q list", path, ErrBadResponse, key)
	}
	var following string
	if raw := m.NextPageURL; raw != nil && *raw != "" {
		following, err = nextPage(*raw, c.base, res)
		if err != nil {
			return nil, "", err
		}
		if err := sameFilters(ref, following); err != nil {
			return nil, "", fmt.Errorf("twilio: next_page_url %q: %w", *raw, err)
		}
		if c.holdsSecret(following) {
			// A Next is kept in checkpoints, where credentials must never go.
			return nil, "", fmt.Errorf("twilio: GET %s: %w: next_page_url holds the client's credentials", path, ErrBadResponse)
		}
	}
	c.redactMeta(m)
	return body, following, nil
}

// filterParams are the query parameters that select what a list holds. A
// next page must repeat them exactly (as sets: order and repeats aside), or
// it is a page of another list.
var filterParams = []string{"BindingType", "Identity"}

// sameFilters checks that next asks for the same filters as ref.
func sameFilters(ref, next string) error {
	for _, name := range filterParams {
		a, b := queryValues(ref, name), queryValues(next, name)
		if !slices.Equal(a, b) {
			return fmt.Errorf("filters %s %q, not %q: %w", name, b, a, ErrForeignNextPage)
		}
	}
	return nil
}

// queryValues is the sorted, deduplicated values of the query parameter
// name in ref.
func queryValues(ref, name string) []string {
	_, rawQuery, _ := strings.Cut(ref, "?")
	q, _ := url.ParseQuery(rawQuery) // a value that does not unescape is left out, and then differs
	values := slices.Clone(q[name])
	slices.Sort(values)
	return slices.Compact(values)
}

// get fetches ref and decodes its 200 body into a new T, retrying transient
// failures with backoff up to maxAttempts. paged tells whether ref came
// from a Next reference. Failures feed the client's health: when Twilio has
// failed for UnavailableAfter, the error wraps ErrUnavailable.
func get[T any](ctx context.Context, c *Client, kind, ref string, paged bool) (*T, error) {
	path, _, _ := strings.Cut(ref, "?")
	for attempt := 1; ; attempt++ {
		dst := new(T) // a failed attempt may have filled part of the last one
		err := c.attempt(ctx, kind, ref, path, paged, dst)
		if err == nil {
			return dst, nil
		}
		reason := retryReason(err)
		if countsAsDown(reason) && ctx.Err() == nil {
			if down := c.health.failed(c.now(), c.Redact(err.Error())); down != nil {
				return nil, down
			}
		}
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

// attempt makes one HTTP request for ref, within the concurrency limit and
// the per-attempt timeout, and decodes a 200 body into dst.
func (c *Client) attempt(ctx context.Context, kind, ref, path string, paged bool, dst any) error {
	if err := c.health.err(); err != nil {
		return err
	}
	if c.rate != nil {
		if err := c.rate.Wait(ctx); err != nil {
			return fmt.Errorf("twilio: %s %s: %w", http.MethodGet, path, err)
		}
	}
	take := c.limit.acquire
	if kind == "users" {
		take = c.limit.acquireAhead // the fetchers wait for the users it lists
	}
	slot, err := take(ctx)
	if err != nil {
		return fmt.Errorf("twilio: %s %s: %w", http.MethodGet, path, err)
	}
	c.inFlight(+1)
	result, load := outcomeFailed, 0
	defer func() {
		c.limit.release(slot, result, load)
		c.inFlight(-1)
	}()
	// Twilio may have been declared unavailable while this request waited.
	if err := c.health.err(); err != nil {
		return err
	}
	if c.hooks.OnRequest != nil {
		c.hooks.OnRequest(kind)
	}

	ctx, cancel := context.WithTimeout(ctx, c.requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+ref, nil)
	if err != nil {
		return fmt.Errorf("twilio: %s %s: %w", http.MethodGet, path, err)
	}
	req.SetBasicAuth(c.username, c.password)
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("Accept", "application/json")

	resp, err := c.http.Do(req)
	if err != nil {
		return transportError(http.MethodGet, path, err)
	}
	defer resp.Body.Close()
	load = accountLoad(resp.Header)
	if resp.StatusCode != http.StatusOK {
		switch {
		case resp.StatusCode == http.StatusTooManyRequests:
			result = outcomeThrottled
		case resp.StatusCode < http.StatusInternalServerError:
			c.health.ok() // Twilio answered; the request was refused
		}
		return statusError(c.readAPIError(resp, http.MethodGet, path), paged)
	}
	if err := c.decodeBody(resp, http.MethodGet, path, dst); err != nil {
		return err
	}
	result = outcomeOK
	c.health.ok()
	return nil
}

func (c *Client) inFlight(delta int) {
	if c.hooks.InFlight != nil {
		c.hooks.InFlight(delta)
	}
}

package twiliotest

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultAuthToken is the auth token a Server accepts when Options names no
// credentials at all.
const DefaultAuthToken = "twiliotest-auth-token"

// DefaultPublicBaseURL is where Twilio serves Chat v2; the paging URLs in
// meta and the url of every resource are absolute on it, as the real API's
// are, whatever address the fake listens on.
const DefaultPublicBaseURL = "https://chat.twilio.com"

// Paging defaults of the real API.
const (
	defaultPageSize    = 50
	defaultMaxPageSize = 1000
)

// Options configure a Server. The zero value serves a small default world
// with the default credentials and no faults.
type Options struct {
	// World is what the server serves; nil means a small world of one
	// service with 16 users and up to 150 bindings each (seed 1).
	World *World
	// AccountSID and AuthToken are the accepted basic-auth credentials.
	// AccountSID defaults to World.AccountSID; AuthToken to DefaultAuthToken
	// when no API key is configured either.
	AccountSID, AuthToken string
	// APIKeySID and APIKeySecret, when set, are accepted as well.
	APIKeySID, APIKeySecret string
	// Faults start active; see SetFaults.
	Faults Faults
	// MaxPageSize is the largest PageSize accepted; above it the answer is
	// 400. Zero means 1000, the limit of the API reference.
	MaxPageSize int
	// StrictPageSize also answers 400 (error 20001) to a PageSize above the
	// limits of Twilio's current OpenAPI file: twilio.MaxBindingsPageSize
	// (50) for a user's bindings, twilio.MaxServiceBindingsPageSize (50) for
	// the service-wide Bindings list and twilio.MaxUsersPageSize (100) for
	// users.
	StrictPageSize bool
	// PageSizeCap, when positive, silently serves fewer items than a larger
	// (valid) PageSize asks for, and says so in meta.page_size, as Twilio does
	// where its newer limits are lower than the reference page's.
	PageSizeCap int
	// PublicBaseURL is the origin of meta URLs; DefaultPublicBaseURL if empty.
	// Point it elsewhere to test that a client refuses to follow a
	// next_page_url to another host.
	PublicBaseURL string
	// TokenSecret signs page tokens. Empty means a secret derived from the
	// world's spec, so every server of one world accepts the others' tokens
	// (a resumed run may meet a restarted fake).
	TokenSecret string
	// NoLoadHeaders leaves out the Twilio-Concurrent-Requests and
	// Twilio-Request-Duration headers that every answer carries otherwise,
	// so a client can be tested without them.
	NoLoadHeaders bool
}

// Response headers by which Twilio shows an account's load, sent with every
// answer (200 or error) unless Options.NoLoadHeaders is set.
const (
	// ConcurrentRequestsHeader holds the number of requests the account has
	// in flight, as a decimal integer: for an admitted request, those
	// admitted at its admission, itself included; for a request refused for
	// Faults.MaxConcurrent, those admitted when it was refused, which is
	// MaxConcurrent.
	ConcurrentRequestsHeader = "Twilio-Concurrent-Requests"
	// RequestDurationHeader holds how long the server took to decide the
	// answer, in seconds with three decimals (e.g. "0.093"), as Twilio
	// sends it.
	RequestDurationHeader = "Twilio-Request-Duration"
)

// Faults switch on failures. The zero value injects none. Rates are
// probabilities per request drawn from a generator seeded with Seed, so a
// sequence of sequential requests meets the same faults on every run; the
// rates are cumulative and their sum should not exceed 1.
//
// The service-wide Bindings list meets the faults of every request
// (MaxConcurrent, Latency, the rates), ServiceBindingsPaging, deletions,
// NullBindingTypeUsers, and HugeField and GzipBomb on its pages that hold a
// binding of one of BodyFaultUsers. FailUsers, DeleteAfterFirstPage and
// NextPageOtherUser concern the users' own lists only.
type Faults struct {
	Seed int64
	// Rate429 answers 429 with error 20429 (too many requests).
	Rate429 float64
	// RetryAfter, when positive, is sent in a Retry-After header (whole
	// seconds, rounded up) with every 429 the faults cause, or only with every
	// RetryAfterEvery-th one when RetryAfterEvery > 1, so a client meets both
	// kinds.
	RetryAfter      time.Duration
	RetryAfterEvery int
	// Rate500 and Rate503 answer 500 (error 20500) and 503 (error 20503).
	Rate500, Rate503 float64
	// RateDrop closes the connection without answering.
	RateDrop float64
	// RateTruncate sends a 200 whose Content-Length announces the whole
	// body but only the first half of it, then closes the connection. It
	// affects only requests that would have succeeded.
	RateTruncate float64
	// Latency delays every admitted request.
	Latency time.Duration
	// MaxConcurrent, when positive, answers 429 (error 20429), at once and
	// without Retry-After unless RetryAfter asks for one, to a request that
	// arrives while this many requests are admitted and not yet answered.
	// Only admitted requests count: a refused one never takes a place, so
	// the count is exact (see Stats.MaxAdmitted). A request leaves its place
	// as soon as its answer is ready, before it is written, so a client
	// that starts a request only after reading an answer never overlaps
	// with that answer's request.
	MaxConcurrent int
	// FailUsers maps a user SID or identity to the HTTP status its bindings
	// requests, and its fetches by SID or identity, always get, e.g. 500 for
	// a user that keeps failing or 403.
	FailUsers map[string]int
	// Rate503: 1 answers 503 to every request, authenticated or not: Twilio
	// down. (No separate switch is needed for it.)

	// BindingsPaging, UsersPaging and ServiceBindingsPaging make the users'
	// bindings lists, the Users lists or the service-wide Bindings lists
	// page without end (see PagingFault).
	BindingsPaging, UsersPaging, ServiceBindingsPaging PagingFault
	// DeleteAfterFirstPage lists users (SID or identity) deleted as soon as
	// their first bindings page has been served: page 0 answers 200, every
	// later request for the user 404, and the Users list leaves them out.
	DeleteAfterFirstPage []string
	// DuplicateUsers makes every Users page repeat users: its first user
	// of this page's own window comes again at its end, and each page after
	// the first starts with the last user of the page before.
	DuplicateUsers bool
	// NextPageOtherUser makes every next_page_url of a bindings page name
	// the following user of the service (by SID, wrapping around), with a
	// token valid for that user's list: a client that follows it reads the
	// other user's bindings in place of the requested one's.
	NextPageOtherUser bool
	// NullBindingTypeUsers lists users (SID or identity) whose bindings
	// break the API's contract: at even positions of the user's list (0, 2,
	// …, in serving order) binding_type is null, at odd positions it is
	// missing.
	NullBindingTypeUsers []string
	// HugeField, when positive, makes every 200 bindings page carry a string
	// of this many bytes: the endpoint of its first binding, or meta.key on
	// an empty page. The body is streamed, never built in memory.
	HugeField int64
	// GzipBomb, when positive, sends every 200 bindings page gzipped
	// (Content-Encoding gzip, whether asked for or not) with a string field
	// as HugeField has, so that the page inflates to about GzipBomb bytes
	// from about a thousandth of that.
	GzipBomb int64
	// BodyFaultUsers restricts HugeField and GzipBomb to these users (SID
	// or identity); empty means every user.
	BodyFaultUsers []string
	// EchoCredentials makes every error body quote the request's
	// Authorization header and password, in message and more_info, as a
	// careless proxy might.
	EchoCredentials bool
	// HostileErrors makes every error message start with terminal escapes
	// and a forged "snapshot published" line, hold newlines and carriage
	// returns, and run to 64 KB.
	HostileErrors bool
	// HostileErrorBytes, when set, is the size of the hostile messages
	// instead of 64 KB.
	HostileErrorBytes int
}

// PagingFault is a way for a list to page without end. The zero value is
// none.
type PagingFault string

const (
	// PagingRepeatToken answers every page after the first with a
	// next_page_url equal to its own URL: the same page token and Page.
	PagingRepeatToken PagingFault = "repeat-token"
	// PagingBackwards answers every page after the first with the previous
	// page as its next page (Page going down), so a client bounces between
	// pages 0 and 1.
	PagingBackwards PagingFault = "backwards"
	// PagingEmptyForever answers every page empty, with a next page whose
	// Page and token are new each time.
	PagingEmptyForever PagingFault = "empty-forever"
)

// PagingFaults lists the paging faults, for flags and tests.
var PagingFaults = []PagingFault{PagingRepeatToken, PagingBackwards, PagingEmptyForever}

// Stats counts what the server saw since it started. Requests counts every
// request; ByStatus counts complete responses by status code, so dropped and
// truncated responses are only in Dropped and Truncated.
type Stats struct {
	Requests         int64
	UsersRequests    int64
	BindingsRequests int64
	// UserFetches counts requests for one user, by SID or identity.
	UserFetches int64
	// ServiceBindingsRequests counts requests for the service-wide Bindings
	// list (GET /v2/Services/{ServiceSid}/Bindings).
	ServiceBindingsRequests int64
	ByStatus                map[int]int64
	// PagesServedTwice counts complete 200 bindings pages whose (service,
	// user, filter, page token) had been served completely before, pages of
	// the service-wide list by (service, filters, page token): a client
	// that resumes correctly and never refetches keeps it at zero.
	PagesServedTwice int64
	// BindingsPagesByUser counts complete 200 bindings pages per
	// UserKey(serviceSID, userSID).
	BindingsPagesByUser map[string]int64
	Dropped             int64
	Truncated           int64
	// MaxInFlight is the largest number of requests in flight at once,
	// including those answered 429 for concurrency. A request is in flight
	// from its arrival until its answer is ready to be written.
	MaxInFlight int64
	// MaxAdmitted is the largest number of requests admitted at once: in
	// flight and not refused for Faults.MaxConcurrent, which it never
	// exceeds.
	MaxAdmitted int64
}

// Server is a fake Twilio Chat v2 API. Its methods are safe for concurrent use.
type Server struct {
	world       *World
	opts        Options
	secret      []byte
	maxPageSize int
	baseURL     string

	ts       *httptest.Server
	faults   atomic.Pointer[faultState]
	epoch    atomic.Uint32
	inflight atomic.Int64 // requests arrived and not yet answered
	admitted atomic.Int64 // of those, the requests not refused for MaxConcurrent

	mu      sync.Mutex // guards the fields below
	deleted map[string]bool
	stats   Stats
	served  map[string]bool

	// onAdmit, if set, runs for every request admitted past the concurrency
	// limit; tests use it to hold requests in flight.
	onAdmit func()
}

// NewServer starts a server on 127.0.0.1 on a free port, like
// httptest.NewServer. Close it when done.
func NewServer(opts Options) *Server {
	s := NewUnstartedServer(opts)
	s.ts = httptest.NewServer(s.Handler())
	return s
}

// NewUnstartedServer returns a server that does not listen; mount Handler
// wherever it is needed. URL is empty and Close does nothing.
func NewUnstartedServer(opts Options) *Server {
	if opts.World == nil {
		opts.World = NewWorld(WorldSpec{Seed: 1, Services: 1, UsersPerService: 16, MaxBindingsPerUser: 150})
	}
	if opts.AccountSID == "" {
		opts.AccountSID = opts.World.AccountSID
	}
	if opts.AuthToken == "" && opts.APIKeySID == "" {
		opts.AuthToken = DefaultAuthToken
	}
	s := &Server{
		world:       opts.World,
		opts:        opts,
		secret:      []byte(opts.TokenSecret),
		maxPageSize: opts.MaxPageSize,
		baseURL:     opts.PublicBaseURL,
		deleted:     make(map[string]bool),
		served:      make(map[string]bool),
		stats: Stats{
			ByStatus:            make(map[int]int64),
			BindingsPagesByUser: make(map[string]int64),
		},
	}
	if len(s.secret) == 0 {
		s.secret = worldSecret(opts.World.Spec())
	}
	if s.maxPageSize <= 0 {
		s.maxPageSize = defaultMaxPageSize
	}
	if s.baseURL == "" {
		s.baseURL = DefaultPublicBaseURL
	}
	s.SetFaults(opts.Faults)
	return s
}

func worldSecret(spec WorldSpec) []byte {
	h := sha256.New()
	h.Write([]byte("twiliotest page tokens\x00" + spec.AccountSID + "\x00"))
	_ = binary.Write(h, binary.BigEndian, spec.Seed)
	return h.Sum(nil)
}

// URL is the server's base URL, e.g. "http://127.0.0.1:41234"; the client
// appends "/v2/Services/...".
func (s *Server) URL() string {
	if s.ts == nil {
		return ""
	}
	return s.ts.URL
}

// Close stops the server and waits for requests in flight to finish.
func (s *Server) Close() {
	if s.ts != nil {
		s.ts.Close()
	}
}

// Handler serves the API; a test can mount it on its own server.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serve) }

// World returns the world the server serves.
func (s *Server) World() *World { return s.world }

// SetFaults replaces the active faults, restarting the fault generator from
// f.Seed. Requests already past fault selection are not affected.
func (s *Server) SetFaults(f Faults) {
	fs := &faultState{Faults: f, rng: rand.New(rand.NewPCG(uint64(f.Seed), 0x6661756c7473))}
	fs.FailUsers = maps.Clone(f.FailUsers)
	fs.DeleteAfterFirstPage = slices.Clone(f.DeleteAfterFirstPage)
	fs.NullBindingTypeUsers = slices.Clone(f.NullBindingTypeUsers)
	fs.BodyFaultUsers = slices.Clone(f.BodyFaultUsers)
	s.faults.Store(fs)
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.ByStatus = make(map[int]int64, len(s.stats.ByStatus))
	for k, v := range s.stats.ByStatus {
		st.ByStatus[k] = v
	}
	st.BindingsPagesByUser = make(map[string]int64, len(s.stats.BindingsPagesByUser))
	for k, v := range s.stats.BindingsPagesByUser {
		st.BindingsPagesByUser[k] = v
	}
	return st
}

// RevokeTokens invalidates every page token issued so far: a later request
// with one gets 400, as with an expired Twilio token. Tokens issued
// afterwards are valid.
func (s *Server) RevokeTokens() { s.epoch.Add(1) }

// DeleteUser removes a user (by SID or identity) from the service: later
// requests for its bindings get 404 and the Users list skips it. Unknown
// users are ignored.
func (s *Server) DeleteUser(serviceSID, user string) {
	u := s.world.User(serviceSID, user)
	if u == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleted[UserKey(serviceSID, u.SID)] = true
}

func (s *Server) isDeleted(serviceSID, userSID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deleted[UserKey(serviceSID, userSID)]
}

func (s *Server) anyDeleted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.deleted) > 0
}

// authorized reports whether r carries accepted basic-auth credentials.
func (s *Server) authorized(r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return false
	}
	if s.opts.AuthToken != "" && equal(user, s.opts.AccountSID) && equal(pass, s.opts.AuthToken) {
		return true
	}
	return s.opts.APIKeySID != "" && equal(user, s.opts.APIKeySID) && equal(pass, s.opts.APIKeySecret)
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// matches reports whether u is one of users, named by SID or identity.
func matches(users []string, u *User) bool {
	return slices.Contains(users, u.SID) || slices.Contains(users, u.Identity)
}

// faultState is one SetFaults call: the faults and their generator.
type faultState struct {
	Faults
	mu   sync.Mutex
	rng  *rand.Rand
	n429 atomic.Int64
}

// fault is what the generator chose for one request.
type fault int

const (
	faultNone fault = iota
	faultDrop
	fault429
	fault500
	fault503
	faultTruncate
)

// draw picks this request's fault with one draw from the generator.
func (f *faultState) draw() fault {
	if f.RateDrop+f.Rate429+f.Rate500+f.Rate503+f.RateTruncate <= 0 {
		return faultNone
	}
	f.mu.Lock()
	x := f.rng.Float64()
	f.mu.Unlock()
	for _, c := range []struct {
		rate  float64
		fault fault
	}{
		{f.RateDrop, faultDrop},
		{f.Rate429, fault429},
		{f.Rate500, fault500},
		{f.Rate503, fault503},
		{f.RateTruncate, faultTruncate},
	} {
		if x < c.rate {
			return c.fault
		}
		x -= c.rate
	}
	return faultNone
}

// retryAfter returns the Retry-After seconds of the next fault-caused 429,
// or 0 for none.
func (f *faultState) retryAfter() int {
	n := f.n429.Add(1)
	if f.RetryAfter <= 0 || (f.RetryAfterEvery > 1 && n%int64(f.RetryAfterEvery) != 0) {
		return 0
	}
	return int((f.RetryAfter + time.Second - 1) / time.Second)
}

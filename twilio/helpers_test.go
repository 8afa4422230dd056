package twilio

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testService  = "IS0123456789abcdef0123456789abcdef"
	testUsername = "AC00000000000000000000000000000042"
	testPassword = "tok3n-do-not-leak"
)

// testNow is the fixed clock of test clients.
var testNow = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

// seen is what a test server observed of one request.
type seen struct {
	RequestURI  string // the request target exactly as sent
	EscapedPath string
	RawQuery    string
	Query       map[string][]string
	User, Pass  string
	HasAuth     bool
	UserAgent   string
	Accept      string
}

// scriptServer answers request i with handlers[i], repeating the last one,
// and records every request.
type scriptServer struct {
	*httptest.Server
	mu       sync.Mutex
	seen     []seen
	handlers []http.HandlerFunc
}

func newScriptServer(t *testing.T, handlers ...http.HandlerFunc) *scriptServer {
	t.Helper()
	s := &scriptServer{handlers: handlers}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *scriptServer) serve(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	s.mu.Lock()
	s.seen = append(s.seen, seen{
		RequestURI:  r.RequestURI,
		EscapedPath: r.URL.EscapedPath(),
		RawQuery:    r.URL.RawQuery,
		Query:       r.URL.Query(),
		User:        user,
		Pass:        pass,
		HasAuth:     ok,
		UserAgent:   r.UserAgent(),
		Accept:      r.Header.Get("Accept"),
	})
	i := min(len(s.seen), len(s.handlers)) - 1
	s.mu.Unlock()
	s.handlers[i](w, r)
}

func (s *scriptServer) requests() []seen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seen(nil), s.seen...)
}

// retryLog records the OnRetry calls and the sleeps of a test client.
type retryLog struct {
	mu      sync.Mutex
	reasons []string
	waits   []time.Duration
	sleeps  []time.Duration
}

func (l *retryLog) snapshot() (reasons []string, waits, sleeps []time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.reasons...), append([]time.Duration(nil), l.waits...), append([]time.Duration(nil), l.sleeps...)
}

// newTestClient returns a client of baseURL whose sleeps return at once and
// are recorded, whose jitter returns the whole window (so waits are exact)
// and whose clock is testNow. edit may change the config first.
func newTestClient(t *testing.T, baseURL string, edit func(*Config)) (*Client, *retryLog) {
	t.Helper()
	log := &retryLog{}
	cfg := Config{
		BaseURL:     baseURL,
		Username:    testUsername,
		Password:    testPassword,
		BackoffBase: 100 * time.Millisecond,
		BackoffMax:  10 * time.Second,
		MaxAttempts: 4,
		Hooks: Hooks{OnRetry: func(reason string, attempt int, wait time.Duration) {
			log.mu.Lock()
			defer log.mu.Unlock()
			log.reasons = append(log.reasons, reason)
			log.waits = append(log.waits, wait)
		}},
	}
	if edit != nil {
		edit(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	c.sleep = func(ctx context.Context, d time.Duration) error {
		log.mu.Lock()
		log.sleeps = append(log.sleeps, d)
		log.mu.Unlock()
		return ctx.Err()
	}
	c.jitter = func(window time.Duration) time.Duration { return window }
	c.now = func() time.Time { return testNow }
	return c, log
}

// bindingsPath is the escaped path of the bindings of user in testService.
func bindingsPath(user string) string {
	return bindingsResource(testService, user).escapedPath()
}

func ptr[T any](v T) *T { return &v }

// pageBody is a bindings page as JSON, with one binding per SID.
func pageBody(t *testing.T, nextPageURL string, sids ...string) string {
	t.Helper()
	type page struct {
		Meta     Meta      `json:"meta"`
		Bindings []Binding `json:"bindings"`
	}
	p := page{Meta: Meta{Key: "bindings", PageSize: 50}, Bindings: []Binding{}}
	if nextPageURL != "" {
		p.Meta.NextPageURL = &nextPageURL
	}
	for _, sid := range sids {
		p.Bindings = append(p.Bindings, Binding{SID: ptr(sid), BindingType: ptr("fcm"), MessageTypes: []string{"new_message"}})
	}
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// respond answers with status and body as JSON, plus extra headers given as
// name, value pairs.
func respond(status int, body string, headers ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}
}

// twilioError answers with a Twilio error body.
func twilioError(status, code int, message string, headers ...string) http.HandlerFunc {
	body := fmt.Sprintf(`{"code":%d,"message":%q,"more_info":"https://www.twilio.com/docs/errors/%d","status":%d}`,
		code, message, code, status)
	return respond(status, body, headers...)
}

// dropConnection closes the connection without answering.
func dropConnection(w http.ResponseWriter, _ *http.Request) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	conn.Close()
}

// assertNoSecret fails when err's message shows a credential.
func assertNoSecret(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	basic := base64.StdEncoding.EncodeToString([]byte(testUsername + ":" + testPassword))
	for _, secret := range []string{testUsername, testPassword, basic} {
		if strings.Contains(msg, secret) {
			t.Errorf("error shows a credential: %s", msg)
		}
	}
}

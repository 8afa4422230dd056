package twiliotest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"
)

// freshClient opens a new connection per request, so Go's transport does not
// silently retry a GET whose reused connection was dropped.
func freshClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
}

// rawGet sends one authenticated GET and returns the response with its body
// read (or the read error).
func rawGet(ctx context.Context, hc *http.Client, s *Server, target string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL()+target, nil)
	if err != nil {
		return nil, nil, err
	}
	req.SetBasicAuth(s.opts.AccountSID, DefaultAuthToken)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func TestFaults(t *testing.T) {
	w := NewWorld(testSpec)
	svc := &w.Services[0]
	u := heavyUser(svc)
	other := &svc.Users[0]
	if other == u {
		other = &svc.Users[1]
	}
	target := bindingsPath(svc.SID, u.SID)
	tests := []struct {
		name       string
		faults     Faults
		target     string
		status     int // 0: the request must fail without a response
		code       int
		retryAfter string
		truncated  bool
	}{
		{"429 with Retry-After", Faults{Rate429: 1, RetryAfter: 1500 * time.Millisecond}, target, 429, 20429, "2", false},
		{"429 without Retry-After", Faults{Rate429: 1}, target, 429, 20429, "", false},
		{"500", Faults{Rate500: 1}, target, 500, 20500, "", false},
		{"503", Faults{Rate503: 1}, target, 503, 20503, "", false},
		{"drop", Faults{RateDrop: 1}, target, 0, 0, "", false},
		{"truncate", Faults{RateTruncate: 1}, target, 200, 0, "", true},
		{"truncate spares errors", Faults{RateTruncate: 1}, bindingsPath(svc.SID, "nobody"), 404, 20404, "", false},
		{"failing user by SID", Faults{FailUsers: map[string]int{u.SID: 500}}, bindingsPath(svc.SID, url.PathEscape(u.Identity)), 500, 20500, "", false},
		{"failing user by identity", Faults{FailUsers: map[string]int{u.Identity: 403}}, target, 403, 20403, "", false},
		{"failing user spares others", Faults{FailUsers: map[string]int{u.SID: 500}}, bindingsPath(svc.SID, other.SID), 200, 0, "", false},
		{"failing unknown user", Faults{FailUsers: map[string]int{"ghost": 503}}, bindingsPath(svc.SID, "ghost"), 503, 20503, "", false},
		{"no faults", Faults{}, target, 200, 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, Options{World: w, Faults: tt.faults})
			resp, body, err := rawGet(context.Background(), freshClient(), s, tt.target)
			st := s.Stats()
			switch {
			case tt.status == 0:
				if err == nil {
					t.Fatalf("request succeeded with %d, want a connection error", resp.StatusCode)
				}
				if st.Dropped != 1 || len(st.ByStatus) != 0 {
					t.Errorf("stats = %+v, want one drop", st)
				}
				return
			case tt.truncated:
				if resp == nil || resp.StatusCode != 200 || !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("truncated response: %v, err %v", resp, err)
				}
				if resp.ContentLength <= int64(len(body)) {
					t.Errorf("Content-Length %d does not announce more than the %d bytes sent", resp.ContentLength, len(body))
				}
				var page bindingsBody
				if json.Unmarshal(body, &page) == nil {
					t.Errorf("truncated body decodes as JSON")
				}
				if st.Truncated != 1 || st.ByStatus[200] != 0 || st.BindingsPagesByUser[UserKey(svc.SID, u.SID)] != 0 {
					t.Errorf("stats = %+v, want one truncated and no page served", st)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			r := response{status: resp.StatusCode, header: resp.Header, body: body}
			if tt.status == 200 {
				if r.status != 200 {
					t.Fatalf("status %d: %s", r.status, body)
				}
				decode[bindingsBody](t, r)
			} else {
				wantError(t, r, tt.status, tt.code)
			}
			if got := resp.Header.Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tt.retryAfter)
			}
			if st.ByStatus[tt.status] != 1 {
				t.Errorf("ByStatus = %v, want one %d", st.ByStatus, tt.status)
			}
		})
	}
}

func TestRetryAfterEvery(t *testing.T) {
	s := newTestServer(t, Options{Faults: Faults{Rate429: 1, RetryAfter: time.Second, RetryAfterEvery: 2}})
	svc := &s.World().Services[0]
	var got []string
	for range 4 {
		r := get(t, s, bindingsPath(svc.SID, svc.Users[0].SID))
		wantError(t, r, 429, 20429)
		got = append(got, r.header.Get("Retry-After"))
	}
	if want := []string{"", "1", "", "1"}; !slices.Equal(got, want) {
		t.Errorf("Retry-After headers = %q, want %q", got, want)
	}
}

func TestFaultsReproducible(t *testing.T) {
	w := NewWorld(testSpec)
	statuses := func(seed int64) []int {
		s := newTestServer(t, Options{World: w, Faults: Faults{Seed: seed, Rate500: 0.3, Rate503: 0.2}})
		var out []int
		for range 30 {
			out = append(out, get(t, s, bindingsPath(w.Services[0].SID, w.Services[0].Users[0].SID)).status)
		}
		return out
	}
	a, b, c := statuses(5), statuses(5), statuses(6)
	if !slices.Equal(a, b) {
		t.Errorf("same seed, different faults:\n%v\n%v", a, b)
	}
	if slices.Equal(a, c) {
		t.Errorf("different seeds, same faults: %v", a)
	}
	for _, want := range []int{200, 500, 503} {
		if !slices.Contains(a, want) {
			t.Errorf("statuses %v lack %d", a, want)
		}
	}
}

func TestSetFaults(t *testing.T) {
	s := newTestServer(t, Options{})
	svc := &s.World().Services[0]
	target := bindingsPath(svc.SID, svc.Users[0].SID)
	steps := []struct {
		faults Faults
		status int
	}{
		{Faults{}, 200},
		{Faults{Rate503: 1}, 503},
		{Faults{FailUsers: map[string]int{svc.Users[0].SID: 500}}, 500},
		{Faults{}, 200},
	}
	for i, step := range steps {
		s.SetFaults(step.faults)
		if r := get(t, s, target); r.status != step.status {
			t.Errorf("step %d: status %d, want %d", i, r.status, step.status)
		}
	}
	// The server keeps its own copy of FailUsers.
	fail := map[string]int{svc.Users[0].SID: 500}
	s.SetFaults(Faults{FailUsers: fail})
	delete(fail, svc.Users[0].SID)
	if r := get(t, s, target); r.status != 500 {
		t.Errorf("FailUsers changed under the server: status %d", r.status)
	}
}

func TestLatency(t *testing.T) {
	s := newTestServer(t, Options{Faults: Faults{Latency: time.Hour}})
	svc := &s.World().Services[0]
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, _, err := rawGet(ctx, http.DefaultClient, s, bindingsPath(svc.SID, svc.Users[0].SID))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("request under an hour of latency: err = %v, want deadline exceeded", err)
	}
	// Close returns: the delayed handler noticed the client leave.
}

// heldServer starts a server whose admitted requests wait in the handler
// until release is closed; entered receives one value per admission.
func heldServer(t *testing.T, opts Options) (s *Server, entered chan struct{}, release chan struct{}) {
	t.Helper()
	opts.World = NewWorld(testSpec)
	s = NewUnstartedServer(opts)
	entered, release = make(chan struct{}, 64), make(chan struct{})
	s.onAdmit = func() {
		entered <- struct{}{}
		<-release
	}
	s.ts = httptest.NewServer(s.Handler())
	t.Cleanup(s.Close)
	return s, entered, release
}

func TestMaxConcurrent(t *testing.T) {
	const limit, n = 3, 24
	s, entered, release := heldServer(t, Options{Faults: Faults{MaxConcurrent: limit, RetryAfter: time.Second}})
	svc := &s.World().Services[0]
	type result struct {
		status     int
		retryAfter string
		err        error
	}
	results := make(chan result, n)
	for i := range n {
		go func() {
			resp, _, err := rawGet(context.Background(), freshClient(), s, bindingsPath(svc.SID, svc.Users[i%len(svc.Users)].SID))
			if err != nil {
				results <- result{err: err}
				return
			}
			results <- result{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
		}()
	}
	// The first three requests to arrive are admitted and held, so every
	// other one must be refused while they are in flight.
	for i := range n - limit {
		r := <-results
		if r.err != nil || r.status != 429 || r.retryAfter != "1" {
			t.Errorf("response %d while %d held: %+v, want 429 with Retry-After", i, limit, r)
		}
	}
	for range limit {
		<-entered
	}
	close(release)
	for range limit {
		if r := <-results; r.err != nil || r.status != 200 {
			t.Errorf("held request: %+v, want 200", r)
		}
	}
	st := s.Stats()
	if st.ByStatus[429] != n-limit || st.ByStatus[200] != limit || st.MaxInFlight <= limit || st.MaxAdmitted != limit {
		t.Errorf("stats: ByStatus %v, MaxInFlight %d, MaxAdmitted %d", st.ByStatus, st.MaxInFlight, st.MaxAdmitted)
	}
}

// A request refused for MaxConcurrent takes no place: with one place left,
// a burst of requests gets exactly one admitted, however many are refused
// around it.
func TestMaxConcurrentExact(t *testing.T) {
	const limit, burst = 3, 20
	s, entered, release := heldServer(t, Options{Faults: Faults{MaxConcurrent: limit}})
	svc := &s.World().Services[0]
	target := bindingsPath(svc.SID, svc.Users[0].SID)
	statuses := make(chan int, limit+burst)
	send := func() {
		resp, _, err := rawGet(context.Background(), freshClient(), s, target)
		if err != nil {
			t.Error(err)
			statuses <- 0
			return
		}
		statuses <- resp.StatusCode
	}
	for range limit - 1 {
		go send()
		<-entered
	}
	for range burst {
		go send()
	}
	<-entered // the one place left
	for i := range burst - 1 {
		if st := <-statuses; st != http.StatusTooManyRequests {
			t.Fatalf("answer %d of the burst: status %d, want 429", i, st)
		}
	}
	select {
	case <-entered:
		t.Fatal("a second request of the burst was admitted beyond MaxConcurrent")
	default:
	}
	close(release)
	for range limit {
		if st := <-statuses; st != http.StatusOK {
			t.Errorf("admitted request: status %d, want 200", st)
		}
	}
	st := s.Stats()
	if st.MaxAdmitted != limit || st.ByStatus[429] != burst-1 || st.ByStatus[200] != limit {
		t.Errorf("stats: MaxAdmitted %d, ByStatus %v; want %d admitted at most, %d refused", st.MaxAdmitted, st.ByStatus, limit, burst-1)
	}
}

func TestLoadHeaders(t *testing.T) {
	const limit = 2
	s, entered, release := heldServer(t, Options{Faults: Faults{MaxConcurrent: limit}})
	svc := &s.World().Services[0]
	target := bindingsPath(svc.SID, svc.Users[0].SID)
	type answer struct {
		status             int
		concurrent, during string
	}
	answers := make(chan answer, limit)
	for range limit {
		go func() {
			resp, _, err := rawGet(context.Background(), freshClient(), s, target)
			if err != nil {
				t.Error(err)
				answers <- answer{}
				return
			}
			answers <- answer{resp.StatusCode, resp.Header.Get(ConcurrentRequestsHeader), resp.Header.Get(RequestDurationHeader)}
		}()
		<-entered
	}
	// Both places are taken: a refusal counts the admitted requests.
	resp, _, err := rawGet(context.Background(), freshClient(), s, target)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 429 || resp.Header.Get(ConcurrentRequestsHeader) != "2" {
		t.Errorf("refused request: status %d, %s %q; want 429 and \"2\"", resp.StatusCode, ConcurrentRequestsHeader, resp.Header.Get(ConcurrentRequestsHeader))
	}
	durationRE := regexp.MustCompile(`^[0-9]+\.[0-9]{3}$`)
	if d := resp.Header.Get(RequestDurationHeader); !durationRE.MatchString(d) {
		t.Errorf("refused request: %s %q, want seconds with three decimals", RequestDurationHeader, d)
	}
	close(release)
	var seen []string
	for range limit {
		a := <-answers
		if a.status != 200 || !durationRE.MatchString(a.during) {
			t.Errorf("admitted request: %+v, want 200 with a duration", a)
		}
		seen = append(seen, a.concurrent)
	}
	slices.Sort(seen)
	if !slices.Equal(seen, []string{"1", "2"}) {
		t.Errorf("%s of the admitted requests = %q, want 1 and 2 (each counts itself)", ConcurrentRequestsHeader, seen)
	}

	quiet := newTestServer(t, Options{NoLoadHeaders: true})
	r := get(t, quiet, bindingsPath(quiet.World().Services[0].SID, quiet.World().Services[0].Users[0].SID))
	if r.status != 200 || r.header.Get(ConcurrentRequestsHeader) != "" || r.header.Get(RequestDurationHeader) != "" {
		t.Errorf("NoLoadHeaders: status %d, headers %v; want 200 without load headers", r.status, r.header)
	}
	e := get(t, quiet, "/v2/Services/nope/Users")
	if e.header.Get(ConcurrentRequestsHeader) != "" {
		t.Errorf("NoLoadHeaders: error answer carries %s", ConcurrentRequestsHeader)
	}
}

func TestStats(t *testing.T) {
	s := newTestServer(t, Options{})
	w := s.World()
	svc := &w.Services[0]
	u0, u1 := svc.Users[0], svc.Users[1]
	get(t, s, "/v2/Services/"+svc.SID+"/Users")
	get(t, s, "/v2/Services/"+svc.SID+"/Users?PageSize=0")
	get(t, s, bindingsPath(svc.SID, u0.SID))
	get(t, s, bindingsPath(svc.SID, u0.SID))
	get(t, s, bindingsPath(svc.SID, u0.SID)+"?BindingType=apn")
	get(t, s, bindingsPath(svc.SID, url.PathEscape(u1.Identity)))
	get(t, s, bindingsPath(svc.SID, "nobody"))
	get(t, s, "/v2/Services")
	s.SetFaults(Faults{RateDrop: 1})
	if _, _, err := rawGet(context.Background(), freshClient(), s, bindingsPath(svc.SID, u1.SID)); err == nil {
		t.Fatal("dropped request succeeded")
	}
	s.SetFaults(Faults{RateTruncate: 1})
	if _, _, err := rawGet(context.Background(), freshClient(), s, bindingsPath(svc.SID, u1.SID)); err == nil {
		t.Fatal("truncated request read without error")
	}

	want := Stats{
		Requests:         10,
		UsersRequests:    2,
		BindingsRequests: 7,
		ByStatus:         map[int]int64{200: 5, 400: 1, 404: 2},
		PagesServedTwice: 1, // u0's first page, unfiltered, twice
		BindingsPagesByUser: map[string]int64{
			UserKey(svc.SID, u0.SID): 3,
			UserKey(svc.SID, u1.SID): 1,
		},
		Dropped:     1,
		Truncated:   1,
		MaxInFlight: 1,
		MaxAdmitted: 1,
	}
	if got := s.Stats(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Stats =\n%+v\nwant\n%+v", got, want)
	}
	// Stats returns a copy.
	st := s.Stats()
	st.ByStatus[200] = 99
	if s.Stats().ByStatus[200] != 5 {
		t.Errorf("Stats shares its maps with the server")
	}
}

// pageAll walks one user's bindings from a goroutine, reporting errors
// instead of failing the test.
func pageAll(s *Server, hc *http.Client, serviceSID, userSID string) ([]string, error) {
	var got []string
	target := bindingsPath(serviceSID, userSID) + "?PageSize=17"
	for target != "" {
		resp, body, err := rawGet(context.Background(), hc, s, target)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != 200 {
			return nil, fmt.Errorf("GET %s: %d %s", target, resp.StatusCode, body)
		}
		var p bindingsBody
		if err := json.Unmarshal(body, &p); err != nil {
			return nil, err
		}
		got = append(got, sids(p.Bindings)...)
		target = ""
		if p.Meta.NextPageURL != nil {
			u, err := url.Parse(*p.Meta.NextPageURL)
			if err != nil {
				return nil, err
			}
			target = u.EscapedPath() + "?" + u.RawQuery
		}
	}
	return got, nil
}

func TestConcurrentClients(t *testing.T) {
	s := newTestServer(t, Options{})
	w := s.World()
	var wg sync.WaitGroup
	errs := make(chan error, len(w.UserKeys()))
	for _, svc := range w.Services {
		for _, u := range svc.Users {
			wg.Go(func() {
				got, err := pageAll(s, http.DefaultClient, svc.SID, u.SID)
				if err == nil && !slices.Equal(got, sids(u.Bindings())) {
					err = fmt.Errorf("user %s: got %d bindings, want %d", u.SID, len(got), u.NumBindings)
				}
				if err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := s.Stats()
	if st.PagesServedTwice != 0 || len(st.BindingsPagesByUser) != len(w.UserKeys()) {
		t.Errorf("PagesServedTwice %d, users paged %d of %d", st.PagesServedTwice, len(st.BindingsPagesByUser), len(w.UserKeys()))
	}
}

func BenchmarkServeBindingsPage(b *testing.B) {
	w := NewWorld(WorldSpec{Seed: 1, Services: 1, UsersPerService: 50, MaxBindingsPerUser: 200})
	s := NewServer(Options{World: w})
	defer s.Close()
	u := heavyUser(&w.Services[0])
	target := bindingsPath(w.Services[0].SID, u.SID) + "?PageSize=50"
	for b.Loop() {
		resp, _, err := rawGet(context.Background(), http.DefaultClient, s, target)
		if err != nil || resp.StatusCode != 200 {
			b.Fatal(resp, err)
		}
	}
}

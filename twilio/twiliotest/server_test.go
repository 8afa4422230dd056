package twiliotest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/bindsync/bindsync/twilio"
)

// testSpec is small enough to keep tests fast and large enough for every
// service to have a user with three pages at PageSize 50.
var testSpec = WorldSpec{Seed: 11, Services: 2, UsersPerService: 30, MaxBindingsPerUser: 160}

// response is one raw HTTP answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

// twilioError is the error body, decoded strictly.
type twilioError struct {
	Code     int    `json:"code"`
	Message  string `json:"message"`
	MoreInfo string `json:"more_info"`
	Status   int    `json:"status"`
}

type bindingsBody struct {
	Bindings []twilio.Binding `json:"bindings"`
	Meta     twilio.Meta      `json:"meta"`
}

type usersBody struct {
	Users []twilio.User `json:"users"`
	Meta  twilio.Meta   `json:"meta"`
}

func newTestServer(t *testing.T, opts Options) *Server {
	t.Helper()
	if opts.World == nil {
		opts.World = NewWorld(testSpec)
	}
	s := NewServer(opts)
	t.Cleanup(s.Close)
	return s
}

// get sends GET s.URL()+target with the default credentials. target is an
// escaped path with an optional query, sent as is.
func get(t *testing.T, s *Server, target string) response {
	t.Helper()
	return do(t, s, http.MethodGet, target, s.opts.AccountSID, DefaultAuthToken)
}

func do(t *testing.T, s *Server, method, target, user, pass string) response {
	t.Helper()
	req, err := http.NewRequest(method, s.URL()+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, target, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body}
}

func decode[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(string(r.body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, r.body, err)
	}
	return v
}

// wantError checks a Twilio error response.
func wantError(t *testing.T, r response, status, code int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d (body %s)", r.status, status, r.body)
	}
	e := decode[twilioError](t, r)
	wantInfo := "https://www.twilio.com/docs/errors/" + itoa(code)
	if e.Code != code || e.Status != status || e.MoreInfo != wantInfo || e.Message == "" {
		t.Errorf("error body = %+v, want code %d status %d more_info %s", e, code, status, wantInfo)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func bindingsPath(serviceSID, userSegment string) string {
	return "/v2/Services/" + serviceSID + "/Users/" + userSegment + "/Bindings"
}

// local turns an absolute meta URL on chat.twilio.com into a target on the
// test server, keeping path and query byte-exact.
func local(t *testing.T, abs string) string {
	t.Helper()
	u, err := url.Parse(abs)
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "https" || u.Host != "chat.twilio.com" {
		t.Fatalf("meta URL %q is not absolute on https://chat.twilio.com", abs)
	}
	return u.EscapedPath() + "?" + u.RawQuery
}

// heavyUser returns the user of the service with the most bindings.
func heavyUser(s *Service) *User {
	var h *User
	for i := range s.Users {
		if u := &s.Users[i]; h == nil || u.NumBindings > h.NumBindings {
			h = u
		}
	}
	return h
}

// collect follows next_page_url from target to the end and returns the
// pages.
func collect(t *testing.T, s *Server, target string) []bindingsBody {
	t.Helper()
	var pages []bindingsBody
	for target != "" {
		r := get(t, s, target)
		if r.status != http.StatusOK {
			t.Fatalf("GET %s: status %d: %s", target, r.status, r.body)
		}
		p := decode[bindingsBody](t, r)
		pages = append(pages, p)
		target = ""
		if p.Meta.NextPageURL != nil {
			target = local(t, *p.Meta.NextPageURL)
		}
		if len(pages) > 100 {
			t.Fatal("paging does not end")
		}
	}
	return pages
}

func sids(bs []twilio.Binding) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = *b.SID
	}
	return out
}

func TestPagingHeavyUser(t *testing.T) {
	s := newTestServer(t, Options{})
	svc := &s.World().Services[0]
	u := heavyUser(svc)
	if u.NumBindings < HeavyBindings {
		t.Fatalf("heaviest user has %d bindings", u.NumBindings)
	}
	pages := collect(t, s, bindingsPath(svc.SID, u.SID)+"?PageSize=50")
	var got []twilio.Binding
	tokenRE := regexp.MustCompile(`^PT.*[+].*$`)
	for i, p := range pages {
		got = append(got, p.Bindings...)
		m := p.Meta
		listURL := "https://chat.twilio.com" + bindingsPath(svc.SID, u.SID)
		if m.Key != "bindings" || m.Page != i || m.PageSize != 50 || m.FirstPageURL != listURL+"?PageSize=50&Page=0" {
			t.Errorf("page %d meta = %+v", i, m)
		}
		if !strings.HasPrefix(m.URL, listURL+"?PageSize=50&Page="+itoa(i)) {
			t.Errorf("page %d url = %s", i, m.URL)
		}
		if (m.PreviousPageURL == nil) != (i == 0) {
			t.Errorf("page %d previous_page_url = %v", i, m.PreviousPageURL)
		}
		last := i == len(pages)-1
		if (m.NextPageURL == nil) != last {
			t.Errorf("page %d next_page_url = %v", i, m.NextPageURL)
		}
		if last {
			continue
		}
		q := must(url.Parse(*m.NextPageURL)).Query()
		tok := q.Get("PageToken")
		if !tokenRE.MatchString(tok) || !strings.Contains(tok, "/") || !strings.Contains(tok, "=") || !regexp.MustCompile(`\.\d+$`).MatchString(tok) {
			t.Errorf("page token %q lacks + / = or .digits", tok)
		}
		if q.Get("Page") != itoa(i+1) || q.Get("PageSize") != "50" {
			t.Errorf("next_page_url %s: Page/PageSize", *m.NextPageURL)
		}
	}
	if want := (u.NumBindings + 49) / 50; len(pages) != want {
		t.Errorf("%d pages, want %d", len(pages), want)
	}
	if !slices.Equal(sids(got), sids(u.Bindings())) {
		t.Errorf("paging collected %d bindings, want %d in order", len(got), u.NumBindings)
	}
	if gotJSON, wantJSON := must(json.Marshal(got)), must(json.Marshal(u.Bindings())); string(gotJSON) != string(wantJSON) {
		t.Errorf("served bindings differ from the world's")
	}

	// previous_page_url leads back to the page before.
	prev := get(t, s, local(t, *pages[2].Meta.PreviousPageURL))
	if p := decode[bindingsBody](t, prev); !slices.Equal(sids(p.Bindings), sids(pages[1].Bindings)) || p.Meta.Page != 1 {
		t.Errorf("previous page of page 2 = page %d with %d bindings", p.Meta.Page, len(p.Bindings))
	}

	st := s.Stats()
	key := UserKey(svc.SID, u.SID)
	if st.PagesServedTwice != 0 || st.BindingsPagesByUser[key] != int64(len(pages))+1 {
		t.Errorf("stats after one pass: twice %d, pages of user %d", st.PagesServedTwice, st.BindingsPagesByUser[key])
	}
	// Fetching page 1 again counts as a page served twice.
	get(t, s, local(t, *pages[0].Meta.NextPageURL))
	if st := s.Stats(); st.PagesServedTwice != 1 {
		t.Errorf("PagesServedTwice = %d after refetching a page, want 1", st.PagesServedTwice)
	}
}

func TestBindingTypeFilter(t *testing.T) {
	s := newTestServer(t, Options{})
	svc := &s.World().Services[1]
	u := heavyUser(svc)
	tests := []struct {
		name  string
		query string
		types []string
	}{
		{"one type", "BindingType=apn", []string{"apn"}},
		{"two types", "BindingType=gcm&BindingType=fcm", []string{"fcm", "gcm"}},
		{"repeated type", "BindingType=fcm&BindingType=fcm", []string{"fcm"}},
		{"none", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pages := collect(t, s, bindingsPath(svc.SID, u.SID)+"?PageSize=20&"+tt.query)
			var got []twilio.Binding
			for _, p := range pages {
				got = append(got, p.Bindings...)
				if p.Meta.NextPageURL != nil {
					q := must(url.Parse(*p.Meta.NextPageURL)).Query()
					if !slices.Equal(q["BindingType"], tt.types) {
						t.Errorf("next_page_url %s drops the filter %q", *p.Meta.NextPageURL, tt.types)
					}
				}
			}
			want := s.World().Bindings(svc.SID, u.SID, tt.types)
			if !slices.Equal(sids(got), sids(want)) {
				t.Errorf("collected %d bindings, want %d", len(got), len(want))
			}
			if len(want) < 21 {
				t.Fatalf("filter leaves %d bindings: not enough to page", len(want))
			}
		})
	}
}

func TestSpecialIdentities(t *testing.T) {
	s := newTestServer(t, Options{})
	svc := &s.World().Services[0]
	for _, id := range SpecialIdentities {
		t.Run(id, func(t *testing.T) {
			seg := url.PathEscape(id)
			r := get(t, s, bindingsPath(svc.SID, seg)+"?PageSize=1000")
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			p := decode[bindingsBody](t, r)
			want := s.World().Bindings(svc.SID, id, nil)
			if len(want) == 0 || string(must(json.Marshal(p.Bindings))) != string(must(json.Marshal(want))) {
				t.Errorf("served %d bindings, want %d", len(p.Bindings), len(want))
			}
			wantURL := "https://chat.twilio.com" + bindingsPath(svc.SID, seg) + "?PageSize=1000&Page=0"
			if p.Meta.URL != wantURL {
				t.Errorf("meta.url = %s, want %s", p.Meta.URL, wantURL)
			}
		})
	}
	// Wrongly escaped segments name other (unknown) users or paths.
	for _, target := range []string{
		bindingsPath(svc.SID, "a/b"),        // unescaped slash: another path
		bindingsPath(svc.SID, "pct%41"),     // unescaped percent: the user "pctA"
		bindingsPath(svc.SID, "a%252Fb"),    // escaped twice: the user "a%2Fb"
		bindingsPath(svc.SID, "space+name"), // '+' is not a space in a path
	} {
		wantError(t, get(t, s, target), http.StatusNotFound, 20404)
	}
}

func TestUsersList(t *testing.T) {
	s := newTestServer(t, Options{})
	svc := &s.World().Services[1]
	listUsers := func() []string {
		var got []string
		target := "/v2/Services/" + svc.SID + "/Users?PageSize=7"
		for target != "" {
			r := get(t, s, target)
			if r.status != http.StatusOK {
				t.Fatalf("GET %s: %d %s", target, r.status, r.body)
			}
			var p usersBody
			if err := json.Unmarshal(r.body, &p); err != nil {
				t.Fatal(err)
			}
			if p.Meta.Key != "users" || p.Meta.PageSize != 7 {
				t.Errorf("users meta = %+v", p.Meta)
			}
			for _, u := range p.Users {
				want := svc.User(u.SID)
				if want == nil || u.Identity == nil || *u.Identity != want.Identity || *u.ServiceSID != svc.SID || !u.DateCreated.Equal(want.DateCreated) {
					t.Errorf("user %+v does not match the world", u)
				}
				got = append(got, u.SID)
			}
			target = ""
			if p.Meta.NextPageURL != nil {
				target = local(t, *p.Meta.NextPageURL)
			}
		}
		return got
	}
	if got, want := listUsers(), s.World().UserSIDs(svc.SID); !slices.Equal(got, want) {
		t.Errorf("Users list = %d users, want %d in order", len(got), len(want))
	}

	// A deleted user leaves the list and its bindings 404, by SID or identity.
	gone := svc.Users[3]
	s.DeleteUser(svc.SID, gone.Identity)
	want := slices.DeleteFunc(s.World().UserSIDs(svc.SID), func(sid string) bool { return sid == gone.SID })
	if got := listUsers(); !slices.Equal(got, want) {
		t.Errorf("Users list after delete = %d users, want %d", len(got), len(want))
	}
	wantError(t, get(t, s, bindingsPath(svc.SID, gone.SID)), http.StatusNotFound, 20404)
	wantError(t, get(t, s, bindingsPath(svc.SID, url.PathEscape(gone.Identity))), http.StatusNotFound, 20404)
	if r := get(t, s, bindingsPath(svc.SID, svc.Users[4].SID)); r.status != http.StatusOK {
		t.Errorf("another user after delete: %d", r.status)
	}
}

func TestBadRequests(t *testing.T) {
	s := newTestServer(t, Options{MaxPageSize: 200, APIKeySID: "SK" + strings.Repeat("1", 32), APIKeySecret: "key-secret", AuthToken: DefaultAuthToken})
	svc := &s.World().Services[0]
	u := svc.Users[0]
	ok := bindingsPath(svc.SID, u.SID)
	tests := []struct {
		name         string
		method       string
		target       string
		user, pass   string
		status, code int
	}{
		{"PageSize zero", "GET", ok + "?PageSize=0", "", "", 400, 20001},
		{"PageSize above max", "GET", ok + "?PageSize=201", "", "", 400, 20001},
		{"PageSize negative", "GET", ok + "?PageSize=-1", "", "", 400, 20001},
		{"PageSize not a number", "GET", ok + "?PageSize=ten", "", "", 400, 20001},
		{"PageSize empty", "GET", ok + "?PageSize=", "", "", 400, 20001},
		{"Page not a number", "GET", ok + "?Page=x", "", "", 400, 20001},
		{"Page without token", "GET", ok + "?Page=2", "", "", 400, 20001},
		{"BindingType unknown", "GET", ok + "?BindingType=voip", "", "", 400, 20001},
		{"BindingType empty", "GET", ok + "?BindingType=", "", "", 400, 20001},
		{"BindingType upper case", "GET", ok + "?BindingType=APN", "", "", 400, 20001},
		{"ServiceSid short", "GET", bindingsPath("IS123", u.SID), "", "", 400, 20001},
		{"ServiceSid wrong prefix", "GET", bindingsPath("XX"+svc.SID[2:], u.SID), "", "", 400, 20001},
		{"Users ServiceSid bad", "GET", "/v2/Services/IS123/Users", "", "", 400, 20001},
		{"Users PageSize bad", "GET", "/v2/Services/" + svc.SID + "/Users?PageSize=0", "", "", 400, 20001},
		{"unknown service", "GET", bindingsPath("IS"+strings.Repeat("a", 32), u.SID), "", "", 404, 20404},
		{"unknown user", "GET", bindingsPath(svc.SID, "nobody"), "", "", 404, 20404},
		{"unknown user SID", "GET", bindingsPath(svc.SID, "US"+strings.Repeat("0", 32)), "", "", 404, 20404},
		{"unknown path", "GET", "/v2/Services/" + svc.SID + "/Channels", "", "", 404, 20404},
		{"trailing slash", "GET", ok + "/", "", "", 404, 20404},
		{"no credentials", "GET", ok, "-", "", 401, 20003},
		{"wrong token", "GET", ok, s.opts.AccountSID, "wrong", 401, 20003},
		{"wrong account", "GET", ok, "AC" + strings.Repeat("9", 32), DefaultAuthToken, 401, 20003},
		{"wrong key secret", "GET", ok, s.opts.APIKeySID, DefaultAuthToken, 401, 20003},
		{"POST", "POST", ok, "", "", 405, 20004},
		{"DELETE users", "DELETE", "/v2/Services/" + svc.SID + "/Users", "", "", 405, 20004},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, pass := tt.user, tt.pass
			switch user {
			case "":
				user, pass = s.opts.AccountSID, DefaultAuthToken
			case "-":
				user = ""
			}
			r := do(t, s, tt.method, tt.target, user, pass)
			wantError(t, r, tt.status, tt.code)
			if tt.status == 401 && r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
		})
	}

	// The largest page size and the API key are accepted.
	for _, cred := range [][2]string{{s.opts.AccountSID, DefaultAuthToken}, {s.opts.APIKeySID, "key-secret"}} {
		if r := do(t, s, "GET", ok+"?PageSize=200", cred[0], cred[1]); r.status != http.StatusOK {
			t.Errorf("credentials %s: status %d: %s", cred[0], r.status, r.body)
		}
	}
}

func TestDefaultMaxPageSize(t *testing.T) {
	s := newTestServer(t, Options{PageSizeCap: 30})
	svc := &s.World().Services[0]
	u := heavyUser(svc)
	if r := get(t, s, bindingsPath(svc.SID, u.SID)+"?PageSize=1001"); r.status != http.StatusBadRequest {
		t.Errorf("PageSize 1001: status %d", r.status)
	}
	r := get(t, s, bindingsPath(svc.SID, u.SID)+"?PageSize=1000")
	p := decode[bindingsBody](t, r)
	if r.status != http.StatusOK || p.Meta.PageSize != 30 || len(p.Bindings) != 30 {
		t.Fatalf("PageSize 1000 under cap 30: status %d, page_size %d, %d bindings", r.status, p.Meta.PageSize, len(p.Bindings))
	}
	if q := must(url.Parse(*p.Meta.NextPageURL)).Query(); q.Get("PageSize") != "30" {
		t.Errorf("next_page_url PageSize = %q, want the effective 30", q.Get("PageSize"))
	}
	def := decode[bindingsBody](t, get(t, s, bindingsPath(svc.SID, u.SID)))
	if def.Meta.PageSize != 30 || def.Meta.Page != 0 {
		t.Errorf("default page: %+v", def.Meta)
	}
}

func TestPageTokens(t *testing.T) {
	s := newTestServer(t, Options{})
	svc := &s.World().Services[0]
	u := heavyUser(svc)
	var other *User
	for i := range svc.Users {
		if svc.Users[i].SID != u.SID && svc.Users[i].NumBindings > 0 {
			other = &svc.Users[i]
			break
		}
	}
	first := decode[bindingsBody](t, get(t, s, bindingsPath(svc.SID, u.SID)+"?PageSize=10"))
	next := must(url.Parse(*first.Meta.NextPageURL))
	tok := next.Query().Get("PageToken")

	target := func(userSeg, token, extra string) string {
		return bindingsPath(svc.SID, userSeg) + "?PageSize=10&Page=1&PageToken=" + url.QueryEscape(token) + extra
	}
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	dot := strings.LastIndexByte(tok, '.')
	tests := []struct {
		name   string
		target string
		status int
	}{
		{"valid", target(u.SID, tok, ""), 200},
		{"valid by identity", target(url.PathEscape(u.Identity), tok, ""), 200},
		{"plus not escaped", bindingsPath(svc.SID, u.SID) + "?PageSize=10&Page=1&PageToken=" + tok, 400},
		{"forged", target(u.SID, "PT+/+/"+strings.Repeat("A", 64)+"==.5", ""), 400},
		{"not a token", target(u.SID, "hello", ""), 400},
		{"signed with another secret", target(u.SID, encodeToken(pageToken{kind: kindBindings, page: 1, cursor: u.SID, offset: 10, scope: scopeOf(kindBindings, svc.SID, u.SID, "")}, []byte("guess")), ""), 400},
		{"modified body", target(u.SID, flip(tok, 10), ""), 400},
		{"modified digits", target(u.SID, tok[:dot]+".99", ""), 400},
		{"digits removed", target(u.SID, tok[:dot], ""), 400},
		{"other user", target(other.SID, tok, ""), 400},
		{"other filter", target(u.SID, tok, "&BindingType=apn"), 400},
		{"page mismatch", bindingsPath(svc.SID, u.SID) + "?PageSize=10&Page=2&PageToken=" + url.QueryEscape(tok), 400},
		{"page missing", bindingsPath(svc.SID, u.SID) + "?PageSize=10&PageToken=" + url.QueryEscape(tok), 400},
		{"users list", "/v2/Services/" + svc.SID + "/Users?Page=1&PageToken=" + url.QueryEscape(tok), 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get(t, s, tt.target)
			if tt.status == 200 {
				if r.status != 200 {
					t.Fatalf("status %d: %s", r.status, r.body)
				}
				return
			}
			wantError(t, r, tt.status, 20001)
		})
	}

	// Another server of the same world accepts the token (a restarted fake).
	s2 := newTestServer(t, Options{World: s.World()})
	if r := get(t, s2, target(u.SID, tok, "")); r.status != 200 {
		t.Errorf("token on a second server of the world: %d %s", r.status, r.body)
	}

	// Revoked tokens are 400; a fresh first page issues tokens that work.
	s.RevokeTokens()
	wantError(t, get(t, s, target(u.SID, tok, "")), 400, 20001)
	fresh := decode[bindingsBody](t, get(t, s, bindingsPath(svc.SID, u.SID)+"?PageSize=10"))
	if r := get(t, s, local(t, *fresh.Meta.NextPageURL)); r.status != 200 {
		t.Errorf("token issued after revocation: %d %s", r.status, r.body)
	}
}

func FuzzDecodeToken(f *testing.F) {
	secret := []byte("fuzz secret")
	valid := encodeToken(pageToken{kind: kindBindings, dir: forward, page: 3, cursor: "BS" + strings.Repeat("ab", 16), offset: 150, epoch: 2}, secret)
	service := encodeToken(pageToken{kind: kindServiceBindings, page: 1, cursor: "BS" + strings.Repeat("cd", 16), user: "US" + strings.Repeat("12", 16), offset: 50}, secret)
	for _, s := range []string{valid, service, "", "PT", "PT.1", "PT+/+/==.0", valid[:len(valid)-1], strings.Replace(valid, "+", " ", -1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := decodeToken(s, secret)
		if err != nil {
			return
		}
		// Only tokens we signed decode, and they re-encode byte-exact.
		if again := encodeToken(tok, secret); again != s {
			t.Errorf("decoded %q re-encodes as %q", s, again)
		}
	})
}

func TestTokenShape(t *testing.T) {
	secret := []byte("k")
	tests := []pageToken{
		{kind: kindBindings, dir: forward, page: 1, cursor: "BS" + strings.Repeat("0", 32), offset: 50},
		{kind: kindUsers, dir: backward, page: 70000, cursor: "US" + strings.Repeat("f", 32), offset: 0, epoch: 9},
		{kind: kindServiceBindings, dir: forward, page: 2, cursor: "BS" + strings.Repeat("1", 32), user: "US" + strings.Repeat("e", 32), offset: 100, epoch: 1},
	}
	for _, want := range tests {
		s := encodeToken(want, secret)
		if !regexp.MustCompile(`^PT[A-Za-z0-9+/]*\+[A-Za-z0-9+/]*/[A-Za-z0-9+/]*==\.\d+$`).MatchString(s) {
			t.Errorf("token %q lacks + / == .digits", s)
		}
		got, err := decodeToken(s, secret)
		if err != nil || got != want {
			t.Errorf("decode(encode(%+v)) = %+v, %v", want, got, err)
		}
		if _, err := decodeToken(s, []byte("other")); err != errTokenForged {
			t.Errorf("token under another secret: err = %v, want errTokenForged", err)
		}
	}
}

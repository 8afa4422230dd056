package twilio

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestNew(t *testing.T) {
	creds := func(c Config) Config {
		c.Username, c.Password = testUsername, testPassword
		return c
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means success
	}{
		{name: "defaults", cfg: creds(Config{})},
		{name: "trailing slash", cfg: creds(Config{BaseURL: "https://chat.twilio.com/"})},
		{name: "local http", cfg: creds(Config{BaseURL: "http://127.0.0.1:8080"})},
		{name: "no scheme", cfg: creds(Config{BaseURL: "chat.twilio.com"}), wantErr: "absolute http or https URL"},
		{name: "ftp", cfg: creds(Config{BaseURL: "ftp://chat.twilio.com"}), wantErr: "absolute http or https URL"},
		{name: "unparsable", cfg: creds(Config{BaseURL: "http://[::1"}), wantErr: "not a valid URL"},
		{name: "path", cfg: creds(Config{BaseURL: "https://chat.twilio.com/v2"}), wantErr: "scheme and host only"},
		{name: "query", cfg: creds(Config{BaseURL: "https://chat.twilio.com?x=1"}), wantErr: "scheme and host only"},
		{
			name:    "userinfo",
			cfg:     creds(Config{BaseURL: "https://" + testUsername + ":" + testPassword + "@chat.twilio.com"}),
			wantErr: "must not hold credentials",
		},
		{name: "no username", cfg: Config{Password: testPassword}, wantErr: "Username"},
		{name: "no password", cfg: Config{Username: testUsername}, wantErr: "Password"},
		{name: "negative timeout", cfg: creds(Config{RequestTimeout: -time.Second}), wantErr: "negative"},
		{name: "negative attempts", cfg: creds(Config{MaxAttempts: -1}), wantErr: "negative"},
		{name: "negative in flight", cfg: creds(Config{MaxInFlight: -1}), wantErr: "negative"},
		{name: "max below base", cfg: creds(Config{BackoffBase: time.Second, BackoffMax: time.Millisecond}), wantErr: "below BackoffBase"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cfg)
			assertNoSecret(t, err)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if c == nil || c.base.Path != "" || c.base.User != nil {
				t.Fatalf("base URL = %v, want scheme and host only", c.base)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	c, err := New(Config{Username: testUsername, Password: testPassword})
	if err != nil {
		t.Fatal(err)
	}
	got := []any{c.base.String(), c.userAgent, c.requestTimeout, c.maxAttempts, c.backoffBase, c.backoffMax, c.limit.max, c.InFlightLimit()}
	want := []any{"https://chat.twilio.com", "bindsync/dev", 30 * time.Second, 6, 200 * time.Millisecond, 30 * time.Second, 16, 8}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults = %v, want %v", got, want)
	}
}

func TestNewDoesNotChangeCallersHTTPClient(t *testing.T) {
	hc := &http.Client{Timeout: time.Minute}
	c, err := New(Config{Username: testUsername, Password: testPassword, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	if hc.CheckRedirect != nil {
		t.Error("New set CheckRedirect on the caller's http.Client")
	}
	if c.http == hc || c.http.Timeout != time.Minute || c.http.CheckRedirect == nil {
		t.Error("client does not use a redirect-refusing copy of the caller's http.Client")
	}
}

func TestListBindingsFirstPage(t *testing.T) {
	body := `{
	  "meta": {"key": "bindings", "page": 0, "page_size": 50, "next_page_url": null, "previous_page_url": null,
	    "url": "https://chat.twilio.com/v2/Services/IS0123456789abcdef0123456789abcdef/Users/alice/Bindings?PageSize=50&Page=0",
	    "first_page_url": "https://chat.twilio.com/v2/Services/IS0123456789abcdef0123456789abcdef/Users/alice/Bindings?PageSize=50&Page=0"},
	  "bindings": [{
	    "sid": "BSaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "account_sid": "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	    "service_sid": "IS0123456789abcdef0123456789abcdef", "date_created": "2016-10-21T11:37:03Z",
	    "date_updated": "2016-10-21T11:37:04Z", "endpoint": "TestUser-endpoint", "identity": "alice",
	    "user_sid": "USaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "credential_sid": null, "binding_type": "gcm",
	    "message_types": ["removed_from_channel", "new_message"], "url": null, "unknown_new_field": 1
	  }]
	}`
	srv := newScriptServer(t, respond(http.StatusOK, body))
	c, _ := newTestClient(t, srv.URL, func(cfg *Config) { cfg.UserAgent = "bindsync/1.2.3" })

	page, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice", PageSize: 50})
	if err != nil {
		t.Fatal(err)
	}
	want := Binding{
		SID:          ptr("BSaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
		AccountSID:   ptr("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
		ServiceSID:   ptr(testService),
		DateCreated:  ptr(time.Date(2016, 10, 21, 11, 37, 3, 0, time.UTC)),
		DateUpdated:  ptr(time.Date(2016, 10, 21, 11, 37, 4, 0, time.UTC)),
		Endpoint:     ptr("TestUser-endpoint"),
		Identity:     ptr("alice"),
		UserSID:      ptr("USaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
		BindingType:  ptr("gcm"),
		MessageTypes: []string{"removed_from_channel", "new_message"},
	}
	if len(page.Bindings) != 1 || !reflect.DeepEqual(page.Bindings[0], want) {
		t.Errorf("bindings = %+v, want [%+v]", page.Bindings, want)
	}
	if page.Next != "" || page.Meta.Key != "bindings" || page.Meta.PageSize != 50 || page.Meta.NextPageURL != nil {
		t.Errorf("meta = %+v, next = %q; want last page of size 50", page.Meta, page.Next)
	}

	reqs := srv.requests()
	if len(reqs) != 1 {
		t.Fatalf("server saw %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	wantReq := seen{
		RequestURI: "/v2/Services/" + testService + "/Users/alice/Bindings?PageSize=50",
		User:       testUsername, Pass: testPassword, HasAuth: true,
		UserAgent: "bindsync/1.2.3", Accept: "application/json",
	}
	got := seen{RequestURI: r.RequestURI, User: r.User, Pass: r.Pass, HasAuth: r.HasAuth, UserAgent: r.UserAgent, Accept: r.Accept}
	if !reflect.DeepEqual(got, wantReq) {
		t.Errorf("request = %+v, want %+v", got, wantReq)
	}
}

func TestListUsers(t *testing.T) {
	usersPath := "/v2/Services/" + testService + "/Users"
	first := `{"meta": {"key": "users", "page_size": 100, "next_page_url": "https://chat.twilio.com` + usersPath + `?PageSize=100&Page=1&PageToken=PAUS1.5"},
	  "users": [{"sid": "USaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "identity": "jing", "service_sid": "` + testService + `", "date_created": "2016-03-24T21:05:19Z"}]}`
	last := `{"meta": {"key": "users", "page_size": 100, "next_page_url": null}, "users": [{"sid": "USbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "identity": null}]}`
	srv := newScriptServer(t, respond(http.StatusOK, first), respond(http.StatusOK, last))
	kinds := []string{}
	c, _ := newTestClient(t, srv.URL, func(cfg *Config) { cfg.Hooks.OnRequest = func(k string) { kinds = append(kinds, k) } })

	page, err := c.ListUsers(context.Background(), UsersQuery{ServiceSID: testService, PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	wantUser := User{SID: "USaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", Identity: ptr("jing"), ServiceSID: ptr(testService),
		DateCreated: ptr(time.Date(2016, 3, 24, 21, 5, 19, 0, time.UTC))}
	if len(page.Users) != 1 || !reflect.DeepEqual(page.Users[0], wantUser) {
		t.Errorf("users = %+v, want [%+v]", page.Users, wantUser)
	}
	if want := usersPath + "?PageSize=100&Page=1&PageToken=PAUS1.5"; page.Next != want {
		t.Fatalf("Next = %q, want %q", page.Next, want)
	}
	page, err = c.ListUsers(context.Background(), UsersQuery{ServiceSID: testService, PageSize: 7, Next: page.Next})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Users) != 1 || page.Users[0].SID != "USbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" || page.Users[0].Identity != nil || page.Next != "" {
		t.Errorf("last page = %+v, want one user with null identity and no Next", page)
	}
	var uris []string
	for _, r := range srv.requests() {
		uris = append(uris, r.RequestURI)
	}
	wantURIs := []string{usersPath + "?PageSize=100", usersPath + "?PageSize=100&Page=1&PageToken=PAUS1.5"}
	if !reflect.DeepEqual(uris, wantURIs) {
		t.Errorf("request URIs = %q, want %q", uris, wantURIs)
	}
	if !reflect.DeepEqual(kinds, []string{"users", "users"}) {
		t.Errorf("OnRequest kinds = %q, want two \"users\"", kinds)
	}
}

func TestIdentityEscaping(t *testing.T) {
	tests := []struct {
		user    string
		segment string // as it must appear in the request line
	}{
		{"alice", "alice"},
		{"USaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "USaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
		{"a/b", "a%2Fb"},
		{"q?z", "q%3Fz"},
		{"pct%41", "pct%2541"},
		{"space name", "space%20name"},
		{"ünï", "%C3%BCn%C3%AF"},
		{"#hash", "%23hash"},
		{"..", "%2E%2E"},
		{"a+b=c", "a+b=c"},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			path := "/v2/Services/" + testService + "/Users/" + tt.segment + "/Bindings"
			srv := newScriptServer(t,
				respond(http.StatusOK, pageBody(t, "https://chat.twilio.com"+path+"?PageToken=T1", "BS1")),
				respond(http.StatusOK, pageBody(t, "", "BS2")))
			c, _ := newTestClient(t, srv.URL, nil)

			page, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: tt.user})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: tt.user, Next: page.Next}); err != nil {
				t.Fatal(err)
			}
			reqs := srv.requests()
			if len(reqs) != 2 || reqs[0].RequestURI != path || reqs[1].RequestURI != path+"?PageToken=T1" {
				t.Fatalf("request URIs = %+v, want %q then with ?PageToken=T1", reqs, path)
			}
			for _, r := range reqs {
				segs := strings.Split(r.EscapedPath, "/")
				if len(segs) != 7 {
					t.Fatalf("server saw %d path segments in %q, want 7", len(segs), r.EscapedPath)
				}
				if got := unescape(t, segs[5]); got != tt.user {
					t.Errorf("server saw user segment %q, want %q", got, tt.user)
				}
			}
		})
	}
}

func unescape(t *testing.T, seg string) string {
	t.Helper()
	v, err := url.PathUnescape(seg)
	if err != nil {
		t.Fatalf("unescape %q: %v", seg, err)
	}
	return v
}

func TestPageTokenRoundTrip(t *testing.T) {
	path := bindingsPath("alice")
	tests := []struct {
		name     string
		rawQuery string // of next_page_url, to be sent back byte for byte
		token    string // PageToken as the server decodes it
	}{
		{"raw plus slash equals dot", "PageSize=50&Page=1&PageToken=abc+/=.5", "abc /=.5"},
		{"dot digits", "PageSize=50&Page=1&PageToken=x.123", "x.123"},
		{"escaped", "PageSize=50&Page=1&PageToken=abc%2B%2F%3D.5", "abc+/=.5"},
		{"escaped plus only", "PageToken=%2B", "+"},
		{"double escaped", "PageToken=%252B&Page=2", "%2B"},
		{"exponent", "Page=3&PageToken=PT1.5e3==", "PT1.5e3=="},
		{"sub-delims", "PageToken=a,c:@!$'()*~", "a,c:@!$'()*~"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newScriptServer(t,
				respond(http.StatusOK, pageBody(t, "https://chat.twilio.com"+path+"?"+tt.rawQuery, "BS1")),
				respond(http.StatusOK, pageBody(t, "", "BS2")))
			c, _ := newTestClient(t, srv.URL, nil)

			page, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice"})
			if err != nil {
				t.Fatal(err)
			}
			if want := path + "?" + tt.rawQuery; page.Next != want {
				t.Fatalf("Next = %q, want %q", page.Next, want)
			}

			// Through a JSON checkpoint and a fresh client, as after a crash.
			type checkpoint struct{ Next string }
			data, err := json.Marshal(checkpoint{page.Next})
			if err != nil {
				t.Fatal(err)
			}
			var saved checkpoint
			if err := json.Unmarshal(data, &saved); err != nil {
				t.Fatal(err)
			}
			resumed, _ := newTestClient(t, srv.URL, nil)
			last, err := resumed.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice", Next: saved.Next})
			if err != nil {
				t.Fatal(err)
			}
			if len(last.Bindings) != 1 || *last.Bindings[0].SID != "BS2" || last.Next != "" {
				t.Errorf("second page = %+v, want BS2 and no Next", last)
			}
			reqs := srv.requests()
			if len(reqs) != 2 {
				t.Fatalf("server saw %d requests, want 2", len(reqs))
			}
			if r := reqs[1]; r.RequestURI != path+"?"+tt.rawQuery || r.RawQuery != tt.rawQuery {
				t.Errorf("second request = %q (query %q), want query %q byte for byte", r.RequestURI, r.RawQuery, tt.rawQuery)
			}
			if got := reqs[1].Query["PageToken"]; len(got) != 1 || got[0] != tt.token {
				t.Errorf("server decoded PageToken %q, want %q", got, tt.token)
			}
		})
	}
}

func TestFiltersKeptAcrossPages(t *testing.T) {
	path := bindingsPath("alice")
	next := func(page int, token string) string {
		return "https://chat.twilio.com" + path + "?BindingType=apn&BindingType=fcm&PageSize=2&Page=" +
			string(rune('0'+page)) + "&PageToken=" + token
	}
	srv := newScriptServer(t,
		respond(http.StatusOK, pageBody(t, next(1, "PT.1"), "BS1", "BS2")),
		respond(http.StatusOK, pageBody(t, next(2, "PT.2"))), // empty, yet not the last page
		respond(http.StatusOK, pageBody(t, "", "BS3")))
	c, _ := newTestClient(t, srv.URL, nil)

	var sids []string
	q := BindingsQuery{ServiceSID: testService, User: "alice", BindingTypes: []string{"apn", "fcm"}, PageSize: 2}
	for range 10 {
		page, err := c.ListBindings(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Bindings {
			sids = append(sids, *b.SID)
		}
		if page.Next == "" {
			break
		}
		q.Next = page.Next
	}
	if want := []string{"BS1", "BS2", "BS3"}; !reflect.DeepEqual(sids, want) {
		t.Errorf("bindings = %q, want %q", sids, want)
	}
	reqs := srv.requests()
	if len(reqs) != 3 {
		t.Fatalf("server saw %d requests, want 3", len(reqs))
	}
	if want := "BindingType=apn&BindingType=fcm&PageSize=2"; reqs[0].RawQuery != want {
		t.Errorf("first query = %q, want %q", reqs[0].RawQuery, want)
	}
	for i, r := range reqs {
		if got := r.Query["BindingType"]; !reflect.DeepEqual(got, []string{"apn", "fcm"}) {
			t.Errorf("request %d BindingType = %q, want [apn fcm]", i, got)
		}
		if got := r.Query["PageSize"]; !reflect.DeepEqual(got, []string{"2"}) {
			t.Errorf("request %d PageSize = %q, want [2]", i, got)
		}
	}
	if got := reqs[2].Query["PageToken"]; !reflect.DeepEqual(got, []string{"PT.2"}) {
		t.Errorf("third request PageToken = %q, want [PT.2]", got)
	}
}

func TestNextPageHost(t *testing.T) {
	path := bindingsPath("a/b")
	other := newScriptServer(t, respond(http.StatusOK, "{}"))
	tests := []struct {
		name    string
		next    string // next_page_url; "{base}" is replaced by the server URL
		foreign bool
	}{
		{"twilio host", "https://chat.twilio.com" + path + "?PageToken=x", false},
		{"twilio host upper case", "https://CHAT.TWILIO.COM" + path + "?PageToken=x", false},
		{"configured host", "{base}" + path + "?PageToken=x", false},
		{"other host", "https://evil.example.com" + path + "?PageToken=x", true},
		{"twilio host over http", "http://chat.twilio.com" + path + "?PageToken=x", true},
		{"twilio lookalike", "https://chat.twilio.com.evil.example.com" + path + "?PageToken=x", true},
		{"userinfo", "https://" + testUsername + ":" + testPassword + "@chat.twilio.com" + path + "?PageToken=x", true},
		{"other port", other.URL + path + "?PageToken=x", true},
		{"relative", path + "?PageToken=x", true},
		{"scheme relative", "//evil.example.com" + path + "?PageToken=x", true},
		{"slash unescaped", "https://chat.twilio.com/v2/Services/" + testService + "/Users/a/b/Bindings?PageToken=x", true},
		{"other user", "https://chat.twilio.com" + bindingsPath("bob") + "?PageToken=x", true},
		{"other service", "https://chat.twilio.com/v2/Services/ISffffffffffffffffffffffffffffffff/Users/a%2Fb/Bindings?PageToken=x", true},
		{"other list", "https://chat.twilio.com/v2/Services/" + testService + "/Users?PageToken=x", true},
		{"trailing slash", "https://chat.twilio.com" + path + "/?PageToken=x", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var srv *scriptServer
			srv = newScriptServer(t, func(w http.ResponseWriter, r *http.Request) {
				respond(http.StatusOK, pageBody(t, strings.ReplaceAll(tt.next, "{base}", srv.URL), "BS1"))(w, r)
			})
			c, _ := newTestClient(t, srv.URL, nil)

			page, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "a/b"})
			if n := len(srv.requests()); n != 1 {
				t.Errorf("server saw %d requests, want 1", n)
			}
			assertNoSecret(t, err)
			if !tt.foreign {
				if err != nil {
					t.Fatal(err)
				}
				if want := path + "?PageToken=x"; page.Next != want {
					t.Errorf("Next = %q, want %q", page.Next, want)
				}
				return
			}
			if !errors.Is(err, ErrForeignNextPage) || Retryable(err) {
				t.Fatalf("error = %v (retryable %v), want ErrForeignNextPage, not retryable", err, Retryable(err))
			}
		})
	}
	if n := len(other.requests()); n != 0 {
		t.Errorf("other server saw %d requests, want 0", n)
	}
}

func TestStoredNextChecked(t *testing.T) {
	path := bindingsPath("alice")
	tests := []struct {
		name string
		next string
	}{
		{"other user", bindingsPath("bob") + "?PageToken=x"},
		{"absolute URL", "https://evil.example.com" + path + "?PageToken=x"},
		{"scheme relative", "//evil.example.com" + path + "?PageToken=x"},
		{"no leading slash", strings.TrimPrefix(path, "/") + "?PageToken=x"},
		{"space", path + "?PageToken=a b"},
		{"newline", path + "?PageToken=a\r\nHost: evil"},
		{"fragment", path + "?PageToken=a#b"},
		{"non-ASCII", path + "?PageToken=ü"},
		{"unescaped path byte", "/v2/Services/" + testService + "/Users/al\"ice/Bindings"},
	}
	srv := newScriptServer(t, respond(http.StatusOK, pageBody(t, "")))
	c, _ := newTestClient(t, srv.URL, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice", Next: tt.next})
			if !errors.Is(err, ErrForeignNextPage) {
				t.Errorf("error = %v, want ErrForeignNextPage", err)
			}
		})
	}
	if n := len(srv.requests()); n != 0 {
		t.Errorf("server saw %d requests, want 0", n)
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	other := newScriptServer(t, respond(http.StatusOK, pageBody(t, "")))
	srv := newScriptServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.RequestURI(), http.StatusFound)
	})
	c, _ := newTestClient(t, srv.URL, nil)

	_, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice"})
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusFound || Retryable(err) {
		t.Fatalf("error = %v, want a final APIError with status 302", err)
	}
	if n := len(other.requests()); n != 0 {
		t.Errorf("redirect target saw %d requests, want 0", n)
	}
}

func TestQueryChecked(t *testing.T) {
	srv := newScriptServer(t, respond(http.StatusOK, pageBody(t, "")))
	c, _ := newTestClient(t, srv.URL, nil)
	ctx := context.Background()
	errs := []error{}
	_, err := c.ListBindings(ctx, BindingsQuery{User: "alice"})
	errs = append(errs, err)
	_, err = c.ListBindings(ctx, BindingsQuery{ServiceSID: testService})
	errs = append(errs, err)
	_, err = c.ListBindings(ctx, BindingsQuery{ServiceSID: testService, User: "alice", PageSize: -1})
	errs = append(errs, err)
	_, err = c.ListUsers(ctx, UsersQuery{})
	errs = append(errs, err)
	_, err = c.ListUsers(ctx, UsersQuery{ServiceSID: testService, PageSize: -1})
	errs = append(errs, err)
	for i, err := range errs {
		if err == nil {
			t.Errorf("query %d: no error", i)
		}
	}
	if n := len(srv.requests()); n != 0 {
		t.Errorf("server saw %d requests, want 0", n)
	}
}

func TestHooksCountRequests(t *testing.T) {
	srv := newScriptServer(t, twilioError(http.StatusServiceUnavailable, 20503, "busy"), respond(http.StatusOK, pageBody(t, "")))
	var kinds []string
	var inFlight, peak int
	c, _ := newTestClient(t, srv.URL, func(cfg *Config) {
		cfg.Hooks.OnRequest = func(k string) { kinds = append(kinds, k) }
		cfg.Hooks.InFlight = func(d int) { inFlight += d; peak = max(peak, inFlight) }
	})
	if _, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice"}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(kinds, []string{"bindings", "bindings"}) || inFlight != 0 || peak != 1 {
		t.Errorf("kinds = %q, in flight = %d, peak = %d; want two bindings attempts, back to 0, peak 1", kinds, inFlight, peak)
	}
}

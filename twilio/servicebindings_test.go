package twilio

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// servicePath is the escaped path of the service-wide Bindings list of
// testService.
var servicePath = serviceBindingsResource(testService).escapedPath()

// servicePage is a page of the service-wide list as JSON: one binding per
// SID, of user alice, with links.
func servicePage(nextPageURL string, sids ...string) string {
	next := "null"
	if nextPageURL != "" {
		next = strconv.Quote(nextPageURL)
	}
	var records []string
	for _, sid := range sids {
		records = append(records, `{"sid": "`+sid+`", "service_sid": "`+testService+`", "identity": "alice", "binding_type": "apn",
		  "message_types": [], "url": "https://chat.twilio.com/v2/Services/`+testService+`/Bindings/`+sid+`",
		  "links": {"user": "https://chat.twilio.com/v2/Services/`+testService+`/Users/alice"}}`)
	}
	return `{"meta": {"key": "bindings", "page_size": 50, "next_page_url": ` + next + `}, "bindings": [` + strings.Join(records, ",") + `]}`
}

func TestListServiceBindingsFirstPage(t *testing.T) {
	body := `{
	  "meta": {"page": 0, "page_size": 50, "key": "bindings", "next_page_url": null, "previous_page_url": null,
	    "first_page_url": "https://chat.twilio.com/v2/Services/` + testService + `/Bindings?PageSize=50&Page=0",
	    "url": "https://chat.twilio.com/v2/Services/` + testService + `/Bindings?PageSize=50&Page=0"},
	  "bindings": [{
	    "sid": "BSaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "account_sid": "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	    "service_sid": "` + testService + `", "date_created": "2016-10-21T11:37:03Z",
	    "date_updated": "2016-10-21T11:37:03Z", "endpoint": "TestUser-endpoint", "identity": "a/b",
	    "binding_type": "gcm", "credential_sid": "CRaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	    "message_types": ["removed_from_channel", "new_message"],
	    "url": "https://chat.twilio.com/v2/Services/` + testService + `/Bindings/BSaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	    "links": {"user": "https://chat.twilio.com/v2/Services/` + testService + `/Users/a%2Fb"}
	  }]
	}`
	srv := newScriptServer(t, respond(http.StatusOK, body))
	var kinds []string
	c, _ := newTestClient(t, srv.URL, func(cfg *Config) { cfg.Hooks.OnRequest = func(kind string) { kinds = append(kinds, kind) } })

	page, err := c.ListServiceBindings(context.Background(), ServiceBindingsQuery{
		ServiceSID:   testService,
		BindingTypes: []string{"gcm", "apn"},
		Identities:   []string{"a/b", "plus+sign", "space name"},
		PageSize:     50,
	})
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2016, 10, 21, 11, 37, 3, 0, time.UTC)
	want := ServiceBinding{
		Binding: Binding{
			SID:           ptr("BSaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
			AccountSID:    ptr("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
			ServiceSID:    ptr(testService),
			DateCreated:   &created,
			DateUpdated:   &created,
			Endpoint:      ptr("TestUser-endpoint"),
			Identity:      ptr("a/b"),
			CredentialSID: ptr("CRaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
			BindingType:   ptrTo("gcm"),
			MessageTypes:  []string{"removed_from_channel", "new_message"},
			URL:           ptr("https://chat.twilio.com/v2/Services/" + testService + "/Bindings/BSaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
		},
		Links: &BindingLinks{User: ptr("https://chat.twilio.com/v2/Services/" + testService + "/Users/a%2Fb")},
	}
	if len(page.Bindings) != 1 || !reflect.DeepEqual(page.Bindings[0], want) {
		t.Errorf("bindings = %+v, want [%+v]", page.Bindings, want)
	}
	if page.Next != "" || page.Meta.PageSize != 50 {
		t.Errorf("meta = %+v, next %q; want the last page of size 50", page.Meta, page.Next)
	}
	if got := page.Bindings[0].LinkedUser(); got != "a/b" {
		t.Errorf("LinkedUser = %q, want a/b", got)
	}
	reqs := srv.requests()
	if len(reqs) != 1 {
		t.Fatalf("server saw %d requests, want 1", len(reqs))
	}
	wantURI := servicePath + "?BindingType=gcm&BindingType=apn&Identity=a%2Fb&Identity=plus%2Bsign&Identity=space+name&PageSize=50"
	if r := reqs[0]; r.RequestURI != wantURI || r.User != testUsername || r.Pass != testPassword {
		t.Errorf("request %q as %q, want %q with the credentials", r.RequestURI, r.User, wantURI)
	}
	if got := reqs[0].Query["Identity"]; !slices.Equal(got, []string{"a/b", "plus+sign", "space name"}) {
		t.Errorf("server decoded Identity %q", got)
	}
	if !slices.Equal(kinds, []string{"service_bindings"}) {
		t.Errorf("OnRequest kinds = %q, want [service_bindings]", kinds)
	}
}

func TestListServiceBindingsRefusesBadQueries(t *testing.T) {
	srv := newScriptServer(t, respond(http.StatusOK, servicePage("")))
	c, _ := newTestClient(t, srv.URL, nil)
	for _, tt := range []struct {
		q    ServiceBindingsQuery
		want string
	}{
		{ServiceBindingsQuery{}, "ServiceSID must not be empty"},
		{ServiceBindingsQuery{ServiceSID: testService, PageSize: -1}, "PageSize must not be negative (got -1)"},
		{ServiceBindingsQuery{ServiceSID: testService, Identities: []string{"alice", ""}}, "Identities[1] is empty"},
		// A Next of a user's list, or of another service, is not a page of
		// this list.
		{ServiceBindingsQuery{ServiceSID: testService, Next: bindingsPath("alice") + "?PageToken=x"}, "is not a page of " + servicePath},
		{ServiceBindingsQuery{ServiceSID: testService, Next: "/v2/Services/ISffffffffffffffffffffffffffffffff/Bindings?PageToken=x"}, "names service"},
	} {
		_, err := c.ListServiceBindings(context.Background(), tt.q)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("query %+v: error = %v, want one containing %q", tt.q, err, tt.want)
		}
	}
	if n := len(srv.requests()); n != 0 {
		t.Errorf("server saw %d requests, want 0", n)
	}
}

// A next page must name the same service's list with the same filters;
// its token is sent back byte for byte.
func TestServiceBindingsNextPage(t *testing.T) {
	const token = "PT+/+/abc==.50"
	tests := []struct {
		name       string
		types, ids []string
		next       string // next_page_url
		ok         bool
	}{
		{"same filters in another order", []string{"fcm", "apn"}, []string{"b", "a/b"},
			"https://chat.twilio.com" + servicePath + "?PageSize=50&Page=1&PageToken=" + token + "&BindingType=apn&BindingType=fcm&Identity=a%2Fb&Identity=b", true},
		{"no filters", nil, nil, "https://chat.twilio.com" + servicePath + "?PageSize=50&Page=1&PageToken=" + token, true},
		{"configured host", nil, nil, "{base}" + servicePath + "?PageToken=" + token, true},
		{"identity dropped", nil, []string{"a"}, "https://chat.twilio.com" + servicePath + "?PageToken=" + token, false},
		{"identity added", nil, nil, "https://chat.twilio.com" + servicePath + "?Identity=a&PageToken=" + token, false},
		{"identity changed", nil, []string{"a"}, "https://chat.twilio.com" + servicePath + "?Identity=b&PageToken=" + token, false},
		{"binding type widened", []string{"apn"}, nil, "https://chat.twilio.com" + servicePath + "?BindingType=apn&BindingType=gcm&PageToken=" + token, false},
		{"another service", nil, nil, "https://chat.twilio.com/v2/Services/ISffffffffffffffffffffffffffffffff/Bindings?PageToken=" + token, false},
		{"a user's list", nil, nil, "https://chat.twilio.com" + bindingsPath("alice") + "?PageToken=" + token, false},
		{"another host", nil, nil, "https://evil.example.com" + servicePath + "?PageToken=" + token, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var srv *scriptServer
			srv = newScriptServer(t,
				func(w http.ResponseWriter, r *http.Request) {
					respond(http.StatusOK, servicePage(strings.ReplaceAll(tt.next, "{base}", srv.URL), "BS1"))(w, r)
				},
				respond(http.StatusOK, servicePage("", "BS2")))
			c, _ := newTestClient(t, srv.URL, nil)
			q := ServiceBindingsQuery{ServiceSID: testService, BindingTypes: tt.types, Identities: tt.ids}
			page, err := c.ListServiceBindings(context.Background(), q)
			if !tt.ok {
				if !errors.Is(err, ErrForeignNextPage) || Retryable(err) {
					t.Fatalf("error = %v, want ErrForeignNextPage", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			q.Next = page.Next
			last, err := c.ListServiceBindings(context.Background(), q)
			if err != nil {
				t.Fatal(err)
			}
			if len(last.Bindings) != 1 || *last.Bindings[0].SID != "BS2" || last.Next != "" {
				t.Errorf("second page = %+v, want BS2 and no Next", last)
			}
			reqs := srv.requests()
			if len(reqs) != 2 || !strings.HasSuffix(tt.next, reqs[1].RequestURI) {
				t.Fatalf("requests %+v: want the second to be the tail of %q", reqs, tt.next)
			}
			if got := reqs[1].Query["PageToken"]; !slices.Equal(got, []string{strings.ReplaceAll(token, "+", " ")}) {
				t.Errorf("server decoded PageToken %q, want the token as sent", got)
			}
		})
	}
}

func TestServiceBindingsPageSizeFallback(t *testing.T) {
	srv := newScriptServer(t, strictPageSize(t, MaxServiceBindingsPageSize, "bindings"))
	var mu sync.Mutex
	var calls []fallbackCall
	c, _ := newTestClient(t, srv.URL, func(cfg *Config) {
		cfg.Hooks.OnPageSizeFallback = func(kind string, asked, used int) {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, fallbackCall{kind, asked, used})
		}
	})
	ctx := context.Background()
	for range 2 {
		if _, err := c.ListServiceBindings(ctx, ServiceBindingsQuery{ServiceSID: testService, PageSize: 1000}); err != nil {
			t.Fatal(err)
		}
	}
	// The user lists have a fallback of their own.
	if _, err := c.ListBindings(ctx, BindingsQuery{ServiceSID: testService, User: "alice", PageSize: 1000}); err != nil {
		t.Fatal(err)
	}
	var sizes []string
	for _, r := range srv.requests() {
		sizes = append(sizes, r.Query["PageSize"][0])
	}
	if want := []string{"1000", "50", "50", "1000", "50"}; !slices.Equal(sizes, want) {
		t.Errorf("PageSize asked = %q, want %q", sizes, want)
	}
	want := []fallbackCall{{"service_bindings", 1000, 50}, {"bindings", 1000, 50}}
	if !reflect.DeepEqual(calls, want) {
		t.Errorf("fallbacks = %+v, want %+v", calls, want)
	}
}

func TestServiceBindingsErrors(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		next    string
		is      error
	}{
		{"unknown service", twilioError(404, 20404, "The requested resource was not found"), "", ErrNotFound},
		{"token rejected", twilioError(400, 20001, "Invalid PageToken"), servicePath + "?PageToken=x", ErrPageTokenRejected},
		{"credentials rejected", twilioError(401, 20003, "Authenticate"), "", ErrUnauthorized},
		{"no list", respond(200, `{"meta": {"key": "bindings"}}`), "", ErrBadResponse},
		{"body over the limit", respond(200, strings.Repeat(" ", 4<<10)+servicePage("")), "", ErrResponseTooLarge},
		{"error echoing the password", twilioError(404, 20404, "no such service for "+testPassword), "", ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newScriptServer(t, tt.handler)
			c, _ := newTestClient(t, srv.URL, func(cfg *Config) { cfg.MaxBodyBytes = 4 << 10 })
			_, err := c.ListServiceBindings(context.Background(), ServiceBindingsQuery{ServiceSID: testService, Next: tt.next})
			if !errors.Is(err, tt.is) {
				t.Fatalf("error = %v, want %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), "list bindings of service "+testService) {
				t.Errorf("error %q does not name the list", err)
			}
			assertNoSecret(t, err)
		})
	}
}

func TestServiceBindingsMetaRedacted(t *testing.T) {
	body := `{"meta": {"key": "bindings", "url": "https://chat.twilio.com/x?t=` + testPassword + `"}, "bindings": []}`
	srv := newScriptServer(t, respond(200, body))
	c, _ := newTestClient(t, srv.URL, nil)
	page, err := c.ListServiceBindings(context.Background(), ServiceBindingsQuery{ServiceSID: testService})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(page.Meta.URL, testPassword) || page.Bindings == nil {
		t.Errorf("page = %+v: want an empty list and no password in Meta", page)
	}
}

func TestUserBindingURL(t *testing.T) {
	const user, sid = "US0123456789abcdef0123456789abcdef", "BS0123456789abcdef0123456789abcdef"
	tests := []struct{ user, want string }{
		{user, "https://chat.twilio.com/v2/Services/" + testService + "/Users/" + user + "/Bindings/" + sid},
		{"a/b", "https://chat.twilio.com/v2/Services/" + testService + "/Users/a%2Fb/Bindings/" + sid},
		{"..", "https://chat.twilio.com/v2/Services/" + testService + "/Users/%2E%2E/Bindings/" + sid},
	}
	for _, tt := range tests {
		if got := UserBindingURL(testService, tt.user, sid); got != tt.want {
			t.Errorf("UserBindingURL(%q) = %q, want %q", tt.user, got, tt.want)
		}
	}
}

func TestServiceBindingUserBinding(t *testing.T) {
	const user = "US0123456789abcdef0123456789abcdef"
	sb := ServiceBinding{
		Binding: Binding{SID: ptr("BS1"), ServiceSID: ptr(testService), Identity: ptr("alice"), BindingType: ptrTo("fcm"),
			URL: ptr("https://chat.twilio.com/v2/Services/" + testService + "/Bindings/BS1")},
		Links: &BindingLinks{User: ptr("https://chat.twilio.com/v2/Services/" + testService + "/Users/alice")},
	}
	got := sb.UserBinding(testService, user)
	want := sb.Binding
	want.UserSID = ptr(user)
	want.URL = ptr("https://chat.twilio.com/v2/Services/" + testService + "/Users/" + user + "/Bindings/BS1")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("UserBinding = %+v, want %+v", got, want)
	}
	if sb.UserSID != nil || !strings.HasSuffix(*sb.URL, "/Bindings/BS1") || strings.Contains(*sb.URL, "Users") {
		t.Errorf("UserBinding changed its receiver: %+v", sb.Binding)
	}
	sb.SID = nil
	if got := sb.UserBinding(testService, user); got.URL != nil || *got.UserSID != user {
		t.Errorf("UserBinding of a binding without SID = %+v, want no URL", got)
	}
}

func TestLinkedUser(t *testing.T) {
	base := "https://chat.twilio.com/v2/Services/" + testService + "/Users/"
	tests := []struct {
		link *string
		want string
	}{
		{ptr(base + "alice"), "alice"},
		{ptr(base + "a%2Fb"), "a/b"},
		{ptr(base + "space%20name"), "space name"},
		{ptr(base + "US0123456789abcdef0123456789abcdef"), "US0123456789abcdef0123456789abcdef"},
		{nil, ""},
		{ptr(""), ""},
		{ptr(base + "a/b"), ""},       // two segments
		{ptr(base + "alice?x=1"), ""}, // a query
		{ptr("http://chat.twilio.com/v2/Services/" + testService + "/Users/alice"), ""},
		{ptr("https://evil.example.com/v2/Services/" + testService + "/Users/alice"), ""},
		{ptr("https://chat.twilio.com/v2/Services/ISffffffffffffffffffffffffffffffff/Users/alice"), ""},
		{ptr(base + "al%zzice"), ""},
	}
	for _, tt := range tests {
		sb := ServiceBinding{Binding: Binding{ServiceSID: ptr(testService)}, Links: &BindingLinks{User: tt.link}}
		if got := sb.LinkedUser(); got != tt.want {
			t.Errorf("LinkedUser(%v) = %q, want %q", tt.link, got, tt.want)
		}
	}
	if got := (&ServiceBinding{}).LinkedUser(); got != "" {
		t.Errorf("LinkedUser without links = %q", got)
	}
}

func ptrTo(s string) *string { return &s }

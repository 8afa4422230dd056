package twilio

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
)

const (
	aliceSID = "USaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	bobSID   = "USbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func TestNextPageNamesAnotherUser(t *testing.T) {
	next := func(user string) string {
		return "https://chat.twilio.com" + bindingsPath(user) + "?PageSize=50&Page=1&PageToken=PT1"
	}
	tests := []struct {
		name      string
		user, sid string // the query's User and UserSID
		next      string
		want      string // "" for accepted, else a part of the error
	}{
		{"identity, next by identity", "alice", "", next("alice"), ""},
		{"identity, next by another identity", "alice", "", next("bob"), `names user "bob", not "alice"`},
		{"identity, next by a SID unknown to the query", "alice", "", next(aliceSID), `names user "` + aliceSID + `", not "alice"`},
		{"identity with SID, next by that SID", "alice", aliceSID, next(aliceSID), ""},
		{"identity with SID, next by identity", "alice", aliceSID, next("alice"), ""},
		{"identity with SID, next by another SID", "alice", aliceSID, next(bobSID), `names user "` + bobSID + `", not "alice" (` + aliceSID + `)`},
		{"SID, next by that SID", aliceSID, "", next(aliceSID), ""},
		{"SID, next by another SID", aliceSID, "", next(bobSID), `names user "` + bobSID + `", not "` + aliceSID + `"`},
		{"SID, next by identity", aliceSID, aliceSID, next("alice"), `names user "alice"`},
		{"escaped identity", "a/b", "", next("a/b"), ""},
		{"escaped identity, next with the slash unescaped", "a/b", aliceSID, "https://chat.twilio.com/v2/Services/" + testService + "/Users/a/b/Bindings?PageToken=x", "is not a page of"},
		{"other filter", "alice", "", next("alice") + "&BindingType=apn", `filters BindingType ["apn"], not []`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newScriptServer(t, respond(http.StatusOK, pageBody(t, tt.next, "BS1")))
			c, _ := newTestClient(t, srv.URL, nil)
			page, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: tt.user, UserSID: tt.sid})
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if page.Next == "" {
					t.Fatal("no Next")
				}
				// The accepted Next is accepted back as the next query.
				_, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: tt.user, UserSID: tt.sid, Next: page.Next})
				if err != nil {
					t.Fatalf("passing Next back: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrForeignNextPage) || Retryable(err) {
				t.Fatalf("error = %v, want ErrForeignNextPage, not retryable", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestFiltersMustMatch(t *testing.T) {
	path := bindingsPath("alice")
	tests := []struct {
		name  string
		types []string
		query string // of next_page_url
		ok    bool
	}{
		{"same", []string{"apn", "fcm"}, "BindingType=apn&BindingType=fcm&PageToken=x", true},
		{"other order, repeated", []string{"fcm", "apn"}, "BindingType=apn&BindingType=fcm&BindingType=apn&PageToken=x", true},
		{"dropped", []string{"apn"}, "PageToken=x", false},
		{"widened", []string{"apn"}, "BindingType=apn&BindingType=gcm&PageToken=x", false},
		{"added", nil, "BindingType=apn&PageToken=x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newScriptServer(t, respond(http.StatusOK, pageBody(t, "https://chat.twilio.com"+path+"?"+tt.query, "BS1")))
			c, _ := newTestClient(t, srv.URL, nil)
			_, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice", BindingTypes: tt.types})
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrForeignNextPage)) {
				t.Errorf("error = %v, want ok %v or ErrForeignNextPage", err, tt.ok)
			}
		})
	}
}

func TestUserSIDChecked(t *testing.T) {
	srv := newScriptServer(t, respond(http.StatusOK, pageBody(t, "")))
	c, _ := newTestClient(t, srv.URL, nil)
	for _, q := range []BindingsQuery{
		{ServiceSID: testService, User: "alice", UserSID: "alice"},
		{ServiceSID: testService, User: "alice", UserSID: "US123"},
		{ServiceSID: testService, User: aliceSID, UserSID: bobSID},
	} {
		if _, err := c.ListBindings(context.Background(), q); err == nil || !strings.Contains(err.Error(), "UserSID") {
			t.Errorf("query %+v: error = %v, want one naming UserSID", q, err)
		}
	}
	if n := len(srv.requests()); n != 0 {
		t.Errorf("server saw %d requests, want 0", n)
	}
}

func userBody(sid, identity, service string) string {
	return `{"sid": "` + sid + `", "identity": "` + identity + `", "service_sid": "` + service + `", "account_sid": "AC1",
	  "role_sid": "RL1", "attributes": "{}", "date_created": "2016-03-24T21:05:19Z", "url": "https://chat.twilio.com/x"}`
}

func TestGetUser(t *testing.T) {
	usersPath := "/v2/Services/" + testService + "/Users/"
	tests := []struct {
		name    string
		user    string
		handler http.HandlerFunc
		uri     string // request URI the server must see
		is      error  // sentinel of the error; nil for success
		want    string // a part of the error
	}{
		{"by identity", "a/b ?#", respond(200, userBody(aliceSID, "a/b ?#", testService)), usersPath + "a%2Fb%20%3F%23", nil, ""},
		{"by SID", aliceSID, respond(200, userBody(aliceSID, "alice", testService)), usersPath + aliceSID, nil, ""},
		{"dot dot", "..", respond(200, userBody(aliceSID, "..", testService)), usersPath + "%2E%2E", nil, ""},
		{"not found", "ghost", twilioError(404, 20404, "The requested resource was not found"), usersPath + "ghost", ErrNotFound, "404"},
		{"no sid", "alice", respond(200, `{"identity": "alice"}`), usersPath + "alice", ErrBadResponse, `user sid ""`},
		{"bad sid", "alice", respond(200, userBody("US123", "alice", testService)), usersPath + "alice", ErrBadResponse, `user sid "US123"`},
		{"other SID", aliceSID, respond(200, userBody(bobSID, "alice", testService)), usersPath + aliceSID, ErrBadResponse, "answered user"},
		{"other identity", "alice", respond(200, userBody(aliceSID, "bob", testService)), usersPath + "alice", ErrBadResponse, `answered identity "bob", not "alice"`},
		{"null identity", "alice", respond(200, `{"sid": "`+aliceSID+`", "identity": null}`), usersPath + "alice", ErrBadResponse, "without an identity"},
		{"other service", "alice", respond(200, userBody(aliceSID, "alice", "ISffffffffffffffffffffffffffffffff")), usersPath + "alice", ErrBadResponse, "of service"},
		{"not JSON", "alice", respond(200, `[`), usersPath + "alice", ErrBadResponse, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newScriptServer(t, tt.handler)
			var kinds []string
			c, _ := newTestClient(t, srv.URL, func(cfg *Config) {
				cfg.MaxAttempts = 1
				cfg.Hooks.OnRequest = func(k string) { kinds = append(kinds, k) }
			})
			u, err := c.GetUser(context.Background(), testService, tt.user)
			reqs := srv.requests()
			if len(reqs) != 1 || reqs[0].RequestURI != tt.uri || reqs[0].User != testUsername || reqs[0].Pass != testPassword {
				t.Fatalf("requests = %+v, want one authenticated GET %s", reqs, tt.uri)
			}
			if len(kinds) != 1 || kinds[0] != "user" {
				t.Errorf("OnRequest kinds = %q, want [user]", kinds)
			}
			if tt.is == nil {
				if err != nil {
					t.Fatal(err)
				}
				if !userSIDPattern.MatchString(u.SID) || u.Identity == nil {
					t.Errorf("user = %+v", u)
				}
				return
			}
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "get user") {
				t.Errorf("error = %v, want %v containing %q", err, tt.is, tt.want)
			}
		})
	}
}

func TestGetUserRetries(t *testing.T) {
	srv := newScriptServer(t,
		twilioError(503, 20503, "Service Unavailable"),
		shortBody(`{"sid": "`+aliceSID+`"`),
		respond(200, userBody(aliceSID, "alice", testService)))
	c, log := newTestClient(t, srv.URL, nil)
	u, err := c.GetUser(context.Background(), testService, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if u.SID != aliceSID {
		t.Errorf("SID = %q", u.SID)
	}
	if reasons, _, _ := log.snapshot(); strings.Join(reasons, ",") != "5xx,truncated" {
		t.Errorf("retry reasons = %q, want 5xx then truncated", reasons)
	}
	if _, err := c.GetUser(context.Background(), "", "alice"); err == nil {
		t.Error("GetUser without a service: no error")
	}
}

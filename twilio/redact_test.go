package twilio

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestRedact(t *testing.T) {
	const pass = "s3cr+t/=pw"
	c, _ := newTestClient(t, "http://127.0.0.1:1", func(cfg *Config) { cfg.Password = pass })
	basic := []byte(testUsername + ":" + pass)
	tests := []struct{ in, want string }{
		{"nothing here " + testUsername, "nothing here " + testUsername},
		{"token " + pass + " twice " + pass, "token [REDACTED] twice [REDACTED]"},
		{"Authorization: Basic " + base64.StdEncoding.EncodeToString(basic), "Authorization: Basic [REDACTED]"},
		{"raw " + base64.RawStdEncoding.EncodeToString(basic) + ".", "raw [REDACTED]."},
		{"url " + base64.URLEncoding.EncodeToString(basic), "url [REDACTED]"},
		{"https://x.example/?t=" + url.QueryEscape(pass), "https://x.example/?t=[REDACTED]"},
		{"/p/" + url.PathEscape(pass) + "/q", "/p/[REDACTED]/q"},
	}
	for _, tt := range tests {
		if got := c.Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// echoAuth answers status with a Twilio error body that quotes the
// request's Authorization header and password, in the message, in more_info
// and in a field of its own.
func echoAuth(status int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, pass, _ := r.BasicAuth()
		auth := r.Header.Get("Authorization")
		body, _ := json.Marshal(map[string]any{
			"code":      20003,
			"message":   fmt.Sprintf("bad credentials: %s (token %s)", auth, pass),
			"more_info": "https://www.twilio.com/docs/errors/20003?auth=" + url.QueryEscape(auth) + "&token=" + pass,
			"status":    status,
		})
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}
}

func TestErrorsNeverShowCredentials(t *testing.T) {
	basic := base64.StdEncoding.EncodeToString([]byte(testUsername + ":" + testPassword))
	next := "https://chat.twilio.com" + bindingsPath("alice") + "?PageToken="
	tests := []struct {
		name    string
		handler http.HandlerFunc
		next    string // query Next, if any
	}{
		{"401 echoing the header", echoAuth(401), ""},
		{"503 echoing the header, retried", echoAuth(503), ""},
		{"400 on a next page", echoAuth(400), bindingsPath("alice") + "?PageToken=x"},
		{"HTML error page", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(502)
			fmt.Fprintf(w, "<html>%s %s</html>", r.Header.Get("Authorization"), testPassword)
		}, ""},
		{"next page holding the password", respond(200, pageBody(t, next+testPassword)), ""},
		{"next page holding the header", respond(200, pageBody(t, next+url.QueryEscape(basic))), ""},
		{"foreign next page holding the password", respond(200, pageBody(t, "https://evil.example.com/?t="+testPassword)), ""},
		{"date holding the password", respond(200, `{"meta": {}, "bindings": [{"date_created": "`+testPassword+`"}]}`), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newScriptServer(t, tt.handler)
			c, _ := newTestClient(t, srv.URL, func(cfg *Config) { cfg.MaxAttempts = 2 })
			_, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice", Next: tt.next})
			if err == nil {
				t.Fatal("no error")
			}
			for _, secret := range []string{testPassword, basic} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error shows a credential: %s", err)
				}
			}
			var apiErr *APIError
			if errors.As(err, &apiErr) {
				for _, field := range []string{apiErr.Message, apiErr.MoreInfo, apiErr.Error()} {
					if strings.Contains(field, testPassword) || strings.Contains(field, basic) {
						t.Errorf("APIError field shows a credential: %q", field)
					}
				}
				if !strings.Contains(apiErr.Error(), "[REDACTED]") {
					t.Errorf("APIError %q does not say what was redacted", apiErr)
				}
			}
		})
	}
}

func TestMetaRedacted(t *testing.T) {
	body := `{"meta": {"key": "bindings", "url": "https://chat.twilio.com/x?t=` + testPassword + `", "first_page_url": "` + testPassword +
		`", "previous_page_url": "` + testPassword + `"}, "bindings": []}`
	srv := newScriptServer(t, respond(200, body))
	c, _ := newTestClient(t, srv.URL, nil)
	page, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if m := fmt.Sprint(page.Meta.URL, page.Meta.FirstPageURL, *page.Meta.PreviousPageURL); strings.Contains(m, testPassword) {
		t.Errorf("Meta shows the password: %s", m)
	}
}

func TestErrorMessagesCapped(t *testing.T) {
	hostile := "\x1b[2J\x1b[1;32msnapshot published\x1b[0m\nnext line\r"
	tests := []struct {
		name    string
		message string
		want    string // the kept message; "" to check the cap only
	}{
		{"short with control characters kept", hostile, hostile},
		{"64 KB", strings.Repeat("A", 64<<10), strings.Repeat("A", maxErrorMessage) + truncatedMark},
		{"multibyte at the cut", strings.Repeat("é", 64<<9), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, _ := json.Marshal(map[string]any{"code": 20500, "message": tt.message, "more_info": tt.message, "status": 500})
			srv := newScriptServer(t, respond(500, string(body)))
			c, _ := newTestClient(t, srv.URL, func(cfg *Config) { cfg.MaxAttempts = 1 })
			_, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice"})
			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error = %v, want an APIError", err)
			}
			for _, kept := range []string{apiErr.Message, apiErr.MoreInfo} {
				if tt.want != "" && kept != tt.want {
					t.Errorf("kept %q, want %q", kept, tt.want)
				}
				if len(kept) > maxErrorMessage+len(truncatedMark) || !utf8.ValidString(kept) {
					t.Errorf("kept %d bytes (valid UTF-8 %v), want at most %d", len(kept), utf8.ValidString(kept), maxErrorMessage+len(truncatedMark))
				}
			}
			if len(err.Error()) > 2*maxErrorMessage+500 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
		})
	}
}

func TestCapText(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"abc", 3, "abc"},
		{"abcd", 3, "abc" + truncatedMark},
		{"aé", 2, "a" + truncatedMark},
		{"€€", 4, "€" + truncatedMark},
		{"", 0, ""},
	}
	for _, tt := range tests {
		if got := capText(tt.s, tt.n); got != tt.want {
			t.Errorf("capText(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
}

// FuzzRedact checks that no form of the credentials survives Redact,
// whatever the text and however short or odd the password.
func FuzzRedact(f *testing.F) {
	f.Add("AC1", "tok3n", "error: tok3n tok3n")
	f.Add("AC1", "D]", "[REDACTED]]")
	f.Add("AC1", "E", "[REDACTED]")
	f.Add("AC1", "ab", "aabb")
	f.Add("u", "p w+/", "Basic dTpwIHcrLw== p+w%2B%2F")
	f.Fuzz(func(t *testing.T, user, pass, s string) {
		if pass == "" {
			return
		}
		secrets := secretForms(user, pass)
		got := redact(s, secrets)
		for _, secret := range secrets {
			if strings.Contains(got, secret) {
				t.Fatalf("redact(%q) = %q still holds %q", s, got, secret)
			}
		}
		if !holdsAny(s, secrets) && got != s {
			t.Fatalf("redact(%q) = %q changed text without a secret", s, got)
		}
	})
}

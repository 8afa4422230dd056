package twilio

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestStatusErrors(t *testing.T) {
	resume := bindingsPath("alice") + "?PageSize=50&Page=3&PageToken=PT3"
	tests := []struct {
		name      string
		handler   http.HandlerFunc
		next      string
		is        error // sentinel the error must wrap; nil for none of them
		status    int   // APIError status, 0 for none
		code      int
		retryable bool
		contains  string
	}{
		{"401", twilioError(401, 20003, "Authenticate"), "", ErrUnauthorized, 401, 20003, false, "check the account SID and auth token, or the API key SID and secret"},
		{"403", twilioError(403, 20403, "Forbidden"), "", ErrUnauthorized, 403, 20403, false, "API key"},
		{"404", twilioError(404, 20404, "The requested resource was not found"), "", ErrNotFound, 404, 20404, false, "404 Not Found (code 20404"},
		{"400 on a first page", twilioError(400, 20001, "Invalid PageSize"), "", nil, 400, 20001, false, "Invalid PageSize"},
		{"400 on a next page", twilioError(400, 20001, "Invalid PageToken"), resume, ErrPageTokenRejected, 400, 20001, false, "page token rejected"},
		{"422", respond(422, "nope"), "", nil, 422, 0, false, "422 Unprocessable Entity: nope"},
		{"no meta", respond(200, `{"bindings": []}`), "", ErrBadResponse, 0, 0, false, `no "meta" object`},
		{"no list", respond(200, `{"meta": {"key": "bindings"}, "users": []}`), "", ErrBadResponse, 0, 0, false, `"bindings" list`},
		{"null list", respond(200, `{"meta": {"key": "bindings"}, "bindings": null}`), "", ErrBadResponse, 0, 0, false, `"bindings" list`},
	}
	sentinels := []error{ErrUnauthorized, ErrNotFound, ErrPageTokenRejected, ErrForeignNextPage, ErrBadResponse}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newScriptServer(t, tt.handler)
			c, _ := newTestClient(t, srv.URL, nil)

			_, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice", PageSize: 50, Next: tt.next})
			if err == nil {
				t.Fatal("no error")
			}
			assertNoSecret(t, err)
			for _, s := range sentinels {
				if got := errors.Is(err, s); got != (s == tt.is) {
					t.Errorf("errors.Is(%v, %v) = %v", err, s, got)
				}
			}
			var apiErr *APIError
			if got := errors.As(err, &apiErr); got != (tt.status != 0) {
				t.Errorf("errors.As(APIError) = %v, want %v", got, tt.status != 0)
			} else if got && (apiErr.Status != tt.status || apiErr.Code != tt.code) {
				t.Errorf("APIError status %d code %d, want %d and %d", apiErr.Status, apiErr.Code, tt.status, tt.code)
			}
			if Retryable(err) != tt.retryable {
				t.Errorf("Retryable = %v, want %v", Retryable(err), tt.retryable)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not contain %q", err, tt.contains)
			}
			if n := len(srv.requests()); n != 1 {
				t.Errorf("server saw %d requests, want exactly 1", n)
			}
		})
	}
}

func TestNotFoundMessage(t *testing.T) {
	srv := newScriptServer(t, twilioError(404, 20404, "The requested resource was not found"))
	c, _ := newTestClient(t, srv.URL, nil)

	_, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice"})
	want := `list bindings of user "alice" in service ` + testService + ": not found: twilio: GET /v2/Services/" + testService +
		"/Users/alice/Bindings: 404 Not Found (code 20404: The requested resource was not found; see https://www.twilio.com/docs/errors/20404)"
	if err == nil || err.Error() != want {
		t.Errorf("error = %v\nwant    %s", err, want)
	}
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("error %v holds no APIError", err)
	}
	wantErr := APIError{
		Status: 404, Code: 20404, Message: "The requested resource was not found",
		MoreInfo: "https://www.twilio.com/docs/errors/20404",
		Method:   "GET", Path: "/v2/Services/" + testService + "/Users/alice/Bindings",
	}
	if *apiErr != wantErr {
		t.Errorf("APIError = %+v, want %+v", *apiErr, wantErr)
	}
}

func TestAPIErrorBodies(t *testing.T) {
	long := "<html>" + strings.Repeat("x", 500) + "</html>"
	tests := []struct {
		name    string
		status  int
		body    string
		wantErr APIError
	}{
		{
			name:   "twilio JSON",
			status: 429, body: `{"code":20429,"message":"Too Many Requests","more_info":"https://www.twilio.com/docs/errors/20429","status":429}`,
			wantErr: APIError{Status: 429, Code: 20429, Message: "Too Many Requests", MoreInfo: "https://www.twilio.com/docs/errors/20429"},
		},
		{
			name:   "HTML truncated to 200 bytes",
			status: 502, body: long,
			wantErr: APIError{Status: 502, Message: long[:200]},
		},
		{
			name:   "text folded to one line",
			status: 500, body: "  upstream\n\tfailed \r\n",
			wantErr: APIError{Status: 500, Message: "upstream failed"},
		},
		{
			name:   "JSON without code or message",
			status: 500, body: `{"error": "boom"}`,
			wantErr: APIError{Status: 500, Message: `{"error": "boom"}`},
		},
		{
			name:   "invalid UTF-8",
			status: 500, body: "bad \xff byte",
			wantErr: APIError{Status: 500, Message: "bad ? byte"},
		},
		{name: "empty", status: 503, wantErr: APIError{Status: 503}},
	}
	c, _ := newTestClient(t, "http://127.0.0.1:1", nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := &http.Response{StatusCode: tt.status, Header: http.Header{}, Body: http.NoBody}
			if tt.body != "" {
				resp.Body = nopCloser{strings.NewReader(tt.body)}
			}
			got := c.readAPIError(resp, "GET", "/v2/x")
			tt.wantErr.Method, tt.wantErr.Path = "GET", "/v2/x"
			if *got != tt.wantErr {
				t.Errorf("APIError = %+v\nwant       %+v", *got, tt.wantErr)
			}
		})
	}
}

type nopCloser struct{ *strings.Reader }

func (nopCloser) Close() error { return nil }

func TestAPIErrorString(t *testing.T) {
	tests := []struct {
		err  APIError
		want string
	}{
		{
			APIError{Status: 404, Code: 20404, Message: "Not found", MoreInfo: "https://www.twilio.com/docs/errors/20404", Method: "GET", Path: "/v2/a"},
			"twilio: GET /v2/a: 404 Not Found (code 20404: Not found; see https://www.twilio.com/docs/errors/20404)",
		},
		{APIError{Status: 400, Code: 20001, Message: "Bad", Method: "GET", Path: "/v2/a"}, "twilio: GET /v2/a: 400 Bad Request (code 20001: Bad)"},
		{APIError{Status: 502, Message: "<html>", Method: "GET", Path: "/v2/a"}, "twilio: GET /v2/a: 502 Bad Gateway: <html>"},
		{APIError{Status: 599, Method: "GET", Path: "/v2/a"}, "twilio: GET /v2/a: 599"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&APIError{Status: 429}, true},
		{&APIError{Status: 500}, true},
		{&APIError{Status: 502}, true},
		{&APIError{Status: 503}, true},
		{&APIError{Status: 504}, true},
		{&APIError{Status: 501}, false},
		{&APIError{Status: 400}, false},
		{statusError(&APIError{Status: 401}, false), false},
		{statusError(&APIError{Status: 404}, false), false},
		{statusError(&APIError{Status: 400}, true), false},
		{fmt.Errorf("list: %w", &APIError{Status: 503}), true},
		{transportError("GET", "/v2/a", errors.New("connection reset by peer")), true},
		{truncatedError("GET", "/v2/a", errors.New("unexpected EOF")), true},
		{ErrForeignNextPage, false},
		{context.Canceled, false},
		{errors.New("other"), false},
		{nil, false},
	}
	for _, tt := range tests {
		if got := Retryable(tt.err); got != tt.want {
			t.Errorf("Retryable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	tests := []struct {
		header string
		want   time.Duration
		ok     bool
	}{
		{"", 0, false},
		{"7", 7 * time.Second, true},
		{" 0 ", 0, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{"99999999999999999", maxDuration, true},
		{testNow.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{testNow.Add(-time.Hour).Format(http.TimeFormat), 0, true},
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.header, testNow)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.header, got, ok, tt.want, tt.ok)
		}
	}
}

package twilio

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
)

// strictPageSize answers 400 (code 20001) to a PageSize above max, as
// Twilio's OpenAPI says it may, and an empty last page otherwise.
func strictPageSize(t *testing.T, max int, list string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if n, _ := strconv.Atoi(r.URL.Query().Get("PageSize")); n > max {
			twilioError(400, 20001, "PageSize must be between 1 and "+strconv.Itoa(max))(w, r)
			return
		}
		respond(200, `{"meta": {"key": "`+list+`", "next_page_url": null}, "`+list+`": []}`)(w, r)
	}
}

type fallbackCall struct {
	kind        string
	asked, used int
}

func TestPageSizeFallback(t *testing.T) {
	bindings := newScriptServer(t, strictPageSize(t, MaxBindingsPageSize, "bindings"))
	var mu sync.Mutex
	var calls []fallbackCall
	c, _ := newTestClient(t, bindings.URL, func(cfg *Config) {
		cfg.Hooks.OnPageSizeFallback = func(kind string, asked, used int) {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, fallbackCall{kind, asked, used})
		}
	})
	ctx := context.Background()
	q := BindingsQuery{ServiceSID: testService, User: "alice", PageSize: 200}
	if _, err := c.ListBindings(ctx, q); err != nil {
		t.Fatal(err)
	}
	// Later first pages ask for the maximum at once, concurrently too.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if _, err := c.ListBindings(ctx, q); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var sizes []string
	for _, r := range bindings.requests() {
		sizes = append(sizes, r.Query["PageSize"][0])
	}
	if want := []string{"200", "50", "50", "50", "50", "50"}; !slices.Equal(sizes, want) {
		t.Errorf("PageSize sent = %q, want %q", sizes, want)
	}
	if want := []fallbackCall{{"bindings", 200, 50}}; !slices.Equal(calls, want) {
		t.Errorf("OnPageSizeFallback calls = %+v, want %+v", calls, want)
	}

	// The Users list falls back on its own, to its own maximum.
	users := newScriptServer(t, strictPageSize(t, MaxUsersPageSize, "users"))
	c.base.Host = users.Listener.Addr().String()
	if _, err := c.ListUsers(ctx, UsersQuery{ServiceSID: testService, PageSize: 1000}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListUsers(ctx, UsersQuery{ServiceSID: testService, PageSize: 100}); err != nil {
		t.Fatal(err)
	}
	sizes = nil
	for _, r := range users.requests() {
		sizes = append(sizes, r.Query["PageSize"][0])
	}
	if want := []string{"1000", "100", "100"}; !slices.Equal(sizes, want) {
		t.Errorf("users PageSize sent = %q, want %q", sizes, want)
	}
	if want := []fallbackCall{{"bindings", 200, 50}, {"users", 1000, 100}}; !slices.Equal(calls, want) {
		t.Errorf("OnPageSizeFallback calls = %+v, want %+v", calls, want)
	}
}

func TestPageSizeFallbackOnlyForPageSize(t *testing.T) {
	tests := []struct {
		name   string
		size   int
		sizes  []string // PageSize of each request
		status int      // of the error returned
	}{
		// The maximum is refused too: the page size was not the cause, and
		// the first answer is the one returned.
		{"other bad request", 200, []string{"200", "50"}, 400},
		{"within the maximum", 50, []string{"50"}, 400},
		{"no page size", 0, nil, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newScriptServer(t, twilioError(400, 20001, "Invalid BindingType"))
			called := false
			c, _ := newTestClient(t, srv.URL, func(cfg *Config) {
				cfg.Hooks.OnPageSizeFallback = func(string, int, int) { called = true }
			})
			_, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice", PageSize: tt.size})
			var apiErr *APIError
			if !errors.As(err, &apiErr) || apiErr.Status != tt.status || apiErr.Message != "Invalid BindingType" {
				t.Errorf("error = %v, want the first 400", err)
			}
			var sizes []string
			for _, r := range srv.requests() {
				sizes = append(sizes, r.Query["PageSize"]...)
			}
			if !slices.Equal(sizes, tt.sizes) || called {
				t.Errorf("PageSize sent = %q (hook called %v), want %q and no hook", sizes, called, tt.sizes)
			}
			if c.bindingsFallback.Load() {
				t.Error("the client fell back although the maximum was refused too")
			}
		})
	}
}

func TestPageSizeFallbackNotOnNextPages(t *testing.T) {
	srv := newScriptServer(t, twilioError(400, 20001, "Invalid PageSize"))
	c, _ := newTestClient(t, srv.URL, nil)
	next := bindingsPath("alice") + "?PageSize=200&Page=1&PageToken=x"
	_, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice", PageSize: 200, Next: next})
	if !errors.Is(err, ErrPageTokenRejected) {
		t.Errorf("error = %v, want ErrPageTokenRejected", err)
	}
	if n := len(srv.requests()); n != 1 {
		t.Errorf("server saw %d requests, want 1", n)
	}
}

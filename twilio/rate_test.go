package twilio

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"
)

// With a cap of one request a second, a second request within a short
// deadline must wait for its turn and give up at the deadline without
// reaching the server.
func TestRequestsPerSecondCapsRequests(t *testing.T) {
	ok := func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(pageBody(t, "", "BS00000000000000000000000000000001")))
	}
	srv := newScriptServer(t, ok)
	c, _ := newTestClient(t, srv.URL, func(cfg *Config) { cfg.RequestsPerSecond = 1 })
	q := BindingsQuery{ServiceSID: testService, User: "alice"}
	if _, err := c.ListBindings(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.ListBindings(ctx, q)
	if err == nil {
		t.Fatal("second request within the same second was not held back")
	}
	if n := len(srv.requests()); n != 1 {
		t.Errorf("server saw %d requests, want 1", n)
	}
	if errors.Is(err, ErrBadResponse) || Retryable(err) {
		t.Errorf("a rate wait cut short by the caller's deadline must not look like a Twilio failure: %v", err)
	}
}

func TestRequestsPerSecondNegativeRefused(t *testing.T) {
	if _, err := New(Config{Username: "u", Password: "p", RequestsPerSecond: -1}); err == nil {
		t.Fatal("negative RequestsPerSecond accepted")
	}
}

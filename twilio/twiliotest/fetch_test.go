package twiliotest

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/bindsync/bindsync/twilio"
)

// newClient returns a twilio.Client of s with quick retries; edit may
// change its config first.
func newClient(t *testing.T, s *Server, edit func(*twilio.Config)) *twilio.Client {
	t.Helper()
	cfg := twilio.Config{
		BaseURL:     s.URL(),
		Username:    s.opts.AccountSID,
		Password:    DefaultAuthToken,
		BackoffBase: time.Millisecond,
		BackoffMax:  2 * time.Millisecond,
		MaxAttempts: 3,
	}
	if edit != nil {
		edit(&cfg)
	}
	c, err := twilio.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func userPath(serviceSID, userSegment string) string {
	return "/v2/Services/" + serviceSID + "/Users/" + userSegment
}

func TestFetchUser(t *testing.T) {
	s := newTestServer(t, Options{World: NewWorld(WorldSpec{Seed: 3, Services: 1, UsersPerService: 20, MaxBindingsPerUser: 5, ControlIdentities: true})})
	svc := &s.World().Services[0]
	for _, u := range svc.Users {
		for _, seg := range []string{u.SID, url.PathEscape(u.Identity)} {
			r := get(t, s, userPath(svc.SID, seg))
			if r.status != http.StatusOK {
				t.Fatalf("GET user %q: %d %s", seg, r.status, r.body)
			}
			got := decode[userResource](t, r)
			if got.SID != u.SID || *got.Identity != u.Identity || *got.ServiceSID != svc.SID || got.URL != DefaultPublicBaseURL+userPath(svc.SID, u.SID) {
				t.Errorf("GET user %q = %+v, want %s %q", seg, got.User, u.SID, u.Identity)
			}
		}
	}
	wantError(t, get(t, s, userPath(svc.SID, "nobody")), http.StatusNotFound, 20404)
	wantError(t, get(t, s, userPath("IS123", svc.Users[0].SID)), http.StatusBadRequest, 20001)
	wantError(t, do(t, s, http.MethodGet, userPath(svc.SID, svc.Users[0].SID), s.opts.AccountSID, "wrong"), http.StatusUnauthorized, 20003)
	if st := s.Stats(); st.UserFetches != int64(2*len(svc.Users)+3) || st.BindingsRequests != 0 || st.UsersRequests != 0 {
		t.Errorf("stats: %d user fetches, %d bindings and %d users requests", st.UserFetches, st.BindingsRequests, st.UsersRequests)
	}

	// Deleted users, failing users and injected faults apply to fetches.
	gone, failing := svc.Users[1], svc.Users[2]
	s.DeleteUser(svc.SID, gone.SID)
	s.SetFaults(Faults{FailUsers: map[string]int{failing.Identity: 500}})
	wantError(t, get(t, s, userPath(svc.SID, url.PathEscape(gone.Identity))), http.StatusNotFound, 20404)
	wantError(t, get(t, s, userPath(svc.SID, failing.SID)), http.StatusInternalServerError, 20500)
	s.SetFaults(Faults{Rate503: 1})
	wantError(t, get(t, s, userPath(svc.SID, svc.Users[0].SID)), http.StatusServiceUnavailable, 20503)
}

func TestClientResolvesIdentities(t *testing.T) {
	w := NewWorld(WorldSpec{Seed: 3, Services: 1, UsersPerService: 20, MaxBindingsPerUser: 60, ControlIdentities: true})
	s := newTestServer(t, Options{World: w})
	svc := &w.Services[0]
	c := newClient(t, s, nil)
	ctx := context.Background()
	for _, id := range slices.Concat(SpecialIdentities, ControlIdentities) {
		u, err := c.GetUser(ctx, svc.SID, id)
		if err != nil {
			t.Fatalf("GetUser(%q): %v", id, err)
		}
		want := svc.User(id)
		if u.SID != want.SID {
			t.Errorf("GetUser(%q) = %s, want %s", id, u.SID, want.SID)
		}
		// Bindings read by SID after resolving, with the identity kept for
		// the next page check.
		got, _, err := walkBindings(ctx, c, twilio.BindingsQuery{ServiceSID: svc.SID, User: u.SID, PageSize: 2})
		if err != nil {
			t.Fatalf("bindings of %q: %v", id, err)
		}
		if !slices.Equal(sids(got), sids(want.Bindings())) {
			t.Errorf("bindings of %q: %d, want %d", id, len(got), want.NumBindings)
		}
	}
	if _, err := c.GetUser(ctx, svc.SID, "nobody"); !errors.Is(err, twilio.ErrNotFound) {
		t.Errorf("GetUser of an unknown identity: %v, want ErrNotFound", err)
	}
}

// walkBindings reads a user's bindings to the end through a PageGuard and
// returns them with the number of pages read.
func walkBindings(ctx context.Context, c *twilio.Client, q twilio.BindingsQuery) ([]twilio.Binding, int, error) {
	g := twilio.NewPageGuard("bindings of user "+q.User, 0)
	var all []twilio.Binding
	for pages := 1; ; pages++ {
		page, err := c.ListBindings(ctx, q)
		if err != nil {
			return all, pages, err
		}
		all = append(all, page.Bindings...)
		if err := g.Check(page.Next, len(page.Bindings)); err != nil {
			return all, pages, err
		}
		if page.Next == "" {
			return all, pages, nil
		}
		q.Next = page.Next
	}
}

// walkUsers reads a service's users to the end through a PageGuard.
func walkUsers(ctx context.Context, c *twilio.Client, q twilio.UsersQuery) ([]twilio.User, int, error) {
	g := twilio.NewPageGuard("users of service "+q.ServiceSID, 0)
	var all []twilio.User
	for pages := 1; ; pages++ {
		page, err := c.ListUsers(ctx, q)
		if err != nil {
			return all, pages, err
		}
		all = append(all, page.Users...)
		if err := g.Check(page.Next, len(page.Users)); err != nil {
			return all, pages, err
		}
		if page.Next == "" {
			return all, pages, nil
		}
		q.Next = page.Next
	}
}

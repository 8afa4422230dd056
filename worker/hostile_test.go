package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/internal/snapshottest"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

// TestNextPageOfAnotherUserFailsTheUser: a next_page_url naming another
// user's list is refused, so one user's rows never stand for another's.
func TestNextPageOfAnotherUserFailsTheUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, twiliotest.WorldSpec{Seed: 41, Services: 1, UsersPerService: 10, MaxBindingsPerUser: 120}, twiliotest.Faults{NextPageOtherUser: true})
	opts := e.options()
	opts.PageSize = 20
	res, err := Run(context.Background(), e.client, opts, day)
	if !errors.Is(err, ErrUsersFailed) {
		t.Fatalf("err = %v, want ErrUsersFailed", err)
	}
	multi := 0
	for _, u := range e.world.Services[0].Users {
		if len(e.world.Bindings(e.world.Services[0].SID, u.SID, nil)) > 20 {
			multi++
		}
	}
	if multi == 0 || len(res.Failed) != multi {
		t.Fatalf("%d users failed, want the %d with more than one page", len(res.Failed), multi)
	}
	for _, f := range res.Failed {
		if !strings.Contains(f.Reason, "next_page_url") {
			t.Errorf("reason %q does not name the next page", f.Reason)
		}
	}
	if _, err := os.Stat(e.warehouse.SnapshotDir(day)); !os.IsNotExist(err) {
		t.Fatal("a run with failed users published")
	}
	e.srv.SetFaults(twiliotest.Faults{})
	if _, err := Run(context.Background(), e.client, opts, day); err != nil {
		t.Fatal(err)
	}
	e.checkExact()
}

// TestIdentitiesAreResolvedAndReadBySID: a configured identity is looked up
// first and its bindings read by SID; a user named by SID and by identity
// is read once; an identity that does not exist is not_found.
func TestIdentitiesAreResolvedAndReadBySID(t *testing.T) {
	t.Parallel()
	e := newEnv(t, twiliotest.WorldSpec{Seed: 43, Services: 2, UsersPerService: 24, MaxBindingsPerUser: 40}, twiliotest.Faults{})
	svc := e.world.Services[1]
	both := svc.Users[len(svc.Users)-1]
	e.services = []Service{{SID: svc.SID, Users: []string{svc.Users[0].Identity, both.SID, both.Identity, "no such user", svc.Users[1].Identity}}}
	src := &countingSource{Source: e.client}
	res, err := Run(context.Background(), src, e.options(), day)
	if err != nil {
		t.Fatal(err)
	}
	if res.Summary.UsersNotFound != 1 {
		t.Errorf("users not found = %d, want 1", res.Summary.UsersNotFound)
	}
	for u, n := range src.firstPages() {
		if !checkpoint.IsUserSID(strings.TrimPrefix(u, svc.SID+"/")) || n != 1 {
			t.Errorf("bindings of %s asked %d times; want every user once, by SID", u, n)
		}
	}
	if got := len(src.firstPages()); got != 3 {
		t.Errorf("%d users read, want 3", got)
	}
	want := e.bindingsOf(svc.SID, svc.Users[0].SID, svc.Users[1].SID, both.SID)
	if got := e.published(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("published %d rows, want %d", len(got), len(want))
	}
	users := e.publishedUsers()
	for _, u := range users {
		if u.State == "read" && (u.UserSID == nil || u.Identity == nil) {
			t.Errorf("user row %s: user_sid or identity missing", u.User)
		}
	}
	if len(users) != 4 {
		t.Errorf("%d user rows, want 4 (three read, one not_found)", len(users))
	}
}

// TestPagingLoopsEndTheRun: a list that repeats a page, goes backwards or
// serves empty pages forever fails with a message naming it, and the run
// ends by itself.
func TestPagingLoopsEndTheRun(t *testing.T) {
	t.Parallel()
	for _, f := range twiliotest.PagingFaults {
		for _, list := range []string{"bindings", "users"} {
			t.Run(fmt.Sprintf("%s/%v", list, f), func(t *testing.T) {
				faults := twiliotest.Faults{BindingsPaging: f}
				if list == "users" {
					faults = twiliotest.Faults{UsersPaging: f}
				}
				e := newEnv(t, twiliotest.WorldSpec{Seed: 45, Services: 1, UsersPerService: 30, MaxBindingsPerUser: 80}, faults)
				opts := e.options()
				opts.PageSize = 20
				opts.UsersPageSize = 10
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				_, err := Run(ctx, e.client, opts, day)
				if err == nil || ctx.Err() != nil {
					t.Fatalf("err = %v, ctx = %v: want the run to end by itself with an error", err, ctx.Err())
				}
				if !strings.Contains(err.Error(), "paging loop") || !strings.Contains(err.Error(), list+" of ") {
					t.Errorf("error does not name the loop and the list: %v", err)
				}
				if n := e.srv.Stats().Requests; n > 5000 {
					t.Errorf("%d requests: the loop went on too long", n)
				}
			})
		}
	}
}

// TestTwilioDownStopsEarly: when every request fails, the run stops with
// ErrUnavailable after about unavailable_after instead of trying every
// user through all its retries.
func TestTwilioDownStopsEarly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, twiliotest.WorldSpec{Seed: 47, Services: 1, UsersPerService: 400, MaxBindingsPerUser: 10}, twiliotest.Faults{Rate503: 1})
	c, err := twilio.New(twilio.Config{BaseURL: e.srv.URL(), Username: e.world.AccountSID, Password: twiliotest.DefaultAuthToken,
		BackoffBase: time.Millisecond, BackoffMax: 2 * time.Millisecond, MaxAttempts: 4, UnavailableAfter: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.services = e.services[:1]
	e.services[0] = Service{SID: e.world.Services[0].SID}
	for _, u := range e.world.Services[0].Users {
		e.services[0].Users = append(e.services[0].Users, u.SID)
	}
	_, err = Run(context.Background(), c, e.options(), day)
	if !errors.Is(err, twilio.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	// Far fewer requests than the users times their attempts.
	if n, all := e.srv.Stats().Requests, int64(400*4); n >= all/2 {
		t.Errorf("%d requests for %d users: the run went on through every user", n, 400)
	}
}

// TestRejectedPageSizeFallsBack: Twilio rejecting page sizes above its
// current maximums makes the run go on at those maximums.
func TestRejectedPageSizeFallsBack(t *testing.T) {
	t.Parallel()
	world := twiliotest.NewWorld(twiliotest.WorldSpec{Seed: 49, Services: 2, UsersPerService: 30, MaxBindingsPerUser: 130})
	srv := twiliotest.NewServer(twiliotest.Options{World: world, StrictPageSize: true})
	t.Cleanup(srv.Close)
	e := newEnv(t, twiliotest.WorldSpec{Seed: 49, Services: 2, UsersPerService: 30, MaxBindingsPerUser: 130}, twiliotest.Faults{})
	var (
		mu        sync.Mutex
		fallbacks []string
	)
	c, err := twilio.New(twilio.Config{BaseURL: srv.URL(), Username: world.AccountSID, Password: twiliotest.DefaultAuthToken,
		Hooks: twilio.Hooks{OnPageSizeFallback: func(kind string, asked, used int) {
			mu.Lock()
			defer mu.Unlock()
			fallbacks = append(fallbacks, fmt.Sprintf("%s %d→%d", kind, asked, used))
		}}})
	if err != nil {
		t.Fatal(err)
	}
	opts := e.options()
	opts.PageSize = 200
	opts.UsersPageSize = 500
	if _, err := Run(context.Background(), c, opts, day); err != nil {
		t.Fatal(err)
	}
	e.checkExact()
	// The services are listed at once, so either list may fall back first.
	sort.Strings(fallbacks)
	if got := strings.Join(fallbacks, ", "); got != "bindings 200→50, users 500→100" {
		t.Errorf("fallbacks = %q", got)
	}
}

// TestHugeResponseFailsTheUser: a page over the body limit fails its user
// with a message naming the limit; nothing of it is written.
func TestHugeResponseFailsTheUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, twiliotest.WorldSpec{Seed: 51, Services: 1, UsersPerService: 8, MaxBindingsPerUser: 20}, twiliotest.Faults{})
	victim := e.world.Services[0].Users[3].SID
	e.srv.SetFaults(twiliotest.Faults{HugeField: 8 << 20, BodyFaultUsers: []string{victim}})
	c, err := twilio.New(twilio.Config{BaseURL: e.srv.URL(), Username: e.world.AccountSID, Password: twiliotest.DefaultAuthToken, MaxBodyBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), c, e.options(), day)
	if !errors.Is(err, ErrUsersFailed) || len(res.Failed) != 1 || res.Failed[0].User != victim {
		t.Fatalf("err = %v, failed = %+v: want the one user failed", err, res.Failed)
	}
	if !strings.Contains(res.Failed[0].Reason, "too large") {
		t.Errorf("reason %q does not say the response is too large", res.Failed[0].Reason)
	}
	l, err := checkpoint.Open(context.Background(), e.store, day)
	if err != nil {
		t.Fatal(err)
	}
	if rows := l.State().Rows(); rows != int64(e.world.TotalBindings()-len(e.world.Bindings(e.world.Services[0].SID, victim, nil))) {
		t.Errorf("committed rows = %d, want every binding but the victim's", rows)
	}
}

// bindingsOf renders the bindings of the given users of a service, sorted.
func (e *env) bindingsOf(service string, users ...string) []string {
	var out []string
	for _, u := range users {
		for _, b := range e.world.Bindings(service, u, nil) {
			out = append(out, snapshottest.Canonical(b))
		}
	}
	sort.Strings(out)
	return out
}

// publishedUsers reads the users table of the published snapshot.
func (e *env) publishedUsers() []schemas.UserRow {
	e.t.Helper()
	var out []schemas.UserRow
	dir := e.warehouse.UsersSnapshotDir(day)
	files, err := filepath.Glob(filepath.Join(dir, "*.parquet"))
	if err != nil || len(files) == 0 {
		e.t.Fatalf("no users files in %s (%v)", dir, err)
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			e.t.Fatal(err)
		}
		st, _ := f.Stat()
		err = exporter.ReadUsersFile(context.Background(), f, st.Size(), func(u schemas.UserRow) error {
			out = append(out, u)
			return nil
		})
		f.Close()
		if err != nil {
			e.t.Fatal(err)
		}
	}
	return out
}

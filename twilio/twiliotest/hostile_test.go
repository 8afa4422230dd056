package twiliotest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bindsync/bindsync/twilio"
)

func TestStrictPageSize(t *testing.T) {
	s := newTestServer(t, Options{StrictPageSize: true})
	svc := &s.World().Services[0]
	u := heavyUser(svc)
	wantError(t, get(t, s, bindingsPath(svc.SID, u.SID)+"?PageSize=51"), http.StatusBadRequest, 20001)
	wantError(t, get(t, s, "/v2/Services/"+svc.SID+"/Users?PageSize=101"), http.StatusBadRequest, 20001)
	if r := get(t, s, bindingsPath(svc.SID, u.SID)+"?PageSize=50"); r.status != http.StatusOK {
		t.Errorf("PageSize 50: %d %s", r.status, r.body)
	}
	if r := get(t, s, "/v2/Services/"+svc.SID+"/Users?PageSize=100"); r.status != http.StatusOK {
		t.Errorf("Users PageSize 100: %d %s", r.status, r.body)
	}

	// A client asking for more falls back to the documented maximum and
	// reads everything.
	var mu sync.Mutex
	var fallbacks []string
	c := newClient(t, s, func(cfg *twilio.Config) {
		cfg.Hooks.OnPageSizeFallback = func(kind string, asked, used int) {
			mu.Lock()
			defer mu.Unlock()
			fallbacks = append(fallbacks, kind+" "+itoa(asked)+"→"+itoa(used))
		}
	})
	ctx := context.Background()
	users, _, err := walkUsers(ctx, c, twilio.UsersQuery{ServiceSID: svc.SID, PageSize: 1000})
	if err != nil || len(users) != len(svc.Users) {
		t.Fatalf("users: %d of %d, %v", len(users), len(svc.Users), err)
	}
	for _, u := range svc.Users[:3] {
		got, _, err := walkBindings(ctx, c, twilio.BindingsQuery{ServiceSID: svc.SID, User: u.SID, PageSize: 1000})
		if err != nil || len(got) != u.NumBindings {
			t.Fatalf("bindings of %s: %d of %d, %v", u.SID, len(got), u.NumBindings, err)
		}
	}
	if want := []string{"users 1000→100", "bindings 1000→50"}; !slices.Equal(fallbacks, want) {
		t.Errorf("fallbacks = %q, want %q", fallbacks, want)
	}
	if st := s.Stats(); st.ByStatus[400] != 4 { // the two raw ones, one per kind from the client
		t.Errorf("400 answers = %d, want 4", st.ByStatus[400])
	}
}

func TestPagingFaults(t *testing.T) {
	w := NewWorld(testSpec)
	svc := &w.Services[0]
	u := heavyUser(svc)
	for _, pf := range PagingFaults {
		for _, kind := range []string{"bindings", "users"} {
			t.Run(string(pf)+"/"+kind, func(t *testing.T) {
				f := Faults{BindingsPaging: pf}
				first := bindingsPath(svc.SID, u.SID) + "?PageSize=20"
				if kind == "users" {
					f = Faults{UsersPaging: pf}
					first = "/v2/Services/" + svc.SID + "/Users?PageSize=7"
				}
				s := newTestServer(t, Options{World: w, Faults: f})

				// Followed blindly, the list does not end.
				target := first
				for range 60 {
					r := get(t, s, target)
					var p struct {
						Meta twilio.Meta `json:"meta"`
					}
					if r.status != http.StatusOK || json.Unmarshal(r.body, &p) != nil {
						t.Fatalf("GET %s: %d %s", target, r.status, r.body)
					}
					if p.Meta.NextPageURL == nil {
						t.Fatalf("the list ended at page %d", p.Meta.Page)
					}
					target = local(t, *p.Meta.NextPageURL)
				}

				// A client walking with a PageGuard stops, naming the list.
				c := newClient(t, s, nil)
				var err error
				var pages int
				if kind == "users" {
					_, pages, err = walkUsers(context.Background(), c, twilio.UsersQuery{ServiceSID: svc.SID, PageSize: 7})
				} else {
					_, pages, err = walkBindings(context.Background(), c, twilio.BindingsQuery{ServiceSID: svc.SID, User: u.SID, PageSize: 20})
				}
				if !errors.Is(err, twilio.ErrPagingLoop) || !strings.Contains(err.Error(), kind+" of ") {
					t.Fatalf("walk: error = %v, want ErrPagingLoop naming the list", err)
				}
				if pages > twilio.DefaultMaxEmptyPages+1 {
					t.Errorf("walk read %d pages before stopping", pages)
				}
			})
		}
	}
}

func TestDeleteAfterFirstPage(t *testing.T) {
	w := NewWorld(testSpec)
	svc := &w.Services[0]
	u := heavyUser(svc)
	s := newTestServer(t, Options{World: w, Faults: Faults{DeleteAfterFirstPage: []string{u.Identity}}})
	first := decode[bindingsBody](t, get(t, s, bindingsPath(svc.SID, u.SID)+"?PageSize=50"))
	if len(first.Bindings) != 50 || first.Meta.NextPageURL == nil {
		t.Fatalf("page 0: %d bindings, next %v", len(first.Bindings), first.Meta.NextPageURL)
	}
	wantError(t, get(t, s, local(t, *first.Meta.NextPageURL)), http.StatusNotFound, 20404)
	wantError(t, get(t, s, userPath(svc.SID, u.SID)), http.StatusNotFound, 20404)
	var users usersBody
	if err := json.Unmarshal(get(t, s, "/v2/Services/"+svc.SID+"/Users?PageSize=100").body, &users); err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(users.Users, func(x twilio.User) bool { return x.SID == u.SID }) || len(users.Users) != len(svc.Users)-1 {
		t.Errorf("Users list after the delete: %d users, the deleted one included or others missing", len(users.Users))
	}
	// Through the client: page 0, then ErrNotFound.
	s2 := newTestServer(t, Options{World: w, Faults: Faults{DeleteAfterFirstPage: []string{u.SID}}})
	c := newClient(t, s2, nil)
	got, pages, err := walkBindings(context.Background(), c, twilio.BindingsQuery{ServiceSID: svc.SID, User: u.SID, PageSize: 50})
	if !errors.Is(err, twilio.ErrNotFound) || len(got) != 50 || pages != 2 {
		t.Errorf("walk: %d bindings in %d pages, error %v; want 50, 2, ErrNotFound", len(got), pages, err)
	}
}

func TestDuplicateUsers(t *testing.T) {
	w := NewWorld(testSpec)
	svc := &w.Services[0]
	s := newTestServer(t, Options{World: w, Faults: Faults{DuplicateUsers: true}})
	c := newClient(t, s, nil)
	q := twilio.UsersQuery{ServiceSID: svc.SID, PageSize: 7}
	var all []string
	var prev []twilio.User
	for pages := 0; ; pages++ {
		page, err := c.ListUsers(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		u := page.Users
		// Each page ends with a user it already holds; each after the
		// first starts with the last user of the page before.
		if len(u) < 2 || !slices.ContainsFunc(u[:len(u)-1], func(x twilio.User) bool { return x.SID == u[len(u)-1].SID }) {
			t.Errorf("page %d does not repeat a user at its end", pages)
		}
		if prev != nil && u[0].SID != prev[len(prev)-2].SID {
			t.Errorf("page %d does not start with the last user of page %d", pages, pages-1)
		}
		for _, x := range u {
			all = append(all, x.SID)
		}
		prev = u
		if page.Next == "" {
			break
		}
		q.Next = page.Next
	}
	unique := slices.Compact(slices.Sorted(slices.Values(all)))
	if !slices.Equal(unique, w.UserSIDs(svc.SID)) {
		t.Errorf("distinct users = %d, want the %d of the service", len(unique), len(svc.Users))
	}
}

func TestNextPageOtherUser(t *testing.T) {
	w := NewWorld(testSpec)
	svc := &w.Services[0]
	u := heavyUser(svc)
	i := slices.IndexFunc(svc.Users, func(x User) bool { return x.SID == u.SID })
	other := &svc.Users[(i+1)%len(svc.Users)]
	s := newTestServer(t, Options{World: w, Faults: Faults{NextPageOtherUser: true}})

	// Followed, the next page serves the other user's bindings.
	first := decode[bindingsBody](t, get(t, s, bindingsPath(svc.SID, url.PathEscape(u.Identity))+"?PageSize=20"))
	next := local(t, *first.Meta.NextPageURL)
	if !strings.HasPrefix(next, bindingsPath(svc.SID, other.SID)+"?") {
		t.Fatalf("next_page_url %s does not name %s", next, other.SID)
	}
	r := get(t, s, next)
	if r.status != http.StatusOK {
		t.Fatalf("following it: %d %s", r.status, r.body)
	}
	for _, b := range decode[bindingsBody](t, r).Bindings {
		if *b.UserSID != other.SID {
			t.Fatalf("served a binding of %s, want the other user's", *b.UserSID)
		}
	}

	// The client refuses it, by identity and by SID.
	c := newClient(t, s, nil)
	for _, q := range []twilio.BindingsQuery{
		{ServiceSID: svc.SID, User: u.Identity, UserSID: u.SID},
		{ServiceSID: svc.SID, User: u.SID},
	} {
		_, _, err := walkBindings(context.Background(), c, q)
		if !errors.Is(err, twilio.ErrForeignNextPage) || !strings.Contains(err.Error(), other.SID) {
			t.Errorf("walk of %q: error = %v, want ErrForeignNextPage naming %s", q.User, err, other.SID)
		}
	}
}

func TestNullBindingTypes(t *testing.T) {
	w := NewWorld(testSpec)
	svc := &w.Services[0]
	u := heavyUser(svc)
	s := newTestServer(t, Options{World: w, Faults: Faults{NullBindingTypeUsers: []string{u.Identity}}})
	pos := 0
	target := bindingsPath(svc.SID, u.SID) + "?PageSize=40"
	for target != "" {
		r := get(t, s, target)
		var page struct {
			Bindings []map[string]json.RawMessage `json:"bindings"`
			Meta     twilio.Meta                  `json:"meta"`
		}
		if err := json.Unmarshal(r.body, &page); err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Bindings {
			v, present := b["binding_type"]
			if want := pos%2 == 0; present != want || (present && string(v) != "null") {
				t.Fatalf("binding %d: binding_type %q (present %v), want null at even positions and missing at odd", pos, v, present)
			}
			if string(b["sid"]) == "" || string(b["user_sid"]) != `"`+u.SID+`"` {
				t.Fatalf("binding %d lost its other fields: %v", pos, b)
			}
			pos++
		}
		target = ""
		if page.Meta.NextPageURL != nil {
			target = local(t, *page.Meta.NextPageURL)
		}
	}
	if pos != u.NumBindings {
		t.Errorf("saw %d bindings, want %d", pos, u.NumBindings)
	}
	// Other users keep their types.
	other := svc.Users[0]
	if other.SID == u.SID {
		other = svc.Users[1]
	}
	for _, b := range decode[bindingsBody](t, get(t, s, bindingsPath(svc.SID, other.SID))).Bindings {
		if b.BindingType == nil || *b.BindingType == "" {
			t.Fatalf("another user's binding lost its type")
		}
	}
}

// allocatedDuring is the heap allocated by the process while f ran.
func allocatedDuring(f func()) uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	before := m.TotalAlloc
	f()
	runtime.ReadMemStats(&m)
	return m.TotalAlloc - before
}

func TestHugeField(t *testing.T) {
	w := NewWorld(testSpec)
	svc := &w.Services[0]
	u, other := &svc.Users[0], &svc.Users[1]
	const size = 3<<20 + 17
	s := newTestServer(t, Options{World: w, Faults: Faults{HugeField: size, BodyFaultUsers: []string{u.Identity}}})

	r := get(t, s, bindingsPath(svc.SID, u.SID))
	p := decode[bindingsBody](t, r)
	if r.status != http.StatusOK || len(p.Bindings) != u.NumBindings || p.Bindings[0].Endpoint == nil || len(*p.Bindings[0].Endpoint) != size {
		t.Fatalf("page: status %d, %d bindings, first endpoint not %d bytes", r.status, len(p.Bindings), size)
	}
	if want := u.Bindings(); *p.Bindings[1].SID != *want[1].SID || *p.Bindings[0].SID != *want[0].SID {
		t.Errorf("the huge page is not the user's page")
	}
	if p := decode[bindingsBody](t, get(t, s, bindingsPath(svc.SID, other.SID))); len(p.Bindings) > 0 && len(*p.Bindings[0].Endpoint) > 100 {
		t.Errorf("a user outside BodyFaultUsers got a huge field")
	}

	// 256 MiB through a client limited to 1 MiB: refused in bounded memory.
	s.SetFaults(Faults{HugeField: 256 << 20})
	c := newClient(t, s, func(cfg *twilio.Config) { cfg.MaxBodyBytes = 1 << 20 })
	var err error
	allocated := allocatedDuring(func() {
		_, err = c.ListBindings(context.Background(), twilio.BindingsQuery{ServiceSID: svc.SID, User: other.SID})
	})
	if !errors.Is(err, twilio.ErrResponseTooLarge) {
		t.Fatalf("error = %v, want ErrResponseTooLarge", err)
	}
	if allocated > 64<<20 {
		t.Errorf("allocated %d MiB for a 256 MiB field", allocated>>20)
	}
}

func TestGzipBomb(t *testing.T) {
	w := NewWorld(testSpec)
	svc := &w.Services[0]
	u := heavyUser(svc)
	const size = 8<<20 + 5
	s := newTestServer(t, Options{World: w, Faults: Faults{GzipBomb: size}})

	// Read raw: a small gzip body that inflates to a page with the field.
	hc := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	resp, compressed, err := rawGet(context.Background(), hc, s, bindingsPath(svc.SID, u.SID)+"?PageSize=50")
	if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("response %v, err %v: want a 200 with Content-Encoding gzip", resp, err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(compressed))
	if err != nil {
		t.Fatal(err)
	}
	inflated, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	var p bindingsBody
	if err := json.Unmarshal(inflated, &p); err != nil || len(p.Bindings) != 50 || len(*p.Bindings[0].Endpoint) != size {
		t.Fatalf("inflated page: %d bindings, err %v", len(p.Bindings), err)
	}
	if len(compressed)*500 > len(inflated) {
		t.Errorf("%d bytes inflate to %d: not a bomb", len(compressed), len(inflated))
	}

	// 256 MiB inflated, through the client's default transport (which asks
	// for gzip and inflates) and through one that does not ask.
	s.SetFaults(Faults{GzipBomb: 256 << 20})
	for _, hc := range []*http.Client{nil, {Transport: &http.Transport{DisableCompression: true}}} {
		c := newClient(t, s, func(cfg *twilio.Config) { cfg.MaxBodyBytes = 1 << 20; cfg.HTTPClient = hc })
		var err error
		allocated := allocatedDuring(func() {
			_, err = c.ListBindings(context.Background(), twilio.BindingsQuery{ServiceSID: svc.SID, User: u.SID})
		})
		if !errors.Is(err, twilio.ErrResponseTooLarge) {
			t.Fatalf("error = %v, want ErrResponseTooLarge", err)
		}
		if allocated > 64<<20 {
			t.Errorf("allocated %d MiB for a 256 MiB bomb", allocated>>20)
		}
	}
}

func TestEchoCredentials(t *testing.T) {
	s := newTestServer(t, Options{Faults: Faults{EchoCredentials: true, FailUsers: map[string]int{"ghost": 500}}})
	svc := &s.World().Services[0]
	basic := base64.StdEncoding.EncodeToString([]byte(s.opts.AccountSID + ":" + DefaultAuthToken))

	r := get(t, s, bindingsPath(svc.SID, "nobody"))
	e := decode[twilioError](t, r)
	if !strings.Contains(e.Message, "Basic "+basic) || !strings.Contains(e.Message, DefaultAuthToken) || !strings.Contains(e.MoreInfo, DefaultAuthToken) {
		t.Fatalf("error body does not echo the credentials: %+v", e)
	}

	c := newClient(t, s, nil)
	ctx := context.Background()
	_, err1 := c.ListBindings(ctx, twilio.BindingsQuery{ServiceSID: svc.SID, User: "nobody"})
	_, err2 := c.ListBindings(ctx, twilio.BindingsQuery{ServiceSID: svc.SID, User: "ghost"})
	_, err3 := c.GetUser(ctx, svc.SID, "nobody")
	bad := newClient(t, s, func(cfg *twilio.Config) { cfg.Password = "wrong-password" })
	_, err4 := bad.ListUsers(ctx, twilio.UsersQuery{ServiceSID: svc.SID})
	for i, err := range []error{err1, err2, err3, err4} {
		if err == nil {
			t.Fatalf("request %d: no error", i)
		}
		for _, secret := range []string{DefaultAuthToken, basic, "wrong-password"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("request %d: error shows a credential: %s", i, err)
			}
		}
		var apiErr *twilio.APIError
		if !errors.As(err, &apiErr) || strings.Contains(apiErr.Message+apiErr.MoreInfo, DefaultAuthToken) || !strings.Contains(apiErr.Message, "[REDACTED]") {
			t.Errorf("request %d: APIError %+v", i, apiErr)
		}
	}
}

func TestHostileErrors(t *testing.T) {
	s := newTestServer(t, Options{Faults: Faults{HostileErrors: true}})
	svc := &s.World().Services[0]
	e := decode[twilioError](t, get(t, s, bindingsPath(svc.SID, "nobody")))
	if len(e.Message) != 64<<10 || !strings.HasPrefix(e.Message, "\x1b[2J") || !strings.Contains(e.Message, "\nlevel=info") {
		t.Fatalf("message of %d bytes starting %q", len(e.Message), e.Message[:min(len(e.Message), 40)])
	}
	c := newClient(t, s, nil)
	_, err := c.ListBindings(context.Background(), twilio.BindingsQuery{ServiceSID: svc.SID, User: "nobody"})
	var apiErr *twilio.APIError
	if !errors.As(err, &apiErr) || !errors.Is(err, twilio.ErrNotFound) {
		t.Fatalf("error = %v, want an APIError wrapping ErrNotFound", err)
	}
	if len(apiErr.Message) > 1024 || !strings.HasPrefix(apiErr.Message, "\x1b[2J") || !strings.HasSuffix(apiErr.Message, "(truncated)") {
		t.Errorf("kept message: %d bytes starting %q", len(apiErr.Message), apiErr.Message[:min(len(apiErr.Message), 40)])
	}
}

func TestTwilioDown(t *testing.T) {
	s := newTestServer(t, Options{Faults: Faults{Rate503: 1}})
	svc := &s.World().Services[0]
	c := newClient(t, s, func(cfg *twilio.Config) {
		cfg.MaxAttempts = 1 << 20 // only unavailability ends the retries
		cfg.UnavailableAfter = 20 * time.Millisecond
	})
	_, err := c.ListBindings(context.Background(), twilio.BindingsQuery{ServiceSID: svc.SID, User: svc.Users[0].SID})
	if !errors.Is(err, twilio.ErrUnavailable) || !strings.Contains(err.Error(), "Twilio unavailable: no successful response for 20ms; last error:") {
		t.Fatalf("error = %v, want ErrUnavailable", err)
	}
	before := s.Stats().Requests
	for _, u := range svc.Users {
		if _, err := c.ListBindings(context.Background(), twilio.BindingsQuery{ServiceSID: svc.SID, User: u.SID}); !errors.Is(err, twilio.ErrUnavailable) {
			t.Fatalf("user %s: error = %v, want ErrUnavailable at once", u.SID, err)
		}
	}
	if n := s.Stats().Requests - before; n != 0 {
		t.Errorf("%d requests after Twilio was declared unavailable", n)
	}
}

func TestControlIdentities(t *testing.T) {
	spec := WorldSpec{Seed: 5, Services: 1, UsersPerService: 30, MaxBindingsPerUser: 20}
	plain := NewWorld(spec)
	spec.ControlIdentities = true
	w := NewWorld(spec)
	if !slices.Equal(w.UserSIDs(w.Services[0].SID), plain.UserSIDs(plain.Services[0].SID)) {
		t.Error("ControlIdentities changed the users' SIDs")
	}
	svc := &w.Services[0]
	for _, id := range ControlIdentities {
		u := svc.User(id)
		if u == nil || u.NumBindings == 0 {
			t.Fatalf("identity %q: user %+v, want one with bindings", id, u)
		}
	}
	// Served and read back byte for byte.
	s := newTestServer(t, Options{World: w})
	c := newClient(t, s, nil)
	users, _, err := walkUsers(context.Background(), c, twilio.UsersQuery{ServiceSID: svc.SID})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, u := range users {
		ids = append(ids, *u.Identity)
	}
	for _, id := range ControlIdentities {
		if !slices.Contains(ids, id) {
			t.Errorf("identity %q not served", id)
		}
	}
	if slices.ContainsFunc(plain.Services[0].Users, func(u User) bool { return slices.Contains(ControlIdentities, u.Identity) }) {
		t.Error("a world without ControlIdentities has them")
	}
}

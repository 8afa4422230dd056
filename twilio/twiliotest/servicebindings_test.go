package twiliotest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/bindsync/bindsync/twilio"
)

func serviceBindingsPath(serviceSID string) string {
	return "/v2/Services/" + serviceSID + "/Bindings"
}

// walkServiceBindings reads a service-wide Bindings list to the end through
// a PageGuard and returns its records with the number of pages read.
func walkServiceBindings(ctx context.Context, c *twilio.Client, q twilio.ServiceBindingsQuery) ([]twilio.ServiceBinding, int, error) {
	g := twilio.NewPageGuard("bindings of service "+q.ServiceSID, 0)
	var all []twilio.ServiceBinding
	for pages := 1; ; pages++ {
		page, err := c.ListServiceBindings(ctx, q)
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

// The service-wide list holds every binding of the per-user lists, field for
// field once user_sid and url are rebuilt from the identity, in the same
// order, under every filter.
func TestServiceBindingsEqualPerUserLists(t *testing.T) {
	s := newTestServer(t, Options{})
	c := newClient(t, s, nil)
	ctx := context.Background()
	tests := []struct {
		types, identities []string
		size              int
	}{
		{nil, nil, 50},
		{[]string{"apn"}, nil, 13},
		{[]string{"gcm", "apn"}, nil, 50},
		{nil, []string{"a/b", "q?z", "plus+sign", "space name", "pct%41", "nobody at all"}, 7},
		{[]string{"fcm"}, []string{"hash#tag", "ünï", "dot.1", "user-000020"}, 50},
	}
	for _, svc := range s.World().Services {
		users, _, err := walkUsers(ctx, c, twilio.UsersQuery{ServiceSID: svc.SID, PageSize: 100})
		if err != nil {
			t.Fatal(err)
		}
		sidOf := make(map[string]string, len(users))
		for _, u := range users {
			sidOf[*u.Identity] = u.SID
		}
		for _, tt := range tests {
			size := tt.size
			t.Run(fmt.Sprintf("%s/%v/%q/%d", svc.SID[:8], tt.types, tt.identities, size), func(t *testing.T) {
				q := twilio.ServiceBindingsQuery{ServiceSID: svc.SID, BindingTypes: tt.types, Identities: tt.identities, PageSize: size}
				records, pages, err := walkServiceBindings(ctx, c, q)
				if err != nil {
					t.Fatal(err)
				}
				if want := s.World().ServiceBindings(svc.SID, tt.types, tt.identities); !reflect.DeepEqual(records, want) {
					t.Fatalf("service list: %d records, want %d as World.ServiceBindings has them", len(records), len(want))
				}
				var rebuilt []twilio.Binding
				for _, r := range records {
					user := sidOf[*r.Identity]
					if r.UserSID != nil || user == "" || r.LinkedUser() != *r.Identity || *r.URL != ServiceBindingURL(svc.SID, *r.SID) {
						t.Fatalf("record %+v (links %v): want no user_sid, a known identity, links.user and url under /Bindings", r.Binding, *r.Links.User)
					}
					rebuilt = append(rebuilt, r.UserBinding(svc.SID, user))
				}
				var perUser []twilio.Binding
				for _, u := range users {
					if len(tt.identities) > 0 && !slices.Contains(tt.identities, *u.Identity) {
						continue
					}
					bs, _, err := walkBindings(ctx, c, twilio.BindingsQuery{ServiceSID: svc.SID, User: u.SID, BindingTypes: tt.types, PageSize: size})
					if err != nil {
						t.Fatal(err)
					}
					perUser = append(perUser, bs...)
				}
				if len(perUser) == 0 && tt.identities == nil {
					t.Fatal("no bindings to compare")
				}
				if !reflect.DeepEqual(rebuilt, perUser) {
					for i := range min(len(rebuilt), len(perUser)) {
						if !reflect.DeepEqual(rebuilt[i], perUser[i]) {
							t.Fatalf("binding %d: service list rebuilt %+v, per-user list %+v", i, rebuilt[i], perUser[i])
						}
					}
					t.Fatalf("service list has %d bindings, the per-user lists %d", len(rebuilt), len(perUser))
				}
				if want := max(1, (len(records)+size-1)/size); pages != want {
					t.Errorf("read %d pages for %d records at PageSize %d, want %d", pages, len(records), size, want)
				}
			})
		}
	}
}

// The records are those of the API reference: no user_sid, links.user by
// identity, url under /Bindings.
func TestServiceBindingsRecords(t *testing.T) {
	s := newTestServer(t, Options{})
	svc := &s.World().Services[0]
	r := get(t, s, serviceBindingsPath(svc.SID)+"?PageSize=20&Identity="+url.QueryEscape("a/b"))
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var page struct {
		Bindings []map[string]json.RawMessage `json:"bindings"`
		Meta     twilio.Meta                  `json:"meta"`
	}
	if err := json.Unmarshal(r.body, &page); err != nil {
		t.Fatal(err)
	}
	u := svc.User("a/b")
	if len(page.Bindings) != min(20, u.NumBindings) || page.Meta.Key != "bindings" || page.Meta.PageSize != 20 {
		t.Fatalf("page of %d records, meta %+v; want %d records of a/b", len(page.Bindings), page.Meta, min(20, u.NumBindings))
	}
	want := []string{"account_sid", "binding_type", "credential_sid", "date_created", "date_updated", "endpoint", "identity", "links", "message_types", "service_sid", "sid", "url"}
	for _, rec := range page.Bindings {
		keys := make([]string, 0, len(rec))
		for k := range rec {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, want) {
			t.Errorf("record keys %q, want %q", keys, want)
		}
		var links map[string]string
		if err := json.Unmarshal(rec["links"], &links); err != nil || links["user"] != "https://chat.twilio.com/v2/Services/"+svc.SID+"/Users/a%2Fb" {
			t.Errorf("links %s, want the user by escaped identity", rec["links"])
		}
	}
	if !strings.HasPrefix(page.Meta.URL, "https://chat.twilio.com/v2/Services/"+svc.SID+"/Bindings?PageSize=20&Page=0") ||
		!strings.HasSuffix(page.Meta.URL, "&Identity=a%2Fb") {
		t.Errorf("meta.url %q", page.Meta.URL)
	}
}

// Following next and then previous pages gives back the same windows.
func TestServiceBindingsPreviousPage(t *testing.T) {
	s := newTestServer(t, Options{})
	svc := &s.World().Services[0]
	type servicePage struct {
		Bindings []struct {
			SID string `json:"sid"`
		} `json:"bindings"`
		Meta twilio.Meta `json:"meta"`
	}
	read := func(target string) servicePage {
		t.Helper()
		r := get(t, s, target)
		if r.status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", target, r.status, r.body)
		}
		var p servicePage
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var pages []servicePage
	target := serviceBindingsPath(svc.SID) + "?PageSize=13&BindingType=apn"
	for {
		p := read(target)
		pages = append(pages, p)
		if p.Meta.NextPageURL == nil {
			break
		}
		target = local(t, *p.Meta.NextPageURL)
	}
	if len(pages) < 3 {
		t.Fatalf("only %d pages", len(pages))
	}
	if pages[0].Meta.PreviousPageURL != nil {
		t.Errorf("first page has a previous page")
	}
	for i := 1; i < len(pages); i++ {
		prev := read(local(t, *pages[i].Meta.PreviousPageURL))
		if !reflect.DeepEqual(prev.Bindings, pages[i-1].Bindings) || prev.Meta.Page != i-1 {
			t.Errorf("previous of page %d = page %d %v, want %v", i, prev.Meta.Page, prev.Bindings, pages[i-1].Bindings)
		}
	}
}

// A token is valid only for the list, filters and server epoch it was
// issued for.
func TestServiceBindingsTokens(t *testing.T) {
	s := newTestServer(t, Options{})
	w := s.World()
	svc, other := &w.Services[0], &w.Services[1]
	first := get(t, s, serviceBindingsPath(svc.SID)+"?PageSize=5&BindingType=fcm")
	var p struct {
		Meta twilio.Meta `json:"meta"`
	}
	if err := json.Unmarshal(first.body, &p); err != nil || p.Meta.NextPageURL == nil {
		t.Fatalf("first page: %s", first.body)
	}
	next := local(t, *p.Meta.NextPageURL)
	if r := get(t, s, next); r.status != http.StatusOK {
		t.Fatalf("next page: %d %s", r.status, r.body)
	}
	_, query, _ := strings.Cut(next, "?")
	unfiltered := strings.ReplaceAll(query, "&BindingType=fcm", "")
	u := heavyUser(svc)
	userNext := collectNext(t, s, bindingsPath(svc.SID, u.SID)+"?PageSize=5")
	for _, tt := range []struct{ name, target string }{
		{"other filter", serviceBindingsPath(svc.SID) + "?" + unfiltered + "&BindingType=apn"},
		{"no filter", serviceBindingsPath(svc.SID) + "?" + unfiltered},
		{"added identity", next + "&Identity=a%2Fb"},
		{"other service", serviceBindingsPath(other.SID) + "?" + query},
		{"a user's list", bindingsPath(svc.SID, u.SID) + "?" + query},
		{"a user's token", serviceBindingsPath(svc.SID) + "?" + userNext},
		{"other page number", strings.Replace(next, "&Page=1&", "&Page=2&", 1)},
	} {
		wantError(t, get(t, s, tt.target), http.StatusBadRequest, 20001)
	}
	s.RevokeTokens()
	wantError(t, get(t, s, next), http.StatusBadRequest, 20001)
}

// collectNext is the raw query of the next_page_url of the page at target.
func collectNext(t *testing.T, s *Server, target string) string {
	t.Helper()
	var p struct {
		Meta twilio.Meta `json:"meta"`
	}
	r := get(t, s, target)
	if err := json.Unmarshal(r.body, &p); err != nil || p.Meta.NextPageURL == nil {
		t.Fatalf("GET %s: no next page in %s", target, r.body)
	}
	_, query, _ := strings.Cut(local(t, *p.Meta.NextPageURL), "?")
	return query
}

func TestServiceBindingsPageSizes(t *testing.T) {
	strict := newTestServer(t, Options{StrictPageSize: true})
	svc := &strict.World().Services[0]
	wantError(t, get(t, strict, serviceBindingsPath(svc.SID)+"?PageSize=51"), http.StatusBadRequest, 20001)
	if r := get(t, strict, serviceBindingsPath(svc.SID)+"?PageSize=50"); r.status != http.StatusOK {
		t.Errorf("PageSize 50 under StrictPageSize: %d", r.status)
	}
	lax := newTestServer(t, Options{PageSizeCap: 10})
	wantError(t, get(t, lax, serviceBindingsPath(svc.SID)+"?PageSize=1001"), http.StatusBadRequest, 20001)
	wantError(t, get(t, lax, serviceBindingsPath(svc.SID)+"?Identity="), http.StatusBadRequest, 20001)
	wantError(t, get(t, lax, serviceBindingsPath(svc.SID)+"?BindingType=sms"), http.StatusBadRequest, 20001)
	wantError(t, get(t, lax, serviceBindingsPath("IS123")), http.StatusBadRequest, 20001)
	wantError(t, get(t, lax, serviceBindingsPath("ISffffffffffffffffffffffffffffffff")), http.StatusNotFound, 20404)
	r := get(t, lax, serviceBindingsPath(svc.SID)+"?PageSize=1000")
	var p struct {
		Bindings []json.RawMessage `json:"bindings"`
		Meta     twilio.Meta       `json:"meta"`
	}
	if err := json.Unmarshal(r.body, &p); err != nil || len(p.Bindings) != 10 || p.Meta.PageSize != 10 {
		t.Errorf("PageSize 1000 under PageSizeCap 10: %d records, meta.page_size %d, %v", len(p.Bindings), p.Meta.PageSize, err)
	}

	// A client asking for more than 50 falls back under StrictPageSize.
	var fallbacks []string
	c := newClient(t, strict, func(cfg *twilio.Config) {
		cfg.Hooks.OnPageSizeFallback = func(kind string, asked, used int) {
			fallbacks = append(fallbacks, fmt.Sprintf("%s %d %d", kind, asked, used))
		}
	})
	records, _, err := walkServiceBindings(context.Background(), c, twilio.ServiceBindingsQuery{ServiceSID: svc.SID, PageSize: 1000})
	if err != nil || len(records) != len(strict.World().ServiceBindings(svc.SID, nil, nil)) {
		t.Fatalf("walk: %d records, %v", len(records), err)
	}
	if !slices.Equal(fallbacks, []string{"service_bindings 1000 50"}) {
		t.Errorf("fallbacks %q", fallbacks)
	}
}

func TestServiceBindingsPagingFaults(t *testing.T) {
	w := NewWorld(testSpec)
	svc := &w.Services[0]
	for _, pf := range PagingFaults {
		t.Run(string(pf), func(t *testing.T) {
			s := newTestServer(t, Options{World: w, Faults: Faults{ServiceBindingsPaging: pf}})
			c := newClient(t, s, nil)
			_, pages, err := walkServiceBindings(context.Background(), c, twilio.ServiceBindingsQuery{ServiceSID: svc.SID, PageSize: 20})
			if !errors.Is(err, twilio.ErrPagingLoop) || !strings.Contains(err.Error(), "bindings of service "+svc.SID) {
				t.Fatalf("walk: error = %v, want ErrPagingLoop naming the list", err)
			}
			if pages > twilio.DefaultMaxEmptyPages+1 {
				t.Errorf("walk read %d pages before stopping", pages)
			}
			// The users' lists are not affected.
			if _, _, err := walkBindings(context.Background(), c, twilio.BindingsQuery{ServiceSID: svc.SID, User: heavyUser(svc).SID, PageSize: 20}); err != nil {
				t.Errorf("a user's list under ServiceBindingsPaging: %v", err)
			}
		})
	}
}

func TestServiceBindingsFaults(t *testing.T) {
	w := NewWorld(testSpec)
	svc := &w.Services[0]
	ctx := context.Background()
	q := twilio.ServiceBindingsQuery{ServiceSID: svc.SID, PageSize: 50}

	t.Run("deleted user", func(t *testing.T) {
		s := newTestServer(t, Options{World: w})
		gone := heavyUser(svc)
		s.DeleteUser(svc.SID, gone.SID)
		records, _, err := walkServiceBindings(ctx, newClient(t, s, nil), q)
		if err != nil {
			t.Fatal(err)
		}
		want := slices.DeleteFunc(w.ServiceBindings(svc.SID, nil, nil), func(b twilio.ServiceBinding) bool { return *b.Identity == gone.Identity })
		if !reflect.DeepEqual(records, want) {
			t.Errorf("%d records, want %d without the deleted user's", len(records), len(want))
		}
	})

	t.Run("null binding types", func(t *testing.T) {
		u := &svc.Users[3]
		s := newTestServer(t, Options{World: w, Faults: Faults{NullBindingTypeUsers: []string{u.Identity}}})
		r := get(t, s, serviceBindingsPath(svc.SID)+"?Identity="+url.QueryEscape(u.Identity))
		var p struct {
			Bindings []map[string]json.RawMessage `json:"bindings"`
		}
		if err := json.Unmarshal(r.body, &p); err != nil || len(p.Bindings) == 0 {
			t.Fatalf("page: %s", r.body)
		}
		for i, b := range p.Bindings {
			v, present := b["binding_type"]
			if (i%2 == 0) != (present && string(v) == "null") || (i%2 == 1 && present) {
				t.Errorf("binding %d: binding_type %q (present %v)", i, v, present)
			}
		}
	})

	t.Run("huge field for one user", func(t *testing.T) {
		u := heavyUser(svc)
		s := newTestServer(t, Options{World: w, Faults: Faults{HugeField: 2 << 20, BodyFaultUsers: []string{u.SID}}})
		c := newClient(t, s, func(cfg *twilio.Config) { cfg.MaxBodyBytes = 1 << 20 })
		_, err := c.ListServiceBindings(ctx, twilio.ServiceBindingsQuery{ServiceSID: svc.SID, Identities: []string{u.Identity}})
		if !errors.Is(err, twilio.ErrResponseTooLarge) {
			t.Errorf("page of %s: error = %v, want ErrResponseTooLarge", u.Identity, err)
		}
		other := &svc.Users[0]
		if other == u {
			other = &svc.Users[1]
		}
		if _, err := c.ListServiceBindings(ctx, twilio.ServiceBindingsQuery{ServiceSID: svc.SID, Identities: []string{other.Identity}}); err != nil {
			t.Errorf("page of another user: %v", err)
		}
	})

	t.Run("429 and admission", func(t *testing.T) {
		s := newTestServer(t, Options{World: w, Faults: Faults{Rate429: 1}})
		r := get(t, s, serviceBindingsPath(svc.SID))
		wantError(t, r, http.StatusTooManyRequests, 20429)
		if r.header.Get(ConcurrentRequestsHeader) != "1" {
			t.Errorf("%s = %q", ConcurrentRequestsHeader, r.header.Get(ConcurrentRequestsHeader))
		}
	})
}

func TestServiceBindingsStats(t *testing.T) {
	s := newTestServer(t, Options{})
	svc := &s.World().Services[0]
	target := serviceBindingsPath(svc.SID) + "?PageSize=50"
	get(t, s, target)
	get(t, s, target)
	get(t, s, target+"&BindingType=apn")
	st := s.Stats()
	if st.ServiceBindingsRequests != 3 || st.BindingsRequests != 0 || st.PagesServedTwice != 1 || len(st.BindingsPagesByUser) != 0 {
		t.Errorf("stats %+v: want 3 service list requests, one page served twice, no per-user pages", st)
	}
}

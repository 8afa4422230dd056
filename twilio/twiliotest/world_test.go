package twiliotest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bindsync/bindsync/twilio"
)

// fingerprint hashes everything observable about a world: services, users
// and every binding.
func fingerprint(t *testing.T, w *World) string {
	t.Helper()
	h := sha256.New()
	enc := json.NewEncoder(h)
	for _, s := range w.Services {
		for _, u := range s.Users {
			if err := enc.Encode([]any{s.SID, u.SID, u.Identity, u.DateCreated, u.NumBindings}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for b := range w.AllBindings() {
		if err := enc.Encode(b); err != nil {
			t.Fatal(err)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestNewWorldDeterministic(t *testing.T) {
	base := WorldSpec{Seed: 7, Services: 2, UsersPerService: 40, MaxBindingsPerUser: 130}
	otherSeed := base
	otherSeed.Seed = 8
	otherAccount := base
	otherAccount.AccountSID = "AC" + strings.Repeat("f", 32)
	tests := []struct {
		name string
		a, b WorldSpec
		same bool
	}{
		{"same spec", base, base, true},
		{"other seed", base, otherSeed, false},
		{"other account", base, otherAccount, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := NewWorld(tt.a), NewWorld(tt.b)
			if got := fingerprint(t, a) == fingerprint(t, b); got != tt.same {
				t.Errorf("worlds equal = %v, want %v", got, tt.same)
			}
			if tt.same && !reflect.DeepEqual(a, b) {
				t.Errorf("worlds of one spec differ structurally")
			}
		})
	}
	// Generating bindings twice gives equal, independent lists.
	w := NewWorld(base)
	u := &w.Services[0].Users[0]
	first, second := u.Bindings(), u.Bindings()
	if !reflect.DeepEqual(first, second) {
		t.Fatalf("two calls of Bindings differ")
	}
	if len(first) > 0 {
		*first[0].SID = "changed"
		if *second[0].SID == "changed" {
			t.Errorf("Bindings results share memory")
		}
	}
}

func TestNewWorldShape(t *testing.T) {
	spec := WorldSpec{Seed: 42, Services: 3, UsersPerService: 60, MaxBindingsPerUser: 200}
	w := NewWorld(spec)
	sidRE := func(prefix string) *regexp.Regexp { return regexp.MustCompile(`^` + prefix + `[0-9a-f]{32}$`) }
	var (
		isRE, usRE, bsRE, crRE = sidRE("IS"), sidRE("US"), sidRE("BS"), sidRE("CR")
		seen                   = map[string]int{}
		total                  int
	)
	if w.AccountSID != DefaultAccountSID {
		t.Errorf("AccountSID = %q, want %q", w.AccountSID, DefaultAccountSID)
	}
	if len(w.Services) != spec.Services {
		t.Fatalf("services = %d, want %d", len(w.Services), spec.Services)
	}
	for _, s := range w.Services {
		if !isRE.MatchString(s.SID) {
			t.Errorf("service SID %q", s.SID)
		}
		if len(s.Users) != spec.UsersPerService {
			t.Errorf("service %s has %d users, want %d", s.SID, len(s.Users), spec.UsersPerService)
		}
		if !slices.IsSortedFunc(s.Users, func(a, b User) int { return strings.Compare(a.SID, b.SID) }) {
			t.Errorf("users of %s not sorted by SID", s.SID)
		}
		identities := map[string]bool{}
		heaviest := 0
		for _, u := range s.Users {
			identities[u.Identity] = true
			heaviest = max(heaviest, u.NumBindings)
			if !usRE.MatchString(u.SID) || u.ServiceSID != s.SID {
				t.Errorf("user %q of service %s", u.SID, u.ServiceSID)
			}
			bs := u.Bindings()
			if len(bs) != u.NumBindings {
				t.Errorf("user %s: %d bindings, NumBindings %d", u.SID, len(bs), u.NumBindings)
			}
			if !slices.IsSortedFunc(bs, func(a, b twilio.Binding) int { return strings.Compare(*a.SID, *b.SID) }) {
				t.Errorf("bindings of %s not sorted by SID", u.SID)
			}
			total += len(bs)
			for _, b := range bs {
				checkBinding(t, w, s, u, b, bsRE, crRE, seen)
			}
		}
		for _, id := range SpecialIdentities {
			if !identities[id] {
				t.Errorf("service %s lacks special identity %q", s.SID, id)
			}
		}
		if heaviest < HeavyBindings {
			t.Errorf("service %s: heaviest user has %d bindings, want >= %d", s.SID, heaviest, HeavyBindings)
		}
	}
	if total != w.TotalBindings() {
		t.Errorf("TotalBindings = %d, counted %d", w.TotalBindings(), total)
	}
	// Every nullable shape must occur somewhere in a world this size.
	for _, k := range []string{"endpoint null", "credential null", "updated null", "types null", "types empty", "types 1", "types 4", "apn", "gcm", "fcm"} {
		if seen[k] == 0 {
			t.Errorf("no binding with %s", k)
		}
	}
}

func checkBinding(t *testing.T, w *World, s Service, u User, b twilio.Binding, bsRE, crRE *regexp.Regexp, seen map[string]int) {
	t.Helper()
	if b.SID == nil || !bsRE.MatchString(*b.SID) {
		t.Fatalf("binding SID %v", b.SID)
	}
	sid := *b.SID
	wantURL := "https://chat.twilio.com/v2/Services/" + s.SID + "/Users/" + u.SID + "/Bindings/" + sid
	switch {
	case *b.AccountSID != w.AccountSID, *b.ServiceSID != s.SID, *b.UserSID != u.SID, *b.Identity != u.Identity:
		t.Errorf("binding %s: owner fields %s %s %s %q", sid, *b.AccountSID, *b.ServiceSID, *b.UserSID, *b.Identity)
	case b.URL == nil || *b.URL != wantURL:
		t.Errorf("binding %s: url %v, want %s", sid, b.URL, wantURL)
	case b.BindingType == nil || !slices.Contains(twilio.BindingTypes, *b.BindingType):
		t.Errorf("binding %s: type %v", sid, b.BindingType)
	case b.CredentialSID != nil && !crRE.MatchString(*b.CredentialSID):
		t.Errorf("binding %s: credential %q", sid, *b.CredentialSID)
	case b.DateCreated == nil || b.DateCreated.Location() != time.UTC || b.DateCreated.Nanosecond() != 0:
		t.Errorf("binding %s: date_created %v not whole-second UTC", sid, b.DateCreated)
	case b.DateUpdated != nil && (b.DateUpdated.Before(*b.DateCreated) || b.DateUpdated.Nanosecond() != 0):
		t.Errorf("binding %s: date_updated %v before date_created %v", sid, b.DateUpdated, b.DateCreated)
	case len(b.MessageTypes) > 4 || len(slices.Compact(slices.Sorted(slices.Values(b.MessageTypes)))) != len(b.MessageTypes):
		t.Errorf("binding %s: message_types %q", sid, b.MessageTypes)
	}
	if b.BindingType != nil {
		seen[*b.BindingType]++
	}
	if b.Endpoint == nil {
		seen["endpoint null"]++
	}
	if b.CredentialSID == nil {
		seen["credential null"]++
	}
	if b.DateUpdated == nil {
		seen["updated null"]++
	}
	switch {
	case b.MessageTypes == nil:
		seen["types null"]++
	case len(b.MessageTypes) == 0:
		seen["types empty"]++
	case len(b.MessageTypes) == 1:
		seen["types 1"]++
	case len(b.MessageTypes) == 4:
		seen["types 4"]++
	}
}

func TestNewWorldSmallSpecs(t *testing.T) {
	tests := []struct {
		name           string
		spec           WorldSpec
		wantIdentities []string
		wantTotal      int
	}{
		{"empty", WorldSpec{Seed: 1}, nil, 0},
		{"no bindings", WorldSpec{Seed: 1, Services: 1, UsersPerService: 2}, []string{"a/b", "q?z"}, 0},
		{"specials then regular", WorldSpec{Seed: 1, Services: 1, UsersPerService: 10},
			append(slices.Clone(SpecialIdentities), "user-000008", "user-000009"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWorld(tt.spec)
			var ids []string
			for _, s := range w.Services {
				for _, u := range s.Users {
					ids = append(ids, u.Identity)
				}
			}
			slices.Sort(ids)
			want := slices.Sorted(slices.Values(tt.wantIdentities))
			if !slices.Equal(ids, want) {
				t.Errorf("identities = %q, want %q", ids, want)
			}
			if w.TotalBindings() != tt.wantTotal {
				t.Errorf("TotalBindings = %d, want %d", w.TotalBindings(), tt.wantTotal)
			}
		})
	}
}

func TestWorldLookups(t *testing.T) {
	w := NewWorld(WorldSpec{Seed: 3, Services: 2, UsersPerService: 12, MaxBindingsPerUser: 130})
	s := &w.Services[1]
	u := s.User("a/b")
	if u == nil || u.Identity != "a/b" {
		t.Fatalf("User(a/b) = %v", u)
	}
	if w.User(s.SID, u.SID) != u {
		t.Errorf("lookup by SID and by identity disagree")
	}
	if w.Service("IS"+strings.Repeat("0", 32)) != nil || w.User(s.SID, "nobody") != nil || w.Bindings(s.SID, "nobody", nil) != nil {
		t.Errorf("unknown service or user found")
	}
	if w.Service(s.SID) != s {
		t.Errorf("Service(%s) is not the world's service", s.SID)
	}

	tests := []struct {
		name  string
		types []string
	}{
		{"all", nil},
		{"apn", []string{"apn"}},
		{"gcm and fcm", []string{"gcm", "fcm"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want []string
			for _, b := range u.Bindings() {
				if len(tt.types) == 0 || slices.Contains(tt.types, *b.BindingType) {
					want = append(want, *b.SID)
				}
			}
			var got []string
			for _, b := range w.Bindings(s.SID, u.Identity, tt.types) {
				got = append(got, *b.SID)
			}
			if !slices.Equal(got, want) {
				t.Errorf("Bindings(%v) = %d SIDs, want %d", tt.types, len(got), len(want))
			}
		})
	}

	keys := w.UserKeys()
	if len(keys) != 24 || keys[12] != UserKey(s.SID, s.Users[0].SID) {
		t.Errorf("UserKeys = %d keys, [12] = %q", len(keys), keys[12])
	}
	if sids := w.UserSIDs(s.SID); len(sids) != 12 || sids[0] != s.Users[0].SID {
		t.Errorf("UserSIDs = %q", sids)
	}
	n := 0
	for range w.AllBindings() {
		n++
	}
	if n != w.TotalBindings() {
		t.Errorf("AllBindings yielded %d, TotalBindings %d", n, w.TotalBindings())
	}
	n = 0
	for range w.AllBindings() {
		n++
		if n == 3 {
			break
		}
	}
	if n != 3 {
		t.Errorf("AllBindings did not stop at break")
	}
}

func TestBindingJSONNulls(t *testing.T) {
	w := NewWorld(WorldSpec{Seed: 5, Services: 1, UsersPerService: 40, MaxBindingsPerUser: 150})
	want := map[string]bool{
		`"message_types":null`:  false,
		`"message_types":[]`:    false,
		`"credential_sid":null`: false,
		`"endpoint":null`:       false,
		`"date_updated":null`:   false,
	}
	for b := range w.AllBindings() {
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		for k := range want {
			if strings.Contains(string(data), k) {
				want[k] = true
			}
		}
		if !regexp.MustCompile(`"date_created":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"`).Match(data) {
			t.Fatalf("date_created not whole-second UTC: %s", data)
		}
	}
	for k, found := range want {
		if !found {
			t.Errorf("no binding serializes %s", k)
		}
	}
}

func BenchmarkNewWorld(b *testing.B) {
	for b.Loop() {
		NewWorld(WorldSpec{Seed: 1, Services: 3, UsersPerService: 2000, MaxBindingsPerUser: 200})
	}
}

func BenchmarkNewWorldLarge(b *testing.B) {
	for b.Loop() {
		NewWorld(WorldSpec{Seed: 1, Services: 1, UsersPerService: 20000, MaxBindingsPerUser: 120})
	}
}

func BenchmarkUserBindings(b *testing.B) {
	w := NewWorld(WorldSpec{Seed: 1, Services: 1, UsersPerService: 100, MaxBindingsPerUser: 200})
	var heavy *User
	for i := range w.Services[0].Users {
		if u := &w.Services[0].Users[i]; heavy == nil || u.NumBindings > heavy.NumBindings {
			heavy = u
		}
	}
	b.ReportMetric(float64(heavy.NumBindings), "bindings/op")
	for b.Loop() {
		heavy.Bindings()
	}
}

// The server serves bindings from a memo of the users generated last; what
// it serves must be what Bindings generates, for every user and day, also
// once more users than the memo's slots have evicted each other.
func TestServedBindingsAreGenerated(t *testing.T) {
	w := NewWorld(WorldSpec{Seed: 5, Services: 1, UsersPerService: memoSlots + 60, MaxBindingsPerUser: 12, Evolution: DefaultEvolution(evolveStart)})
	for d := range 3 {
		day := w.OnDay(evolveStart.AddDate(0, 0, d))
		for round := range 2 {
			for i := range day.Services[0].Users {
				u := &day.Services[0].Users[i]
				if got, want := u.served(), u.Bindings(); !reflect.DeepEqual(got, want) {
					t.Fatalf("day %d, round %d, user %s: served %d bindings unlike the %d generated", d, round, u.SID, len(got), len(want))
				}
			}
		}
	}
	// The memo is keyed by day: a user read on day 0 and then on day 2
	// (where it changed) gets day 2's bindings.
	d0, d2 := w.OnDay(evolveStart), w.OnDay(evolveStart.AddDate(0, 0, 2))
	changed := 0
	for i := range d0.Services[0].Users {
		a, b := &d0.Services[0].Users[i], &d2.Services[0].Users[i]
		a.served()
		if !reflect.DeepEqual(b.served(), b.Bindings()) {
			t.Fatalf("user %s: day 2 served what another day generated", b.SID)
		}
		if !reflect.DeepEqual(a.Bindings(), b.Bindings()) {
			changed++
		}
	}
	if changed == 0 {
		t.Fatal("no user changed in two days: the test would not tell days apart")
	}
}

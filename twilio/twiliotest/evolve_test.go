package twiliotest

import (
	"context"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/bindsync/bindsync/twilio"
)

var evolveStart = time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)

func evolvingSpec(seed int64) WorldSpec {
	return WorldSpec{Seed: seed, Services: 2, UsersPerService: 30, MaxBindingsPerUser: 40, Evolution: DefaultEvolution(evolveStart)}
}

func TestOnDayIsDeterministic(t *testing.T) {
	w := NewWorld(evolvingSpec(3))
	day := evolveStart.AddDate(0, 0, 2)
	a, b := fingerprint(t, w.OnDay(day)), fingerprint(t, NewWorld(evolvingSpec(3)).OnDay(day.Add(13*time.Hour)))
	if a != b {
		t.Error("the same spec gives other worlds on the same day")
	}
	if fingerprint(t, NewWorld(evolvingSpec(4)).OnDay(day)) == a {
		t.Error("another seed gives the same world")
	}
	// Day 0, a day before it and a spec without evolution are the world
	// as generated.
	base := fingerprint(t, w)
	for _, d := range []time.Time{evolveStart, evolveStart.AddDate(0, 0, -3)} {
		if fingerprint(t, w.OnDay(d)) != base {
			t.Errorf("the world of %s differs from the world as generated", d.Format(time.DateOnly))
		}
	}
	still := evolvingSpec(3)
	still.Evolution = Evolution{}
	if sw := NewWorld(still); fingerprint(t, sw.OnDay(day)) != fingerprint(t, sw) {
		t.Error("a world without evolution changed")
	}
	// Another day differs, and the world it came from is unchanged.
	if fingerprint(t, w.OnDay(day.AddDate(0, 0, 1))) == a {
		t.Error("two days are equal")
	}
	if fingerprint(t, w) != base {
		t.Error("OnDay changed the world it was called on")
	}
}

// apply applies changes to the bindings of a user, checking that each
// change is consistent with its old and new values.
func apply(t *testing.T, bs []twilio.Binding, changes []BindingChange) []twilio.Binding {
	t.Helper()
	m := map[string]twilio.Binding{}
	for _, b := range bs {
		m[*b.SID] = b
	}
	for _, c := range changes {
		old, ok := m[c.SID]
		switch c.Kind {
		case Added:
			if ok || c.Old != nil || c.New == nil || *c.New.SID != c.SID {
				t.Fatalf("added %s: already there %v, old %v", c.SID, ok, c.Old)
			}
			m[c.SID] = *c.New
		case Removed:
			if !ok || !reflect.DeepEqual(old, *c.Old) || c.New != nil {
				t.Fatalf("removed %s: there %v, old values differ %v", c.SID, ok, !reflect.DeepEqual(old, *c.Old))
			}
			delete(m, c.SID)
		case Changed:
			if !ok || !reflect.DeepEqual(old, *c.Old) {
				t.Fatalf("changed %s: there %v, old values differ", c.SID, ok)
			}
			var differ []string
			for _, col := range []string{ColumnDateUpdated, ColumnEndpoint, ColumnCredentialSID, ColumnMessageTypes} {
				if !sameColumn(col, c.Old, c.New) {
					differ = append(differ, col)
				}
			}
			if !slices.Equal(differ, c.Columns) || len(differ) == 0 {
				t.Fatalf("changed %s: columns %v, the values differ in %v", c.SID, c.Columns, differ)
			}
			// Nothing else changes.
			o, n := *c.Old, *c.New
			o.DateUpdated, o.Endpoint, o.CredentialSID, o.MessageTypes = nil, nil, nil, nil
			n.DateUpdated, n.Endpoint, n.CredentialSID, n.MessageTypes = nil, nil, nil, nil
			if !reflect.DeepEqual(o, n) {
				t.Fatalf("changed %s: other columns changed: %+v -> %+v", c.SID, o, n)
			}
			m[c.SID] = *c.New
		default:
			t.Fatalf("change of kind %q", c.Kind)
		}
	}
	out := make([]twilio.Binding, 0, len(m))
	for _, b := range m {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b twilio.Binding) int { return compareSID(a, b) })
	return out
}

func compareSID(a, b twilio.Binding) int {
	switch {
	case *a.SID < *b.SID:
		return -1
	case *a.SID > *b.SID:
		return 1
	}
	return 0
}

func TestChangesLeadFromOneDayToTheOther(t *testing.T) {
	w := NewWorld(evolvingSpec(5))
	for _, span := range [][2]int{{0, 1}, {1, 2}, {2, 3}, {0, 3}, {4, 9}} {
		from, to := evolveStart.AddDate(0, 0, span[0]), evolveStart.AddDate(0, 0, span[1])
		changes := w.Changes(from, to)
		kinds := map[string]int{}
		byUser := map[string][]BindingChange{}
		for _, c := range changes {
			kinds[c.Kind]++
			byUser[UserKey(c.ServiceSID, c.UserSID)] = append(byUser[UserKey(c.ServiceSID, c.UserSID)], c)
		}
		if kinds[Added] == 0 || kinds[Removed] == 0 || kinds[Changed] == 0 {
			t.Errorf("days %v: changes by kind %v, want some of each", span, kinds)
		}
		before, after := w.OnDay(from), w.OnDay(to)
		total := 0
		for si, s := range after.Services {
			for ui, u := range s.Users {
				got := apply(t, before.Services[si].Users[ui].Bindings(), byUser[UserKey(s.SID, u.SID)])
				want := u.Bindings()
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("days %v, user %s: the changes do not lead from one day to the other", span, u.SID)
				}
				if u.NumBindings != len(want) {
					t.Errorf("user %s: NumBindings %d, %d bindings", u.SID, u.NumBindings, len(want))
				}
				total += len(want)
			}
		}
		if after.TotalBindings() != total {
			t.Errorf("TotalBindings = %d, want %d", after.TotalBindings(), total)
		}
	}
}

func TestServerServesTheDay(t *testing.T) {
	w := NewWorld(WorldSpec{Seed: 9, Services: 1, UsersPerService: 10, MaxBindingsPerUser: 60, Evolution: DefaultEvolution(evolveStart)})
	day := w.OnDay(evolveStart.AddDate(0, 0, 2))
	srv := NewServer(Options{World: day})
	defer srv.Close()
	c, err := twilio.New(twilio.Config{BaseURL: srv.URL(), Username: w.AccountSID, Password: DefaultAuthToken})
	if err != nil {
		t.Fatal(err)
	}
	svc := day.Services[0]
	for _, u := range svc.Users {
		got := []twilio.Binding{}
		q := twilio.BindingsQuery{ServiceSID: svc.SID, User: u.SID, PageSize: 7}
		for {
			page, err := c.ListBindings(context.Background(), q)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, page.Bindings...)
			if page.Next == "" {
				break
			}
			q.Next = page.Next
		}
		if want := day.Bindings(svc.SID, u.SID, nil); !reflect.DeepEqual(got, want) {
			t.Fatalf("user %s: served %d bindings, the day holds %d", u.SID, len(got), len(want))
		}
	}
}

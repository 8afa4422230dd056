package twiliotest

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/bindsync/bindsync/twilio"
)

// Evolution says how a world changes from one day to the next, so that a
// test can read it on several days (World.OnDay) and know what changed in
// between (World.Changes). Every change is drawn from generators seeded
// with the world's seed, the user and the day: the same spec gives the
// same history. The zero value changes nothing.
type Evolution struct {
	// Start is the UTC day the world as NewWorld generates it describes:
	// day 0. OnDay gives the world of a later day by living every day in
	// between.
	Start time.Time
	// RemoveRate and UpdateRate are the chances, per binding and per day,
	// that the binding is removed or updated. An update sets date_updated
	// to a moment of that day and changes the endpoint, the message types
	// or both, and one time in six the credential too.
	RemoveRate, UpdateRate float64
	// AddRate is the mean number of bindings each user gains per day (a
	// fraction is a chance of one more), created during that day.
	AddRate float64
}

// DefaultEvolution is a lively but realistic day: about 2% of bindings
// removed, 5% updated, and one new binding for every fifth user.
func DefaultEvolution(start time.Time) Evolution {
	return Evolution{Start: start, RemoveRate: 0.02, UpdateRate: 0.05, AddRate: 0.2}
}

// Columns an update of the fake world changes, named as in the API (and
// in bindsync's tables).
const (
	ColumnEndpoint      = "endpoint"
	ColumnMessageTypes  = "message_types"
	ColumnCredentialSID = "credential_sid"
	ColumnDateUpdated   = "date_updated"
)

// Kinds of BindingChange.
const (
	Added   = "added"
	Removed = "removed"
	Changed = "changed"
)

// BindingChange is a binding that differs between two days of a world.
type BindingChange struct {
	// Kind is Added, Removed or Changed.
	Kind                     string
	ServiceSID, UserSID, SID string
	// Columns are, for Changed, the columns whose values differ between
	// the two days, in the order of the API's fields: date_updated,
	// endpoint, credential_sid, message_types.
	Columns []string
	// Old is the binding on the first day (nil for Added); New on the
	// second (nil for Removed).
	Old, New *twilio.Binding
}

// evolveStream is the PCG stream of the day-to-day changes; each day of
// each user has its own sequence.
const evolveStream = 0x65766f6c7665

// day returns the day number of date in the world's evolution: whole UTC
// days since Evolution.Start, 0 for a date before it.
func (w *World) day(date time.Time) int {
	start := w.spec.Evolution.Start
	if start.IsZero() {
		return 0
	}
	d := int(dayOf(date).Sub(dayOf(start)).Hours() / 24)
	return max(d, 0)
}

func dayOf(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// OnDay returns the world as it is on date (a UTC day): the world of
// Evolution.Start after the changes of every day since, which the new
// world's users generate on demand like their bindings. A date before
// Start, or a spec without Evolution, gives the world as generated. The
// world returned shares nothing mutable with w; its Spec is w's, so that
// page tokens of one day's server are valid on another's.
//
// The bindings of a user on day n are computed from day 0 in n steps, so
// a world read on late days costs more to serve; tests read a few days.
func (w *World) OnDay(date time.Time) *World {
	day := w.day(date)
	out := &World{AccountSID: w.AccountSID, spec: w.spec, byService: w.byService, Services: make([]Service, len(w.Services))}
	for i, s := range w.Services {
		users := slices.Clone(s.Users)
		for j := range users {
			users[j].day = day
			users[j].evolution = w.spec.Evolution
			users[j].NumBindings = len(users[j].Bindings())
			out.total += users[j].NumBindings
		}
		out.Services[i] = Service{SID: s.SID, Users: users, ctx: s.ctx, byKey: s.byKey}
	}
	return out
}

// Changes returns every binding that differs between the world on day
// from and on day to (from before to), service by service, user by user
// (in serving order), then by SID. It is what the world did in between:
// the bindings it removed and added (one added and removed in between is
// not there), and those it updated, with the columns the updates touched
// and whose values differ in the end (an update can undo an earlier one's
// change of the message types or the credential).
func (w *World) Changes(from, to time.Time) []BindingChange {
	d0, d1 := w.day(from), w.day(to)
	var out []BindingChange
	for _, s := range w.Services {
		for _, u := range s.Users {
			u.evolution = w.spec.Evolution
			out = append(out, u.changes(d0, d1)...)
		}
	}
	return out
}

// changes lives the user's days d0+1 .. d1 and reports what differs.
func (u *User) changes(d0, d1 int) []BindingChange {
	u.day = d0
	before := u.Bindings()
	old := make(map[string]twilio.Binding, len(before))
	for _, b := range before {
		old[*b.SID] = b
	}
	touched := map[string]map[string]bool{}
	cur := before
	for d := d0 + 1; d <= d1; d++ {
		var ev dayEvents
		cur = u.liveDay(cur, d, &ev)
		for sid, cols := range ev.updated {
			if touched[sid] == nil {
				touched[sid] = map[string]bool{}
			}
			for _, c := range cols {
				touched[sid][c] = true
			}
		}
	}
	var out []BindingChange
	now := make(map[string]bool, len(cur))
	for i := range cur {
		b := &cur[i]
		now[*b.SID] = true
		o, existed := old[*b.SID]
		if !existed {
			out = append(out, BindingChange{Kind: Added, ServiceSID: u.ServiceSID, UserSID: u.SID, SID: *b.SID, New: b})
			continue
		}
		var cols []string
		for _, c := range []string{ColumnDateUpdated, ColumnEndpoint, ColumnCredentialSID, ColumnMessageTypes} {
			if touched[*b.SID][c] && !sameColumn(c, &o, b) {
				cols = append(cols, c)
			}
		}
		if len(cols) > 0 {
			out = append(out, BindingChange{Kind: Changed, ServiceSID: u.ServiceSID, UserSID: u.SID, SID: *b.SID, Columns: cols, Old: &o, New: b})
		}
	}
	for i := range before {
		if b := &before[i]; !now[*b.SID] {
			out = append(out, BindingChange{Kind: Removed, ServiceSID: u.ServiceSID, UserSID: u.SID, SID: *b.SID, Old: b})
		}
	}
	slices.SortFunc(out, func(a, b BindingChange) int { return cmp.Compare(a.SID, b.SID) })
	return out
}

// sameColumn reports whether a and b hold the same value in column c.
func sameColumn(c string, a, b *twilio.Binding) bool {
	switch c {
	case ColumnDateUpdated:
		return (a.DateUpdated == nil) == (b.DateUpdated == nil) && (a.DateUpdated == nil || a.DateUpdated.Equal(*b.DateUpdated))
	case ColumnEndpoint:
		return sameString(a.Endpoint, b.Endpoint)
	case ColumnCredentialSID:
		return sameString(a.CredentialSID, b.CredentialSID)
	case ColumnMessageTypes:
		return (a.MessageTypes == nil) == (b.MessageTypes == nil) && slices.Equal(a.MessageTypes, b.MessageTypes)
	}
	panic("twiliotest: unknown column " + c)
}

func sameString(a, b *string) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}

// dayEvents is what one day did to a user's bindings.
type dayEvents struct {
	// updated maps the SID of every binding updated to the columns the
	// update set.
	updated map[string][]string
}

// evolve applies days 1 .. u.day to the bindings of day 0.
func (u *User) evolve(bs []twilio.Binding) []twilio.Binding {
	for d := 1; d <= u.day; d++ {
		bs = u.liveDay(bs, d, nil)
	}
	return bs
}

// liveDay returns the bindings after day d, sorted by SID. Every draw
// comes from the user's generator of that day, so a day is the same
// whichever day the world is read on.
func (u *User) liveDay(bs []twilio.Binding, d int, ev *dayEvents) []twilio.Binding {
	e := u.evolution
	rng := rand.New(rand.NewPCG(u.seed, evolveStream^uint64(d)*0x9e3779b97f4a7c15))
	date := dayOf(e.Start).AddDate(0, 0, d)
	out := make([]twilio.Binding, 0, len(bs)+int(e.AddRate)+1)
	for _, b := range bs {
		x := rng.Float64()
		switch {
		case x < e.RemoveRate:
			continue
		case x < e.RemoveRate+e.UpdateRate:
			cols := u.update(rng, &b, date)
			if ev != nil {
				if ev.updated == nil {
					ev.updated = map[string][]string{}
				}
				ev.updated[*b.SID] = cols
			}
		}
		out = append(out, b)
	}
	whole, frac := math.Modf(e.AddRate)
	n := int(whole)
	if rng.Float64() < frac {
		n++
	}
	for range n {
		b := u.newBinding(rng)
		created := date.Add(time.Duration(rng.Int64N(24*3600)) * time.Second)
		updated := created
		b.DateCreated, b.DateUpdated = &created, &updated
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b twilio.Binding) int { return cmp.Compare(*a.SID, *b.SID) })
	return out
}

// update changes b as an update on date does, and returns the columns it
// set: always date_updated, then the endpoint, the message types or both,
// and one time in six the credential. Every column it sets gets a value
// other than the one it had, except that the message types and the
// credential are toggled, so a later update may put back an earlier value.
func (u *User) update(rng *rand.Rand, b *twilio.Binding, date time.Time) []string {
	updated := date.Add(time.Duration(rng.Int64N(24*3600)) * time.Second)
	if b.DateUpdated != nil && !updated.After(*b.DateUpdated) {
		updated = b.DateUpdated.Add(time.Second)
	}
	b.DateUpdated = &updated
	cols := []string{ColumnDateUpdated}
	typ := "none"
	if b.BindingType != nil {
		typ = *b.BindingType
	}
	what := rng.IntN(3) // 0: endpoint, 1: message types, 2: both
	if what != 1 {
		endpoint := fmt.Sprintf("%s-%s-%012x", u.Identity, typ, rng.Uint64()>>16)
		for b.Endpoint != nil && *b.Endpoint == endpoint {
			endpoint += "'"
		}
		b.Endpoint = &endpoint
		cols = append(cols, ColumnEndpoint)
	}
	if rng.IntN(6) == 0 {
		if b.CredentialSID != nil {
			b.CredentialSID = nil
		} else {
			cred := u.ctx.credentials[typ]
			if cred == "" {
				cred = u.ctx.credentials[twilio.BindingTypes[0]]
			}
			b.CredentialSID = &cred
		}
		cols = append(cols, ColumnCredentialSID)
	}
	if what != 0 {
		mt := messageTypes[rng.IntN(len(messageTypes))]
		next := slices.Clone(b.MessageTypes)
		if i := slices.Index(next, mt); i >= 0 {
			next = slices.Delete(next, i, i+1)
		} else {
			next = append(next, mt)
		}
		b.MessageTypes = next
		cols = append(cols, ColumnMessageTypes)
	}
	return cols
}

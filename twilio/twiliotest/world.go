// Package twiliotest serves a generated Twilio Programmable Chat v2 world over
// HTTP on the loopback interface, the way net/http/httptest serves a handler.
// Unit tests, end-to-end tests of the real binary and `bindsync demo` point
// the Twilio client at Server.URL and meet Twilio's paging, validation and
// error conventions, switches for the faults a nightly job must survive, and
// counters that show what the client did. It serves the Users list, one
// User, each user's Bindings list and the service-wide Bindings list, and
// sends the load headers Twilio sends (Twilio-Concurrent-Requests,
// Twilio-Request-Duration).
//
// A World is deterministic for its WorldSpec: the same spec always yields the
// same services, users and bindings, so a test can build the expected result
// from the spec alone. With WorldSpec.Evolution it also lives from day to
// day, bindings being added, removed and updated: World.OnDay gives it on a
// day (serve that world to read the day), and World.Changes says what
// changed between two days.
package twiliotest

import (
	"cmp"
	"fmt"
	"iter"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/bindsync/bindsync/twilio"
)

// DefaultAccountSID is the account that owns a world whose spec names none.
const DefaultAccountSID = "AC0123456789abcdef0123456789abcdef"

// HeavyBindings is the binding count that at least one user of every service
// reaches when WorldSpec.MaxBindingsPerUser allows it: enough for two full
// pages at the default page size of 50 and a partial third.
const HeavyBindings = 120

// SpecialIdentities are identities every service includes (as its first
// users, when it has that many), chosen to break clients that do not
// path-escape the user segment exactly once.
var SpecialIdentities = []string{"a/b", "q?z", "pct%41", "space name", "ünï", "hash#tag", "plus+sign", "dot.1"}

// ControlIdentities are identities holding control characters: terminal
// escapes, line breaks and a bidirectional override. A world whose spec
// sets ControlIdentities includes them right after SpecialIdentities, to
// break output that does not escape text from the API.
var ControlIdentities = []string{
	"esc\x1b[2J\x1b[1;32msnapshot published\x1b[0m",
	"new\nline",
	"carriage\rreturn",
	"tab\there",
	"bell\a",
	"del\x7f",
	"csi\u009b31m",
	"bidi\u202eevil",
}

// Message types a binding may subscribe to.
var messageTypes = []string{"new_message", "added_to_channel", "invited_to_channel", "removed_from_channel"}

// Time range of generated dates: users are created from 2016 on, bindings
// within three years of their user.
var (
	epochStart      = time.Date(2016, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	userSpanSeconds = int64(6 * 365 * 24 * 3600)
	bindSpanSeconds = int64(3 * 365 * 24 * 3600)
	editSpanSeconds = int64(400 * 24 * 3600)
)

// Streams of the PCG generators, so the world and each user's bindings draw
// from independent sequences of the same seed.
const (
	worldStream   = 0x626e647379_6e63
	bindingStream = 0x62696e64696e6773
)

// WorldSpec describes a world. Zero counts mean none; a zero AccountSID
// means DefaultAccountSID.
type WorldSpec struct {
	// Seed makes the world reproducible: equal specs give equal worlds.
	Seed int64
	// Services is the number of Chat services.
	Services int
	// UsersPerService is the number of users of each service, special
	// identities included.
	UsersPerService int
	// MaxBindingsPerUser bounds the bindings of one user. Counts are skewed:
	// most users have few, some have 100 or more, and when the bound is at
	// least HeavyBindings every service has a user with HeavyBindings or more.
	MaxBindingsPerUser int
	// AccountSID owns every service.
	AccountSID string
	// ControlIdentities gives the users after the SpecialIdentities the
	// ControlIdentities, as far as UsersPerService allows. SIDs are those of
	// the same spec without it; like the special identities, each of these
	// users has at least one binding.
	ControlIdentities bool
	// Evolution makes the world change from day to day: World.OnDay
	// gives it on a later day, World.Changes what changed in between. It
	// changes nothing of the world NewWorld returns (day 0).
	Evolution Evolution
}

// World is a generated account: its services, their users and the users'
// bindings. It is read-only once built and safe for concurrent use.
//
// Bindings are not stored: each user keeps its binding count and a seed, and
// User.Bindings regenerates the same list on demand. A world of 20,000 users
// therefore costs a few megabytes whatever the binding counts are.
type World struct {
	AccountSID string
	Services   []Service

	spec      WorldSpec
	total     int
	byService map[string]int
}

// Service is one Chat service. Users are sorted by SID, which is the order
// the Users list serves them in.
type Service struct {
	SID   string
	Users []User

	ctx   *serviceContext
	byKey map[string]int
}

// serviceContext is what every binding of a service shares.
type serviceContext struct {
	accountSID  string
	serviceSID  string
	roleSID     string
	credentials map[string]string // binding type -> credential SID
	// memo keeps the bindings of the users generated last, so that the
	// pages of one user's list do not each generate the whole list again.
	memo bindingMemo
}

// memoSlots is how many users' bindings a service keeps: a few times the
// users any test or benchmark reads at once.
const memoSlots = 256

// bindingMemo is a direct-mapped cache of generated binding lists, keyed
// by what a user's list depends on. A slot holds one user; a collision
// replaces it, which costs one generation more, never a wrong answer.
type bindingMemo struct {
	mu    sync.Mutex
	slots [memoSlots]memoEntry
}

type memoEntry struct {
	key      memoKey
	bindings []twilio.Binding
}

type memoKey struct {
	sid       string
	seed      uint64
	base      int
	day       int
	evolution Evolution
}

func (m *bindingMemo) slot(k memoKey) *memoEntry {
	return &m.slots[(k.seed^uint64(k.day)*0x9e3779b97f4a7c15)%memoSlots]
}

func (m *bindingMemo) get(k memoKey) ([]twilio.Binding, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.slot(k)
	if e.bindings == nil || e.key != k {
		return nil, false
	}
	return e.bindings, true
}

func (m *bindingMemo) put(k memoKey, bs []twilio.Binding) {
	m.mu.Lock()
	defer m.mu.Unlock()
	*m.slot(k) = memoEntry{key: k, bindings: bs}
}

// User is one Chat user. Its bindings are generated on demand by Bindings.
type User struct {
	SID         string
	Identity    string
	ServiceSID  string
	DateCreated time.Time
	// NumBindings is the length of the list Bindings returns.
	NumBindings int

	seed uint64
	ctx  *serviceContext
	// baseBindings is the number of bindings of day 0.
	baseBindings int
	// day is the user's day since Evolution.Start (World.OnDay), and
	// evolution how its bindings change from one day to the next.
	day       int
	evolution Evolution
}

// NewWorld generates the world of spec. It is deterministic for the spec and
// cheap: users are generated eagerly, bindings lazily (see World).
func NewWorld(spec WorldSpec) *World {
	if spec.AccountSID == "" {
		spec.AccountSID = DefaultAccountSID
	}
	rng := rand.New(rand.NewPCG(uint64(spec.Seed), worldStream))
	w := &World{
		AccountSID: spec.AccountSID,
		Services:   make([]Service, max(spec.Services, 0)),
		spec:       spec,
		byService:  make(map[string]int, spec.Services),
	}
	for i := range w.Services {
		w.Services[i] = newService(rng, spec)
		w.byService[w.Services[i].SID] = i
		for _, u := range w.Services[i].Users {
			w.total += u.NumBindings
		}
	}
	return w
}

func newService(rng *rand.Rand, spec WorldSpec) Service {
	ctx := &serviceContext{
		accountSID:  spec.AccountSID,
		serviceSID:  newSID(rng, "IS"),
		roleSID:     newSID(rng, "RL"),
		credentials: make(map[string]string, len(twilio.BindingTypes)),
	}
	for _, t := range twilio.BindingTypes {
		ctx.credentials[t] = newSID(rng, "CR")
	}
	users := make([]User, max(spec.UsersPerService, 0))
	heavy := false
	awkward := SpecialIdentities
	if spec.ControlIdentities {
		awkward = slices.Concat(SpecialIdentities, ControlIdentities)
	}
	for i := range users {
		identity := fmt.Sprintf("user-%06d", i)
		n := bindingCount(rng, spec.MaxBindingsPerUser)
		if i < len(awkward) {
			identity = awkward[i]
			if n == 0 && spec.MaxBindingsPerUser > 0 {
				n = 1 // so the awkward identities always have something to serve
			}
		}
		heavy = heavy || n >= HeavyBindings
		users[i] = User{
			SID:         newSID(rng, "US"),
			Identity:    identity,
			ServiceSID:  ctx.serviceSID,
			DateCreated: time.Unix(epochStart+rng.Int64N(userSpanSeconds), 0).UTC(),
			NumBindings: n,
			seed:        rng.Uint64(),
			ctx:         ctx,
		}
	}
	if !heavy && len(users) > 0 && spec.MaxBindingsPerUser >= HeavyBindings {
		u := &users[rng.IntN(len(users))]
		u.NumBindings = HeavyBindings + rng.IntN(spec.MaxBindingsPerUser-HeavyBindings+1)
	}
	for i := range users {
		users[i].baseBindings = users[i].NumBindings
	}
	slices.SortFunc(users, func(a, b User) int { return cmp.Compare(a.SID, b.SID) })
	byKey := make(map[string]int, 2*len(users))
	for i, u := range users {
		byKey[u.SID] = i
		byKey[u.Identity] = i
	}
	return Service{SID: ctx.serviceSID, Users: users, ctx: ctx, byKey: byKey}
}

// bindingCount draws from 0..max with a cubic skew: the mean is about max/4
// and about one user in six gets more than 60% of max.
func bindingCount(rng *rand.Rand, maxCount int) int {
	if maxCount <= 0 {
		return 0
	}
	u := rng.Float64()
	return min(int(u*u*u*float64(maxCount+1)), maxCount)
}

// newSID returns prefix followed by 32 lowercase hex digits.
func newSID(rng *rand.Rand, prefix string) string {
	return fmt.Sprintf("%s%016x%016x", prefix, rng.Uint64(), rng.Uint64())
}

// Spec returns the spec the world was generated from, with defaults applied.
func (w *World) Spec() WorldSpec { return w.spec }

// Service returns the service with the given SID, or nil.
func (w *World) Service(sid string) *Service {
	i, ok := w.byService[sid]
	if !ok {
		return nil
	}
	return &w.Services[i]
}

// User returns the user of a service by SID or identity, or nil.
func (w *World) User(serviceSID, userSIDOrIdentity string) *User {
	s := w.Service(serviceSID)
	if s == nil {
		return nil
	}
	return s.User(userSIDOrIdentity)
}

// User returns the user with the given SID or identity, or nil.
func (s *Service) User(sidOrIdentity string) *User {
	i, ok := s.byKey[sidOrIdentity]
	if !ok {
		return nil
	}
	return &s.Users[i]
}

// Bindings returns what a correct client must collect for one user: its
// bindings in serving order (by SID), restricted to types when types is not
// empty. It returns nil for an unknown service or user.
func (w *World) Bindings(serviceSID, userSIDOrIdentity string, types []string) []twilio.Binding {
	u := w.User(serviceSID, userSIDOrIdentity)
	if u == nil {
		return nil
	}
	return filterBindings(u.Bindings(), types)
}

// TotalBindings is the number of bindings in the whole world.
func (w *World) TotalBindings() int { return w.total }

// UserSIDs returns the user SIDs of a service in serving order, or nil for
// an unknown service.
func (w *World) UserSIDs(serviceSID string) []string {
	s := w.Service(serviceSID)
	if s == nil {
		return nil
	}
	sids := make([]string, len(s.Users))
	for i, u := range s.Users {
		sids[i] = u.SID
	}
	return sids
}

// UserKeys returns UserKey(service, user) for every user of the world, in
// service order then serving order: the keys of Stats.BindingsPagesByUser.
func (w *World) UserKeys() []string {
	var keys []string
	for _, s := range w.Services {
		for _, u := range s.Users {
			keys = append(keys, UserKey(s.SID, u.SID))
		}
	}
	return keys
}

// UserKey is "serviceSID/userSID", the key Stats uses for one user.
func UserKey(serviceSID, userSID string) string { return serviceSID + "/" + userSID }

// AllBindings yields every binding of the world, service by service and user
// by user in serving order, generating one user's bindings at a time so a
// test can check a whole export in bounded memory.
func (w *World) AllBindings() iter.Seq[twilio.Binding] {
	return func(yield func(twilio.Binding) bool) {
		for si := range w.Services {
			for ui := range w.Services[si].Users {
				for _, b := range w.Services[si].Users[ui].Bindings() {
					if !yield(b) {
						return
					}
				}
			}
		}
	}
}

// Bindings generates the user's bindings, sorted by SID: those of day 0,
// changed by every day since (World.OnDay). Every call returns an equal,
// freshly allocated list (never nil), so callers may modify it.
func (u *User) Bindings() []twilio.Binding {
	out := make([]twilio.Binding, u.baseBindings)
	rng := rand.New(rand.NewPCG(u.seed, bindingStream))
	for i := range out {
		out[i] = u.newBinding(rng)
	}
	slices.SortFunc(out, func(a, b twilio.Binding) int { return cmp.Compare(*a.SID, *b.SID) })
	return u.evolve(out)
}

// served returns the user's bindings as Bindings does, from the service's
// memo when the user was generated lately: the list and what it points to
// are shared with other calls, and must not be modified.
func (u *User) served() []twilio.Binding {
	k := memoKey{sid: u.SID, seed: u.seed, base: u.baseBindings, day: u.day, evolution: u.evolution}
	if bs, ok := u.ctx.memo.get(k); ok {
		return bs
	}
	bs := u.Bindings()
	u.ctx.memo.put(k, bs)
	return bs
}

// newBinding draws one binding. About 1 in 40 has a null endpoint, 1 in 6 a
// null credential, 1 in 20 a null date_updated; message_types is null for 1
// in 10, empty for 1 in 10, and 1 to 4 types otherwise.
func (u *User) newBinding(rng *rand.Rand) twilio.Binding {
	sid := newSID(rng, "BS")
	typ := twilio.BindingTypes[rng.IntN(len(twilio.BindingTypes))]
	b := twilio.Binding{
		SID:         ptr(sid),
		AccountSID:  ptr(u.ctx.accountSID),
		ServiceSID:  ptr(u.ctx.serviceSID),
		Identity:    ptr(u.Identity),
		UserSID:     ptr(u.SID),
		BindingType: ptr(typ),
		URL:         ptr(fmt.Sprintf("%s/v2/Services/%s/Users/%s/Bindings/%s", DefaultPublicBaseURL, u.ctx.serviceSID, u.SID, sid)),
	}
	if rng.IntN(40) != 0 {
		b.Endpoint = ptr(fmt.Sprintf("%s-%s-%012x", u.Identity, typ, rng.Uint64()>>16))
	}
	if rng.IntN(6) != 0 {
		b.CredentialSID = ptr(u.ctx.credentials[typ])
	}
	switch r := rng.IntN(10); {
	case r == 0:
		b.MessageTypes = nil
	case r == 1:
		b.MessageTypes = []string{}
	default:
		perm := rng.Perm(len(messageTypes))
		b.MessageTypes = make([]string, 1+rng.IntN(len(messageTypes)))
		for i := range b.MessageTypes {
			b.MessageTypes[i] = messageTypes[perm[i]]
		}
	}
	created := u.DateCreated.Add(time.Duration(rng.Int64N(bindSpanSeconds)) * time.Second)
	b.DateCreated = &created
	switch r := rng.IntN(20); {
	case r == 0:
		b.DateUpdated = nil
	case r < 6:
		updated := created
		b.DateUpdated = &updated
	default:
		updated := created.Add(time.Duration(rng.Int64N(editSpanSeconds)) * time.Second)
		b.DateUpdated = &updated
	}
	return b
}

// filterBindings keeps the bindings whose type is in types; an empty types
// keeps all. The result is never nil.
func filterBindings(bs []twilio.Binding, types []string) []twilio.Binding {
	if len(types) == 0 {
		return bs
	}
	out := make([]twilio.Binding, 0, len(bs))
	for _, b := range bs {
		if b.BindingType != nil && slices.Contains(types, *b.BindingType) {
			out = append(out, b)
		}
	}
	return out
}

func ptr[T any](v T) *T { return &v }

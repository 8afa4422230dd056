// Package checkpoint owns the state of a snapshot: it records the progress
// of one snapshot in the staging store, so that a run that dies at any
// moment can be resumed by the next run of the same snapshot date without
// fetching again what was finished and without writing any binding twice,
// and it says what that state is (State.Describe), which run statuses
// there are (RunStatus), and how runs are named (NewRunID).
//
// The checkpoint is an append-only log, in the manner of a database
// transaction log: every entry is a small JSON object written once, with
// PutIfAbsent, under <snapshot>/_log/<seq>.json, numbered from 1 without
// gaps. An entry is written only after the part files it names are
// durable, so replaying the log describes parts that were complete; each
// part's size and CRC32C are recorded so that VerifyParts can tell whether
// it is still intact. The state of a snapshot is the replay of its entries
// in order; nothing is ever rewritten in place.
//
// Every entry depends on the ones before it, so a log with a missing or
// unreadable entry is not replayed at all (ErrLogDamaged): skipping an
// entry and applying the later ones could publish a partial snapshot.
// Dropping the damaged entry and every later one loses no row: the log then
// describes an earlier moment of the snapshot, whose work after that moment
// is read again.
package checkpoint

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bindsync/bindsync/internal/keyset"
	"github.com/bindsync/bindsync/staging"
)

// Entry kinds.
const (
	KindStart     = "start"     // a run began working on the snapshot
	KindCommit    = "commit"    // parts became durable; users finished or advanced
	KindFinish    = "finish"    // a run ended (successfully or not) with its counts
	KindPublish   = "publish"   // publishing progress (job IDs, attempts)
	KindPublished = "published" // the snapshot is visible in every warehouse
	KindCleaned   = "cleaned"   // part files were removed after publishing
)

// Part is a durable Parquet part file of the snapshot.
type Part struct {
	Name  string `json:"name"`
	Rows  int64  `json:"rows"`
	Bytes int64  `json:"bytes"`
	// CRC32C is the Castagnoli checksum of the file's bytes, computed
	// while it was written (exporter.PartInfo.CRC32C). A part recorded
	// without one (by an older bindsync) reads as 0, which VerifyParts
	// reports as a mismatch: the users in it are read again rather than
	// an unchecked part published.
	CRC32C uint32 `json:"crc32c"`
}

// UserRef names a user of a service the way the run addresses it: by SID
// for users found through the Users API, by the configured string (SID or
// identity) for users listed in the configuration.
type UserRef struct {
	Service string `json:"service"`
	User    string `json:"user"`
}

func (u UserRef) String() string { return u.Service + "/" + u.User }

// userSIDPattern is the form of a user SID; anything else a UserRef holds
// is an identity.
var userSIDPattern = regexp.MustCompile(`^US[0-9a-fA-F]{32}$`)

// IsUserSID reports whether s is a user SID (US and 32 hex digits) rather
// than an identity.
func IsUserSID(s string) bool { return userSIDPattern.MatchString(s) }

// UserDone is a user whose every binding is in committed parts.
type UserDone struct {
	UserRef
	Bindings int64 `json:"bindings"`
	Pages    int64 `json:"pages"`
	// UserSID and Identity are what the run learnt of the user, from the
	// Users API or its bindings; empty when unknown.
	UserSID  string `json:"user_sid,omitempty"`
	Identity string `json:"identity,omitempty"`
	// Name is the configured string that named the user, when it is not
	// the SID (an identity); the users table shows it.
	Name string `json:"name,omitempty"`
	// Parts name the parts that hold the user's rows, as they were named
	// when the user finished (a later Replace may rename them; see
	// UsersInParts). Empty for a user without bindings. The state does
	// not keep them in memory: they are read back from the log when a
	// part turns out to be bad.
	Parts []string `json:"parts,omitempty"`
}

// InFlight is a user partly read: its rows so far are in Parts and reading
// resumes at Next (an opaque page reference of the Twilio client).
type InFlight struct {
	UserRef
	Next     string   `json:"next"`
	Parts    []string `json:"parts"`
	Bindings int64    `json:"bindings"`
	Pages    int64    `json:"pages"`
	UserSID  string   `json:"user_sid,omitempty"`
	Identity string   `json:"identity,omitempty"`
	Name     string   `json:"name,omitempty"`
}

// UserFailed is a user that could not be read in a run, with the reason.
type UserFailed struct {
	UserRef
	Reason string `json:"reason"`
}

// Replace records that part Old was rewritten as New (New empty: removed),
// when a user's earlier rows had to be dropped.
type Replace struct {
	Old string `json:"old"`
	New *Part  `json:"new,omitempty"`
}

// RunSummary is what a run did, written when it ends.
type RunSummary struct {
	RunID         string    `json:"run_id"`
	Start         time.Time `json:"start"`
	End           time.Time `json:"end"`
	Status        RunStatus `json:"status"`
	Error         string    `json:"error,omitempty"`
	Services      int       `json:"services"`
	UsersTotal    int64     `json:"users_total"`
	UsersDone     int64     `json:"users_done"`
	UsersGone     int64     `json:"users_gone"`
	UsersNotFound int64     `json:"users_not_found,omitempty"`
	// UsersFailed names the users that failed, at most MaxNamedFailures
	// of them; UsersFailedCount counts them all.
	UsersFailed      []UserFailed `json:"users_failed,omitempty"`
	UsersFailedCount int64        `json:"users_failed_count,omitempty"`
	Bindings         int64        `json:"bindings"`
	Pages            int64        `json:"pages"`
	Retries          int64        `json:"retries"`
	// ContractViolations counts the records that broke the API's
	// contract, by kind (schemas.ViolationBindingTypeNull, ...). They
	// are stored as received.
	ContractViolations map[string]int64 `json:"contract_violations,omitempty"`
}

// Entry is one record of the log. Only the fields of its Kind are set.
type Entry struct {
	Seq      int64      `json:"seq"`
	Kind     string     `json:"kind"`
	RunID    string     `json:"run_id"`
	Time     time.Time  `json:"time"`
	Parts    []Part     `json:"parts,omitempty"`
	Replaced []Replace  `json:"replaced,omitempty"`
	Done     []UserDone `json:"done,omitempty"`
	Gone     []UserRef  `json:"gone,omitempty"`
	// NotFound are configured users that do not exist in Twilio (404 before
	// any of their pages was read): recorded so that the summary and the
	// users table name them, and so that a resumed run does not ask again.
	NotFound []UserRef `json:"not_found,omitempty"`
	// Dropped are unfinished users left out of the snapshot (no longer
	// configured or listed): their rows were removed, and they are neither
	// done nor gone, so a run that meets them again reads them afresh.
	Dropped  []UserRef         `json:"dropped,omitempty"`
	InFlight []InFlight        `json:"in_flight,omitempty"`
	Failed   []UserFailed      `json:"failed,omitempty"`
	Run      *RunSummary       `json:"run,omitempty"`
	Publish  map[string]string `json:"publish,omitempty"`

	// Invalid are committed parts found missing, short or damaged
	// (VerifyParts): they leave the snapshot, and every user in flight
	// with rows in one of them starts again from its first page. Undone
	// are the finished users with rows in them (UsersInParts): they are
	// no longer done, so the run reads them again. Their rows in other
	// parts must go in the same entry, as Replaced parts rewritten
	// without them, or they would be published twice:
	//
	//  1. bad := VerifyParts(state.Parts)
	//  2. users: UsersInParts(bad) and State.InFlightIn(bad)
	//  3. rewrite every other part holding rows of those users without
	//     them (exporter.FilterPart)
	//  4. append {Invalid: bad, Undone: done users, Replaced: rewrites}
	//  5. delete the bad and the replaced part files.
	Invalid []string   `json:"invalid,omitempty"`
	Undone  []UserDone `json:"undone,omitempty"`

	// Walks are the service walks this entry advanced, each recorded
	// whole (see Walk); WalksDone those it finished; DroppedWalks those it
	// abandoned (no longer configured, or read user by user now), whose
	// rows are removed from their parts in the same entry (Replaced). An
	// Invalid part that holds rows of a walk, or is the users file of a
	// finished one, sends the walk back to its first page (State.WalksIn),
	// and the entry must rewrite the walk's other parts without its rows.
	Walks        []Walk     `json:"walks,omitempty"`
	WalksDone    []WalkDone `json:"walks_done,omitempty"`
	DroppedWalks []string   `json:"dropped_walks,omitempty"`
}

// Sentinel errors.
var (
	// ErrConcurrentWriter means another process appended to the log of the
	// same snapshot: two runs must never write one snapshot at once.
	ErrConcurrentWriter = errors.New("another run is writing this snapshot")
	// ErrLogDamaged is returned (wrapped, with the entry and what to do)
	// by Each and Open when an entry is missing before later ones, or
	// cannot be read.
	ErrLogDamaged = errors.New("checkpoint log is damaged")
	// ErrNoPartLists is returned (wrapped) by UsersInParts when a finished
	// user with bindings was recorded without its parts, by an older
	// bindsync: which users a bad part held cannot be known.
	ErrNoPartLists = errors.New("checkpoint does not say which parts hold each user's rows")
)

// Dir returns the staging directory of a snapshot date.
func Dir(date time.Time) string { return "snapshots/" + date.Format(time.DateOnly) }

// PartsDir returns the staging directory of the part files of a snapshot
// date.
func PartsDir(date time.Time) string { return path.Join(Dir(date), "parts") }

// PartName returns the staging name of a part file of the snapshot.
func PartName(date time.Time, file string) string { return path.Join(PartsDir(date), file) }

// Log is the open checkpoint of one snapshot, replayed into State. Append
// is safe for concurrent use.
type Log struct {
	store staging.Store
	dir   string

	mu    sync.Mutex
	next  int64
	state *State
}

// Open reads every entry of the snapshot's log and returns the log, ready
// for appending, with its replayed state. A missing log is an empty state.
// A damaged log is an error (ErrLogDamaged) that says how to recover; see
// Each.
func Open(ctx context.Context, store staging.Store, date time.Time) (*Log, error) {
	l := &Log{store: store, dir: Dir(date), next: 1, state: newState(date)}
	err := Each(ctx, store, date, func(e *Entry) error {
		l.state.apply(e)
		l.next = e.Seq + 1
		return nil
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

func entryName(dir string, seq int64) string { return fmt.Sprintf("%s/_log/%020d.json", dir, seq) }

// parseSeq returns the sequence number of an entry's name. Only names
// exactly as entryName writes them, directly in the log's directory,
// count: anything else (an entry renamed to .json.bad, or moved into a
// subdirectory) has been moved away.
func parseSeq(dir, name string) (int64, bool) {
	base, ok := strings.CutPrefix(name, dir+"/_log/")
	if !ok || strings.Contains(base, "/") || len(base) != 20+len(".json") || !strings.HasSuffix(base, ".json") {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSuffix(base, ".json"), 10, 64)
	return n, err == nil && n > 0
}

// Append writes e as the next entry and applies it to the state. The parts
// it names must already be durable.
func (l *Log) Append(ctx context.Context, e Entry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.Seq = l.next
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	data, err := json.Marshal(&e)
	if err != nil {
		return fmt.Errorf("encode checkpoint entry: %w", err)
	}
	name := entryName(l.dir, e.Seq)
	if err := l.store.PutIfAbsent(ctx, name, data); err != nil {
		if errors.Is(err, staging.ErrExists) {
			return fmt.Errorf("append checkpoint entry %s: %w", l.store.URI(name), ErrConcurrentWriter)
		}
		return fmt.Errorf("append checkpoint entry %s: %w", l.store.URI(name), err)
	}
	l.next++
	l.state.apply(&e)
	return nil
}

// IsDone reports whether every binding of u is committed; safe to call
// while other goroutines append.
func (l *Log) IsDone(u UserRef) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state.isDone(u)
}

// State returns a copy of the replayed state, safe to read and change
// while other goroutines append: the log alone owns the live state. The
// copy leaves out the set of finished users, which grows with the users of
// the snapshot; ask the log (IsDone) instead.
func (l *Log) State() *State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state.clone()
}

// InFlightParts returns the committed parts holding rows of u, a user in
// flight, as the log names them now (after every rename); false when u is
// not in flight.
func (l *Log) InFlightParts(u UserRef) ([]string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.state.InFlight[u]
	if !ok {
		return nil, false
	}
	return slices.Clone(f.Parts), true
}

// Each calls fn for every entry of the snapshot's log, in order, reading
// one entry at a time. Entries are numbered from 1 without gaps: a missing
// entry before later ones, or an entry that cannot be decoded, stops Each
// with ErrLogDamaged before fn sees any entry after it, and the error says
// how to recover without losing rows.
func Each(ctx context.Context, store staging.Store, date time.Time, fn func(*Entry) error) error {
	return each(ctx, store, date, func(data []byte, e *Entry) error { return json.Unmarshal(data, e) }, fn)
}

// each is Each with the decoding of an entry's bytes given.
func each(ctx context.Context, store staging.Store, date time.Time, decode func([]byte, *Entry) error, fn func(*Entry) error) error {
	dir := Dir(date)
	names, err := store.List(ctx, dir+"/_log/")
	if err != nil {
		return fmt.Errorf("list checkpoint of %s: %w", date.Format(time.DateOnly), err)
	}
	var seqs []int64
	for _, name := range names {
		if seq, ok := parseSeq(dir, name); ok {
			seqs = append(seqs, seq)
		}
	}
	// Zero-padded names list in numeric order.
	for i, seq := range seqs {
		want := int64(i + 1)
		if seq != want {
			return damaged(store, date, want, seqs[i:], "is missing")
		}
		name := entryName(dir, seq)
		data, err := store.ReadAll(ctx, name)
		if errors.Is(err, staging.ErrNotExist) {
			// Removed since it was listed: as good as missing.
			return damaged(store, date, seq, seqs[i+1:], "is missing")
		}
		if err != nil {
			return fmt.Errorf("read checkpoint entry %s: %w", store.URI(name), err)
		}
		var e Entry
		if err := decode(data, &e); err != nil {
			return damaged(store, date, seq, seqs[i+1:], fmt.Sprintf("is corrupt (%v)", err))
		}
		if e.Seq != seq {
			return damaged(store, date, seq, seqs[i+1:], fmt.Sprintf("holds seq %d", e.Seq))
		}
		if err := fn(&e); err != nil {
			return err
		}
	}
	return nil
}

// maxListedEntries bounds how many later entries an ErrLogDamaged message
// names one by one.
const maxListedEntries = 10

// damaged describes a damaged log: entry seq is bad (what says how), and
// later are the entries after it that exist. The remedy offered loses no
// row: without entry seq and every later one, the log describes the
// snapshot as it was before, and what was done after is read again (parts
// named only by the removed entries are never published). Replaying the
// later entries without seq could, by contrast, publish a partial snapshot.
func damaged(store staging.Store, date time.Time, seq int64, later []int64, what string) error {
	day := date.Format(time.DateOnly)
	logDir := store.URI(Dir(date) + "/_log")
	var b strings.Builder
	fmt.Fprintf(&b, "snapshot %s: entry %d (%s) %s", day, seq, path.Base(entryName("", seq)), what)
	if len(later) > 0 {
		fmt.Fprintf(&b, ", and %d later entries depend on it", len(later))
	}
	fmt.Fprintf(&b, ". To resume from the entries before it, move entry %d", seq)
	if len(later) > 0 {
		b.WriteString(" and every later entry (")
		for i, s := range later {
			if i == maxListedEntries {
				fmt.Fprintf(&b, ", ... %d more, up to %s", len(later)-i, path.Base(entryName("", later[len(later)-1])))
				break
			}
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(path.Base(entryName("", s)))
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, " out of %s; the work they recorded is read again. Or start the snapshot over with `bindsync run --force --snapshot-date %s`.", logDir, day)
	return fmt.Errorf("%w: %s", ErrLogDamaged, b.String())
}

// UsersPartName is the staging name of the users part of a snapshot.
func UsersPartName(date time.Time) string { return path.Join(Dir(date), "users", "users.parquet") }

// Reset deletes everything staged for a snapshot but its lock (the log,
// the part files, the users part), so that the next run starts the
// snapshot from scratch; the caller holds the lock.
func Reset(ctx context.Context, store staging.Store, date time.Time) error {
	dir := Dir(date)
	names, err := store.List(ctx, dir+"/")
	if err != nil {
		return fmt.Errorf("list snapshot %s: %w", date.Format(time.DateOnly), err)
	}
	for _, name := range names {
		if path.Base(name) == "LOCK" {
			continue
		}
		if err := store.Delete(ctx, name); err != nil && !errors.Is(err, staging.ErrNotExist) {
			return fmt.Errorf("reset snapshot %s: %w", date.Format(time.DateOnly), err)
		}
	}
	return nil
}

// State is the replay of a snapshot's log.
type State struct {
	Date time.Time
	// Parts are the committed part files, in commit order.
	Parts []Part
	// InFlight are users partly read, by user.
	InFlight map[UserRef]*InFlight
	// Failed are the users that failed in the last run that ended, by user.
	Failed map[UserRef]string
	// Gone are users deleted while the snapshot was read (404).
	Gone map[UserRef]bool
	// NotFound are configured users that never existed (404 at the start).
	NotFound map[UserRef]bool
	// UsersDone, BindingsDone and PagesDone count finished users and
	// their rows over every run.
	UsersDone    int64
	BindingsDone int64
	PagesDone    int64
	// Runs lists every run that started, with its summary once it ended.
	Runs []RunSummary
	// Publish is the publishing state (job IDs, attempts) by key.
	Publish map[string]string
	// Published is set once the snapshot is visible in every warehouse.
	Published     bool
	PublishedTime time.Time
	Cleaned       bool

	// Walks are the service walks in progress and WalksDone the finished
	// ones, by service. A service is read either by a walk or user by user
	// in one snapshot, never both: PerUser names the services that have
	// records of users read one by one (done, in flight, gone or not
	// found) outside any walk.
	Walks     map[string]*Walk
	WalksDone map[string]*WalkDone
	PerUser   map[string]bool

	// done holds a 128-bit hash of every finished or gone user: 16 bytes
	// a user instead of the user's name, since it only answers IsDone, in
	// a set that costs about 16 bytes a key.
	done keyset.Set
}

// userKey is the first 16 bytes of the SHA-256 of a user's service and
// name. A collision would make a user that is not done look done, and its
// bindings would be missing from the snapshot, so the key is wide enough
// for that never to happen in practice: among n users the chance of any
// collision is about n²/2¹²⁹, 1.5·10⁻²⁵ for 10 million users (a 64-bit
// hash gave 2.7·10⁻⁶). SHA-256 also keeps users whose names an outsider
// chooses (identities) from being crafted to collide: that would take
// about 2⁶⁴ hash computations.
type userKey = keyset.Key

func newState(date time.Time) *State {
	return &State{
		Date:     date,
		InFlight: map[UserRef]*InFlight{},
		Failed:   map[UserRef]string{},
		Gone:     map[UserRef]bool{},
		NotFound: map[UserRef]bool{},
		Publish:  map[string]string{},

		Walks:     map[string]*Walk{},
		WalksDone: map[string]*WalkDone{},
		PerUser:   map[string]bool{},
	}
}

func userHash(u UserRef) userKey {
	h := sha256.New()
	h.Write([]byte(u.Service))
	// Service SIDs hold no NUL, so the separator keeps ("a", "b\x00c")
	// and ("a\x00b", "c") apart.
	h.Write([]byte{0})
	h.Write([]byte(u.User))
	var k userKey
	copy(k[:], h.Sum(nil))
	return k
}

// clone copies s but for its set of finished users.
func (s *State) clone() *State {
	c := *s
	c.done = keyset.Set{}
	c.Parts = slices.Clone(s.Parts)
	c.InFlight = make(map[UserRef]*InFlight, len(s.InFlight))
	for u, f := range s.InFlight {
		f := *f
		f.Parts = slices.Clone(f.Parts)
		c.InFlight[u] = &f
	}
	c.Failed = maps.Clone(s.Failed)
	c.Gone = maps.Clone(s.Gone)
	c.NotFound = maps.Clone(s.NotFound)
	c.Publish = maps.Clone(s.Publish)
	w := s.walks().clone()
	c.Walks, c.WalksDone = w.walks, w.done
	c.PerUser = maps.Clone(s.PerUser)
	c.Runs = slices.Clone(s.Runs)
	for i := range c.Runs {
		c.Runs[i].UsersFailed = slices.Clone(c.Runs[i].UsersFailed)
		c.Runs[i].ContractViolations = maps.Clone(c.Runs[i].ContractViolations)
	}
	return &c
}

// isDone reports whether every binding of u is already committed.
func (s *State) isDone(u UserRef) bool {
	return s.done.Has(userHash(u))
}

// Rows is the number of rows in the committed parts.
func (s *State) Rows() int64 {
	var n int64
	for _, p := range s.Parts {
		n += p.Rows
	}
	return n
}

// LastRun returns the newest run, or nil.
func (s *State) LastRun() *RunSummary {
	if len(s.Runs) == 0 {
		return nil
	}
	return &s.Runs[len(s.Runs)-1]
}

func (s *State) apply(e *Entry) {
	switch e.Kind {
	case KindStart:
		s.Runs = append(s.Runs, RunSummary{RunID: e.RunID, Start: e.Time, Status: RunRunning})
	case KindFinish:
		if e.Run != nil {
			replaced := false
			for i := range s.Runs {
				if s.Runs[i].RunID == e.Run.RunID {
					s.Runs[i] = *e.Run
					replaced = true
				}
			}
			if !replaced {
				s.Runs = append(s.Runs, *e.Run)
			}
			clear(s.Failed)
			for _, f := range e.Run.UsersFailed {
				s.Failed[f.UserRef] = f.Reason
			}
		}
	case KindPublish:
		for k, v := range e.Publish {
			s.Publish[k] = v
		}
	case KindPublished:
		s.Published = true
		s.PublishedTime = e.Time
	case KindCleaned:
		s.Cleaned = true
	}
	s.applyReplaced(e.Replaced)
	s.applyInvalid(e.Invalid)
	for _, d := range e.Undone {
		if !s.done.Remove(userHash(d.UserRef)) {
			continue
		}
		s.UsersDone--
		s.BindingsDone -= d.Bindings
		s.PagesDone -= d.Pages
	}
	s.Parts = append(s.Parts, e.Parts...)
	for _, d := range s.walks().apply(e) {
		s.uncount(d)
	}
	for _, d := range e.WalksDone {
		s.UsersDone += d.UsersFile.Rows
		s.BindingsDone += d.Bindings
		s.PagesDone += d.Pages
		delete(s.Failed, UserRef{Service: d.Service, User: ServiceWalkUser})
	}
	for _, u := range e.Done {
		s.markPerUser(u.Service)
	}
	for _, f := range e.InFlight {
		s.markPerUser(f.Service)
	}
	for _, u := range slices.Concat(e.Gone, e.NotFound) {
		s.markPerUser(u.Service)
	}
	for _, d := range e.Done {
		s.done.Add(userHash(d.UserRef))
		delete(s.InFlight, d.UserRef)
		delete(s.Failed, d.UserRef)
		s.UsersDone++
		s.BindingsDone += d.Bindings
		s.PagesDone += d.Pages
	}
	for _, g := range e.Gone {
		s.Gone[g] = true
		s.done.Add(userHash(g))
		delete(s.InFlight, g)
		delete(s.Failed, g)
	}
	for _, g := range e.NotFound {
		s.NotFound[g] = true
		s.done.Add(userHash(g))
		delete(s.InFlight, g)
		delete(s.Failed, g)
	}
	for _, d := range e.Dropped {
		delete(s.InFlight, d)
		delete(s.Failed, d)
	}
	for _, f := range e.InFlight {
		f := f
		f.Parts = slices.Clone(f.Parts)
		s.InFlight[f.UserRef] = &f
	}
	for _, f := range e.Failed {
		s.Failed[f.UserRef] = f.Reason
	}
}

// markPerUser notes that service has users read one by one, unless a walk
// reads it (the walk's gone users come in Gone too).
func (s *State) markPerUser(service string) {
	if !s.walks().walked(service) {
		s.PerUser[service] = true
	}
}

// uncount takes a finished walk that left the snapshot out of the totals.
func (s *State) uncount(d *WalkDone) {
	s.UsersDone -= d.UsersFile.Rows
	s.BindingsDone -= d.Bindings
	s.PagesDone -= d.Pages
}

// applyReplaced renames (or removes) parts, in the part list and in the
// parts of users in flight and of walks.
func (s *State) applyReplaced(rs []Replace) {
	for _, r := range rs {
		i := slices.IndexFunc(s.Parts, func(p Part) bool { return p.Name == r.Old })
		if i < 0 {
			continue
		}
		to := ""
		if r.New != nil {
			to = r.New.Name
		}
		s.walks().rename(r.Old, to)
		if r.New != nil {
			s.Parts[i] = *r.New
		} else {
			s.Parts = slices.Delete(s.Parts, i, i+1)
		}
		for _, f := range s.InFlight {
			for j, p := range f.Parts {
				if p == r.Old && r.New != nil {
					f.Parts[j] = r.New.Name
				}
			}
			if r.New == nil {
				f.Parts = slices.DeleteFunc(f.Parts, func(p string) bool { return p == r.Old })
			}
		}
	}
}

// applyInvalid removes bad parts from the snapshot and sends every user in
// flight, and every walk, with rows in them back to its first page.
// Finished users with rows in them are un-finished by the entry's Undone
// list; finished walks with rows in them (or whose users file is bad) are
// reopened here.
func (s *State) applyInvalid(bad []string) {
	if len(bad) == 0 {
		return
	}
	for _, d := range s.walks().invalidate(bad) {
		s.uncount(d)
	}
	s.Parts = slices.DeleteFunc(s.Parts, func(p Part) bool { return slices.Contains(bad, p.Name) })
	for _, f := range s.InFlight {
		if slices.ContainsFunc(f.Parts, func(p string) bool { return slices.Contains(bad, p) }) {
			*f = InFlight{UserRef: f.UserRef, UserSID: f.UserSID, Identity: f.Identity}
		}
	}
}

// Package checkpoint records the progress of one snapshot in the staging
// store, so that a run that dies at any moment can be resumed by the next
// run of the same snapshot date without fetching again what was finished
// and without writing any binding twice.
//
// The checkpoint is an append-only log, in the manner of a database
// transaction log: every entry is a small JSON object written once, with
// PutIfAbsent, under <snapshot>/_log/<seq>.json. An entry is written only
// after the part files it names are durable, so replaying the log always
// describes parts that exist. The state of a snapshot is the replay of its
// entries in order; nothing is ever rewritten in place.
package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

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
}

// UserRef names a user of a service the way the run addresses it: by SID
// for users found through the Users API, by the configured string (SID or
// identity) for users listed in the configuration.
type UserRef struct {
	Service string `json:"service"`
	User    string `json:"user"`
}

func (u UserRef) String() string { return u.Service + "/" + u.User }

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
	RunID         string       `json:"run_id"`
	Start         time.Time    `json:"start"`
	End           time.Time    `json:"end"`
	Status        string       `json:"status"` // "succeeded", "failed", "interrupted"
	Error         string       `json:"error,omitempty"`
	Services      int          `json:"services"`
	UsersTotal    int64        `json:"users_total"`
	UsersDone     int64        `json:"users_done"`
	UsersGone     int64        `json:"users_gone"`
	UsersNotFound int64        `json:"users_not_found,omitempty"`
	UsersFailed   []UserFailed `json:"users_failed,omitempty"`
	Bindings      int64        `json:"bindings"`
	Pages         int64        `json:"pages"`
	Retries       int64        `json:"retries"`
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
}

// Sentinel errors.
var (
	// ErrConcurrentWriter means another process appended to the log of the
	// same snapshot: two runs must never write one snapshot at once.
	ErrConcurrentWriter = errors.New("another run is writing this snapshot")
)

// Dir returns the staging directory of a snapshot date.
func Dir(date time.Time) string { return "snapshots/" + date.Format(time.DateOnly) }

// PartName returns the staging name of a part file of the snapshot.
func PartName(date time.Time, file string) string { return path.Join(Dir(date), "parts", file) }

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

func parseSeq(name string) (int64, bool) {
	base := path.Base(name)
	if !strings.HasSuffix(base, ".json") {
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
	return l.state.IsDone(u)
}

// State returns the replayed state. The caller must not change it, and must
// not read it while another goroutine appends.
func (l *Log) State() *State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state
}

// Each calls fn for every entry of the snapshot's log, in order, reading
// one entry at a time.
func Each(ctx context.Context, store staging.Store, date time.Time, fn func(*Entry) error) error {
	names, err := store.List(ctx, Dir(date)+"/_log/")
	if err != nil {
		return fmt.Errorf("list checkpoint of %s: %w", date.Format(time.DateOnly), err)
	}
	for _, name := range names {
		seq, ok := parseSeq(name)
		if !ok {
			continue
		}
		data, err := store.ReadAll(ctx, name)
		if err != nil {
			return fmt.Errorf("read checkpoint entry %s: %w", store.URI(name), err)
		}
		var e Entry
		if err := json.Unmarshal(data, &e); err != nil {
			return fmt.Errorf("checkpoint entry %s is corrupt (%v): move it away to resume from the entries before it", store.URI(name), err)
		}
		if e.Seq != seq {
			return fmt.Errorf("checkpoint entry %s holds seq %d, want %d", store.URI(name), e.Seq, seq)
		}
		if err := fn(&e); err != nil {
			return err
		}
	}
	return nil
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

	// done holds a 64-bit hash of every finished user: 8 bytes a user
	// instead of the user's name, since it only answers IsDone.
	done map[uint64]struct{}
}

func newState(date time.Time) *State {
	return &State{
		Date:     date,
		InFlight: map[UserRef]*InFlight{},
		Failed:   map[UserRef]string{},
		Gone:     map[UserRef]bool{},
		NotFound: map[UserRef]bool{},
		Publish:  map[string]string{},
		done:     map[uint64]struct{}{},
	}
}

func userHash(u UserRef) uint64 {
	h := fnv.New64a()
	h.Write([]byte(u.Service))
	h.Write([]byte{0})
	h.Write([]byte(u.User))
	return h.Sum64()
}

// IsDone reports whether every binding of u is already committed.
func (s *State) IsDone(u UserRef) bool {
	_, ok := s.done[userHash(u)]
	return ok
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
		s.Runs = append(s.Runs, RunSummary{RunID: e.RunID, Start: e.Time, Status: "running"})
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
	for _, r := range e.Replaced {
		i := slices.IndexFunc(s.Parts, func(p Part) bool { return p.Name == r.Old })
		if i < 0 {
			continue
		}
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
	s.Parts = append(s.Parts, e.Parts...)
	for _, d := range e.Done {
		s.done[userHash(d.UserRef)] = struct{}{}
		delete(s.InFlight, d.UserRef)
		delete(s.Failed, d.UserRef)
		s.UsersDone++
		s.BindingsDone += d.Bindings
		s.PagesDone += d.Pages
	}
	for _, g := range e.Gone {
		s.Gone[g] = true
		s.done[userHash(g)] = struct{}{}
		delete(s.InFlight, g)
		delete(s.Failed, g)
	}
	for _, g := range e.NotFound {
		s.NotFound[g] = true
		s.done[userHash(g)] = struct{}{}
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

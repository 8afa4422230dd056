package checkpoint

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"iter"
	"maps"
	"path"
	"slices"
	"sort"
	"time"

	"github.com/bindsync/bindsync/staging"
)

// A service walk reads a whole service through its service-wide Bindings
// list (the worker's service strategy) instead of user by user. Its unit
// of progress is the service, not the user: while it goes on, the log
// holds one Walk record per service (its saved page, its parts and counts,
// replaced whole at every commit, so that replaying an entry twice changes
// nothing); when it ends, one WalkDone names its parts and a users file
// that lists every user of the service with its number of bindings. The
// users are not recorded one by one in the log, so neither the log nor the
// state grows with the users of a walked service; EachDone reads them
// from the users file.

// ServiceWalkUser is the user named by the UserFailed of a service walk
// that failed: the walk reads a service, not one user.
const ServiceWalkUser = "(service walk)"

// Walk is a service walk in progress: its rows so far are in Parts, and
// reading resumes at Next (an opaque page reference of the Twilio client;
// "" with End false is the first page). End says the Bindings list was
// read to its end: what remains is to record the users. Gone are the
// identities found deleted so far (their rows are left out); they are
// recorded as gone users when the walk finishes.
type Walk struct {
	Service  string   `json:"service"`
	Next     string   `json:"next,omitempty"`
	End      bool     `json:"end,omitempty"`
	Parts    []string `json:"parts"`
	Bindings int64    `json:"bindings"`
	Pages    int64    `json:"pages"`
	Gone     []string `json:"gone,omitempty"`
}

// WalkDone is a finished service walk: every binding it read is in Parts,
// and UsersFile lists its users (UsersFile.Rows of them), each with its
// number of bindings, for the users table. Users found gone while walking
// are in the Gone of the same entry.
type WalkDone struct {
	Service   string   `json:"service"`
	Parts     []string `json:"parts"`
	Bindings  int64    `json:"bindings"`
	Pages     int64    `json:"pages"`
	UsersFile Part     `json:"users_file"`
}

// WalkUser is one user of a walked service, as its users file records it.
type WalkUser struct {
	SID      string `json:"sid"`
	Identity string `json:"identity,omitempty"`
	Bindings int64  `json:"bindings"`
}

// ErrUsersFileDamaged is returned (wrapped, naming the file) when the users
// file of a finished service walk is missing or differs from what was
// recorded; VerifyParts reports it as a bad part, which sends the walk back
// to its first page.
var ErrUsersFileDamaged = errors.New("users file of a service walk is damaged")

// WalkUsersName returns the staging name of a users file of the snapshot.
func WalkUsersName(date time.Time, file string) string {
	return path.Join(Dir(date), "walks", file)
}

// walkState is the replay of the service walks of a log, by service: those
// in progress and those finished. State's Walks and WalksDone are one
// (State.walks); EachDone replays one on its own to know which users files
// stand.
type walkState struct {
	walks map[string]*Walk
	done  map[string]*WalkDone
}

func newWalkState() walkState {
	return walkState{walks: map[string]*Walk{}, done: map[string]*WalkDone{}}
}

// walks is the walkState over s's own maps.
func (s *State) walks() walkState { return walkState{walks: s.Walks, done: s.WalksDone} }

func (s walkState) clone() walkState {
	c := newWalkState()
	for k, w := range s.walks {
		w := *w
		w.Parts = slices.Clone(w.Parts)
		w.Gone = slices.Clone(w.Gone)
		c.walks[k] = &w
	}
	for k, d := range s.done {
		d := *d
		d.Parts = slices.Clone(d.Parts)
		c.done[k] = &d
	}
	return c
}

// walked reports whether service is read by a walk in this snapshot.
func (s walkState) walked(service string) bool {
	return s.walks[service] != nil || s.done[service] != nil
}

// rename renames (or removes, when to is "") part from in every walk.
func (s walkState) rename(from, to string) {
	fix := func(parts []string) []string {
		for i, p := range parts {
			if p == from {
				parts[i] = to
			}
		}
		return slices.DeleteFunc(parts, func(p string) bool { return p == "" })
	}
	for _, w := range s.walks {
		w.Parts = fix(w.Parts)
	}
	for _, d := range s.done {
		d.Parts = fix(d.Parts)
	}
}

// invalidate sends every walk with rows in one of the bad parts, or whose
// users file is bad, back to its first page, and returns the finished ones
// it reopened (their counts leave the totals). The entry that names the
// bad parts rewrites the walk's other parts without its rows.
func (s walkState) invalidate(bad []string) (reopened []*WalkDone) {
	hit := func(parts []string) bool {
		return slices.ContainsFunc(parts, func(p string) bool { return slices.Contains(bad, p) })
	}
	for svc, w := range s.walks {
		if hit(w.Parts) {
			s.walks[svc] = &Walk{Service: svc}
		}
	}
	for svc, d := range s.done {
		if hit(d.Parts) || slices.Contains(bad, d.UsersFile.Name) {
			delete(s.done, svc)
			s.walks[svc] = &Walk{Service: svc}
			reopened = append(reopened, d)
		}
	}
	return reopened
}

// apply applies the walk records of e after its Replaced and Invalid:
// walks dropped, advanced, and finished. It returns the finished walks
// that e drops or finishes again (their counts leave the totals, so that
// a walk finished twice counts once).
func (s walkState) apply(e *Entry) (dropped []*WalkDone) {
	for _, svc := range e.DroppedWalks {
		delete(s.walks, svc)
		if d := s.done[svc]; d != nil {
			delete(s.done, svc)
			dropped = append(dropped, d)
		}
	}
	for _, w := range e.Walks {
		w.Parts = slices.Clone(w.Parts)
		w.Gone = slices.Clone(w.Gone)
		s.walks[w.Service] = &w
	}
	for _, d := range e.WalksDone {
		d.Parts = slices.Clone(d.Parts)
		delete(s.walks, d.Service)
		if old := s.done[d.Service]; old != nil {
			dropped = append(dropped, old)
		}
		s.done[d.Service] = &d
	}
	return dropped
}

// replay applies e to s as State.apply does: renames, invalid parts, then
// the walks of e.
func (s walkState) replay(e *Entry) {
	for _, r := range e.Replaced {
		to := ""
		if r.New != nil {
			to = r.New.Name
		}
		s.rename(r.Old, to)
	}
	if len(e.Invalid) > 0 {
		s.invalidate(e.Invalid)
	}
	s.apply(e)
}

// WalkParts returns the parts holding rows of the walk of service, as the
// log names them now (after every rename); false when the service has no
// walk in progress or finished. Safe while other goroutines append.
func (l *Log) WalkParts(service string) ([]string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state.WalkParts(service)
}

// WalksIn returns the services whose walk, in progress or finished, has
// rows in any of the named parts or whose users file is one of them,
// sorted: the walks that an Entry.Invalid of those parts sends back to
// their first page. Every other part holding their rows must be rewritten
// without the rows of those services in the same entry.
func (s *State) WalksIn(parts []string) []string {
	var out []string
	hit := func(ps []string) bool {
		return slices.ContainsFunc(ps, func(p string) bool { return slices.Contains(parts, p) })
	}
	for svc, w := range s.Walks {
		if hit(w.Parts) {
			out = append(out, svc)
		}
	}
	for svc, d := range s.WalksDone {
		if hit(d.Parts) || slices.Contains(parts, d.UsersFile.Name) {
			out = append(out, svc)
		}
	}
	sort.Strings(out)
	return out
}

// WalkParts returns the parts holding rows of the walk of service, in
// progress or finished, as the log names them now; false when the service
// has no walk.
func (s *State) WalkParts(service string) ([]string, bool) {
	if w := s.Walks[service]; w != nil {
		return slices.Clone(w.Parts), true
	}
	if d := s.WalksDone[service]; d != nil {
		return slices.Clone(d.Parts), true
	}
	return nil, false
}

// UsersFiles returns the users files of the finished walks, in the order
// of their services, to be checked like parts (VerifyParts) before publishing.
func (s *State) UsersFiles() []Part {
	out := make([]Part, 0, len(s.WalksDone))
	for _, svc := range slices.Sorted(maps.Keys(s.WalksDone)) {
		out = append(out, s.WalksDone[svc].UsersFile)
	}
	return out
}

// WriteUsersFile writes the users file name of a service walk, with users
// in the order they come, and returns it as recorded in WalkDone.UsersFile
// (Rows: the users written). The file is gzipped JSON lines; nothing is
// visible under name unless it returns nil.
func WriteUsersFile(ctx context.Context, store staging.Store, name string, users iter.Seq[WalkUser]) (Part, error) {
	w, err := store.Create(ctx, name)
	if err != nil {
		return Part{}, fmt.Errorf("create users file %s: %w", store.URI(name), err)
	}
	cw := &checksumWriter{w: w, crc: crc32.New(staging.CRC32CTable)}
	zw, _ := gzip.NewWriterLevel(cw, gzip.BestSpeed)
	bw := bufio.NewWriterSize(zw, 64<<10)
	enc := json.NewEncoder(bw)
	var rows int64
	for u := range users {
		if err = enc.Encode(&u); err != nil {
			break
		}
		rows++
		if rows%4096 == 0 {
			if err = ctx.Err(); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		err = w.Close()
	} else {
		w.Abort()
	}
	if err != nil {
		return Part{}, fmt.Errorf("write users file %s: %w", store.URI(name), err)
	}
	return Part{Name: name, Rows: rows, Bytes: cw.n, CRC32C: cw.crc.Sum32()}, nil
}

type checksumWriter struct {
	w   io.Writer
	crc hash.Hash32
	n   int64
}

func (c *checksumWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.crc.Write(p[:n])
	c.n += int64(n)
	return n, err
}

// ReadUsersFile calls fn for every user of the users file f, in file
// order. The file is checked against f before fn sees any user (size and
// CRC32C, by Store.Checksum) and its users are counted against f.Rows at
// the end; a file that is missing or differs gives an error wrapping
// ErrUsersFileDamaged.
func ReadUsersFile(ctx context.Context, store staging.Store, f Part, fn func(*WalkUser) error) error {
	damaged := func(what string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrUsersFileDamaged, store.URI(f.Name), fmt.Sprintf(what, args...))
	}
	sum, size, err := store.Checksum(ctx, f.Name)
	switch {
	case errors.Is(err, staging.ErrNotExist):
		return damaged("missing")
	case err != nil:
		return fmt.Errorf("read users file %s: %w", store.URI(f.Name), err)
	case size != f.Bytes || sum != f.CRC32C:
		return damaged("%d bytes with crc32c %08x, %d bytes with %08x recorded", size, sum, f.Bytes, f.CRC32C)
	}
	obj, err := store.Open(ctx, f.Name)
	if errors.Is(err, staging.ErrNotExist) {
		return damaged("missing")
	}
	if err != nil {
		return fmt.Errorf("read users file %s: %w", store.URI(f.Name), err)
	}
	defer obj.Close()
	zr, err := gzip.NewReader(bufio.NewReaderSize(io.NewSectionReader(obj, 0, obj.Size()), 64<<10))
	if err != nil {
		return damaged("%v", err)
	}
	dec := json.NewDecoder(zr)
	var rows int64
	for {
		var u WalkUser
		err := dec.Decode(&u)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return damaged("user %d: %v", rows+1, err)
		}
		rows++
		if err := fn(&u); err != nil {
			return err
		}
		if rows%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	if rows != f.Rows {
		return damaged("%d users, %d recorded", rows, f.Rows)
	}
	return nil
}

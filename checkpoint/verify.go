package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/bindsync/bindsync/staging"
)

// Reasons a part is bad, the start of BadPart.Reason.
const (
	ReasonMissing  = "missing"
	ReasonShort    = "short"
	ReasonLong     = "longer than recorded"
	ReasonChecksum = "checksum mismatch"
)

// BadPart is a committed part that must not be published: its file is
// missing, or differs from what was written.
type BadPart struct {
	Part
	// Reason starts with one of the Reason constants, followed by the
	// details, e.g. "short: 1200 of 4096 bytes".
	Reason string
}

func (b BadPart) String() string { return b.Name + ": " + b.Reason }

// verifyConcurrency bounds the checksum requests in flight: on GCS each is
// one metadata request, locally each reads one file.
const verifyConcurrency = 8

// VerifyParts checks every part against the store's checksum of its file
// (Store.Checksum: a metadata request on GCS, a read of the file in a
// local directory) and returns those that are missing, short, longer, or
// whose CRC32C differs from the recorded one, in the order of parts. err is
// set only when the store itself fails (or ctx ends): then bad is nil and
// nothing can be concluded.
func VerifyParts(ctx context.Context, store staging.Store, parts []Part) (bad []BadPart, err error) {
	reasons := make([]string, len(parts))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(verifyConcurrency)
	for i, p := range parts {
		g.Go(func() error {
			sum, size, err := store.Checksum(gctx, p.Name)
			switch {
			case errors.Is(err, staging.ErrNotExist):
				reasons[i] = ReasonMissing
			case err != nil:
				return fmt.Errorf("verify part %s: %w", store.URI(p.Name), err)
			case size < p.Bytes:
				reasons[i] = fmt.Sprintf("%s: %d of %d bytes", ReasonShort, size, p.Bytes)
			case size > p.Bytes:
				reasons[i] = fmt.Sprintf("%s: %d bytes, %d recorded", ReasonLong, size, p.Bytes)
			case sum != p.CRC32C:
				reasons[i] = fmt.Sprintf("%s: crc32c %08x, %08x recorded", ReasonChecksum, sum, p.CRC32C)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for i, r := range reasons {
		if r != "" {
			bad = append(bad, BadPart{Part: parts[i], Reason: r})
		}
	}
	return bad, nil
}

// InFlightIn returns the users in flight with rows in any of the named
// parts, sorted: the users that an Entry.Invalid of those parts sends
// back to their first page.
func (s *State) InFlightIn(parts []string) []UserRef {
	var out []UserRef
	for u, f := range s.InFlight {
		if slices.ContainsFunc(f.Parts, func(p string) bool { return slices.Contains(parts, p) }) {
			out = append(out, u)
		}
	}
	sortUsers(out)
	return out
}

func sortUsers(us []UserRef) {
	sort.Slice(us, func(i, j int) bool {
		if us[i].Service != us[j].Service {
			return us[i].Service < us[j].Service
		}
		return us[i].User < us[j].User
	})
}

// UsersInParts replays the snapshot's log and returns the finished users
// with rows in any of the named parts (as the parts are named now), each
// with Parts set to the current names of every part holding its rows: the
// users an Entry.Invalid of those parts must un-finish (Undone), and the
// parts to rewrite without them. Users in flight are in the state already
// (State.InFlightIn).
//
// It reads the log twice and keeps in memory only the renames of parts
// and the users it returns, never a part list per finished user. It fails
// with ErrNoPartLists when a finished user with bindings was recorded
// without its parts.
func UsersInParts(ctx context.Context, store staging.Store, date time.Time, parts []string) ([]UserDone, error) {
	// First pass: where every replaced part went ("" when removed).
	renamed := map[string]string{}
	err := Each(ctx, store, date, func(e *Entry) error {
		for _, r := range e.Replaced {
			renamed[r.Old] = ""
			if r.New != nil {
				renamed[r.Old] = r.New.Name
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("find users in parts: %w", err)
	}
	current := func(name string) string {
		// A part is replaced by a new name each time, so the chain is at
		// most as long as the map; the bound guards against a cycle in a
		// hand-edited log.
		for range len(renamed) + 1 {
			next, ok := renamed[name]
			if !ok {
				return name
			}
			name = next
		}
		return ""
	}
	targets := make(map[string]bool, len(parts))
	for _, p := range parts {
		targets[p] = true
	}

	// Second pass: the latest standing record of each user in a target.
	found := map[UserRef]UserDone{}
	err = Each(ctx, store, date, func(e *Entry) error {
		for _, d := range e.Undone {
			delete(found, d.UserRef)
		}
		for _, d := range e.Done {
			if d.Bindings > 0 && len(d.Parts) == 0 {
				return fmt.Errorf("%w: user %s finished in entry %d without them (written by an older bindsync); start the snapshot over with `bindsync run --force --snapshot-date %s`",
					ErrNoPartLists, d.UserRef, e.Seq, date.Format(time.DateOnly))
			}
			var now []string
			hit := false
			for _, p := range d.Parts {
				c := current(p)
				if c == "" || slices.Contains(now, c) {
					continue
				}
				now = append(now, c)
				hit = hit || targets[c]
			}
			if !hit {
				delete(found, d.UserRef)
				continue
			}
			d.Parts = now
			found[d.UserRef] = d
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("find users in parts: %w", err)
	}
	out := make([]UserDone, 0, len(found))
	for _, d := range found {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Service != out[j].Service {
			return out[i].Service < out[j].Service
		}
		return out[i].User < out[j].User
	})
	return out, nil
}

// decodeSkippingDone decodes an entry as json.Unmarshal does, except that
// its Done list stays empty (the bytes are still checked to be JSON).
func decodeSkippingDone(data []byte, e *Entry) error {
	v := struct {
		*Entry
		Done skipped `json:"done,omitempty"`
	}{Entry: e}
	return json.Unmarshal(data, &v)
}

// skipped is a JSON value decoded into nothing.
type skipped struct{}

func (*skipped) UnmarshalJSON([]byte) error { return nil }

// EachDone calls fn, in log order, for every finished user whose record
// still stands: a user un-finished later (Entry.Undone) is skipped, and
// only its latest Done counts if it finished again. Then it calls fn for
// every user of every finished service walk, from its users file (in the
// order of the services; Pages is 0, the walk's pages are its own), which
// fails with ErrUsersFileDamaged if the file is missing or damaged. It is
// what the users table is written from. It reads the log twice and keeps
// in memory only the un-finished users and the walks.
func EachDone(ctx context.Context, store staging.Store, date time.Time, fn func(*UserDone) error) error {
	undone := map[UserRef]int64{} // user -> seq of its last Undone
	walks := newWalkState()
	// The first pass needs every field but the users done, most of the
	// log's bytes: it leaves them undecoded.
	err := each(ctx, store, date, decodeSkippingDone, func(e *Entry) error {
		for _, d := range e.Undone {
			undone[d.UserRef] = e.Seq
		}
		walks.replay(e)
		return nil
	})
	if err != nil {
		return err
	}
	err = Each(ctx, store, date, func(e *Entry) error {
		for i := range e.Done {
			if undone[e.Done[i].UserRef] > e.Seq {
				continue
			}
			if err := fn(&e.Done[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, svc := range slices.Sorted(maps.Keys(walks.done)) {
		err := ReadUsersFile(ctx, store, walks.done[svc].UsersFile, func(u *WalkUser) error {
			return fn(&UserDone{UserRef: UserRef{Service: svc, User: u.SID}, Bindings: u.Bindings, UserSID: u.SID, Identity: u.Identity})
		})
		if err != nil {
			return fmt.Errorf("users of the walk of service %s: %w", svc, err)
		}
	}
	return nil
}

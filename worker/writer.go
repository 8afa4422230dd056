package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/internal/safetext"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/twilio"
)

type eventKind int

const (
	evPage     eventKind = iota // a page of a user; next == "" ends the user
	evGone                      // the user was deleted while the snapshot was read: its rows go
	evNotFound                  // a configured user that does not exist
	evFailed                    // the user failed after retries
	evRestart                   // drop the user's committed rows: it is read again from page one
	evDrop                      // drop the user's committed rows: it is left out of the snapshot

	// Events of a service walk; user.Service names the service.
	evWalkPage    // a page of the service's Bindings list; next == "" ends the list
	evWalkDone    // the walk is finished: its users are in usersFile
	evWalkRestart // drop the walk's rows: it is read again from page one
	evWalkDrop    // drop the walk's rows: the service is no longer walked
	evCall        // run call in the writer, where no part changes meanwhile
)

type event struct {
	kind     eventKind
	user     checkpoint.UserRef
	bindings []twilio.Binding
	next     string
	reason   string
	// sid and identity: what the fetcher knew of the user (may be empty);
	// name: the configured string that named the user ("" when listed).
	sid, identity, name string
	// gone are the identities of a walk found deleted while it read this
	// page; usersFile the users of a finished walk.
	gone      []string
	usersFile checkpoint.Part
	call      func() error
	ack       chan error
}

// errWalkRejected answers the evWalkDone of a walk that the writer had to
// give up (a page it could not write): the walk is not finished.
var errWalkRejected = errors.New("the walk failed")

// writer is the single goroutine that owns the open part file and the
// checkpoint. Pages of one user arrive in order (one fetcher reads a user),
// so the writer always knows, for the rows in the open part, which users
// they finish and where each unfinished user resumes. A commit closes the
// part, makes it durable, and then appends one log entry saying so.
type writer struct {
	r         *run
	ctx       context.Context // not cancelled with the run: commits must land
	events    chan event
	closeOnce sync.Once

	part     *exporter.PartWriter
	partName string
	meta     schemas.RowMeta

	// Since the last commit.
	done          []checkpoint.UserDone
	gone          []checkpoint.UserRef
	notFound      []checkpoint.UserRef
	pendingFailed []checkpoint.UserFailed
	touched       map[checkpoint.UserRef]bool
	inFlight      map[checkpoint.UserRef]*checkpoint.InFlight

	// The service walks in progress, by service (as committed, then
	// advanced by pages), those advanced or finished since the last commit,
	// and those given up in this run (a page that could not be written).
	walks        map[string]*checkpoint.Walk
	walkTouched  map[string]bool
	walksDone    []checkpoint.WalkDone
	walkRejected map[string]bool

	// failed are the users that failed while this writer ran (at most
	// MaxNamedFailures over the run, counting named), and violations the
	// records that broke the API's contract, by kind: the writer alone
	// changes them, and the run reads them once the writer is done.
	failed     []checkpoint.UserFailed
	named      int
	violations map[string]int64

	// rejected are users whose page could not be written (a value over
	// the exporter's limit): their later pages are ignored.
	rejected map[checkpoint.UserRef]bool

	err error // first error; later events are drained and ignored
	// onError, when set, is called once with the first error.
	onError func(error)
}

func newWriter(r *run, ctx context.Context) *writer {
	w := &writer{
		r:        r,
		ctx:      ctx,
		events:   make(chan event, r.opts.Concurrency*2),
		touched:  map[checkpoint.UserRef]bool{},
		inFlight: map[checkpoint.UserRef]*checkpoint.InFlight{},
		rejected: map[checkpoint.UserRef]bool{},
		meta:     schemas.RowMeta{SnapshotDate: r.date, SyncedAt: r.start},
	}
	// The in-flight users and walks as committed (State hands out a
	// copy): the writer advances them as pages come.
	st := r.cp.State()
	w.inFlight = st.InFlight
	w.walks = st.Walks
	w.walkTouched = map[string]bool{}
	w.walkRejected = map[string]bool{}
	w.violations = map[string]int64{}
	w.named = len(r.failed) // earlier rounds of the same run

	return w
}

func (w *writer) send(e event) { w.events <- e }

// sendWait sends e and waits until the writer has handled it.
func (w *writer) sendWait(e event) error {
	e.ack = make(chan error, 1)
	w.events <- e
	return <-e.ack
}

func (w *writer) close() { w.closeOnce.Do(func() { close(w.events) }) }

func (w *writer) loop() error {
	tick := time.NewTicker(w.r.opts.CommitInterval)
	defer tick.Stop()
	for {
		select {
		case e, ok := <-w.events:
			if !ok {
				if w.err == nil {
					w.fail(w.guard(w.commit))
				} else if w.part != nil {
					w.part.Abort()
				}
				return w.err
			}
			if w.err != nil {
				if e.ack != nil {
					e.ack <- w.err
				}
				continue
			}
			err := w.guard(func() error { return w.handle(e) })
			if e.ack != nil {
				e.ack <- err
			}
			w.fail(err)
		case <-tick.C:
			if w.err == nil && w.pending() {
				w.fail(w.guard(w.commit))
			}
		}
	}
}

// guard runs fn and turns a panic in it into an error of the run, so that
// the writer goes on draining events (the fetchers never block on it) and
// the run ends with the panic named instead of killing the process.
func (w *writer) guard(fn func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("checkpoint writer: %w", Recovered(v))
		}
	}()
	return fn()
}

// fail records the writer's first error and reports it.
func (w *writer) fail(err error) {
	if err == nil || w.err != nil {
		return
	}
	w.err = err
	if w.onError != nil {
		w.onError(err)
	}
}

func (w *writer) pending() bool {
	return w.part != nil || len(w.done)+len(w.gone)+len(w.notFound)+len(w.pendingFailed)+len(w.touched)+len(w.walkTouched)+len(w.walksDone) > 0
}

func (w *writer) handle(e event) error {
	switch e.kind {
	case evPage:
		if w.rejected[e.user] {
			return nil // the user failed on an earlier page of this run
		}
		f := w.inFlight[e.user]
		if f == nil {
			f = &checkpoint.InFlight{UserRef: e.user}
			w.inFlight[e.user] = f
		}
		if len(e.bindings) > 0 {
			if w.part == nil {
				if err := w.openPart(); err != nil {
					return err
				}
			}
			err := w.part.Append(e.bindings)
			if errors.Is(err, exporter.ErrValueTooLarge) {
				// Nothing of the page was written: the user fails and
				// resumes at this page next run; the run goes on.
				w.rejected[e.user] = true
				w.recordFailed(checkpoint.UserFailed{UserRef: e.user, Reason: err.Error()})
				return nil
			}
			if err != nil {
				return fmt.Errorf("write part %s: %w", w.partName, err)
			}
			for i := range e.bindings {
				for _, v := range schemas.Violations(&e.bindings[i]) {
					w.violations[v]++
				}
			}
			if !slices.Contains(f.Parts, w.partName) {
				f.Parts = append(f.Parts, w.partName)
			}
		}
		f.Bindings += int64(len(e.bindings))
		f.Pages++
		f.Next = e.next
		learn(f, e)
		if e.next == "" {
			delete(w.inFlight, e.user)
			delete(w.touched, e.user)
			w.done = append(w.done, checkpoint.UserDone{UserRef: e.user, Bindings: f.Bindings, Pages: f.Pages, UserSID: f.UserSID, Identity: f.Identity, Name: f.Name, Parts: f.Parts})
			w.r.stats.UsersDone.Add(1)
		} else {
			w.touched[e.user] = true
		}
		if w.part != nil && w.part.Rows() >= int64(w.r.opts.PartRows) {
			return w.commit()
		}
	case evGone:
		w.r.stats.UsersGone.Add(1)
		if f := w.inFlight[e.user]; f != nil && len(f.Parts) > 0 {
			// Deleted after some of its pages were read: a gone user
			// has no rows, so they are taken out again.
			return w.dropUser(e.user, dropGone)
		}
		delete(w.inFlight, e.user)
		delete(w.touched, e.user)
		w.gone = append(w.gone, e.user)
	case evNotFound:
		delete(w.inFlight, e.user)
		delete(w.touched, e.user)
		w.notFound = append(w.notFound, e.user)
		w.r.stats.UsersNotFound.Add(1)
	case evFailed:
		w.recordFailed(checkpoint.UserFailed{UserRef: e.user, Reason: e.reason})
	case evRestart:
		return w.dropUser(e.user, dropRestart)
	case evDrop:
		return w.dropUser(e.user, dropLeftOut)
	case evWalkPage:
		return w.walkPage(e)
	case evWalkDone:
		return w.walkDone(e)
	case evWalkRestart:
		return w.dropWalk(e.user.Service, dropRestart)
	case evWalkDrop:
		return w.dropWalk(e.user.Service, dropLeftOut)
	case evCall:
		return e.call()
	}
	return nil
}

// walkPage writes a page of a service walk and advances the walk.
func (w *writer) walkPage(e event) error {
	svc := e.user.Service
	if w.walkRejected[svc] {
		return nil // the walk failed on an earlier page of this run
	}
	wk := w.walks[svc]
	if wk == nil {
		wk = &checkpoint.Walk{Service: svc}
		w.walks[svc] = wk
	}
	if len(e.bindings) > 0 {
		if w.part == nil {
			if err := w.openPart(); err != nil {
				return err
			}
		}
		err := w.part.Append(e.bindings)
		if errors.Is(err, exporter.ErrValueTooLarge) {
			// Nothing of the page was written: the walk fails and
			// resumes at this page next run; the run goes on.
			w.walkRejected[svc] = true
			w.recordFailed(checkpoint.UserFailed{UserRef: e.user, Reason: err.Error()})
			return nil
		}
		if err != nil {
			return fmt.Errorf("write part %s: %w", w.partName, err)
		}
		for i := range e.bindings {
			for _, v := range schemas.Violations(&e.bindings[i]) {
				w.violations[v]++
			}
		}
		if !slices.Contains(wk.Parts, w.partName) {
			wk.Parts = append(wk.Parts, w.partName)
		}
	}
	wk.Bindings += int64(len(e.bindings))
	wk.Pages++
	wk.Next = e.next
	wk.End = e.next == ""
	for _, id := range e.gone {
		if !slices.Contains(wk.Gone, id) {
			wk.Gone = append(wk.Gone, id)
		}
	}
	w.walkTouched[svc] = true
	if w.part != nil && w.part.Rows() >= int64(w.r.opts.PartRows) {
		return w.commit()
	}
	return nil
}

// walkDone finishes a walk whose every page was written: one commit makes
// its last rows durable and records it finished, with its users file and
// the users found gone.
func (w *writer) walkDone(e event) error {
	svc := e.user.Service
	wk := w.walks[svc]
	if w.walkRejected[svc] {
		return errWalkRejected
	}
	if wk == nil || !wk.End {
		return fmt.Errorf("service %s: walk finished before the end of its Bindings list", svc)
	}
	w.walksDone = append(w.walksDone, checkpoint.WalkDone{Service: svc, Parts: wk.Parts, Bindings: wk.Bindings, Pages: wk.Pages, UsersFile: e.usersFile})
	for _, id := range wk.Gone {
		w.gone = append(w.gone, checkpoint.UserRef{Service: svc, User: id})
	}
	delete(w.walks, svc)
	delete(w.walkTouched, svc)
	w.r.stats.UsersDone.Add(e.usersFile.Rows)
	w.r.stats.UsersGone.Add(int64(len(wk.Gone)))
	return w.commit()
}

// recordFailed notes a failed user. Reasons are cut short and at most
// MaxNamedFailures users are named per run, in the checkpoint and the
// summary alike, so that a run where every user fails (100k users, long
// error bodies) keeps its memory and its checkpoint small; the count
// covers them all.
func (w *writer) recordFailed(f checkpoint.UserFailed) {
	w.r.stats.UsersFailed.Add(1)
	if w.named >= MaxNamedFailures {
		return
	}
	w.named++
	f.Reason = safetext.Truncate(f.Reason, maxReasonBytes)
	w.pendingFailed = append(w.pendingFailed, f)
	w.failed = append(w.failed, f)
}

// learn fills in the user's SID and identity from what the fetcher knew or,
// failing that, from its bindings, for the users table.
func learn(f *checkpoint.InFlight, e event) {
	if f.UserSID == "" {
		f.UserSID = e.sid
	}
	if f.Identity == "" {
		f.Identity = e.identity
	}
	if f.Name == "" && e.name != f.UserSID {
		f.Name = e.name
	}
	if len(e.bindings) > 0 {
		b := &e.bindings[0]
		if f.UserSID == "" && b.UserSID != nil {
			f.UserSID = *b.UserSID
		}
		if f.Identity == "" && b.Identity != nil {
			f.Identity = *b.Identity
		}
	}
}

func (w *writer) openPart() error {
	w.partName = w.r.newPartName()
	p, err := exporter.NewPartWriter(w.ctx, w.r.store, w.partName, w.meta, w.r.partOptions())
	if err != nil {
		return fmt.Errorf("create part %s: %w", w.r.store.URI(w.partName), err)
	}
	w.part = p
	return nil
}

// commit makes the open part durable, then records it, the users it
// finishes and the resume point of every user it advanced.
func (w *writer) commit() error {
	e := checkpoint.Entry{Kind: checkpoint.KindCommit, RunID: w.r.id, Done: w.done, Gone: w.gone, NotFound: w.notFound, Failed: w.pendingFailed}
	if w.part != nil {
		info, err := w.part.Close()
		w.part = nil
		if err != nil {
			return fmt.Errorf("close part %s: %w", w.r.store.URI(w.partName), err)
		}
		e.Parts = []checkpoint.Part{partOf(info)}
		w.r.stats.Parts.Add(1)
	}
	for u := range w.touched {
		if f := w.inFlight[u]; f != nil {
			e.InFlight = append(e.InFlight, *f)
		}
	}
	for svc := range w.walkTouched {
		if wk := w.walks[svc]; wk != nil {
			e.Walks = append(e.Walks, *wk)
		}
	}
	e.WalksDone = w.walksDone
	if len(e.Parts)+len(e.Done)+len(e.Gone)+len(e.NotFound)+len(e.Failed)+len(e.InFlight)+len(e.Walks)+len(e.WalksDone) == 0 {
		return nil
	}
	if err := w.r.cp.Append(w.ctx, e); err != nil {
		return err
	}
	w.r.log.Debug("checkpoint", zap.Int("parts", len(e.Parts)), zap.Int("users_done", len(e.Done)),
		zap.Int("users_in_flight", len(e.InFlight)), zap.Int("walks", len(e.Walks)), zap.Int("walks_done", len(e.WalksDone)))
	w.done, w.gone, w.notFound, w.pendingFailed, w.walksDone = nil, nil, nil, nil, nil
	clear(w.touched)
	clear(w.walkTouched)
	return nil
}

// dropMode says why a user's rows are dropped, and so what the user
// becomes in the checkpoint.
type dropMode int

const (
	dropRestart dropMode = iota // read again from page one: in flight, no page
	dropLeftOut                 // no longer configured or listed: out of the snapshot
	dropGone                    // deleted while read: gone, with no rows
)

// dropUser rewrites the parts that hold rows of u without them, so that u
// can be read again from its first page (its saved page token was
// rejected), left out (it is no longer configured or listed), or recorded
// as gone (deleted while it was read), without a row of it published. Rows
// in the open part are committed first, so that every row of u is in a
// committed part.
func (w *writer) dropUser(u checkpoint.UserRef, mode dropMode) error {
	f := w.inFlight[u]
	if f == nil {
		if mode == dropGone {
			w.gone = append(w.gone, u)
		}
		return nil
	}
	if w.part != nil && slices.Contains(f.Parts, w.partName) {
		if err := w.commit(); err != nil {
			return err
		}
	}
	keep := func(row *schemas.Row) bool { return !rowOf(row, u) }
	e := checkpoint.Entry{Kind: checkpoint.KindCommit, RunID: w.r.id}
	replaced, err := w.r.rewriteParts(w.ctx, f.Parts, keep, "user "+u.String())
	if err != nil {
		return err
	}
	e.Replaced = replaced
	delete(w.inFlight, u)
	delete(w.touched, u)
	switch mode {
	case dropLeftOut:
		e.Dropped = []checkpoint.UserRef{u}
	case dropGone:
		e.Gone = []checkpoint.UserRef{u}
	default:
		e.InFlight = []checkpoint.InFlight{{UserRef: u}}
	}
	if err := w.r.cp.Append(w.ctx, e); err != nil {
		return err
	}
	w.afterRewrite(e.Replaced)
	return nil
}

// afterRewrite takes back, for every unfinished user and walk, the part
// names that the log renamed (it owns the committed state), and removes
// the replaced part files.
func (w *writer) afterRewrite(replaced []checkpoint.Replace) {
	for v, g := range w.inFlight {
		w.syncParts(v, g)
	}
	for svc, wk := range w.walks {
		if committed, ok := w.r.cp.WalkParts(svc); ok {
			if w.part != nil && slices.Contains(wk.Parts, w.partName) {
				committed = append(committed, w.partName)
			}
			wk.Parts = committed
		}
	}
	for _, r := range replaced {
		if err := exporter.DeletePart(w.ctx, w.r.store, r.Old); err != nil {
			w.r.log.Warn("remove replaced part", zap.String("part", r.Old), zap.Error(err))
		}
	}
}

// dropWalk rewrites the parts that hold rows of the walk of svc without
// them, so that the walk starts over from its first page (its saved page
// token was rejected, or its rows do not add up) or leaves the snapshot
// (the service is no longer walked). Rows in the open part are committed
// first. A walk is alone in reading its service, so every row of svc in
// its parts is the walk's.
func (w *writer) dropWalk(svc string, mode dropMode) error {
	wk := w.walks[svc]
	if wk == nil {
		return nil
	}
	if w.part != nil && slices.Contains(wk.Parts, w.partName) {
		if err := w.commit(); err != nil {
			return err
		}
	}
	parts, _ := w.r.cp.WalkParts(svc)
	keep := func(row *schemas.Row) bool { return row.ServiceSID == nil || *row.ServiceSID != svc }
	e := checkpoint.Entry{Kind: checkpoint.KindCommit, RunID: w.r.id}
	for _, old := range parts {
		name := w.r.newPartName()
		info, err := exporter.FilterPart(w.ctx, w.r.store, old, name, keep, w.r.partOptions())
		if err != nil {
			return fmt.Errorf("drop rows of the walk of service %s from %s: %w", svc, w.r.store.URI(old), err)
		}
		p := partOf(info)
		e.Replaced = append(e.Replaced, checkpoint.Replace{Old: old, New: &p})
	}
	delete(w.walkTouched, svc)
	if mode == dropRestart {
		// The users found gone stay gone: their later bindings are
		// still left out.
		fresh := checkpoint.Walk{Service: svc, Gone: wk.Gone}
		e.Walks = []checkpoint.Walk{fresh}
		w.walks[svc] = &fresh
	} else {
		e.DroppedWalks = []string{svc}
		delete(w.walks, svc)
	}
	if err := w.r.cp.Append(w.ctx, e); err != nil {
		return err
	}
	w.afterRewrite(e.Replaced)
	return nil
}

// syncParts sets the parts of f, a user in flight, to those the log names
// for it now, plus the open part when f has rows there: the writer holds
// only what is not committed yet, the log everything else.
func (w *writer) syncParts(u checkpoint.UserRef, f *checkpoint.InFlight) {
	committed, ok := w.r.cp.InFlightParts(u)
	if !ok {
		return // nothing of u committed yet: its rows are in the open part
	}
	if w.part != nil && slices.Contains(f.Parts, w.partName) {
		committed = append(committed, w.partName)
	}
	f.Parts = committed
}

// partOf is the checkpoint record of a written part.
func partOf(info exporter.PartInfo) checkpoint.Part {
	return checkpoint.Part{Name: info.Name, Rows: info.Rows, Bytes: info.Bytes, CRC32C: info.CRC32C}
}

// rowOf reports whether a row belongs to user u, addressed by SID or
// identity.
func rowOf(row *schemas.Row, u checkpoint.UserRef) bool {
	if row.ServiceSID == nil || *row.ServiceSID != u.Service {
		return false
	}
	return (row.UserSID != nil && *row.UserSID == u.User) || (row.Identity != nil && *row.Identity == u.User)
}

package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"

	"go.uber.org/zap"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/twilio"
)

// A service walk reads a service with the service strategy: it lists the
// users once to learn their SIDs, reads the service-wide Bindings list
// once, and gives every binding the user_sid and url of the user's own
// list, so that the rows are those the per-user walk publishes. Its
// progress is saved per page of the list (checkpoint.Walk), and its users,
// with their binding counts, are recorded when it ends.

// walker is one service walk of a run.
type walker struct {
	r   *run
	w   *writer
	svc *Service
	log *zap.Logger
	ref checkpoint.UserRef // the walk's name in failures and events

	idx userIndex
	// extras are users met in the Bindings list but not in the Users list
	// (created meanwhile, resolved with GetUser), by identity; gone are
	// identities that GetUser no longer finds.
	extras map[string]*extraUser
	gone   map[string]bool
	// gaveUp is set once the walk failed in this run.
	gaveUp bool
}

type extraUser struct {
	sid      packedSID
	identity string
	bindings int64
}

// walkService walks svc, resuming from resume (the committed record of the
// walk, zero for a first walk). Like readUser it returns only errors that
// stop the run; a walk that fails is recorded and the run goes on.
func (r *run) walkService(ctx context.Context, w *writer, svc *Service, resume checkpoint.Walk) error {
	k := &walker{
		r: r, w: w, svc: svc,
		log:    r.log.With(zap.String("service_sid", svc.SID)),
		ref:    checkpoint.UserRef{Service: svc.SID, User: checkpoint.ServiceWalkUser},
		extras: map[string]*extraUser{},
		gone:   map[string]bool{},
	}
	for _, id := range resume.Gone {
		k.gone[id] = true
	}
	ss := r.stats.Service(svc.SID)
	err := r.listUsers(ctx, svc, func(_ *Service, sid, identity, _ string) error {
		if err := k.idx.add(sid, identity); err != nil {
			return fmt.Errorf("list users of service %s: %w", svc.SID, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := k.idx.build(); err != nil {
		return fmt.Errorf("list users of service %s: %w", svc.SID, err)
	}
	n := int64(k.idx.len() + len(k.gone))
	r.stats.UsersTotal.Add(n)
	ss.UsersTotal.Add(n)
	k.log.Debug("users listed for the service walk", zap.Int("users", k.idx.len()), zap.Int("identity_bytes", len(k.idx.arena)))

	if len(resume.Parts) > 0 {
		// The rows of the pages read before are counted back from their
		// parts, in the writer, where no part is rewritten meanwhile.
		restart := false
		err := w.sendWait(event{kind: evCall, call: func() (err error) {
			restart, err = k.countCommitted(ctx)
			return err
		}})
		if err != nil {
			return err
		}
		if restart {
			resume = checkpoint.Walk{Service: svc.SID}
		}
	}
	if !resume.End {
		if err := k.readList(ctx, resume.Next); err != nil || k.gaveUp {
			return err
		}
	}
	return k.finish(ctx)
}

// fail records the walk as failed and gives it up for this run.
func (k *walker) fail(err error) error {
	k.log.Error("service walk failed", zap.Error(err))
	k.w.send(event{kind: evFailed, user: k.ref, reason: err.Error()})
	k.gaveUp = true
	return nil
}

// readList reads the service's Bindings list from next ("" for the first
// page) to its end, handing every page to the writer.
func (k *walker) readList(ctx context.Context, next string) error {
	r, svc := k.r, k.svc
	ss := r.stats.Service(svc.SID)
	list := "bindings of service " + svc.SID
	q := twilio.ServiceBindingsQuery{ServiceSID: svc.SID, BindingTypes: svc.BindingTypes, PageSize: r.opts.PageSize, Next: next}
	guard := twilio.NewPageGuard(list, r.opts.MaxEmptyPages)
	resumed := next != ""
	if resumed {
		guard.Resume(next)
		k.log.Debug("resuming service walk", zap.String("page", next))
	}
	first := true
	for {
		page, err := r.src.ListServiceBindings(ctx, q)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case stopsRun(err):
			return err
		case first && resumed && errors.Is(err, twilio.ErrPageTokenRejected):
			k.log.Warn("saved page token rejected; walking the service again from the first page", zap.Error(err))
			if err := k.restart(); err != nil {
				return err
			}
			q.Next, first, resumed = "", false, false
			guard = twilio.NewPageGuard(list, r.opts.MaxEmptyPages)
			continue
		default:
			return k.fail(err)
		}
		first = false
		// A page that repeats one seen before is not written: its rows
		// would be in the snapshot twice.
		if err := guard.Check(page.Next, len(page.Bindings)); err != nil {
			return k.fail(err)
		}
		if ps := page.Meta.PageSize; ps > 0 && ps < r.opts.PageSize {
			r.pageSizeNoted.Do(func() {
				r.log.Info("Twilio serves fewer bindings per page than twilio.page_size asks", zap.Int("page_size", ps), zap.Int("configured", r.opts.PageSize))
			})
		}
		rows, gone, err := k.rows(ctx, page.Bindings)
		if err != nil {
			if ctx.Err() != nil || stopsRun(err) {
				return err
			}
			return k.fail(err)
		}
		r.stats.Pages.Add(1)
		r.stats.Bindings.Add(int64(len(rows)))
		ss.Bindings.Add(int64(len(rows)))
		k.w.send(event{kind: evWalkPage, user: k.ref, bindings: rows, next: page.Next, gone: gone})
		if page.Next == "" {
			return nil
		}
		q.Next = page.Next
	}
}

// restart sends the walk back to its first page: its rows leave the
// snapshot and every count starts again.
func (k *walker) restart() error {
	if err := k.w.sendWait(event{kind: evWalkRestart, user: k.ref}); err != nil {
		return err
	}
	k.idx.resetCounts()
	clear(k.extras)
	return nil
}

// rows turns a page of the service-wide list into the rows of the users'
// own lists, counting them per user. Bindings of a user found deleted are
// left out; gone lists the identities found deleted in this page.
func (k *walker) rows(ctx context.Context, page []twilio.ServiceBinding) (rows []twilio.Binding, gone []string, err error) {
	rows = make([]twilio.Binding, 0, len(page))
	for i := range page {
		b := &page[i]
		sid, count, isGone, err := k.user(ctx, b)
		if err != nil {
			return nil, nil, err
		}
		if isGone {
			if id := identityOf(b); !k.gone[id] {
				k.gone[id] = true
				gone = append(gone, id)
				k.r.stats.UsersTotal.Add(1)
				k.r.stats.Service(k.svc.SID).UsersTotal.Add(1)
			}
			continue
		}
		service := k.svc.SID
		if b.ServiceSID != nil && *b.ServiceSID != "" {
			service = *b.ServiceSID
		}
		rows = append(rows, b.UserBinding(service, sid.String()))
		count()
	}
	return rows, gone, nil
}

// identityOf is the identity that names b's user: its identity field, or
// else the user its links name.
func identityOf(b *twilio.ServiceBinding) string {
	if b.Identity != nil && *b.Identity != "" {
		return *b.Identity
	}
	return b.LinkedUser()
}

// user finds the SID of b's user, and how to count a row of it: from the
// Users list, from a user met before, or by asking Twilio (GET
// /Users/{Identity}) for a user created since the list was read. isGone
// says that Twilio no longer knows the user.
func (k *walker) user(ctx context.Context, b *twilio.ServiceBinding) (sid packedSID, count func(), isGone bool, err error) {
	id := identityOf(b)
	if id == "" {
		return sid, nil, false, fmt.Errorf("%w: binding %s names no user (identity null, no links.user): its user_sid cannot be known; read the service with strategy per_user",
			twilio.ErrBadResponse, deref(b.SID))
	}
	if u, ok := k.idx.byIdentity(id); ok {
		return u.sid, func() { u.bindings++ }, false, nil
	}
	if p, ok := packSID(id); ok {
		// A link that names the user by SID.
		if u, ok := k.idx.bySIDOf(p); ok {
			return u.sid, func() { u.bindings++ }, false, nil
		}
	}
	if e := k.extras[id]; e != nil {
		return e.sid, func() { e.bindings++ }, false, nil
	}
	if k.gone[id] {
		return sid, nil, true, nil
	}
	u, err := k.r.src.GetUser(ctx, k.svc.SID, id)
	switch {
	case errors.Is(err, twilio.ErrNotFound) && ctx.Err() == nil:
		k.log.Info("user of a binding not found; it was deleted, and its bindings are left out", zap.String("identity", id))
		return sid, nil, true, nil
	case err != nil:
		return sid, nil, false, fmt.Errorf("look up the user of binding %s: %w", deref(b.SID), err)
	}
	p, ok := packSID(u.SID)
	if !ok {
		return sid, nil, false, fmt.Errorf("look up the user of binding %s: %w: the user has SID %q", deref(b.SID), twilio.ErrBadResponse, u.SID)
	}
	identity := id
	if u.Identity != nil {
		identity = *u.Identity
	}
	e := &extraUser{sid: p, identity: identity}
	k.extras[id] = e
	k.r.stats.UsersTotal.Add(1)
	k.r.stats.Service(k.svc.SID).UsersTotal.Add(1)
	k.log.Debug("user of a binding not in the Users list; looked up", zap.String("identity", id), zap.String("user_sid", u.SID))
	return p, func() { e.bindings++ }, false, nil
}

func deref(s *string) string {
	if s == nil {
		return "(null)"
	}
	return *s
}

// countCommitted counts the rows of the walk's committed parts per user,
// when a walk resumes: they are the rows of the pages read before, and
// must add up to what the checkpoint recorded, or the walk starts over
// from its first page, its rows dropped (restart says so). It runs in the
// writer.
func (k *walker) countCommitted(ctx context.Context) (restart bool, err error) {
	svc := k.svc.SID
	parts, _ := k.r.cp.WalkParts(svc)
	var total int64
	for _, name := range parts {
		err := exporter.ReadPart(ctx, k.r.store, name, func(row schemas.Row) error {
			if row.ServiceSID == nil || *row.ServiceSID != svc {
				return nil
			}
			total++
			k.countRow(&row)
			return nil
		})
		if err != nil {
			return false, fmt.Errorf("count the rows of the walk of service %s: %w", svc, err)
		}
	}
	if wk := k.w.walks[svc]; wk == nil || wk.Bindings != total {
		k.log.Warn("the rows of the service walk do not add up to its checkpoint; walking the service again from the first page", zap.Int64("rows", total))
		k.idx.resetCounts()
		clear(k.extras)
		return true, k.w.dropWalk(svc, dropRestart)
	}
	return false, nil
}

// countRow counts a committed row of the walk for its user.
func (k *walker) countRow(row *schemas.Row) {
	p, ok := packSID(deref(row.UserSID))
	if !ok {
		return // not a row this walk wrote; the totals then differ
	}
	if u, ok := k.idx.bySIDOf(p); ok {
		u.bindings++
		return
	}
	// A user met since the Users list was read, by the identity that
	// names it in later pages; one named by its link alone is looked up
	// again if met again, and merged by SID in the users file.
	key, id := "\x00"+p.String(), ""
	if row.Identity != nil {
		key, id = *row.Identity, *row.Identity
	}
	e := k.extras[key]
	if e == nil {
		e = &extraUser{sid: p, identity: id}
		k.extras[key] = e
		k.r.stats.UsersTotal.Add(1)
		k.r.stats.Service(k.svc.SID).UsersTotal.Add(1)
	}
	e.bindings++
}

// finish writes the walk's users file and records the walk finished.
func (k *walker) finish(ctx context.Context) error {
	r := k.r
	name := checkpoint.WalkUsersName(r.date, fmt.Sprintf("%s-%05d-%s.users.jsonl.gz", r.id, r.partSeq.Add(1), k.svc.SID))
	users, merged := k.users()
	if merged > 0 {
		r.stats.UsersTotal.Add(-int64(merged))
		r.stats.Service(k.svc.SID).UsersTotal.Add(-int64(merged))
	}
	f, err := checkpoint.WriteUsersFile(ctx, r.store, name, users)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("service %s: %w", k.svc.SID, err)
	}
	err = k.w.sendWait(event{kind: evWalkDone, user: k.ref, usersFile: f})
	if err != nil {
		if derr := r.store.Delete(context.WithoutCancel(ctx), name); derr != nil {
			k.log.Warn("remove the users file of a walk not finished", zap.String("file", r.store.URI(name)), zap.Error(derr))
		}
		if errors.Is(err, errWalkRejected) {
			return nil // failed, and recorded as such
		}
		return err
	}
	ss := r.stats.Service(k.svc.SID)
	ss.UsersFinished.Add(f.Rows + int64(len(k.gone)))
	k.log.Info("service walk finished", zap.Int64("users", f.Rows), zap.Int("users_gone", len(k.gone)))
	return nil
}

// users yields the walk's users in SID order: the listed ones and those
// met since, a user found both ways once (merged counts how many were).
func (k *walker) users() (iter.Seq[checkpoint.WalkUser], int) {
	extras := make([]*extraUser, 0, len(k.extras))
	merged := 0
	for _, e := range k.extras {
		if u, ok := k.idx.bySIDOf(e.sid); ok {
			u.bindings += uint32(e.bindings)
			merged++
			continue
		}
		extras = append(extras, e)
	}
	slices.SortFunc(extras, func(a, b *extraUser) int { return cmp.Or(a.sid.compare(b.sid), cmp.Compare(a.identity, b.identity)) })
	extras = slices.CompactFunc(extras, func(a, b *extraUser) bool {
		if a.sid == b.sid {
			a.bindings += b.bindings
			merged++
			return true
		}
		return false
	})
	x := &k.idx
	return func(yield func(checkpoint.WalkUser) bool) {
		j := 0
		for _, i := range x.bySID {
			u := &x.users[i]
			for ; j < len(extras) && extras[j].sid.compare(u.sid) < 0; j++ {
				if !yield(checkpoint.WalkUser{SID: extras[j].sid.String(), Identity: extras[j].identity, Bindings: extras[j].bindings}) {
					return
				}
			}
			if !yield(checkpoint.WalkUser{SID: u.sid.String(), Identity: string(x.identityOf(u)), Bindings: int64(u.bindings)}) {
				return
			}
		}
		for ; j < len(extras); j++ {
			if !yield(checkpoint.WalkUser{SID: extras[j].sid.String(), Identity: extras[j].identity, Bindings: extras[j].bindings}) {
				return
			}
		}
	}, merged
}

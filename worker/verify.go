package worker

import (
	"context"
	"fmt"
	"slices"

	"go.uber.org/zap"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/schemas"
)

// maxRepairRounds bounds how often one run reads users again because their
// parts were found damaged; a store that damages every part it is given
// fails the run instead of looping.
const maxRepairRounds = 3

// verifyParts checks every committed part against the size and CRC32C the
// checkpoint recorded. Bad parts (missing, short, damaged) leave the
// snapshot in one log entry, together with every row of their users in the
// other parts, and those users are no longer done, so the next read takes
// them up again from their first page. It reports whether any part was bad.
func (r *run) verifyParts(ctx, saveCtx context.Context) (bool, error) {
	st := r.cp.State()
	bad, err := checkpoint.VerifyParts(ctx, r.store, slices.Concat(st.Parts, st.UsersFiles()))
	if err != nil || len(bad) == 0 {
		return false, err
	}
	names := make([]string, len(bad))
	for i, b := range bad {
		names[i] = b.Name
		r.log.Error("part damaged; its users are read again", zap.String("part", r.store.URI(b.Name)), zap.String("reason", b.Reason))
	}
	undone, err := checkpoint.UsersInParts(ctx, r.store, r.date, names)
	if err != nil {
		return false, fmt.Errorf("find the users of damaged parts: %w", err)
	}
	inFlight := st.InFlightIn(names)
	walks := st.WalksIn(names)

	// Every other part holding rows of these users is rewritten without
	// them, in the same entry, so that none of their rows is published
	// twice once they are read again.
	users := map[checkpoint.UserRef]bool{}
	rewrite := map[string]bool{}
	for _, d := range undone {
		users[d.UserRef] = true
		for _, p := range d.Parts {
			rewrite[p] = true
		}
	}
	for _, u := range inFlight {
		users[u] = true
		if f := st.InFlight[u]; f != nil {
			for _, p := range f.Parts {
				rewrite[p] = true
			}
		}
	}
	// A walk goes back to its first page: every row of its service leaves
	// its other parts.
	walked := map[string]bool{}
	for _, svc := range walks {
		walked[svc] = true
		parts, _ := st.WalkParts(svc)
		for _, p := range parts {
			rewrite[p] = true
		}
	}
	for _, n := range names {
		delete(rewrite, n)
	}
	drop := make(map[string]bool, len(users))
	for u := range users {
		drop[u.Service+"/"+u.User] = true
	}
	keep := func(row *schemas.Row) bool {
		if row.ServiceSID == nil {
			return true
		}
		return !walked[*row.ServiceSID] &&
			!(row.UserSID != nil && drop[*row.ServiceSID+"/"+*row.UserSID]) &&
			!(row.Identity != nil && drop[*row.ServiceSID+"/"+*row.Identity])
	}
	e := checkpoint.Entry{Kind: checkpoint.KindCommit, RunID: r.id, Invalid: names, Undone: undone}
	var olds []string
	for _, p := range st.Parts {
		if rewrite[p.Name] {
			olds = append(olds, p.Name)
		}
	}
	if e.Replaced, err = r.rewriteParts(saveCtx, olds, keep, "users of damaged parts"); err != nil {
		return false, err
	}
	if err := r.cp.Append(saveCtx, e); err != nil {
		return false, err
	}
	r.stats.restartEnumeration()
	stale := append(names, oldNames(e.Replaced)...)
	for _, svc := range walks {
		// A finished walk sent back loses its users file too.
		if d := st.WalksDone[svc]; d != nil && !slices.Contains(stale, d.UsersFile.Name) {
			stale = append(stale, d.UsersFile.Name)
		}
	}
	for _, old := range stale {
		if err := exporter.DeletePart(saveCtx, r.store, old); err != nil {
			r.log.Warn("remove damaged or replaced part", zap.String("part", old), zap.Error(err))
		}
	}
	r.log.Warn("damaged parts left the snapshot; reading their users again",
		zap.Int("parts", len(names)), zap.Int("users", len(users)), zap.Strings("services_walked_again", walks))
	return true, nil
}

func oldNames(rs []checkpoint.Replace) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Old
	}
	return out
}

// rewriteParts writes a copy of each part in olds without the rows that
// keep refuses, under a new name, and returns the replacements for the
// log entry that makes them the snapshot's. It is the one way rows leave
// committed parts (a damaged part's users read again, a user gone or left
// out); whose says whose rows are dropped, for errors.
func (r *run) rewriteParts(ctx context.Context, olds []string, keep func(*schemas.Row) bool, whose string) ([]checkpoint.Replace, error) {
	var replaced []checkpoint.Replace
	for _, old := range olds {
		info, err := exporter.FilterPart(ctx, r.store, old, r.newPartName(), keep, r.partOptions())
		if err != nil {
			return nil, fmt.Errorf("drop the rows of %s from %s: %w", whose, r.store.URI(old), err)
		}
		np := partOf(info)
		replaced = append(replaced, checkpoint.Replace{Old: old, New: &np})
	}
	return replaced, nil
}

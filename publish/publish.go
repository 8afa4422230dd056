// Package publish is the second stage of a snapshot: it takes a snapshot
// whose users are all read and whose parts are committed and verified (the
// worker's stage), and makes it visible. It owns what happens from there
// on: the users table, derived from the checkpoint; the changes table and
// the snapshot's digest, derived from its parts and the previous
// snapshot's digest; the tables handed to every publisher; the
// "published" record in the checkpoint; and the removal of the snapshot's
// files from staging. It never reads Twilio and never needs the worker, so
// `bindsync publish` can run it on its own.
package publish

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
)

// Options configure the publishing of one snapshot.
type Options struct {
	// Store is the staging store that holds the snapshot.
	Store staging.Store
	// Publishers receive the snapshot, one after the other.
	Publishers []exporter.Publisher
	// RunID names the run that publishes, for logs and for publishers that
	// build job names from it.
	RunID string
	// PartOptions bound the users part as they bound the binding parts,
	// and its Privacy is the policy every part of the snapshot must have
	// been written under (exporter.CheckPrivacy).
	PartOptions exporter.PartOptions
	// SyncedAt is the synced_at of the users table when the checkpoint
	// names no run (the first run's start otherwise).
	SyncedAt time.Time
	// Logger receives a line per publisher; nil means no logs.
	Logger *zap.Logger

	// TempDir holds the runs of the external sort that builds digests
	// (os.TempDir when empty): at most about the compressed size of a
	// snapshot, removed as the sort ends.
	TempDir string
	// SortBytes bounds the memory of that sort (exporter.DefaultSortBytes
	// when zero).
	SortBytes int64
	// KeepDigests is how many snapshots' digests staging keeps, the
	// newest ones (DefaultKeepDigests when zero).
	KeepDigests int
}

// ErrNotCleaned is returned (wrapped, with every file named) when the
// snapshot was published but some of its files could not be removed from
// staging: the snapshot is visible in every warehouse, and the files are
// left for an operator (or a later --force) to remove.
var ErrNotCleaned = errors.New("snapshot published, but files left in staging")

// Snapshot publishes the snapshot of cp, which must be read completely:
// it writes the users part from the checkpoint, the snapshot's digest and
// its changes (see the comment at the top of changes.go), hands the tables
// to every publisher in order, refreshes the changes of a later snapshot
// published already, records the snapshot as published, prunes old
// digests, and removes its part files from staging. It returns the
// Describe() of every publisher that published it.
//
// An error before the "published" record leaves the snapshot unpublished
// (a later call publishes it again; publishers are idempotent). An error
// wrapping ErrNotCleaned comes after it: every removal is tried, each
// failure is logged, and they are reported together.
func Snapshot(ctx context.Context, cp *checkpoint.Log, opts Options) (published []string, err error) {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	st := cp.State()
	date := st.Date
	// Parts read before a change of privacy policy or key must not reach
	// a warehouse under the new one, nor the digest of the snapshot.
	if err := checkPrivacy(ctx, Of(cp, opts.Store, opts.RunID, exporter.PartInfo{}), exporter.BindingsTable, opts); err != nil {
		return nil, err
	}
	// The users part and the changes stage read and write different files
	// (the log is safe to read while an entry is appended), and each is
	// mostly one core's work: at the end of a run, when the other core is
	// idle, they run side by side.
	stage := newChangesStage(cp, opts, log)
	defer stage.close()
	var (
		users   exporter.PartInfo
		changes exporter.Table
		refresh *exporter.Snapshot
	)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		users, err = writeUsers(gctx, cp, opts)
		return err
	})
	g.Go(func() (err error) {
		changes, refresh, err = stage.prepare(gctx)
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	snap := Of(cp, opts.Store, opts.RunID, users)
	if err := checkPrivacy(ctx, snap, exporter.UsersTable, opts); err != nil {
		return nil, err
	}
	snap.Tables = append(snap.Tables, changes)
	rows := st.Rows()
	for _, p := range opts.Publishers {
		log.Info("publishing", zap.String("to", p.Describe()), zap.Int("parts", len(st.Parts)), zap.Int64("rows", rows))
		if err := p.Publish(ctx, snap); err != nil {
			return published, fmt.Errorf("publish snapshot %s to %s: %w", date.Format(time.DateOnly), p.Describe(), err)
		}
		published = append(published, p.Describe())
	}
	if refresh != nil {
		for _, p := range opts.Publishers {
			log.Info("publishing the refreshed changes of a later snapshot", zap.String("to", p.Describe()), zap.String("changes_of", refresh.Date.Format(time.DateOnly)))
			if err := p.Publish(ctx, *refresh); err != nil {
				return published, fmt.Errorf("publish the changes of snapshot %s, computed again against %s, to %s: %w",
					refresh.Date.Format(time.DateOnly), date.Format(time.DateOnly), p.Describe(), err)
			}
		}
		snap.Tables = append(snap.Tables, refresh.Tables...) // their parts are removed below
	}
	if err := cp.Append(ctx, checkpoint.Entry{Kind: checkpoint.KindPublished, RunID: opts.RunID}); err != nil {
		return published, err
	}
	stage.prune(ctx)
	var failed []error
	var names []string
	for _, t := range snap.Tables {
		for _, p := range t.Parts {
			names = append(names, p.Name)
		}
	}
	for _, name := range stage.files() {
		if !slices.Contains(names, name) {
			names = append(names, name) // a part of changes without rows
		}
	}
	for _, name := range names {
		if err := exporter.DeletePart(ctx, opts.Store, name); err != nil && !errors.Is(err, staging.ErrNotExist) {
			log.Warn("remove published part from staging", zap.String("part", opts.Store.URI(name)), zap.Error(err))
			failed = append(failed, fmt.Errorf("remove %s: %w", opts.Store.URI(name), err))
		}
	}
	if len(failed) == 0 {
		failed = removeLeftovers(ctx, opts.Store, date, log)
	}
	if len(failed) > 0 {
		return published, fmt.Errorf("snapshot %s: %w (%d): %w", date.Format(time.DateOnly), ErrNotCleaned, len(failed), errors.Join(failed...))
	}
	return published, cp.Append(ctx, checkpoint.Entry{Kind: checkpoint.KindCleaned, RunID: opts.RunID})
}

// removeLeftovers removes what is left in the snapshot's parts directory
// once its parts are gone: files that no checkpoint entry names, written
// by a run that stopped between committing them and recording them (a
// part, or the runs committed just before their part). It returns the
// removals that failed.
func removeLeftovers(ctx context.Context, store staging.Store, date time.Time, log *zap.Logger) []error {
	dir := checkpoint.PartsDir(date) + "/"
	left, err := store.List(ctx, dir)
	if err != nil {
		log.Warn("list the snapshot's parts directory for leftovers", zap.Error(err))
		return []error{fmt.Errorf("list %s: %w", store.URI(dir), err)}
	}
	var failed []error
	for _, name := range left {
		if err := store.Delete(ctx, name); err != nil && !errors.Is(err, staging.ErrNotExist) {
			log.Warn("remove a leftover file from staging", zap.String("file", store.URI(name)), zap.Error(err))
			failed = append(failed, fmt.Errorf("remove %s: %w", store.URI(name), err))
		}
	}
	if len(left) > 0 {
		log.Info("removed files no checkpoint named from the snapshot's parts", zap.Int("files", len(left)))
	}
	return failed
}

// Of is the snapshot of cp as publishers see it: its committed parts as
// the bindings table, then users, the users part, as the users table.
// Snapshot adds the changes table after them.
func Of(cp *checkpoint.Log, store staging.Store, runID string, users exporter.PartInfo) exporter.Snapshot {
	st := cp.State()
	parts := make([]exporter.PartInfo, len(st.Parts))
	for i, p := range st.Parts {
		parts[i] = exporter.PartInfo{Name: p.Name, Rows: p.Rows, Bytes: p.Bytes, CRC32C: p.CRC32C}
	}
	return exporter.Snapshot{
		Date:  st.Date,
		Store: store,
		Tables: []exporter.Table{
			{Name: exporter.BindingsTable, Schema: schemas.Binding(), Parts: parts},
			{Name: exporter.UsersTable, Schema: schemas.Users(), Parts: []exporter.PartInfo{users}},
		},
		RunID:   runID,
		Journal: Journal{cp},
	}
}

// checkPrivacy checks that the parts of table in snap were written under
// the configured privacy policy.
func checkPrivacy(ctx context.Context, snap exporter.Snapshot, table string, opts Options) error {
	one := snap
	one.Tables = nil
	if t, ok := snap.Table(table); ok {
		one.Tables = []exporter.Table{t}
	}
	if err := exporter.CheckPrivacy(ctx, one, opts.PartOptions.Privacy); err != nil {
		return fmt.Errorf("publish snapshot %s: %w", snap.Date.Format(time.DateOnly), err)
	}
	return nil
}

// writeUsers writes the users part of the snapshot from its checkpoint
// log: one row per user finished, gone or not found, over every run. It is
// derived anew at each publish, so a rerun writes the same part.
func writeUsers(ctx context.Context, cp *checkpoint.Log, opts Options) (exporter.PartInfo, error) {
	st := cp.State()
	date := st.Date
	synced := opts.SyncedAt
	if len(st.Runs) > 0 {
		synced = st.Runs[0].Start // when the snapshot began to be read
	}
	name := checkpoint.UsersPartName(date)
	w, err := exporter.NewUsersPartWriter(ctx, opts.Store, name, schemas.RowMeta{SnapshotDate: date, SyncedAt: synced}, opts.PartOptions)
	if err != nil {
		return exporter.PartInfo{}, fmt.Errorf("write users of snapshot %s: %w", date.Format(time.DateOnly), err)
	}
	// Done users come from the log (EachDone yields only the records
	// that still stand, so a user read again has one row); gone and not
	// found users from the state.
	err = checkpoint.EachDone(ctx, opts.Store, date, func(d *checkpoint.UserDone) error {
		user := d.User
		if d.Name != "" {
			user = d.Name // the identity the configuration names
		}
		row := schemas.UserRow{ServiceSID: d.Service, User: user, UserSID: optional(d.UserSID), Identity: optional(d.Identity), Bindings: d.Bindings, State: schemas.UserRead}
		return w.Append(&row)
	})
	if err == nil {
		for _, set := range []struct {
			users map[checkpoint.UserRef]bool
			state string
		}{{st.Gone, schemas.UserGone}, {st.NotFound, schemas.UserNotFound}} {
			refs := slices.SortedFunc(maps.Keys(set.users), func(a, b checkpoint.UserRef) int { return strings.Compare(a.String(), b.String()) })
			for _, u := range refs {
				if err = w.Append(refRow(u, set.state)); err != nil {
					break
				}
			}
		}
	}
	if err != nil {
		w.Abort()
		return exporter.PartInfo{}, fmt.Errorf("write users of snapshot %s: %w", date.Format(time.DateOnly), err)
	}
	info, err := w.Close()
	if err != nil {
		return exporter.PartInfo{}, fmt.Errorf("write users of snapshot %s: %w", date.Format(time.DateOnly), err)
	}
	return info, nil
}

// refRow is the users-table row of a user that has no bindings in the
// snapshot: its SID when the reference is one, else its identity.
func refRow(u checkpoint.UserRef, state string) *schemas.UserRow {
	row := &schemas.UserRow{ServiceSID: u.Service, User: u.User, State: state}
	if checkpoint.IsUserSID(u.User) {
		row.UserSID = &u.User
	} else {
		row.Identity = &u.User
	}
	return row
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Journal lets publishers keep their progress (job IDs, attempts) in the
// snapshot's checkpoint.
type Journal struct{ cp *checkpoint.Log }

var _ exporter.Journal = Journal{}

// Get returns the publishing state saved under key.
func (j Journal) Get(key string) string { return j.cp.State().Publish[key] }

// Set saves kv in one checkpoint entry.
func (j Journal) Set(ctx context.Context, kv map[string]string) error {
	return j.cp.Append(ctx, checkpoint.Entry{Kind: checkpoint.KindPublish, Publish: kv})
}

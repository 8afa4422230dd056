package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
)

// The changes table of a snapshot D holds one row per binding added,
// removed or changed since P, the newest snapshot older than D that is
// published (its checkpoint says so). It is computed from digests kept in
// staging (exporter.WriteDigest), never from a warehouse:
//
//  1. D's digest is written from D's parts, under D's staging directory,
//     and recorded in D's checkpoint.
//  2. P's digest is the one P's checkpoint records; when it is missing or
//     damaged it is rebuilt, into a temporary directory, from P's parts if
//     staging still holds them intact, else from P's partition of the
//     local warehouse if one is configured. When there is no P, or P's
//     digest cannot be had, every binding of D is a row of kind initial
//     (a baseline), and the log says why.
//  3. The changes part is written from the two digests and recorded in
//     D's checkpoint with the date of P, and published with D's other
//     tables. A retry publishes the recorded part, unless P is no longer
//     the newest published snapshot older than D (an older date was
//     published meanwhile): the changes are then computed again under a
//     new version, which publishers load afresh.
//  4. If a snapshot N newer than D is published already (D is a past date
//     run again with --force, or published late), N's changes were
//     computed against a snapshot older than D: they are computed again
//     against D's digest and N's, and published as a refresh of N's
//     partition of the changes table, before D is recorded as published.
//
// Each step is recorded before the next one starts and every write
// replaces an object whole, so a run killed at any point resumes to the
// same result: D's digest exists before D is published, and a published
// snapshot's digest is never rewritten.

// Journal keys of the changes stage, in the snapshot's checkpoint.
const (
	keyDigest  = "changes/digest"
	keyChanges = "changes/part"
	keyRefresh = "changes/refresh"
)

// DefaultKeepDigests is how many digests staging keeps, the newest
// snapshots'. A digest older than those is rebuilt from the local
// warehouse when a --force of a past date needs it.
const DefaultKeepDigests = 7

// DigestName is the staging name of the digest of the snapshot of date.
func DigestName(date time.Time) string { return checkpoint.Dir(date) + "/digest/bindings.digest" }

// changesPartName is the staging name of version v of the changes part.
func changesPartName(date time.Time, v int) string {
	return fmt.Sprintf("%s/changes/changes-v%d.parquet", checkpoint.Dir(date), v)
}

// refreshPartName is the staging name of version v of the refreshed
// changes of the later snapshot next.
func refreshPartName(date, next time.Time, v int) string {
	return fmt.Sprintf("%s/changes/refresh-%s-v%d.parquet", checkpoint.Dir(date), next.Format(time.DateOnly), v)
}

// changesRecord is what the checkpoint records of a computed changes part.
type changesRecord struct {
	Part exporter.PartInfo `json:"part"`
	// Date is the snapshot whose changes the part holds (for a refresh,
	// the later snapshot).
	Date string `json:"date"`
	// Newest is the newest published snapshot older than Date when the
	// part was computed; Previous is the one compared with: Newest, or
	// "" for a baseline, whose reason is Baseline.
	Newest   string `json:"newest,omitempty"`
	Previous string `json:"previous,omitempty"`
	Baseline string `json:"baseline,omitempty"`
	// Version numbers the computations of the part (1, 2, ...).
	Version int              `json:"version"`
	Counts  map[string]int64 `json:"counts,omitempty"`
}

// published is a published snapshot as its checkpoint describes it.
type published struct {
	date    time.Time
	journal map[string]string
}

// changesStage computes the changes of one snapshot.
type changesStage struct {
	cp    *checkpoint.Log
	store staging.Store
	date  time.Time
	opts  Options
	log   *zap.Logger
	tmp   string // temporary directory for rebuilt digests, made on demand
	// releaseTmp removes tmp.
	releaseTmp func()

	// logged are the dates with a checkpoint log, oldest first, and
	// digests the dates with a digest object; read once per stage.
	logged, digests []time.Time
}

func newChangesStage(cp *checkpoint.Log, opts Options, log *zap.Logger) *changesStage {
	return &changesStage{cp: cp, store: opts.Store, date: cp.State().Date, opts: opts, log: log}
}

// close removes the digests rebuilt for this stage.
func (c *changesStage) close() {
	if c.tmp != "" {
		c.releaseTmp()
		c.tmp = ""
	}
}

func (c *changesStage) digestOptions() exporter.DigestOptions {
	return exporter.DigestOptions{TempDir: c.opts.TempDir, SortBytes: c.opts.SortBytes}
}

// prepare returns the changes table of the snapshot and, when a later
// snapshot is published already, the refresh of that snapshot's changes.
func (c *changesStage) prepare(ctx context.Context) (exporter.Table, *exporter.Snapshot, error) {
	day := c.date.Format(time.DateOnly)
	if err := c.list(ctx); err != nil {
		return exporter.Table{}, nil, err
	}
	cur, err := c.ownDigest(ctx)
	if err != nil {
		return exporter.Table{}, nil, fmt.Errorf("changes of snapshot %s: %w", day, err)
	}
	table, err := c.changes(ctx, cur)
	if err != nil {
		return exporter.Table{}, nil, fmt.Errorf("changes of snapshot %s: %w", day, err)
	}
	refresh, err := c.refresh(ctx, cur)
	if err != nil {
		return exporter.Table{}, nil, fmt.Errorf("changes of the snapshot after %s: %w", day, err)
	}
	return table, refresh, nil
}

// list reads which dates have a checkpoint log and which a digest.
func (c *changesStage) list(ctx context.Context) error {
	names, err := c.store.List(ctx, "snapshots/")
	if err != nil {
		return fmt.Errorf("list snapshots in staging %s: %w", c.store.URI("snapshots"), err)
	}
	c.logged, c.digests = nil, nil
	for _, name := range names {
		parts := strings.Split(name, "/")
		if len(parts) < 4 {
			continue
		}
		d, err := time.Parse(time.DateOnly, parts[1])
		if err != nil {
			continue
		}
		switch {
		case parts[2] == "_log":
			if n := len(c.logged); n == 0 || !c.logged[n-1].Equal(d) {
				c.logged = append(c.logged, d)
			}
		case name == DigestName(d):
			c.digests = append(c.digests, d)
		}
	}
	return nil
}

// ownDigest returns the digest of the snapshot, written from its parts
// unless the checkpoint records an intact one.
func (c *changesStage) ownDigest(ctx context.Context) (exporter.DigestRef, error) {
	j := Journal{c.cp}
	ref := exporter.DigestRef{Store: c.store, Name: DigestName(c.date), Date: c.date}
	if v := j.Get(keyDigest); v != "" {
		if err := json.Unmarshal([]byte(v), &ref.Info); err != nil {
			return ref, fmt.Errorf("read the checkpoint's record of the digest: %w", err)
		}
		err := exporter.CheckDigest(ctx, ref)
		if err == nil {
			return ref, nil
		}
		if !errors.Is(err, exporter.ErrDigestDamaged) && !errors.Is(err, staging.ErrNotExist) {
			return ref, err
		}
		c.log.Warn("the snapshot's digest is missing or damaged; writing it again from its parts", zap.Error(err))
	}
	parts := bindingParts(c.cp.State().Parts)
	info, build, err := exporter.WritePartsDigest(ctx, c.store, ref.Name, c.date, parts, c.digestOptions())
	if build.RunsFailed != nil {
		c.log.Warn("the runs beside the snapshot's parts failed while merged; the digest was written from the parts", zap.Error(build.RunsFailed))
	}
	if err != nil {
		return ref, err
	}
	if len(build.ReadBack) > 0 {
		c.log.Info("parts read back for the digest: their runs cannot be used",
			zap.Int("parts", len(build.ReadBack)), zap.Strings("why", firstN(build.ReadBack, 5)))
	}
	ref.Info = info
	data, _ := json.Marshal(info)
	if err := j.Set(ctx, map[string]string{keyDigest: string(data)}); err != nil {
		return ref, err
	}
	c.log.Info("wrote the snapshot's digest", zap.String("digest", c.store.URI(ref.Name)), zap.Int64("rows", info.Rows), zap.Int64("bytes", info.Bytes),
		zap.Int("parts_merged_from_runs", build.FromRuns), zap.Int("parts_read_back", len(build.ReadBack)))
	return ref, nil
}

// firstN returns the first n of s.
func firstN(s []string, n int) []string { return s[:min(n, len(s))] }

func bindingParts(ps []checkpoint.Part) []exporter.PartInfo {
	out := make([]exporter.PartInfo, len(ps))
	for i, p := range ps {
		out[i] = exporter.PartInfo{Name: p.Name, Rows: p.Rows, Bytes: p.Bytes, CRC32C: p.CRC32C}
	}
	return out
}

// changes returns the changes table of the snapshot: the part the
// checkpoint records, if it is intact and still compares with the newest
// published snapshot older than this one, else a part computed now.
func (c *changesStage) changes(ctx context.Context, cur exporter.DigestRef) (exporter.Table, error) {
	prev, err := c.newestBefore(ctx, c.date)
	if err != nil {
		return exporter.Table{}, err
	}
	newest := ""
	if prev != nil {
		newest = prev.date.Format(time.DateOnly)
	}
	j := Journal{c.cp}
	rec, err := c.recorded(ctx, keyChanges, j)
	if err != nil {
		return exporter.Table{}, err
	}
	version := 1
	if rec != nil {
		if rec.Newest == newest && rec.Part.Name != "" {
			return changesTable(rec), nil
		}
		version = rec.Version + 1
		if rec.Part.Name != "" {
			c.log.Warn("the snapshot's changes compare with a snapshot that is no longer the newest published before it; computing them again",
				zap.String("compared_with", rec.Newest), zap.String("newest", newest), zap.Int("version", version))
		}
	}
	var prevRef *exporter.DigestRef
	baseline := "no snapshot older than it is published"
	if prev != nil {
		if prevRef, baseline, err = c.digestOf(ctx, prev); err != nil {
			return exporter.Table{}, err
		}
	}
	name := changesPartName(c.date, version)
	info, err := exporter.WriteChanges(ctx, exporter.ChangesOptions{Previous: prevRef, Current: cur, Store: c.store, Name: name, PartOptions: c.opts.PartOptions})
	if err != nil {
		return exporter.Table{}, err
	}
	next := &changesRecord{Part: info.Part, Date: c.date.Format(time.DateOnly), Newest: newest, Version: version, Counts: info.Counts}
	if prevRef != nil {
		next.Previous = newest
	} else {
		next.Baseline = baseline
	}
	if err := c.record(ctx, j, keyChanges, next); err != nil {
		return exporter.Table{}, err
	}
	if rec != nil && rec.Part.Name != "" && rec.Part.Name != name {
		c.remove(ctx, rec.Part.Name)
	}
	c.logChanges(next)
	return changesTable(next), nil
}

// logChanges says what a computed part of changes holds.
func (c *changesStage) logChanges(r *changesRecord) {
	fields := []zap.Field{zap.String("changes_of", r.Date), zap.Int64("rows", r.Part.Rows), zap.Any("counts", r.Counts), zap.Int("version", r.Version)}
	if r.Previous != "" {
		c.log.Info("computed the changes", append(fields, zap.String("compared_with", r.Previous))...)
		return
	}
	if r.Newest == "" {
		c.log.Info("computed the changes: every binding is initial, "+r.Baseline, fields...)
		return
	}
	c.log.Warn("the changes are a baseline: every binding is initial, none is compared with the snapshot of "+r.Newest+" because "+r.Baseline,
		append(fields, zap.String("newest_published_before", r.Newest))...)
}

// recorded returns the record under key if its part is intact; nil when
// there is none; a record without its part (Part.Name "") when the part
// is missing or damaged, so that the next version is numbered after it.
func (c *changesStage) recorded(ctx context.Context, key string, j exporter.Journal) (*changesRecord, error) {
	v := j.Get(key)
	if v == "" {
		return nil, nil
	}
	var rec changesRecord
	if err := json.Unmarshal([]byte(v), &rec); err != nil {
		return nil, fmt.Errorf("read the checkpoint's record %s: %w", key, err)
	}
	bad, err := checkpoint.VerifyParts(ctx, c.store, []checkpoint.Part{{Name: rec.Part.Name, Rows: rec.Part.Rows, Bytes: rec.Part.Bytes, CRC32C: rec.Part.CRC32C}})
	if err != nil {
		return nil, err
	}
	if len(bad) > 0 {
		c.log.Warn("a part of changes recorded in the checkpoint is missing or damaged; computing it again",
			zap.String("part", c.store.URI(rec.Part.Name)), zap.String("reason", bad[0].Reason))
		rec.Part = exporter.PartInfo{}
	}
	return &rec, nil
}

func (c *changesStage) record(ctx context.Context, j exporter.Journal, key string, rec *changesRecord) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return j.Set(ctx, map[string]string{key: string(data)})
}

// remove deletes an object that nothing refers to any more; a failure
// only leaves it behind.
func (c *changesStage) remove(ctx context.Context, name string) {
	if err := c.store.Delete(ctx, name); err != nil && !errors.Is(err, staging.ErrNotExist) {
		c.log.Warn("remove an unused file from staging", zap.String("file", c.store.URI(name)), zap.Error(err))
	}
}

// changesTable is the changes table of a record. A part without rows is
// left out: publishers empty the day's partition for a table without
// parts (as for a snapshot without bindings), rather than load an empty
// file.
func changesTable(rec *changesRecord) exporter.Table {
	t := exporter.Table{
		Name:    exporter.ChangesTable,
		Schema:  schemas.Changes(),
		Version: "v" + strconv.Itoa(rec.Version),
	}
	if rec.Part.Rows > 0 {
		t.Parts = []exporter.PartInfo{rec.Part}
	}
	return t
}

// files returns the staging files of the changes and refresh parts the
// stage uses, published or not, for the clean-up after publishing.
func (c *changesStage) files() []string {
	var out []string
	for _, key := range []string{keyChanges, keyRefresh} {
		var rec changesRecord
		if v := c.cp.State().Publish[key]; v != "" && json.Unmarshal([]byte(v), &rec) == nil && rec.Part.Name != "" {
			out = append(out, rec.Part.Name)
		}
	}
	return out
}

// refresh returns, when a snapshot newer than this one is published, the
// refresh of its changes against this snapshot; nil otherwise, or when
// that snapshot's digest cannot be had (its changes then stay as they
// are, and the log says they are stale).
func (c *changesStage) refresh(ctx context.Context, cur exporter.DigestRef) (*exporter.Snapshot, error) {
	next, err := c.oldestAfter(ctx, c.date)
	if err != nil || next == nil {
		return nil, err
	}
	nextDay := next.date.Format(time.DateOnly)
	day := c.date.Format(time.DateOnly)
	j := Journal{c.cp}
	rec, err := c.recorded(ctx, keyRefresh, j)
	if err != nil {
		return nil, err
	}
	version := 1
	if rec != nil {
		if rec.Date == nextDay && rec.Part.Name != "" {
			return c.refreshSnapshot(next.date, rec), nil
		}
		version = rec.Version + 1
	}
	nextRef, why, err := c.digestOf(ctx, next)
	if err != nil {
		return nil, err
	}
	if nextRef == nil {
		c.log.Warn("the changes of the later snapshot "+nextDay+" are stale: they compare with a snapshot older than "+day+
			" (their previous_snapshot_date says which), and cannot be computed again because "+why,
			zap.String("stale", nextDay))
		return nil, nil
	}
	name := refreshPartName(c.date, next.date, version)
	info, err := exporter.WriteChanges(ctx, exporter.ChangesOptions{Previous: &cur, Current: *nextRef, Store: c.store, Name: name, PartOptions: c.opts.PartOptions})
	if err != nil {
		return nil, err
	}
	r := &changesRecord{Part: info.Part, Date: nextDay, Newest: day, Previous: day, Version: version, Counts: info.Counts}
	if err := c.record(ctx, j, keyRefresh, r); err != nil {
		return nil, err
	}
	if rec != nil && rec.Part.Name != "" && rec.Part.Name != name {
		c.remove(ctx, rec.Part.Name)
	}
	c.log.Info("a later snapshot is published: its changes are computed again against this one and published with it",
		zap.String("changes_of", nextDay), zap.Int64("rows", info.Part.Rows), zap.Any("counts", info.Counts))
	return c.refreshSnapshot(next.date, r), nil
}

func (c *changesStage) refreshSnapshot(date time.Time, rec *changesRecord) *exporter.Snapshot {
	return &exporter.Snapshot{
		Date:    date,
		Store:   c.store,
		Tables:  []exporter.Table{changesTable(rec)},
		RunID:   c.opts.RunID,
		Journal: prefixed{Journal{c.cp}, "refresh/" + rec.Date + "/"},
		Refresh: true,
	}
}

// newestBefore returns the newest published snapshot older than date, or
// nil. A snapshot whose log is damaged counts as unpublished.
func (c *changesStage) newestBefore(ctx context.Context, date time.Time) (*published, error) {
	for i := len(c.logged) - 1; i >= 0; i-- {
		if d := c.logged[i]; d.Before(date) {
			p, err := c.published(ctx, d)
			if p != nil || err != nil {
				return p, err
			}
		}
	}
	return nil, nil
}

// oldestAfter returns the oldest published snapshot newer than date, or
// nil.
func (c *changesStage) oldestAfter(ctx context.Context, date time.Time) (*published, error) {
	for _, d := range c.logged {
		if d.After(date) {
			p, err := c.published(ctx, d)
			if p != nil || err != nil {
				return p, err
			}
		}
	}
	return nil, nil
}

// published scans the log of date and returns the snapshot if it is
// published. The scan keeps only the publishing record, so its memory
// does not grow with the snapshot's users.
func (c *changesStage) published(ctx context.Context, date time.Time) (*published, error) {
	p := &published{date: date, journal: map[string]string{}}
	done := false
	err := checkpoint.Each(ctx, c.store, date, func(e *checkpoint.Entry) error {
		switch e.Kind {
		case checkpoint.KindPublish:
			for k, v := range e.Publish {
				p.journal[k] = v
			}
		case checkpoint.KindPublished:
			done = true
		}
		return nil
	})
	if errors.Is(err, checkpoint.ErrLogDamaged) {
		c.log.Warn("a snapshot's checkpoint is damaged: the changes do not compare with it", zap.String("damaged", date.Format(time.DateOnly)), zap.Error(err))
		return nil, nil
	}
	if err != nil || !done {
		return nil, err
	}
	return p, nil
}

// digestOf returns the digest of the published snapshot p: the one its
// checkpoint records, or one rebuilt from its parts or from the local
// warehouse. Without any, it returns nil and why.
func (c *changesStage) digestOf(ctx context.Context, p *published) (*exporter.DigestRef, string, error) {
	day := p.date.Format(time.DateOnly)
	ref := exporter.DigestRef{Store: c.store, Name: DigestName(p.date), Date: p.date}
	why := "its digest is not recorded (it was published by an earlier bindsync)"
	if v := p.journal[keyDigest]; v != "" {
		if err := json.Unmarshal([]byte(v), &ref.Info); err != nil {
			return nil, "", fmt.Errorf("read the checkpoint of %s: its record of the digest: %w", day, err)
		}
		err := exporter.CheckDigest(ctx, ref)
		if err == nil {
			return &ref, "", nil
		}
		if !errors.Is(err, exporter.ErrDigestDamaged) && !errors.Is(err, staging.ErrNotExist) {
			return nil, "", err
		}
		why = fmt.Sprintf("its digest %s is missing or damaged (%v)", c.store.URI(ref.Name), err)
		if errors.Is(err, staging.ErrNotExist) {
			why = fmt.Sprintf("its digest %s is gone (staging keeps the %d newest)", c.store.URI(ref.Name), c.keepDigests())
		}
	}
	log := c.log.With(zap.String("digest_of", day))
	log.Info("rebuilding the digest of an earlier snapshot", zap.String("reason", why))

	// Its parts, if staging still holds every one intact.
	cp, err := checkpoint.Open(ctx, c.store, p.date)
	if err != nil {
		return nil, "", err
	}
	st := cp.State()
	bad, err := checkpoint.VerifyParts(ctx, c.store, st.Parts)
	if err != nil {
		return nil, "", err
	}
	if len(bad) == 0 {
		return c.rebuild(ctx, p.date, exporter.PartsSource(c.store, bindingParts(st.Parts)), "its parts in staging", log)
	}
	why += fmt.Sprintf(", its parts are no longer in staging (%s: %s)", c.store.URI(bad[0].Name), bad[0].Reason)

	// Its partition of the local warehouse.
	for _, pub := range c.opts.Publishers {
		var lw exporter.LocalWarehouse
		switch w := pub.(type) {
		case exporter.LocalWarehouse:
			lw = w
		case *exporter.LocalWarehouse:
			lw = *w
		default:
			continue
		}
		dir := lw.SnapshotDir(p.date)
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			why += fmt.Sprintf(", and the local warehouse has no %s", dir)
			continue
		} else if err != nil {
			return nil, "", fmt.Errorf("rebuild the digest of %s: %w", day, err)
		}
		return c.rebuild(ctx, p.date, exporter.FilesSource(dir), dir, log)
	}
	if !strings.Contains(why, "local warehouse") {
		why += ", and no local warehouse is configured to rebuild it from"
	}
	return nil, why, nil
}

// rebuild writes the digest of the snapshot of date from src into the
// stage's temporary directory.
func (c *changesStage) rebuild(ctx context.Context, date time.Time, src exporter.RowSource, from string, log *zap.Logger) (*exporter.DigestRef, string, error) {
	if c.tmp == "" {
		dir, release, err := exporter.TempDir(c.opts.TempDir, "bindsync-digests-")
		if err != nil {
			return nil, "", fmt.Errorf("rebuild a digest: %w", err)
		}
		c.tmp, c.releaseTmp = dir, release
	}
	store, err := staging.NewDir(c.tmp)
	if err != nil {
		return nil, "", fmt.Errorf("rebuild a digest: %w", err)
	}
	name := "rebuilt-" + date.Format(time.DateOnly) + ".digest"
	info, err := exporter.WriteDigest(ctx, store, name, date, src, c.digestOptions())
	if err != nil {
		return nil, "", fmt.Errorf("rebuild the digest of %s from %s: %w", date.Format(time.DateOnly), from, err)
	}
	log.Info("rebuilt the digest of an earlier snapshot", zap.String("from", from), zap.Int64("rows", info.Rows))
	return &exporter.DigestRef{Store: store, Name: name, Date: date, Info: info}, "", nil
}

func (c *changesStage) keepDigests() int {
	if c.opts.KeepDigests > 0 {
		return c.opts.KeepDigests
	}
	return DefaultKeepDigests
}

// prune removes the digests of all but the newest keepDigests snapshots
// that have one. This snapshot's is always kept. A failure only leaves a
// digest behind, and is logged.
func (c *changesStage) prune(ctx context.Context) {
	if err := c.list(ctx); err != nil {
		c.log.Warn("old digests not pruned", zap.Error(err))
		return
	}
	dates := slices.Clone(c.digests)
	slices.SortFunc(dates, func(a, b time.Time) int { return b.Compare(a) })
	for i, d := range dates {
		if i < c.keepDigests() || d.Equal(c.date) {
			continue
		}
		c.remove(ctx, DigestName(d))
		c.log.Debug("removed an old digest", zap.String("digest_of", d.Format(time.DateOnly)))
	}
}

// prefixed is a journal that keeps its keys under a prefix of another.
type prefixed struct {
	j      exporter.Journal
	prefix string
}

func (p prefixed) Get(key string) string { return p.j.Get(p.prefix + key) }

func (p prefixed) Set(ctx context.Context, kv map[string]string) error {
	out := make(map[string]string, len(kv))
	for k, v := range kv {
		out[p.prefix+k] = v
	}
	return p.j.Set(ctx, out)
}

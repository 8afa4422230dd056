package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/config"
	"github.com/bindsync/bindsync/internal/safetext"
	"github.com/bindsync/bindsync/staging"
)

// stateTexts are the states of a snapshot (checkpoint.State.Describe) as
// the table names them; `status --json` names them by their value.
var stateTexts = map[checkpoint.SnapshotState]string{
	checkpoint.StateNoCheckpoint: "no checkpoint",
	checkpoint.StateInProgress:   "in progress / interrupted",
	checkpoint.StateFailed:       "failed",
	checkpoint.StateComplete:     "complete, not yet published",
	checkpoint.StatePublished:    "published",
}

// failedShown bounds the failed users listed in the table; --json lists all.
const failedShown = 20

// statusReport is what `bindsync status --json` prints. Field names are a
// contract with scripts and dashboards: add fields, never rename them.
// Every list is present (empty rather than null).
type statusReport struct {
	Snapshot string `json:"snapshot"`
	// Location is where the snapshot lives in staging.
	Location string `json:"location"`
	// Snapshots are the dates that have a checkpoint in staging, oldest first.
	Snapshots []string `json:"snapshots"`
	State     string   `json:"state"`
	StateText string   `json:"state_text"`

	// UsersDone counts users finished over every run; UsersTotal is the
	// number of users the newest ended run knew of (0: no run ended yet).
	UsersDone     int64 `json:"users_done"`
	UsersTotal    int64 `json:"users_total"`
	UsersInFlight int   `json:"users_in_flight"`
	UsersGone     int   `json:"users_gone"`
	UsersFailed   int   `json:"users_failed"`
	// BindingsDone are the rows of finished users; Rows also counts the
	// rows so far of users in flight.
	BindingsDone int64 `json:"bindings_done"`
	Parts        int   `json:"parts"`
	Rows         int64 `json:"rows"`
	Bytes        int64 `json:"bytes"`

	Published   bool              `json:"published"`
	PublishedAt *time.Time        `json:"published_at"`
	Cleaned     bool              `json:"cleaned"`
	Publish     map[string]string `json:"publish"`

	InFlight []statusInFlight `json:"in_flight"`
	Failed   []statusFailed   `json:"failed"`
	Runs     []statusRun      `json:"runs"`
	// EarlierRuns are the runs of the snapshot before `run --force`
	// started it over, oldest first (kept in staging under history/).
	EarlierRuns []statusEarlierRun `json:"earlier_runs"`
}

// statusEarlierRun is a run that --force set aside: when that happened,
// and whether the snapshot was published then.
type statusEarlierRun struct {
	statusRun
	ArchivedAt  time.Time  `json:"archived_at"`
	Published   bool       `json:"published"`
	PublishedAt *time.Time `json:"published_at"`
}

type statusInFlight struct {
	ServiceSID string `json:"service_sid"`
	User       string `json:"user"`
	Bindings   int64  `json:"bindings"`
	Pages      int64  `json:"pages"`
}

type statusFailed struct {
	ServiceSID string `json:"service_sid"`
	User       string `json:"user"`
	Reason     string `json:"reason"`
}

type statusRun struct {
	RunID       string     `json:"run_id"`
	Start       time.Time  `json:"start"`
	End         *time.Time `json:"end"` // null while running, or after a crash
	Status      string     `json:"status"`
	Error       string     `json:"error"`
	UsersTotal  int64      `json:"users_total"`
	UsersDone   int64      `json:"users_done"`
	UsersGone   int64      `json:"users_gone"`
	UsersFailed int        `json:"users_failed"`
	Bindings    int64      `json:"bindings"`
	Pages       int64      `json:"pages"`
	Retries     int64      `json:"retries"`
}

// cmdStatus prints what the checkpoint of a snapshot says. It only reads
// staging and never takes the snapshot's lock, so it can watch a run that
// is going on; it needs no Twilio secret (see statusReads).
func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	var c common
	fs := newFlagSet("status", stderr, &c, true)
	date := fs.String("snapshot-date", "", "snapshot date YYYY-MM-DD (UTC); default the newest snapshot in staging, or today in UTC when there is none")
	asJSON := fs.Bool("json", false, "print one JSON object instead of a table")
	check := fs.Bool("check", false, "for monitors: exit 0 when a snapshot was published within --max-age (or, with --snapshot-date, when that snapshot is published), 1 otherwise, printing one line saying why")
	maxAge := fs.Duration("max-age", 26*time.Hour, "with --check: how long ago the newest snapshot may have been published; a day plus the usual length of a run")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *check && *asJSON {
		return usagef("status: --check prints one line; it does not go with --json")
	}
	if *maxAge <= 0 {
		return usagef("status: --max-age must be > 0 (got %s)", *maxAge)
	}
	var day time.Time
	if *date != "" {
		d, err := snapshotDate(*date, time.Now())
		if err != nil {
			return err
		}
		day = d
	}
	cfg, err := loadConfigWith(&c, statusReads)
	if err != nil {
		return err
	}
	red := newRedactor(cfg)
	defer func() { err = presentable(err, red) }()
	var store staging.Store
	if cfg.StagingIsGCS() || dirExists(cfg.Staging) {
		if store, err = openStaging(ctx, cfg); err != nil {
			return err
		}
		if c, ok := store.(io.Closer); ok {
			defer c.Close()
		}
	}
	if *check {
		ok, line := checkPublished(ctx, store, cfg.Staging, day, time.Now(), *maxAge)
		fmt.Fprintln(stdout, clean(red, line))
		if !ok {
			return errSilent{exitFailed}
		}
		return nil
	}
	rep, err := readStatus(ctx, store, day, time.Now())
	if err != nil {
		return err
	}
	rep.clean(red)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return printStatus(stdout, rep)
}

// statusReads are the only fields of the configuration that status uses:
// staging, and the credentials file that opens a GCS bucket. A monitor or
// an operator's shell need not hold the Twilio secrets, nor anything else
// that a run needs, to ask how the last run went.
var statusReads = config.Options{Reads: []string{"staging", "warehouse.bigquery.credentials_file"}}

// dirExists keeps status from creating a missing local staging directory:
// a status command changes nothing.
func dirExists(dir string) bool {
	_, err := os.Stat(dir)
	return !errors.Is(err, os.ErrNotExist)
}

// readStatus reads the checkpoint of day from store (nil: staging does not
// exist yet). A zero day means the newest snapshot in staging, or the
// current UTC date when there is none.
func readStatus(ctx context.Context, store staging.Store, day, now time.Time) (*statusReport, error) {
	var dates []string
	if store != nil {
		var err error
		if dates, err = checkpoint.Snapshots(ctx, store); err != nil {
			return nil, err
		}
	}
	if day.IsZero() {
		day, _ = snapshotDate("", now)
		if len(dates) > 0 {
			day, _ = time.Parse(time.DateOnly, dates[len(dates)-1])
		}
	}
	st := &checkpoint.State{Date: day}
	location := checkpoint.Dir(day)
	if store != nil {
		cp, err := checkpoint.Open(ctx, store, day)
		if err != nil {
			return nil, err
		}
		st = cp.State()
		location = store.URI(checkpoint.Dir(day))
	}
	rep := newStatusReport(st)
	rep.Location = location
	rep.Snapshots = append(rep.Snapshots, dates...)
	if store != nil {
		earlier, err := readHistory(ctx, store, day)
		if err != nil {
			return nil, err
		}
		for _, a := range earlier {
			rep.EarlierRuns = append(rep.EarlierRuns, statusEarlierRun{
				statusRun: newStatusRun(a.Run), ArchivedAt: a.ArchivedAt.UTC(), Published: a.Published, PublishedAt: a.PublishedAt,
			})
		}
	}
	return rep, nil
}

// newStatusReport summarises a replayed checkpoint.
func newStatusReport(st *checkpoint.State) *statusReport {
	rep := &statusReport{
		Snapshot:      st.Date.Format(time.DateOnly),
		Snapshots:     []string{},
		State:         string(st.Describe()),
		UsersDone:     st.UsersDone,
		UsersTotal:    st.UsersTotal(),
		UsersInFlight: len(st.InFlight),
		UsersGone:     len(st.Gone),
		UsersFailed:   len(st.Failed),
		BindingsDone:  st.BindingsDone,
		Parts:         len(st.Parts),
		Rows:          st.Rows(),
		Published:     st.Published,
		Cleaned:       st.Cleaned,
		Publish:       map[string]string{},
		InFlight:      []statusInFlight{},
		Failed:        []statusFailed{},
		Runs:          []statusRun{},
		EarlierRuns:   []statusEarlierRun{},
	}
	rep.StateText = stateTexts[checkpoint.SnapshotState(rep.State)]
	for _, p := range st.Parts {
		rep.Bytes += p.Bytes
	}
	if st.Published {
		t := st.PublishedTime.UTC()
		rep.PublishedAt = &t
	}
	for k, v := range st.Publish {
		rep.Publish[k] = v
	}
	for _, f := range st.InFlight {
		rep.InFlight = append(rep.InFlight, statusInFlight{ServiceSID: f.Service, User: f.User, Bindings: f.Bindings, Pages: f.Pages})
	}
	slices.SortFunc(rep.InFlight, func(a, b statusInFlight) int {
		return cmp.Or(cmp.Compare(a.ServiceSID, b.ServiceSID), cmp.Compare(a.User, b.User))
	})
	for u, reason := range st.Failed {
		rep.Failed = append(rep.Failed, statusFailed{ServiceSID: u.Service, User: u.User, Reason: reason})
	}
	slices.SortFunc(rep.Failed, func(a, b statusFailed) int {
		return cmp.Or(cmp.Compare(a.ServiceSID, b.ServiceSID), cmp.Compare(a.User, b.User))
	})
	for _, r := range st.Runs {
		rep.Runs = append(rep.Runs, newStatusRun(r))
	}
	return rep
}

func newStatusRun(r checkpoint.RunSummary) statusRun {
	run := statusRun{
		RunID: r.RunID, Start: r.Start.UTC(), Status: string(r.Status), Error: r.Error,
		UsersTotal: r.UsersTotal, UsersDone: r.UsersDone, UsersGone: r.UsersGone, UsersFailed: len(r.UsersFailed),
		Bindings: r.Bindings, Pages: r.Pages, Retries: r.Retries,
	}
	if !r.End.IsZero() {
		end := r.End.UTC()
		run.End = &end
	}
	return run
}

// clean makes the texts of the report that come from Twilio or a run
// (users, reasons, errors) safe to print: redacted with red, cut, and
// escaped where JSON would not escape (the table escapes the rest).
func (rep *statusReport) clean(red *safetext.Redactor) {
	text := func(s string, max int) string {
		return safetext.EscapeForJSON(safetext.Truncate(red.Redact(s), max))
	}
	rep.Location = text(rep.Location, errorBytes)
	for i := range rep.InFlight {
		rep.InFlight[i].User = text(rep.InFlight[i].User, reasonBytes)
	}
	for i := range rep.Failed {
		rep.Failed[i].User = text(rep.Failed[i].User, reasonBytes)
		rep.Failed[i].Reason = text(rep.Failed[i].Reason, reasonBytes)
	}
	for i := range rep.Runs {
		rep.Runs[i].Error = text(rep.Runs[i].Error, errorBytes)
	}
	for i := range rep.EarlierRuns {
		rep.EarlierRuns[i].Error = text(rep.EarlierRuns[i].Error, errorBytes)
		rep.EarlierRuns[i].RunID = text(rep.EarlierRuns[i].RunID, reasonBytes)
	}
}

// stateHints tell the person reading the table what to do next.
var stateHints = map[checkpoint.SnapshotState]string{
	checkpoint.StateNoCheckpoint: "no run has started this snapshot",
	checkpoint.StateInProgress:   "a run is going on, or died; if none is alive, `bindsync run` with this date resumes it",
	checkpoint.StateFailed:       "`bindsync run` with this date resumes it and retries the failed users",
	checkpoint.StateComplete:     "every user is read; `bindsync run` or `bindsync publish` with this date publishes it",
	checkpoint.StatePublished:    "nothing to do",
}

// printStatus writes the report as aligned tables for a person.
func printStatus(w io.Writer, rep *statusReport) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	snapshots := "none in staging"
	if len(rep.Snapshots) > 0 {
		snapshots = strings.Join(rep.Snapshots, ", ")
	}
	fmt.Fprintf(tw, "snapshot\t%s\t(%s)\n", rep.Snapshot, safetext.Escape(rep.Location))
	fmt.Fprintf(tw, "state\t%s\t(%s)\n", rep.StateText, stateHints[checkpoint.SnapshotState(rep.State)])
	if rep.State == string(checkpoint.StateNoCheckpoint) {
		fmt.Fprintf(tw, "snapshots\t%s\n", snapshots)
		printEarlierRuns(tw, rep)
		return tw.Flush()
	}
	total := "(total not known until a run ends)"
	if rep.UsersTotal > 0 {
		total = fmt.Sprintf("of %d known", rep.UsersTotal)
	}
	fmt.Fprintf(tw, "users\t%d done %s, %d in flight, %d gone, %d failed\n", rep.UsersDone, total, rep.UsersInFlight, rep.UsersGone, rep.UsersFailed)
	fmt.Fprintf(tw, "parts\t%s, %s, %s (%d bindings of finished users)\n",
		plural(int64(rep.Parts), "part", "parts"), plural(rep.Rows, "row", "rows"), formatBytes(rep.Bytes), rep.BindingsDone)
	published := "no"
	if rep.PublishedAt != nil {
		published = rep.PublishedAt.Format(time.RFC3339)
		if rep.Cleaned {
			published += " (parts removed from staging)"
		}
	}
	fmt.Fprintf(tw, "published\t%s\n", published)
	label := "publish"
	for _, k := range sortedKeys(rep.Publish) {
		fmt.Fprintf(tw, "%s\t%s = %s\n", label, k, rep.Publish[k])
		label = ""
	}
	fmt.Fprintf(tw, "snapshots\t%s\n", snapshots)

	if len(rep.Runs) > 0 {
		fmt.Fprintf(tw, "\nRUN\tSTART\tEND\tSTATUS\tUSERS\tDONE\tGONE\tFAILED\tBINDINGS\tPAGES\tRETRIES\n")
		for _, r := range rep.Runs {
			end := "-"
			if r.End != nil {
				end = r.End.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", r.RunID, r.Start.Format(time.RFC3339), end, r.Status,
				r.UsersTotal, r.UsersDone, r.UsersGone, r.UsersFailed, r.Bindings, r.Pages, r.Retries)
		}
		if last := rep.Runs[len(rep.Runs)-1]; last.Error != "" {
			fmt.Fprintf(tw, "\nlast run error: %s\n", safetext.Escape(oneLine(last.Error, 300)))
		}
	}
	printEarlierRuns(tw, rep)

	if len(rep.Failed) > 0 {
		fmt.Fprintf(tw, "\nfailed users (%d):\nSERVICE\tUSER\tREASON\n", len(rep.Failed))
		for i, f := range rep.Failed {
			if i == failedShown {
				fmt.Fprintf(tw, "and %d more (bindsync status --json lists them all)\n", len(rep.Failed)-failedShown)
				break
			}
			fmt.Fprintf(tw, "%s\t%q\t%s\n", f.ServiceSID, f.User, safetext.Escape(oneLine(f.Reason, 200)))
		}
	}
	return tw.Flush()
}

// printEarlierRuns lists the runs that --force set aside, so that starting
// a snapshot over does not hide what happened to it before.
func printEarlierRuns(tw io.Writer, rep *statusReport) {
	if len(rep.EarlierRuns) == 0 {
		return
	}
	fmt.Fprintf(tw, "\nearlier attempts (before --force):\nRUN\tSTART\tEND\tSTATUS\tUSERS\tDONE\tGONE\tFAILED\tBINDINGS\tPAGES\tRETRIES\tSET ASIDE\n")
	for _, r := range rep.EarlierRuns {
		end := "-"
		if r.End != nil {
			end = r.End.Format(time.RFC3339)
		}
		aside := r.ArchivedAt.Format(time.RFC3339)
		if r.Published {
			aside += " (snapshot was published)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", safetext.Escape(r.RunID), r.Start.Format(time.RFC3339), end, r.Status,
			r.UsersTotal, r.UsersDone, r.UsersGone, r.UsersFailed, r.Bindings, r.Pages, r.Retries, aside)
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// oneLine keeps a table row on one line: newlines and tabs become spaces
// and long texts are cut at max runes.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}

func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return plural(n, "byte", "bytes")
	}
	v, suffix := float64(n)/unit, "KiB"
	for _, s := range []string{"MiB", "GiB", "TiB"} {
		if v < unit {
			break
		}
		v, suffix = v/unit, s
	}
	return fmt.Sprintf("%.1f %s", v, suffix)
}

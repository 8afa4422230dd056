package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/bindsync/bindsync/internal/safetext"
	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/worker"
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	var c common
	fs := newFlagSet("run", stderr, &c, true)
	date := fs.String("snapshot-date", "", "snapshot date YYYY-MM-DD (UTC); default today in UTC")
	force := fs.Bool("force", false, "read the snapshot again even if it was already published")
	progress := fs.Duration("progress", 10*time.Second, "interval of progress log lines (0 to disable); in a terminal a live progress line replaces them")
	allowFuture := fs.Bool("allow-future", false, "accept a --snapshot-date after today's UTC date")
	if err := parse(fs, args); err != nil {
		return err
	}
	day, err := dateFlag(*date, *allowFuture, time.Now())
	if err != nil {
		return err
	}
	cfg, err := loadConfig(&c)
	if err != nil {
		return err
	}
	red := newRedactor(cfg)
	defer func() { err = presentable(err, red) }()
	logOut, live := liveOutput(cfg, stderr)
	log, err := newLogger(&c, cfg, logOut)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	logWarnings(log, cfg)
	logMemoryLimit(log, memLimit, memLimitSource)
	j, err := newJob(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer j.close()
	j.configFile = c.config
	j.metrics.RunStarted()
	start := time.Now()
	res, err := j.run(ctx, day, *force, live.begin(j.stats, *progress))
	live.end()
	recordRun(j.metrics, res, err, time.Since(start))
	pushMetrics(ctx, cfg, j.metrics, log)
	if res != nil {
		printResult(stdout, res, err, red, c.config)
	}
	return err
}

// dateFlag is the snapshot date of --snapshot-date s (today's UTC date
// when empty), refused when in the future unless allowFuture.
func dateFlag(s string, allowFuture bool, now time.Time) (time.Time, error) {
	day, err := snapshotDate(s, now)
	if err != nil {
		return time.Time{}, err
	}
	return day, checkFuture(day, now, allowFuture)
}

// snapshotDate parses --snapshot-date, defaulting to today's UTC date.
func snapshotDate(s string, now time.Time) (time.Time, error) {
	if s == "" {
		now = now.UTC()
		return time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC), nil
	}
	d, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, usagef("--snapshot-date must be YYYY-MM-DD (got %q)", s)
	}
	return d, nil
}

// checkFuture refuses a snapshot date after today's UTC date unless allow:
// such a date is almost always a typo (2062 for 2026), and its snapshot
// would claim to show bindings as they are on a day that has not come.
func checkFuture(day, now time.Time, allow bool) error {
	today, _ := snapshotDate("", now)
	if allow || !day.After(today) {
		return nil
	}
	return usagef("--snapshot-date %s is in the future (today is %s in UTC); pass --allow-future if that is what you mean",
		day.Format(time.DateOnly), today.Format(time.DateOnly))
}

// printResult writes the outcome of a run for the person who started it;
// the logs on stderr hold the details. Text from Twilio (users, reasons)
// is redacted with red, cut and escaped: it cannot forge a line. configFile
// is the configuration file, named by the advice after a failed run.
func printResult(w io.Writer, res *worker.Result, err error, red *safetext.Redactor, configFile string) {
	day := res.Date.Format(time.DateOnly)
	if res.AlreadyPublished {
		fmt.Fprintf(w, "snapshot %s was already published (%s in %s); nothing to do (use --force to read it again)\n",
			day, plural(res.Rows, "row", "rows"), plural(int64(len(res.Parts)), "part", "parts"))
		return
	}
	s := res.Summary
	fmt.Fprintf(w, "snapshot %s: %s in %s\n", day, clean(red, string(s.Status)), s.End.Sub(s.Start).Round(time.Millisecond))
	fmt.Fprintf(w, "  users     %d read now, %d gone, %d not found, %d failed, %d known in all\n", s.UsersDone, s.UsersGone, s.UsersNotFound, max(s.UsersFailedCount, int64(len(s.UsersFailed))), s.UsersTotal)
	fmt.Fprintf(w, "  bindings  %d read now in %s (%d retries); the snapshot holds %s\n", s.Bindings, plural(s.Pages, "page", "pages"), s.Retries, plural(res.Rows, "row", "rows"))
	for _, kind := range slices.Sorted(maps.Keys(s.ContractViolations)) {
		fmt.Fprintf(w, "  contract  %s broke the API's contract (%s); kept as received\n", plural(s.ContractViolations[kind], "record", "records"), kind)
	}
	for _, p := range res.Published {
		fmt.Fprintf(w, "  published to %s\n", clean(red, p))
	}
	for i, f := range res.Failed {
		if i == 20 {
			fmt.Fprintf(w, "  ... and %d more failed users (see the logs)\n", max(s.UsersFailedCount, int64(len(res.Failed)))-20)
			break
		}
		// %q escapes the user's control characters as Escape would, and
		// its quotes too.
		fmt.Fprintf(w, "  FAILED service %s user %q: %s\n", clean(red, f.Service), red.Redact(f.User), cleanReason(red, f.Reason))
	}
	if err != nil {
		fmt.Fprintln(w, clean(red, runAdvice(err, configFile)))
	}
}

// runAdvice is the last line of a failed run's summary: what to do next,
// which differs with the exit code. A run that failed (exit 1) resumes
// when run again as it is; one stopped by its configuration or credentials
// (exit 2) needs the file fixed first, and the advice names the file.
func runAdvice(err error, configFile string) string {
	file := configFile
	if file == "" {
		file = "the configuration file"
	}
	var u usageError
	switch {
	case errors.Is(err, twilio.ErrUnauthorized):
		return fmt.Sprintf("the snapshot was not published: Twilio refused the credentials. Fix twilio.account_sid and twilio.auth_token (or twilio.api_key_sid and twilio.api_key_secret) in %s, or the variables they name, then run the same command again: it resumes from the checkpoint", file)
	case errors.As(err, &u):
		return fmt.Sprintf("the snapshot was not published: fix %s as the error says, then run the same command again: it resumes from the checkpoint", file)
	case errors.Is(err, worker.ErrPanic):
		return "the snapshot was not published: bindsync hit a bug (a panic, logged with its stack); the checkpoint stands, so running the same command again resumes from it. Please report the panic"
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return "the run was interrupted before the snapshot was published; run the same command again to resume from the checkpoint"
	case errors.Is(err, worker.ErrUsersFailed):
		return "the snapshot was not published because some users failed; run the same command again: it resumes from the checkpoint and reads only the failed users and those not read yet"
	default:
		return "the snapshot was not published; run the same command again to resume from the checkpoint (the error below says what stopped it)"
	}
}

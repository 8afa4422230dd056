package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"

	"github.com/bindsync/bindsync/config"
	"github.com/bindsync/bindsync/publish"
	"github.com/bindsync/bindsync/worker"
)

// publishReads are the sections of the configuration that publish uses:
// everything but Twilio's and the services', so that a snapshot can be
// published where the Twilio secrets are not set.
var publishReads = config.Options{Reads: []string{"staging", "warehouse", "export", "log"}}

// cmdPublish publishes a snapshot that a run read completely but did not
// publish (a warehouse refused it, or the run was stopped while
// publishing), without reading Twilio. Any other snapshot is an error
// (exit 1) that says what to do.
func cmdPublish(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	var c common
	fs := newFlagSet("publish", stderr, &c, true)
	date := fs.String("snapshot-date", "", "snapshot date YYYY-MM-DD (UTC) to publish (required)")
	allowFuture := fs.Bool("allow-future", false, "accept a --snapshot-date after today's UTC date")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *date == "" {
		return usagef("publish: --snapshot-date is required")
	}
	day, err := dateFlag(*date, *allowFuture, time.Now())
	if err != nil {
		return err
	}
	cfg, err := loadConfigWith(&c, publishReads)
	if err != nil {
		return err
	}
	red := newRedactor(cfg)
	defer func() { err = presentable(err, red) }()
	log, err := newLogger(&c, cfg, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	j, err := newPublishJob(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer j.close()
	res, err := worker.Publish(ctx, j.options(), day)
	if res != nil {
		for _, p := range res.Published {
			fmt.Fprintf(stdout, "snapshot %s (%s) published to %s\n", day.Format(time.DateOnly), plural(res.Rows, "row", "rows"), clean(red, p))
		}
	}
	if errors.Is(err, publish.ErrNotCleaned) {
		// Published: the files left in staging are only a warning.
		log.Warn("snapshot published; some of its files stay in staging", zap.Error(err))
		return nil
	}
	return err
}

package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/bindsync/bindsync/config"
)

// cmdValidate loads the configuration, prints what it says (without a
// secret) and its warnings, which do not change the exit code. With
// --check-credentials it then checks that Twilio, staging and the
// warehouse answer to the configured identities (see checkCredentials);
// without it, it sends nothing anywhere.
func cmdValidate(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	var c common
	fs := newFlagSet("validate", stderr, &c, true)
	checkCreds := fs.Bool("check-credentials", false, "also check, without writing anything, that the credentials work: one request to Twilio per service, a listing of the staging bucket, a read of the BigQuery dataset; exit 0 only if every check passes")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(&c)
	if err != nil {
		return err
	}
	red := newRedactor(cfg)
	defer func() { err = presentable(err, red) }()
	out := func(format string, args ...any) { fmt.Fprintln(stdout, clean(red, fmt.Sprintf(format, args...))) }
	out("%s is valid", c.config)
	t := cfg.Twilio
	out("  twilio     %s, page size %d (users %d), concurrency %d, auth as %s",
		t.BaseURL, t.PageSize, t.UsersPageSize, t.Concurrency, redactSID(t.Username()))
	for _, s := range cfg.Services {
		users := "all users"
		if !s.Users.All {
			users = plural(int64(len(s.Users.List)), "user", "users")
		}
		filter := ""
		if len(s.BindingTypes) > 0 {
			filter = ", binding types " + strings.Join(s.BindingTypes, ",")
		}
		out("  service    %s: %s%s", s.SID, users, filter)
	}
	out("  staging    %s", cfg.Staging)
	if l := cfg.Warehouse.Local; l != nil {
		out("  warehouse  local %s", l.Path)
	}
	if bq := cfg.Warehouse.BigQuery; bq != nil {
		out("  warehouse  bigquery %s.%s.%s (%s)", bq.Project, bq.Dataset, bq.Table, bq.Location)
	}
	for _, w := range cfg.Warnings() {
		// Placed in the file as problems are: file:line: path: message.
		path, msg, _ := strings.Cut(w, ": ")
		p := config.Problem{Line: cfg.Line(path), Path: path, Message: msg}
		fmt.Fprintf(stderr, "bindsync: warning: %s\n", clean(red, p.Format(c.config)))
	}
	if *checkCreds {
		out("credentials")
		return checkCredentials(ctx, cfg, c.config, stdout, red)
	}
	return nil
}

// redactSID shows enough of a SID to recognise it and no more.
func redactSID(s string) string {
	if len(s) <= 8 {
		return s
	}
	return s[:6] + "…" + s[len(s)-4:]
}

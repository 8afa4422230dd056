package main

import (
	"fmt"
	"io"
	"strings"
)

func cmdValidate(args []string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlagSet("validate", stderr, &c, true)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(&c)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s is valid\n", c.config)
	fmt.Fprintf(stdout, "  twilio     %s, page size %d, concurrency %d, auth as %s\n",
		cfg.Twilio.BaseURL, cfg.Twilio.PageSize, cfg.Twilio.Concurrency, redactSID(cfg.Twilio.Username()))
	for _, s := range cfg.Services {
		users := "all users"
		if !s.Users.All {
			users = plural(int64(len(s.Users.List)), "user", "users")
		}
		filter := ""
		if len(s.BindingTypes) > 0 {
			filter = ", binding types " + strings.Join(s.BindingTypes, ",")
		}
		fmt.Fprintf(stdout, "  service    %s: %s%s\n", s.SID, users, filter)
	}
	fmt.Fprintf(stdout, "  staging    %s\n", cfg.Staging)
	if l := cfg.Warehouse.Local; l != nil {
		fmt.Fprintf(stdout, "  warehouse  local %s\n", l.Path)
	}
	if bq := cfg.Warehouse.BigQuery; bq != nil {
		fmt.Fprintf(stdout, "  warehouse  bigquery %s.%s.%s (%s)\n", bq.Project, bq.Dataset, bq.Table, bq.Location)
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

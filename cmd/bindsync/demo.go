package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/bindsync/bindsync/config"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

// The demo world: three services of a fake Twilio account.
const (
	demoAccountSID = "AC00000000000000000000000000000000"
	demoAuthToken  = "demo-auth-token-not-a-secret"
)

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlagSet("demo", stderr, &c, false)
	dir := fs.String("dir", "demo-out", "directory for the staging area and the warehouse")
	users := fs.Int("users", 1500, "users per service in the fake world")
	faults := fs.Bool("faults", true, "make the fake Twilio answer some requests with 429 and 503, to show retries")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *users < 1 {
		return usagef("--users must be > 0 (got %d)", *users)
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}

	world := twiliotest.NewWorld(twiliotest.WorldSpec{Seed: 2016, Services: 3, UsersPerService: *users, MaxBindingsPerUser: 150, AccountSID: demoAccountSID})
	opts := twiliotest.Options{World: world, AccountSID: demoAccountSID, AuthToken: demoAuthToken}
	if *faults {
		opts.Faults = twiliotest.Faults{Seed: 7, Rate429: 0.01, RetryAfter: time.Second, Rate503: 0.005}
	}
	srv := twiliotest.NewServer(opts)
	defer srv.Close()

	// Two services read whole through the Users API; the third by a list
	// of users, some with identities that need escaping, and a filter.
	listed := world.Services[2]
	var names []string
	for i, u := range listed.Users {
		if i%10 == 0 || !isPlainIdentity(u.Identity) {
			names = append(names, u.Identity)
		}
	}
	cfg := config.Default()
	cfg.Twilio.BaseURL = srv.URL()
	cfg.Twilio.AccountSID = demoAccountSID
	cfg.Twilio.AuthToken = demoAuthToken
	cfg.Services = []config.Service{
		{SID: world.Services[0].SID, Users: config.Users{All: true}},
		{SID: world.Services[1].SID, Users: config.Users{All: true}},
		{SID: listed.SID, Users: config.Users{List: names}, BindingTypes: []string{"gcm", "fcm"}},
	}
	cfg.Staging = filepath.Join(abs, "staging")
	cfg.Warehouse.Local = &config.Local{Path: filepath.Join(abs, "warehouse")}
	if problems := cfg.Validate(); len(problems) > 0 {
		return fmt.Errorf("demo configuration: %v", problems)
	}
	logOut, live := liveOutput(cfg, stderr)
	log, err := newLogger(&c, cfg, logOut)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	want := 0
	for _, s := range world.Services[:2] {
		for _, u := range s.Users {
			want += len(world.Bindings(s.SID, u.SID, nil))
		}
	}
	for _, n := range names {
		want += len(world.Bindings(listed.SID, n, []string{"gcm", "fcm"}))
	}

	fmt.Fprintf(stdout, "bindsync demo: a fake Twilio account with 3 services and %d users (%d bindings) at %s\n",
		3**users, world.TotalBindings(), srv.URL())
	j, err := newJob(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer j.close()
	day, _ := snapshotDate("", time.Now())
	res, err := j.run(ctx, day, true, live.begin(j.stats, 2*time.Second))
	live.end()
	if res != nil {
		printResult(stdout, res, err, newRedactor(cfg), "")
	}
	if err != nil {
		return err
	}
	st := srv.Stats()
	fmt.Fprintf(stdout, "  twilio    %d requests (%d answered 429, %d answered 503), %d pages served twice\n",
		st.Requests, st.ByStatus[429], st.ByStatus[503], st.PagesServedTwice)
	check := "equal to"
	if res.Rows != int64(want) {
		check = "NOT equal to"
	}
	fmt.Fprintf(stdout, "  check     %d rows published, %s the %d bindings the fake world holds for this configuration\n", res.Rows, check, want)
	snapDir := filepath.Join(cfg.Warehouse.Local.Path, "user_bindings", "snapshot_date="+day.Format(time.DateOnly))
	fmt.Fprintf(stdout, "\nParquet files (Hive layout): %s\n", snapDir)
	fmt.Fprintf(stdout, "Query them with DuckDB, for example:\n\n")
	fmt.Fprintf(stdout, "  duckdb -c \"SELECT snapshot_date, binding_type, count(*) AS bindings, count(DISTINCT user_sid) AS users\n"+
		"    FROM read_parquet('%s/user_bindings/*/*.parquet', hive_partitioning = true)\n"+
		"    GROUP BY ALL ORDER BY ALL\"\n", cfg.Warehouse.Local.Path)
	fmt.Fprintf(stdout, "\nand the users no push reaches:\n\n")
	fmt.Fprintf(stdout, "  duckdb -c \"SELECT service_sid, user, identity\n"+
		"    FROM read_parquet('%s/user_bindings_users/*/*.parquet', hive_partitioning = true)\n"+
		"    WHERE state = 'read' AND bindings = 0 ORDER BY ALL LIMIT 20\"\n", cfg.Warehouse.Local.Path)
	if res.Rows != int64(want) {
		return fmt.Errorf("the published snapshot has %d rows, want %d", res.Rows, want)
	}
	return nil
}

func isPlainIdentity(s string) bool {
	for _, r := range s {
		if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z') {
			return false
		}
	}
	return true
}

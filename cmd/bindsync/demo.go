package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bindsync/bindsync/config"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

// The demo world: three services of a fake Twilio account.
const (
	demoAccountSID = "AC00000000000000000000000000000000"
	demoAuthToken  = "demo-auth-token-not-a-secret"
	demoSeed       = 2016
	// demoAddr is where `bindsync demo --serve` serves the demo world, and
	// so the base_url of the configuration the demo leaves behind.
	demoAddr = "127.0.0.1:18080"
	// demoConfigName is the configuration the demo leaves in its directory.
	demoConfigName = "bindsync.yaml"
)

// demoWorld is the fake account of the demo: equal flags give equal worlds,
// so `demo --serve` serves the world that the demo read.
type demoWorld struct {
	world  *twiliotest.World
	users  int
	faults bool
	// listed are the identities the configuration names for the third
	// service, whose bindings are read through that list and a filter.
	listed []string
}

// demoTypes are the binding types read of the third service.
var demoTypes = []string{"gcm", "fcm"}

func newDemoWorld(users int, faults bool) *demoWorld {
	w := twiliotest.NewWorld(twiliotest.WorldSpec{Seed: demoSeed, Services: 3, UsersPerService: users, MaxBindingsPerUser: 150, AccountSID: demoAccountSID})
	d := &demoWorld{world: w, users: users, faults: faults}
	// Two services read whole through the Users API; the third by a list
	// of users, some with identities that need escaping, and a filter.
	for i, u := range w.Services[2].Users {
		if i%10 == 0 || !isPlainIdentity(u.Identity) {
			d.listed = append(d.listed, u.Identity)
		}
	}
	return d
}

func (d *demoWorld) options() twiliotest.Options {
	opts := twiliotest.Options{World: d.world, AccountSID: demoAccountSID, AuthToken: demoAuthToken}
	if d.faults {
		opts.Faults = twiliotest.Faults{Seed: 7, Rate429: 0.01, RetryAfter: time.Second, Rate503: 0.005}
	}
	return opts
}

// config is the demo's configuration against the fake at baseURL, with its
// staging and warehouse in dir.
func (d *demoWorld) config(baseURL, dir string) *config.Config {
	cfg := config.Default()
	cfg.Twilio.BaseURL = baseURL
	cfg.Twilio.AccountSID = demoAccountSID
	cfg.Twilio.AuthToken = demoAuthToken
	s := d.world.Services
	cfg.Services = []config.Service{
		{SID: s[0].SID, Users: config.Users{All: true}},
		{SID: s[1].SID, Users: config.Users{All: true}},
		{SID: s[2].SID, Users: config.Users{List: d.listed}, BindingTypes: demoTypes},
	}
	cfg.Staging = filepath.Join(dir, "staging")
	cfg.Warehouse.Local = &config.Local{Path: filepath.Join(dir, "warehouse")}
	return cfg
}

// selected counts the users and bindings the configuration reads.
func (d *demoWorld) selected() (users, bindings int) {
	s := d.world.Services
	for _, svc := range s[:2] {
		users += len(svc.Users)
		for _, u := range svc.Users {
			bindings += len(d.world.Bindings(svc.SID, u.SID, nil))
		}
	}
	for _, n := range d.listed {
		bindings += len(d.world.Bindings(s[2].SID, n, demoTypes))
	}
	return users + len(d.listed), bindings
}

// serveFlags are the flags of `demo --serve` that rebuild this world.
func (d *demoWorld) serveFlags(dir string) string {
	flags := " --dir " + dir
	if d.users != 1500 {
		flags += fmt.Sprintf(" --users %d", d.users)
	}
	if !d.faults {
		flags += " --faults=false"
	}
	return flags
}

// yaml renders the configuration the demo leaves behind: relative paths
// (the loader resolves them against the file's directory), the fake's
// credentials written out, since they protect nothing.
func (d *demoWorld) yaml(baseURL, serveCmd string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by `bindsync demo`. It reads the fake Twilio that\n#   %s\n# serves until Ctrl-C; its credentials are the fake's and protect nothing.\n", serveCmd)
	fmt.Fprintf(&b, "twilio:\n  base_url: %s\n  account_sid: %s\n  auth_token: %s\n", baseURL, demoAccountSID, demoAuthToken)
	b.WriteString("services:\n")
	s := d.world.Services
	fmt.Fprintf(&b, "  - sid: %s\n    users: all\n  - sid: %s\n    users: all\n", s[0].SID, s[1].SID)
	fmt.Fprintf(&b, "  - sid: %s\n    binding_types: [%s]\n    users:\n", s[2].SID, strings.Join(demoTypes, ", "))
	for _, u := range d.listed {
		q, _ := json.Marshal(u) // a JSON string is a YAML double-quoted scalar
		fmt.Fprintf(&b, "      - %s\n", q)
	}
	b.WriteString("staging: staging\nwarehouse:\n  local:\n    path: warehouse\n")
	return b.String()
}

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlagSet("demo", stderr, &c, false)
	dir := fs.String("dir", "demo-out", "directory for the staging area, the warehouse and the configuration "+demoConfigName)
	users := fs.Int("users", 1500, "users per service in the fake world")
	faults := fs.Bool("faults", true, "make the fake Twilio answer some requests with 429 and 503, to show retries")
	serveMode := fs.Bool("serve", false, "serve the demo's fake Twilio on --addr until interrupted, for runs with the configuration the demo wrote")
	addr := fs.String("addr", demoAddr, "with --serve: loopback address to serve the fake Twilio on (the demo's configuration names "+demoAddr+")")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *users < 1 {
		return usagef("--users must be > 0 (got %d)", *users)
	}
	d := newDemoWorld(*users, *faults)
	if *serveMode {
		return serveDemo(ctx, d, *addr, *dir, stdout)
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}

	srv := twiliotest.NewServer(d.options())
	defer srv.Close()
	cfg := d.config(srv.URL(), abs)
	if problems := cfg.Validate(); len(problems) > 0 {
		return fmt.Errorf("demo configuration: %v", problems)
	}
	logOut, live := liveOutput(cfg, stderr)
	log, err := newLogger(&c, cfg, logOut)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	wantUsers, want := d.selected()
	fmt.Fprintf(stdout, "bindsync demo: a fake Twilio account with 3 services and %d users (%d bindings) at %s\n",
		3**users, d.world.TotalBindings(), srv.URL())
	fmt.Fprintf(stdout, "  the configuration reads every user of the first two services, and of the third only %d listed users\n"+
		"  and their %s bindings, as a configuration may: %d users, %d bindings\n",
		len(d.listed), strings.Join(demoTypes, " and "), wantUsers, want)
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
	return writeDemoConfig(d, *dir, abs, stdout)
}

// writeDemoConfig leaves the demo's configuration in its directory, checks
// that it loads, and prints the commands to try with it.
func writeDemoConfig(d *demoWorld, dir, abs string, stdout io.Writer) error {
	serveCmd := "bindsync demo --serve" + d.serveFlags(dir)
	path := filepath.Join(abs, demoConfigName)
	if err := os.WriteFile(path, []byte(d.yaml("http://"+demoAddr, serveCmd)), 0o644); err != nil {
		return fmt.Errorf("write the demo configuration: %w", err)
	}
	if _, err := config.LoadFile(path); err != nil {
		return fmt.Errorf("the demo configuration %s does not load: %w", path, err)
	}
	rel := filepath.Join(dir, demoConfigName)
	fmt.Fprintf(stdout, "\nThe configuration of this run is %s (its staging and warehouse are beside it). Try:\n\n", rel)
	tw := tabwriter.NewWriter(stdout, 0, 0, 3, ' ', 0)
	fmt.Fprintf(tw, "  bindsync status --config %s\t# what the checkpoint says\n", rel)
	fmt.Fprintf(tw, "  bindsync status --config %s --check\t# exit 0: a snapshot was published within 26h\n", rel)
	fmt.Fprintf(tw, "  bindsync run --config %s\t# does nothing: today's snapshot is published\n", rel)
	fmt.Fprintf(tw, "  %s\t# serves the fake Twilio at http://%s; in another terminal:\n", serveCmd, demoAddr)
	fmt.Fprintf(tw, "  bindsync run --config %s --force\t# reads the snapshot again; status lists the earlier run\n", rel)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n(bindsync is bin/bindsync after `make build`, or `go run ./cmd/bindsync`.)\n")
	return nil
}

// serveDemo serves the demo world on addr, a loopback address, until ctx
// ends, so that `bindsync run` with the demo's configuration has a Twilio
// to read.
func serveDemo(ctx context.Context, d *demoWorld, addr, dir string, stdout io.Writer) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return usagef("--addr %q: %v", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return usagef("--addr %q: must be a loopback address: the fake Twilio is for this machine only", addr)
	}
	srv := twiliotest.NewUnstartedServer(d.options())
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s (is `bindsync demo --serve` already running?): %w", addr, err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	url := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, "bindsync demo: the demo's fake Twilio (3 services, %d users each) serves at %s until Ctrl-C\n", d.users, url)
	fmt.Fprintf(stdout, "  account %s, auth token %s\n", demoAccountSID, demoAuthToken)
	if addr == demoAddr {
		fmt.Fprintf(stdout, "  try: bindsync run --config %s --force\n", filepath.Join(dir, demoConfigName))
	} else {
		fmt.Fprintf(stdout, "  the demo's configuration names http://%s: set twilio.base_url to %s in a copy of it\n", demoAddr, url)
	}
	select {
	case err := <-served:
		return fmt.Errorf("serve the fake Twilio: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutdown); err != nil {
		_ = hs.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve the fake Twilio: %w", err)
	}
	st := srv.Stats()
	fmt.Fprintf(stdout, "bindsync demo: stopped after %d requests (%d answered 429, %d answered 503)\n", st.Requests, st.ByStatus[429], st.ByStatus[503])
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

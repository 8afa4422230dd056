package main

// End-to-end tests: they build the real binary and run it against the fake
// Twilio server over loopback, then read back the published Parquet files.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/internal/snapshottest"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bindsync-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "bindsync")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build bindsync:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var e2eDay = time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)

const e2eToken = "e2e-S3cr3t-auth-token+/="

// e2e is one fake Twilio world and a working directory for the binary.
type e2e struct {
	t        *testing.T
	world    *twiliotest.World
	srv      *twiliotest.Server
	dir      string
	config   string
	services []snapshottest.Selection
	// moreEnv is added to the binary's environment (set in the child
	// alone, so that tests that differ in it can run in parallel).
	moreEnv []string
}

func newE2E(t *testing.T, spec twiliotest.WorldSpec, faults twiliotest.Faults, extra string) *e2e {
	t.Helper()
	world := twiliotest.NewWorld(spec)
	srv := twiliotest.NewServer(twiliotest.Options{World: world, AccountSID: world.AccountSID, AuthToken: e2eToken, Faults: faults})
	t.Cleanup(srv.Close)
	e := &e2e{t: t, world: world, srv: srv, dir: t.TempDir()}
	e.services = []snapshottest.Selection{{Service: world.Services[0].SID, All: true}}
	if len(world.Services) > 1 {
		s := world.Services[1]
		var users []string
		for i, u := range s.Users {
			if slices.Contains(twiliotest.SpecialIdentities, u.Identity) {
				users = append(users, u.Identity)
			} else if i%4 == 0 {
				users = append(users, u.SID)
			}
		}
		e.services = append(e.services, snapshottest.Selection{Service: s.SID, Users: users, Types: []string{"gcm", "apn"}})
	}
	var b strings.Builder
	// Four users at once: slow enough for the tests that stop a run midway.
	fmt.Fprintf(&b, "twilio:\n  base_url: %s\n  account_sid: ${E2E_ACCOUNT_SID}\n  auth_token: ${E2E_AUTH_TOKEN}\n  max_attempts: 10\n  concurrency: 4\n", srv.URL())
	b.WriteString("services:\n")
	for _, s := range e.services {
		fmt.Fprintf(&b, "  - sid: %s\n", s.Service)
		if s.All {
			b.WriteString("    users: all\n")
			continue
		}
		b.WriteString("    users:\n")
		for _, u := range s.Users {
			q, _ := json.Marshal(u)
			fmt.Fprintf(&b, "      - %s\n", q)
		}
		fmt.Fprintf(&b, "    binding_types: [%s]\n", strings.Join(s.Types, ", "))
	}
	b.WriteString("staging: staging\nwarehouse:\n  local:\n    path: warehouse\n")
	b.WriteString(extra)
	e.config = filepath.Join(e.dir, "bindsync.yaml")
	if err := os.WriteFile(e.config, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// env is the environment of the binary: the Twilio credentials, and the
// hash key of export.columns for the configurations that name it.
func (e *e2e) env(token string) []string {
	env := append(os.Environ(), "E2E_ACCOUNT_SID="+e.world.AccountSID, "E2E_AUTH_TOKEN="+token, "E2E_HASH_KEY="+e2eHashKey)
	return append(env, e.moreEnv...)
}

type result struct {
	code           int
	stdout, stderr string
}

func (e *e2e) run(token string, args ...string) result {
	e.t.Helper()
	return e.runEnv(e.env(token), args...)
}

// runBare runs the binary with none of the configuration's secrets set.
func (e *e2e) runBare(args ...string) result {
	e.t.Helper()
	return e.runEnv(withoutSecrets(), args...)
}

func (e *e2e) runEnv(env []string, args ...string) result {
	e.t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	return result{code, out.String(), errb.String()}
}

func (e *e2e) runSnapshot(extra ...string) result {
	return e.run(e2eToken, append([]string{"run", "--config", e.config, "--snapshot-date", e2eDay.Format(time.DateOnly)}, extra...)...)
}

func (e *e2e) want() []string { return snapshottest.Want(e.world, e.services) }

func (e *e2e) published() []string {
	return snapshottest.ReadLocal(e.t, filepath.Join(e.dir, "warehouse"), e2eDay)
}

// checkExact asserts the published snapshot holds every binding of the
// world exactly once, every field equal, and every user once with its
// number of bindings.
func (e *e2e) checkExact() {
	e.t.Helper()
	snapshottest.Equal(e.t, e.published(), e.want())
	snapshottest.Equal(e.t, snapshottest.ReadLocalUsers(e.t, filepath.Join(e.dir, "warehouse"), e.world, e2eDay), snapshottest.WantUsers(e.world, e.services, nil))
}

func TestE2ERunWithFaults(t *testing.T) {
	t.Parallel()
	e := newE2E(t, twiliotest.WorldSpec{Seed: 42, Services: 2, UsersPerService: 150, MaxBindingsPerUser: 160},
		twiliotest.Faults{Seed: 1, Rate429: 0.04, RetryAfter: time.Second, RetryAfterEvery: 4, Rate500: 0.02, Rate503: 0.02, RateDrop: 0.02, RateTruncate: 0.02},
		"")
	r := e.runSnapshot()
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	e.checkExact()
	st := e.srv.Stats()
	for _, status := range []int{429, 500, 503} {
		if st.ByStatus[status] == 0 {
			t.Errorf("no %d was served: the faults were not exercised (%v)", status, st.ByStatus)
		}
	}
	if st.Dropped == 0 || st.Truncated == 0 {
		t.Errorf("dropped %d truncated %d: faults not exercised", st.Dropped, st.Truncated)
	}
	// The special identities were asked for by identity and are in the output.
	got := strings.Join(e.published(), "\n")
	for _, id := range twiliotest.SpecialIdentities {
		if len(e.world.Bindings(e.services[1].Service, id, e.services[1].Types)) == 0 {
			continue
		}
		q, _ := json.Marshal(id)
		if !strings.Contains(got, `"identity":`+string(q)) {
			t.Errorf("no binding of identity %q published", id)
		}
	}
	// The filter was honoured.
	for _, row := range e.published() {
		if strings.Contains(row, `"service_sid":"`+e.services[1].Service+`"`) && strings.Contains(row, `"binding_type":"fcm"`) {
			t.Fatalf("fcm binding published despite the filter: %s", row)
		}
	}
	if !strings.Contains(r.stdout, "succeeded") || !strings.Contains(r.stdout, "published to local warehouse") {
		t.Errorf("stdout does not report the outcome:\n%s", r.stdout)
	}

	// A second run of the same date publishes nothing new and exits 0.
	r2 := e.runSnapshot()
	if r2.code != 0 || !strings.Contains(r2.stdout, "already published") {
		t.Errorf("second run: exit %d\n%s", r2.code, r2.stdout)
	}
	e.checkExact()
}

// checkpointState reads the checkpoint of the e2e day.
func (e *e2e) checkpointState() *checkpoint.State { return e.checkpointLog().State() }

// checkpointLog opens the snapshot's checkpoint log.
func (e *e2e) checkpointLog() *checkpoint.Log {
	e.t.Helper()
	store, err := staging.NewDir(filepath.Join(e.dir, "staging"))
	if err != nil {
		e.t.Fatal(err)
	}
	l, err := checkpoint.Open(context.Background(), store, e2eDay)
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

// startRun starts the binary and waits until its checkpoint holds at least
// minDone finished users.
func (e *e2e) startRun(minDone int64) (*exec.Cmd, *bytes.Buffer) {
	e.t.Helper()
	cmd := exec.Command(binary, "run", "--config", e.config, "--snapshot-date", e2eDay.Format(time.DateOnly))
	cmd.Env = e.env(e2eToken)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if e.checkpointState().UsersDone >= minDone {
			return cmd, &out
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	e.t.Fatalf("the run never checkpointed %d users:\n%s", minDone, out.String())
	return nil, nil
}

// pagesByUser maps each user (as the run addresses it) to the bindings
// pages the fake server answered for it.
func (e *e2e) pagesByUser() map[checkpoint.UserRef]int64 {
	st := e.srv.Stats()
	out := map[checkpoint.UserRef]int64{}
	for _, s := range e.services {
		for _, u := range snapshottest.UsersOf(e.world, s) {
			user := e.world.Service(s.Service).User(u)
			out[checkpoint.UserRef{Service: s.Service, User: u}] = st.BindingsPagesByUser[twiliotest.UserKey(s.Service, user.SID)]
		}
	}
	return out
}

func TestE2EKillAndResume(t *testing.T) {
	t.Parallel()
	e := newE2E(t, twiliotest.WorldSpec{Seed: 7, Services: 2, UsersPerService: 400, MaxBindingsPerUser: 150},
		twiliotest.Faults{Latency: 10 * time.Millisecond},
		"export:\n  commit_interval: 100ms\n  part_rows: 2000\n")
	cmd, out := e.startRun(40)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if cmd.ProcessState.ExitCode() == 0 {
		t.Fatalf("the run finished before it was killed:\n%s", out)
	}
	killedLog := e.checkpointLog()
	killed := killedLog.State()
	if _, err := os.Stat(filepath.Join(e.dir, "warehouse", "user_bindings")); err == nil {
		t.Fatal("a killed run published")
	}
	before := e.pagesByUser()

	r := e.runSnapshot()
	if r.code != 0 {
		t.Fatalf("rerun: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	e.checkExact()
	after := e.pagesByUser()
	refetched := 0
	for u, n := range after {
		if killedLog.IsDone(u) && n != before[u] {
			refetched++
			t.Errorf("user %s was finished before the kill and fetched again (%d pages before, %d after)", u, before[u], n)
		}
	}
	if killed.UsersDone == 0 {
		t.Error("no user was finished at the kill: the test proves nothing")
	}
	t.Logf("users done at the kill: %d, in flight: %d, refetched: %d", killed.UsersDone, len(killed.InFlight), refetched)
}

func TestE2ESIGTERMSavesCheckpoint(t *testing.T) {
	t.Parallel()
	e := newE2E(t, twiliotest.WorldSpec{Seed: 8, Services: 1, UsersPerService: 600, MaxBindingsPerUser: 120},
		twiliotest.Faults{Latency: 10 * time.Millisecond}, "export:\n  commit_interval: 100ms\n")
	// User by user, so that users are done while the run goes on (a
	// service walk records its users when it ends).
	conf, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	conf = bytes.Replace(conf, []byte("    users: all\n"), []byte("    users: all\n    strategy: per_user\n"), 1)
	if err := os.WriteFile(e.config, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, out := e.startRun(20)
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit code after SIGTERM = %d, want 1\n%s", code, out)
	}
	t.Logf("exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	st := e.checkpointState()
	last := st.LastRun()
	if last == nil || last.Status != "interrupted" {
		t.Fatalf("last run in the checkpoint = %+v, want interrupted", last)
	}
	if st.UsersDone == 0 {
		t.Error("no users saved by the interrupted run")
	}
	r := e.runSnapshot()
	if r.code != 0 {
		t.Fatalf("rerun: exit %d\n%s", r.code, r.stderr)
	}
	e.checkExact()
}

func TestE2ENoCredentialLeaks(t *testing.T) {
	t.Parallel()
	// Every column is hashed, so the privacy policy's key is in use too.
	e := newE2E(t, twiliotest.WorldSpec{Seed: 3, Services: 2, UsersPerService: 40, MaxBindingsPerUser: 60},
		twiliotest.Faults{Seed: 2, Rate429: 0.05, Rate503: 0.05},
		"export:\n  columns:\n    hash_key: ${E2E_HASH_KEY}\n    user_bindings: {endpoint: hash, identity: hash}\n    users: {user: hash, identity: hash}\n")
	secrets := func(token string) []string {
		return []string{token, base64.StdEncoding.EncodeToString([]byte(e.world.AccountSID + ":" + token)),
			e2eHashKey, hex.EncodeToString([]byte(e2eHashKey)), base64.StdEncoding.EncodeToString([]byte(e2eHashKey))}
	}
	check := func(what, text string, token string) {
		t.Helper()
		for _, s := range secrets(token) {
			if strings.Contains(text, s) {
				t.Errorf("%s contains a credential (%q)", what, s)
			}
		}
	}
	r := e.runSnapshot("--log-level", "debug")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, `"level":"debug"`) {
		t.Error("no debug line logged: the test would prove nothing")
	}
	check("stdout", r.stdout, e2eToken)
	check("stderr", r.stderr, e2eToken)
	files := 0
	err := filepath.WalkDir(e.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path == e.config {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		check(path, string(data), e2eToken)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 3 {
		t.Errorf("only %d files written: nothing to check", files)
	}

	// A wrong token: stopped at once, exit 2, and the wrong token is not shown either.
	wrong := "wrong-T0ken-value"
	r = e.run(wrong, "run", "--config", e.config, "--snapshot-date", "2026-11-27", "--log-level", "debug")
	if r.code != 2 {
		t.Fatalf("wrong token: exit %d, want 2\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "auth_token") {
		t.Errorf("the error does not say what to check:\n%s", r.stderr)
	}
	check("stderr (401)", r.stderr, wrong)
	check("stdout (401)", r.stdout, wrong)
}

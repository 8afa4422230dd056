package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bindsync/bindsync/twilio/twiliotest"
	"github.com/bindsync/bindsync/worker"
)

func TestDedupePrefixes(t *testing.T) {
	tests := []struct{ in, want string }{
		{"list users of service IS1: list users of service IS1: credentials rejected", "list users of service IS1: credentials rejected"},
		{"a: b: a: b: cause", "a: b: cause"},
		{"run: a: a: a: cause", "run: a: cause"},
		{"a: b: c", "a: b: c"},
		{"one", "one"},
		{"x: y: x: cause", "x: y: x: cause"},
	}
	for _, tt := range tests {
		if got := dedupePrefixes(tt.in); got != tt.want {
			t.Errorf("dedupePrefixes(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestStrayArgumentNamesTheProgramOnce(t *testing.T) {
	t.Setenv("CLI_TEST_TOKEN", "tok")
	code, _, stderr := runCLI(t, "validate", "--config", writeFile(t, goodConfig), "extra")
	if code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
	if strings.Contains(stderr, "bindsync: bindsync") {
		t.Errorf("the program is named twice:\n%s", stderr)
	}
	if want := "bindsync: validate: unexpected argument \"extra\""; !strings.Contains(stderr, want) {
		t.Errorf("stderr does not say %q:\n%s", want, stderr)
	}
}

// fakeRunConfig writes a configuration of one service read whole from a
// small fake Twilio that accepts token; the config itself says token is
// the auth token, so a different token makes every request a 401.
func fakeRunConfig(t *testing.T, serverToken, configToken string) (*twiliotest.World, string) {
	t.Helper()
	world := twiliotest.NewWorld(twiliotest.WorldSpec{Seed: 4, Services: 1, UsersPerService: 5, MaxBindingsPerUser: 5})
	srv := twiliotest.NewServer(twiliotest.Options{World: world, AccountSID: world.AccountSID, AuthToken: serverToken})
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`twilio:
  base_url: %s
  account_sid: %s
  auth_token: %s
services:
  - sid: %s
    users: all
staging: staging
warehouse:
  local:
    path: warehouse
`, srv.URL(), world.AccountSID, configToken, world.Services[0].SID)
	p := filepath.Join(dir, "bindsync.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return world, p
}

// TestUnauthorizedRunSaysWhatToFix checks the messages of a run that
// Twilio refuses: the cause once, the advice to fix the named file (not to
// run again as is), and exit 2.
func TestUnauthorizedRunSaysWhatToFix(t *testing.T) {
	world, cfg := fakeRunConfig(t, "right-token", "wrong-token")
	code, stdout, stderr := runCLI(t, "run", "--config", cfg, "--snapshot-date", statusDate, "--progress", "0")
	if code != exitUsage {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, exitUsage, stdout, stderr)
	}
	errLine := stderr[strings.LastIndex(stderr, "bindsync: "):]
	prefix := "list users of service " + world.Services[0].SID + ": "
	if strings.Count(errLine, prefix) != 1 || !strings.Contains(errLine, prefix+"credentials rejected") {
		t.Errorf("the error does not name its context exactly once:\n%s", errLine)
	}
	if !strings.Contains(errLine, "in "+cfg+"\n") {
		t.Errorf("the hint does not name the configuration file %s:\n%s", cfg, errLine)
	}
	if strings.Contains(stdout, "run the same command again to resume") {
		t.Errorf("stdout advises running again as is after a 401:\n%s", stdout)
	}
	if !strings.Contains(stdout, "Twilio refused the credentials. Fix twilio.account_sid and twilio.auth_token") || !strings.Contains(stdout, " in "+cfg+",") {
		t.Errorf("stdout does not say what to fix, naming %s:\n%s", cfg, stdout)
	}
}

func TestRunAdvicePerExitCode(t *testing.T) {
	failed := runAdvice(fmt.Errorf("run: %w", worker.ErrUsersFailed), "/etc/b.yaml")
	if !strings.Contains(failed, "run the same command again") || strings.Contains(failed, "/etc/b.yaml") {
		t.Errorf("exit 1 advice = %q, want to run again as is", failed)
	}
	usage := runAdvice(usagef("bad bucket"), "/etc/b.yaml")
	if !strings.Contains(usage, "fix /etc/b.yaml") {
		t.Errorf("exit 2 advice = %q, want the file to fix", usage)
	}
}

func TestFutureSnapshotDateIsRefused(t *testing.T) {
	_, cfg := fakeRunConfig(t, "tok", "tok")
	future := time.Now().UTC().AddDate(0, 0, 2).Format(time.DateOnly)
	for _, cmd := range []string{"run", "publish"} {
		code, stdout, stderr := runCLI(t, cmd, "--config", cfg, "--snapshot-date", future)
		if code != exitUsage || !strings.Contains(stderr, "--snapshot-date "+future+" is in the future") || !strings.Contains(stderr, "--allow-future") {
			t.Errorf("%s with a future date: exit %d, want 2 saying why\nstdout: %s\nstderr: %s", cmd, code, stdout, stderr)
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(cfg), "staging", "snapshots", future)); err == nil {
			t.Errorf("%s with a future date staged something", cmd)
		}
	}
	code, stdout, stderr := runCLI(t, "run", "--config", cfg, "--snapshot-date", future, "--allow-future", "--progress", "0")
	if code != exitOK || !strings.Contains(stdout, "snapshot "+future+": succeeded") {
		t.Errorf("run --allow-future: exit %d, want 0 and a published snapshot\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	// Today is never the future, whatever the time of day.
	if err := checkFuture(mustTime(t, "2026-11-26T00:00:00Z"), mustTime(t, "2026-11-26T23:59:59Z"), false); err != nil {
		t.Errorf("today refused: %v", err)
	}
	if err := checkFuture(mustTime(t, "2026-11-27T00:00:00Z"), mustTime(t, "2026-11-26T23:59:59Z"), false); err == nil {
		t.Error("tomorrow accepted")
	}
}

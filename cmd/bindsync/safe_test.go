package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/config"
	"github.com/bindsync/bindsync/internal/safetext"
	"github.com/bindsync/bindsync/worker"
)

const (
	safeAccount = "AC0123456789abcdef0123456789abcdef"
	safeToken   = "S3cr3t-auth-token-0123"
)

var safeBasic = base64.StdEncoding.EncodeToString([]byte(safeAccount + ":" + safeToken))

// hostileText is what a hostile or buggy server can put in an error
// message: a forged summary line, terminal escapes that erase and move up a
// line, a bidi override, and the credentials it was sent.
var hostileText = "bad request\nsnapshot 2026-11-26: succeeded in 1s\n  published to local warehouse\x1b[2K\x1b[1A\u202e " +
	"Authorization: Basic " + safeBasic + " token=" + safeToken

func safeRedactor() *safetext.Redactor {
	cfg := config.Default()
	cfg.Twilio.AccountSID, cfg.Twilio.AuthToken = safeAccount, safeToken
	return newRedactor(cfg)
}

// checkSafe fails when out forges a line starting with one of forged, holds
// a control character other than the newlines ending its lines and tabs
// (the console logs' separators; the hostile texts hold none), or shows
// the credentials.
func checkSafe(t *testing.T, what, out string, forged ...string) {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		for _, f := range forged {
			if strings.HasPrefix(strings.TrimSpace(line), f) {
				t.Errorf("%s has a forged line %q:\n%s", what, line, out)
			}
		}
		for _, r := range line {
			if safetext.IsControl(r) && r != '\t' {
				t.Errorf("%s holds the control character %U in %q", what, r, line)
				break
			}
		}
	}
	for _, secret := range []string{safeToken, safeBasic} {
		if strings.Contains(out, secret) {
			t.Errorf("%s shows the credential %q:\n%s", what, secret, out)
		}
	}
}

func TestPrintResultEscapesAndRedacts(t *testing.T) {
	res := &worker.Result{
		Date: time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC),
		Summary: checkpoint.RunSummary{
			Status: "failed", UsersTotal: 2, UsersDone: 1,
			Start: time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC), End: time.Date(2026, 11, 26, 2, 0, 1, 0, time.UTC),
		},
		Failed: []checkpoint.UserFailed{
			{UserRef: checkpoint.UserRef{Service: "IS0123456789abcdef0123456789abcdef", User: "eve\n  published to x\x1b[2K"}, Reason: hostileText},
			{UserRef: checkpoint.UserRef{Service: "IS0123456789abcdef0123456789abcdef", User: "bob"}, Reason: strings.Repeat("long ", 10_000)},
		},
	}
	var b strings.Builder
	printResult(&b, res, errors.New("failed"), safeRedactor(), "bindsync.yaml")
	out := b.String()
	checkSafe(t, "the run summary", out, "snapshot 2026-11-26: succeeded", "published to")
	if n := strings.Count(out, "\n"); n != 6 {
		t.Errorf("%d lines printed, want 6:\n%s", n, out)
	}
	if !strings.Contains(out, safetext.Redacted) || !strings.Contains(out, `\x1b[2K`) {
		t.Errorf("the summary does not show the redacted and escaped reason:\n%s", out)
	}
	if len(out) > 3*reasonBytes {
		t.Errorf("a 50 KB reason is printed in %d bytes, want it cut at %d", len(out), reasonBytes)
	}
}

func TestErrorText(t *testing.T) {
	red := safeRedactor()
	tests := []struct {
		name  string
		err   error
		lines int // lines of the text, the hint's included
	}{
		{"hostile", fmt.Errorf("list bindings: %w", errors.New(hostileText)), 1},
		{"hint", usageError{withHint(errors.New(hostileText), "Twilio refused the credentials: check twilio.auth_token")}, 2},
		{"hint inside more context", fmt.Errorf("run: %w", withHint(errors.New(hostileText), "a hint")), 1},
		{"config", usageError{&config.Error{File: "b.yaml", Problems: []config.Problem{{Line: 1, Path: "a", Message: "bad\x1b[2K"}, {Line: 2, Path: "b", Message: "bad"}}}}, 3},
		{"huge", errors.New(strings.Repeat("x", 100_000)), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := errorText(presentable(tt.err, red), nil)
			checkSafe(t, "the error", text, "snapshot 2026-11-26", "published to")
			if n := strings.Count(text, "\n") + 1; n != tt.lines {
				t.Errorf("%d lines, want %d:\n%s", n, tt.lines, text)
			}
			if len(text) > errorBytes+100 {
				t.Errorf("the error is %d bytes, want it cut at %d", len(text), errorBytes)
			}
			var b strings.Builder
			code := exitCode(presentable(tt.err, red), &b)
			if b.String() != "bindsync: "+text+"\n" {
				t.Errorf("exitCode printed %q, want %q", b.String(), "bindsync: "+text+"\n")
			}
			var u usageError
			if want := map[bool]int{true: exitUsage, false: exitFailed}[errors.As(tt.err, &u)]; code != want {
				t.Errorf("exit code %d, want %d", code, want)
			}
		})
	}
}

// panicWriter panics on the first write, as a bug on the main goroutine
// of a command would.
type panicWriter struct{}

func (panicWriter) Write([]byte) (int, error) { panic("a bug\nsnapshot published") }

func TestPanicIsAFailedRun(t *testing.T) {
	var errb strings.Builder
	err := run(context.Background(), []string{"version"}, panicWriter{}, &errb)
	if !errors.Is(err, worker.ErrPanic) {
		t.Fatalf("run = %v, want an error wrapping worker.ErrPanic", err)
	}
	if code := exitCode(err, &errb); code != exitFailed {
		t.Errorf("exit code %d after a panic, want %d", code, exitFailed)
	}
	if got := errb.String(); !strings.HasPrefix(got, `bindsync: panic: a bug\nsnapshot published [at `) ||
		!strings.Contains(got, "panicWriter.Write (safe_test.go:") || strings.Count(got, "\n") != 1 {
		t.Errorf("stderr = %q, want one line naming the panic and where", got)
	}
	// A panic of the worker, returned as an error, exits 1 even inside an
	// error that would otherwise exit 2.
	if code := exitCode(usageError{fmt.Errorf("run: %w", worker.Recovered("boom"))}, &errb); code != exitFailed {
		t.Errorf("exit code %d for a wrapped panic, want %d", code, exitFailed)
	}
}

// TestHostileTwilioText runs bindsync against a server that answers every
// request with an error whose message forges summary lines, holds terminal
// escapes, and echoes the credentials it was sent: stdout, stderr and the
// logs show none of it raw.
func TestHostileTwilioText(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"code": 20001, "status": 400, "more_info": "https://www.twilio.com/docs/errors/20001",
			"message": hostileText + " (got " + r.Header.Get("Authorization") + ")",
		})
	}))
	defer srv.Close()
	dir := t.TempDir()
	conf := fmt.Sprintf(`twilio:
  base_url: %s
  account_sid: %s
  auth_token: ${SAFE_TEST_TOKEN}
  max_attempts: 1
services:
  - sid: IS0123456789abcdef0123456789abcdef
    users: [alice, "eve\n  published to x\u001b[2K"]
staging: staging
warehouse:
  local:
    path: warehouse
log:
  format: %s
`, srv.URL, safeAccount, "%s")
	t.Setenv("SAFE_TEST_TOKEN", safeToken)
	for _, format := range []string{"json", "console"} {
		t.Run(format, func(t *testing.T) {
			file := filepath.Join(dir, format+".yaml")
			if err := os.WriteFile(file, []byte(fmt.Sprintf(conf, format)), 0o600); err != nil {
				t.Fatal(err)
			}
			code, stdout, stderr := runCLI(t, "run", "--config", file, "--snapshot-date", "2026-11-26", "--log-level", "debug")
			if code != exitFailed {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, exitFailed, stdout, stderr)
			}
			if !strings.Contains(stdout, "FAILED service") || !strings.Contains(stdout, `bad request\nsnapshot 2026-11-26: succeeded`) {
				t.Errorf("the summary does not show the escaped failure:\n%s", stdout)
			}
			checkSafe(t, "stdout", stdout, "snapshot 2026-11-26: succeeded", "published to")
			checkSafe(t, "stderr", stderr, "snapshot 2026-11-26: succeeded", "published to")
			if !strings.Contains(stderr, `"msg":"user failed"`) && !strings.Contains(stderr, "\tuser failed\t") {
				t.Errorf("no user failed line logged: the logs were not checked\n%s", stderr)
			}
		})
	}
}

// TestStatusEscapesAndRedacts: reasons and errors kept in the checkpoint
// (by a run from before redaction, or from a server echoing credentials)
// are printed by status, as a table and as JSON, escaped, redacted, cut.
func TestStatusEscapesAndRedacts(t *testing.T) {
	e := newStatusEnv(t)
	conf, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	conf = []byte(strings.Replace(string(conf), "auth_token: x", "auth_token: "+safeToken, 1))
	if err := os.WriteFile(e.config, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	entries := failedRun()
	run := entries[len(entries)-1].Run
	run.Error = hostileText
	run.UsersFailed = []checkpoint.UserFailed{
		{UserRef: statusUser("eve\n  published to x\x1b[2K"), Reason: hostileText},
		{UserRef: statusUser("bob"), Reason: strings.Repeat("long ", 20_000)},
	}
	e.append(t, statusDay, entries...)

	table := runStatus(t, e, "--snapshot-date", statusDate)
	checkSafe(t, "status", table, "snapshot 2026-11-26: succeeded", "published to")
	if !strings.Contains(table, `bad request snapshot 2026-11-26: succeeded in 1s published to local warehouse\x1b[2K\x1b[1A\u202e`) {
		t.Errorf("the table does not show the escaped reason:\n%s", table)
	}
	out := runStatus(t, e, "--snapshot-date", statusDate, "--json")
	checkSafe(t, "status --json", out, "snapshot 2026-11-26: succeeded", "published to")
	var rep statusReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Failed) != 2 || len(rep.Failed[0].Reason) > reasonBytes+30 {
		t.Fatalf("failed = %d users, reason of %d bytes; want 2, cut at %d", len(rep.Failed), len(rep.Failed[0].Reason), reasonBytes)
	}
	for _, s := range []string{rep.Failed[0].Reason, rep.Failed[1].Reason, rep.Failed[1].User, rep.Runs[0].Error} {
		if strings.ContainsAny(s, "\u202e\u009b") || strings.Contains(s, safeToken) {
			t.Errorf("--json holds %q", s)
		}
	}
}

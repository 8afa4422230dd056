package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const goodConfig = `twilio:
  account_sid: AC0123456789abcdef0123456789abcdef
  auth_token: ${CLI_TEST_TOKEN}
services:
  - sid: IS0123456789abcdef0123456789abcdef
    users: [alice, "a/b"]
staging: st
warehouse:
  local:
    path: wh
`

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	code = exitCode(err, &errb)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bindsync.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBadUsageExitsTwo(t *testing.T) {
	t.Setenv("CLI_TEST_TOKEN", "tok")
	replace := func(old, new string) string { return strings.Replace(goodConfig, old, new, 1) }
	tests := []struct {
		name   string
		config string   // written to a file and passed with --config; "" = none
		args   []string // after the command
		cmd    string
		want   string
	}{
		{"unknown key", goodConfig + "extra: 1\n", nil, "run", "bindsync.yaml:11: extra: unknown key; known keys here:"},
		{"bad service sid", replace("IS0123456789abcdef0123456789abcdef", "IS123"), nil, "run", `services[0].sid: must match ^IS[0-9a-fA-F]{32}$ (got "IS123")`},
		{"page size", replace("  auth_token:", "  page_size: 0\n  auth_token:"), nil, "validate", "twilio.page_size: must be between 1 and 1000 (got 0)"},
		{"unset variable", replace("${CLI_TEST_TOKEN}", "${CLI_TEST_MISSING}"), nil, "run", "twilio.auth_token: environment variable CLI_TEST_MISSING is not set"},
		{"binding type", replace(`users: [alice, "a/b"]`, "users: all\n    binding_types: [voip]"), nil, "run", `services[0].binding_types[0]: must be one of apn, fcm, gcm (got "voip")`},
		{"users missing", replace(`    users: [alice, "a/b"]`+"\n", ""), nil, "validate", "services[0].users: is required"},
		{"no warehouse", strings.SplitN(goodConfig, "warehouse:", 2)[0], nil, "run", "warehouse: is required"},
		{"bad staging", replace("staging: st", "staging: s3://b/p"), nil, "run", `staging: must be a local directory or gs://bucket/prefix (got "s3://b/p")`},
		{"yaml syntax", "twilio: [\n", nil, "run", "invalid configuration"},
		{"account sid", replace("AC0123456789abcdef0123456789abcdef", "ACnope"), nil, "run", `twilio.account_sid: must be AC followed by 32 hexadecimal digits: it has 6 characters, not 34`},
		{"base url credentials", replace("  auth_token:", "  base_url: https://AC0123456789abcdef0123456789abcdef:hidden-pass@chat.twilio.com\n  auth_token:"), nil, "validate", "twilio.base_url: must not hold credentials"},
		{"base url http", replace("  auth_token:", "  base_url: http://chat.twilio.com\n  auth_token:"), nil, "validate", "twilio.base_url: must use https"},
		{"wrong type", replace("  auth_token:", "  concurrency: many\n  auth_token:"), nil, "run", "twilio.concurrency: cannot read string `many` into int"},
		{"missing config flag", "", nil, "run", "--config FILE is required"},
		{"missing file", "", []string{"--config", "/nonexistent/bindsync.yaml"}, "run", "/nonexistent/bindsync.yaml"},
		{"bad date", goodConfig, []string{"--snapshot-date", "26/11/2026"}, "run", `--snapshot-date must be YYYY-MM-DD (got "26/11/2026")`},
		{"bad log level", goodConfig, []string{"--log-level", "loud"}, "run", `log level must be one of debug, info, warn, error (got "loud")`},
		{"unknown flag", goodConfig, []string{"--bogus"}, "run", "flag provided but not defined: -bogus"},
		{"stray argument", goodConfig, []string{"extra"}, "validate", `unexpected argument "extra"`},
		{"unknown command", "", nil, "frobnicate", `unknown command "frobnicate"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{tt.cmd}
			if tt.config != "" {
				args = append(args, "--config", writeFile(t, tt.config))
			}
			args = append(args, tt.args...)
			code, stdout, stderr := runCLI(t, args...)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, exitUsage, stdout, stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr does not say %q:\n%s", tt.want, stderr)
			}
			if strings.Contains(stdout+stderr, "hidden-pass") {
				t.Errorf("a credential is printed:\n%s%s", stdout, stderr)
			}
		})
	}
}

func TestValidateGoodConfig(t *testing.T) {
	t.Setenv("CLI_TEST_TOKEN", "tok-value-123")
	code, stdout, stderr := runCLI(t, "validate", "--config", writeFile(t, goodConfig))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"is valid", "IS0123456789abcdef0123456789abcdef: 2 users", "warehouse  local"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout misses %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "tok-value-123") || strings.Contains(stdout, "AC0123456789abcdef0123456789abcdef") {
		t.Errorf("validate prints a credential:\n%s", stdout)
	}
}

func TestSnapshotDateDefaultsToUTCToday(t *testing.T) {
	d, err := snapshotDate("", mustTime(t, "2026-11-26T23:30:00-05:00"))
	if err != nil || d.Format("2006-01-02") != "2026-11-27" {
		t.Errorf("snapshotDate = %v, %v; want 2026-11-27 (UTC)", d, err)
	}
}

func mustTime(t *testing.T, s string) (tm time.Time) {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func TestValidatePrintsWarnings(t *testing.T) {
	t.Setenv("CLI_TEST_TOKEN", "tok-value-123")
	conf := strings.Replace(goodConfig, "  auth_token:", "  page_size: 200\n  users_page_size: 500\n  auth_token:", 1)
	file := writeFile(t, conf)
	code, stdout, stderr := runCLI(t, "validate", "--config", file)
	if code != exitOK {
		t.Fatalf("exit %d, want 0 for warnings alone\n%s", code, stderr)
	}
	if !strings.Contains(stdout, "page size 200 (users 500)") {
		t.Errorf("stdout does not show both page sizes:\n%s", stdout)
	}
	for _, want := range []string{
		"bindsync: warning: " + file + ":3: twilio.page_size: 200 is above the documented maximum of Twilio's current API (50); Twilio may reject it; bindsync then falls back to 50\n",
		"bindsync: warning: " + file + ":4: twilio.users_page_size: 500 is above the documented maximum of Twilio's current API (100)",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr misses %q:\n%s", want, stderr)
		}
	}
}

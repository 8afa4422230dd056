package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

// withoutSecrets is the environment of the test without any variable a
// configuration of these tests names: the E2E_ ones of newE2E and the
// TWILIO_ ones an operator's shell may hold.
func withoutSecrets() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "E2E_") || strings.HasPrefix(kv, "TWILIO_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// TestE2EStatusWithoutSecrets runs the binary's status after a run, with
// none of the configuration's secrets set (Twilio's account SID and auth
// token, an API key, a Pushgateway URL with a password): status reads
// staging alone and must answer, in every form. run and validate, which
// need those values, still refuse, naming every unset variable at once.
func TestE2EStatusWithoutSecrets(t *testing.T) {
	t.Parallel()
	push := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(push.Close)
	e := newE2E(t, twiliotest.WorldSpec{Seed: 11, Services: 1, UsersPerService: 12, MaxBindingsPerUser: 10}, twiliotest.Faults{},
		"metrics:\n  pushgateway: ${E2E_PUSHGATEWAY}\n")
	day := e2eDay.Format(time.DateOnly)
	cmd := exec.Command(binary, "run", "--config", e.config, "--snapshot-date", day)
	cmd.Env = append(e.env(e2eToken), "E2E_PUSHGATEWAY=http://pusher:pass-S3cr3t@"+strings.TrimPrefix(push.URL, "http://"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	e.checkExact()

	// The same configuration with an API key instead of the auth token.
	apiKey := strings.Replace(mustRead(t, e.config),
		"  auth_token: ${E2E_AUTH_TOKEN}\n", "  api_key_sid: ${TWILIO_API_KEY_SID}\n  api_key_secret: ${TWILIO_API_KEY_SECRET}\n", 1)
	apiKeyConfig := filepath.Join(e.dir, "apikey.yaml")
	if err := os.WriteFile(apiKeyConfig, []byte(apiKey), 0o600); err != nil {
		t.Fatal(err)
	}

	bare := func(args ...string) result {
		t.Helper()
		c := exec.Command(binary, args...)
		c.Env = withoutSecrets()
		var out, errb strings.Builder
		c.Stdout, c.Stderr = &out, &errb
		code := 0
		if err := c.Run(); err != nil {
			ee, ok := err.(*exec.ExitError)
			if !ok {
				t.Fatal(err)
			}
			code = ee.ExitCode()
		}
		return result{code, out.String(), errb.String()}
	}

	for _, file := range []string{e.config, apiKeyConfig} {
		r := bare("status", "--config", file)
		if r.code != 0 || !strings.Contains(r.stdout, "published") || !strings.Contains(r.stdout, day) {
			t.Errorf("status --config %s: exit %d\nstdout:\n%s\nstderr:\n%s", filepath.Base(file), r.code, r.stdout, r.stderr)
		}
		r = bare("status", "--config", file, "--check", "--snapshot-date", day)
		if r.code != 0 {
			t.Errorf("status --check --config %s: exit %d, want 0\nstdout:\n%s\nstderr:\n%s", filepath.Base(file), r.code, r.stdout, r.stderr)
		}
		r = bare("status", "--config", file, "--json")
		var rep statusReport
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != 0 {
			t.Fatalf("status --json: exit %d, %v\n%s%s", r.code, err, r.stdout, r.stderr)
		}
		if rep.State != string(checkpoint.StatePublished) || rep.Snapshot != day || rep.UsersDone != 12 {
			t.Errorf("status --json: state %q of %s, %d users done", rep.State, rep.Snapshot, rep.UsersDone)
		}
	}

	// The variables really are unset: what needs them refuses, and says
	// which, all in one report.
	r := bare("run", "--config", e.config, "--snapshot-date", day)
	if r.code != exitUsage || !strings.Contains(r.stderr, "environment variable E2E_AUTH_TOKEN is not set") {
		t.Errorf("run without secrets: exit %d, want %d naming E2E_AUTH_TOKEN\n%s", r.code, exitUsage, r.stderr)
	}
	r = bare("validate", "--config", e.config)
	for _, v := range []string{"E2E_ACCOUNT_SID", "E2E_AUTH_TOKEN", "E2E_PUSHGATEWAY"} {
		if r.code != exitUsage || !strings.Contains(r.stderr, "environment variable "+v+" is not set") {
			t.Errorf("validate without secrets: exit %d, want %d naming %s\n%s", r.code, exitUsage, v, r.stderr)
		}
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

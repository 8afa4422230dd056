package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/bindsync/bindsync/bq/bqtest"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

const (
	credToken   = "cred-check-S3cr3t-token"
	credBucket  = "bindsync-cred"
	credDataset = "twilio_chat"
)

// credEnv is a fake Twilio, a fake BigQuery and a fake GCS, all on
// loopback, and a configuration that names them.
type credEnv struct {
	world *twiliotest.World
	tw    *twiliotest.Server
	bq    *bqtest.Server
	gcs   *fakestorage.Server
	file  string
}

type credOptions struct {
	faults    twiliotest.Faults
	noBucket  bool   // the bucket the config names does not exist
	dataset   string // location of the dataset; "" for none at all
	services  string // more services entries, appended
	twilioURL string // base_url instead of the fake's
}

func newCredEnv(t *testing.T, o credOptions) *credEnv {
	t.Helper()
	e := &credEnv{world: twiliotest.NewWorld(twiliotest.WorldSpec{Seed: 5, Services: 2, UsersPerService: 3, MaxBindingsPerUser: 2})}
	e.tw = twiliotest.NewServer(twiliotest.Options{World: e.world, AccountSID: e.world.AccountSID, AuthToken: credToken, Faults: o.faults})
	t.Cleanup(e.tw.Close)
	e.bq = bqtest.NewServer(bqtest.Options{Project: "test-project"})
	t.Cleanup(e.bq.Close)
	if o.dataset != "" {
		e.bq.CreateDataset(credDataset, o.dataset)
	}
	gcs, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", PublicHost: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gcs.Stop)
	if !o.noBucket {
		gcs.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: credBucket})
	}
	e.gcs = gcs
	// The storage client goes to the fake, without credentials.
	t.Setenv("STORAGE_EMULATOR_HOST", gcs.URL())
	t.Setenv("CRED_TEST_TOKEN", credToken)
	base := o.twilioURL
	if base == "" {
		base = e.tw.URL()
	}
	cfg := fmt.Sprintf(`twilio:
  base_url: %s
  account_sid: %s
  auth_token: ${CRED_TEST_TOKEN}
services:
  - sid: %s
    users: all
  - sid: %s
    users: [alice]
%sstaging: gs://%s/bindsync
warehouse:
  bigquery:
    project: test-project
    dataset: %s
    endpoint: %s
`, base, e.world.AccountSID, e.world.Services[0].SID, e.world.Services[1].SID, o.services, credBucket, credDataset, e.bq.URL())
	e.file = filepath.Join(t.TempDir(), "bindsync.yaml")
	if err := os.WriteFile(e.file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// checkLines returns the lines of the credentials checks, by kind and
// target ("twilio service IS…").
func checkLines(stdout string) map[string]string {
	_, after, _ := strings.Cut(stdout, "credentials\n")
	lines := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(after), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 {
			continue
		}
		head, verdict, _ := strings.Cut(strings.Join(f, " "), ": ")
		lines[head] = verdict
	}
	return lines
}

func TestCheckCredentials(t *testing.T) {
	type want struct {
		code  int
		lines map[string]string // line head → start of the verdict
	}
	svc := func(e *credEnv, i int) string { return "twilio service " + e.world.Services[i].SID }
	const (
		stagingHead  = "staging gs://" + credBucket + "/bindsync"
		bigqueryHead = "bigquery dataset test-project:" + credDataset
	)
	allOK := func(e *credEnv) map[string]string {
		return map[string]string{
			svc(e, 0):    "OK: credentials accepted, service found",
			svc(e, 1):    "OK: credentials accepted, service found",
			stagingHead:  "OK: bucket found",
			bigqueryHead: "OK: dataset found in location US",
		}
	}
	tests := []struct {
		name  string
		opts  credOptions
		token string // the token the config is given; "" for the right one
		want  func(e *credEnv) want
	}{
		{"all pass", credOptions{dataset: "US"}, "", func(e *credEnv) want { return want{0, allOK(e)} }},
		{"wrong token", credOptions{dataset: "US"}, "wrong-T0ken-value", func(e *credEnv) want {
			l := allOK(e)
			for i := range 2 {
				l[svc(e, i)] = "FAILED: Twilio refused the credentials (HTTP 401): check twilio.account_sid and twilio.auth_token in " + e.file
			}
			return want{exitUsage, l}
		}},
		{"service not in the account", credOptions{dataset: "US", services: "  - sid: IS00000000000000000000000000000000\n    users: all\n"}, "", func(e *credEnv) want {
			l := allOK(e)
			l["twilio service IS00000000000000000000000000000000"] = "FAILED: Twilio knows no such service in this account (HTTP 404): check services[2].sid in " + e.file
			return want{exitUsage, l}
		}},
		{"dataset absent", credOptions{}, "", func(e *credEnv) want {
			l := allOK(e)
			l[bigqueryHead] = "FAILED: dataset test-project:twilio_chat not found (HTTP 404): create it (bq mk --location=US --dataset test-project:twilio_chat)"
			return want{exitUsage, l}
		}},
		{"dataset elsewhere", credOptions{dataset: "EU"}, "", func(e *credEnv) want {
			l := allOK(e)
			l[bigqueryHead] = "FAILED: dataset test-project:twilio_chat is in location EU, but warehouse.bigquery.location is US: set it to EU"
			return want{exitUsage, l}
		}},
		{"bucket absent", credOptions{dataset: "US", noBucket: true}, "", func(e *credEnv) want {
			l := allOK(e)
			l[stagingHead] = "FAILED: staging gs://" + credBucket + "/bindsync"
			return want{exitUsage, l}
		}},
		{"Twilio down", credOptions{dataset: "US", faults: twiliotest.Faults{Rate503: 1}}, "", func(e *credEnv) want {
			l := allOK(e)
			for i := range 2 {
				l[svc(e, i)] = "FAILED: list users of service " + e.world.Services[i].SID + ": giving up after 2 attempts: twilio: GET /v2/Services/" + e.world.Services[i].SID + "/Users: 503 Service Unavailable"
			}
			return want{exitFailed, l}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newCredEnv(t, tt.opts)
			if tt.token != "" {
				t.Setenv("CRED_TEST_TOKEN", tt.token)
			}
			w := tt.want(e)
			code, stdout, stderr := runCLI(t, "validate", "--config", e.file, "--check-credentials")
			if code != w.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, w.code, stdout, stderr)
			}
			got := checkLines(stdout)
			if len(got) != len(w.lines) {
				t.Errorf("%d check lines, want %d:\n%s", len(got), len(w.lines), stdout)
			}
			for head, verdict := range w.lines {
				if !strings.HasPrefix(got[head], verdict) {
					t.Errorf("%s: %q\nwant it to start %q", head, got[head], verdict)
				}
			}
			for _, secret := range []string{credToken, tt.token} {
				if secret != "" && strings.Contains(stdout+stderr, secret) {
					t.Errorf("the output shows a token (%q):\n%s%s", secret, stdout, stderr)
				}
			}
			if w.code != 0 && !strings.Contains(stderr, "credential checks failed") {
				t.Errorf("stderr does not sum up the failures:\n%s", stderr)
			}

			// Cheap and dry: one request per Twilio service (two attempts
			// at most when Twilio fails), the dataset read once, nothing
			// written to the bucket.
			services := len(w.lines) - 2
			maxTwilio := int64(services)
			if tt.opts.faults.Rate503 > 0 {
				maxTwilio *= 2
			}
			if st := e.tw.Stats(); st.Requests < int64(services) || st.Requests > maxTwilio || st.Requests != st.UsersRequests {
				t.Errorf("Twilio got %d requests (%d for users), want %d to %d, all for users", st.Requests, st.UsersRequests, services, maxTwilio)
			}
			if got, want := e.bq.Requests(), []string{"GET /bigquery/v2/projects/test-project/datasets/" + credDataset}; !slices.Equal(got, want) {
				t.Errorf("BigQuery got %q, want %q", got, want)
			}
			if !tt.opts.noBucket {
				if objs, _, err := e.gcs.ListObjects(credBucket, "", "", false); err != nil || len(objs) != 0 {
					t.Errorf("the bucket holds %d objects (%v): the check wrote", len(objs), err)
				}
			}
		})
	}
}

// TestCheckCredentialsPermissionDenied: a BigQuery identity without a role
// on the dataset is a problem for the operator (exit 2), and the line says
// what to grant.
func TestCheckCredentialsPermissionDenied(t *testing.T) {
	e := newCredEnv(t, credOptions{dataset: "US"})
	e.bq.Deny("GET", "/bigquery/v2/projects/test-project/datasets/"+credDataset, http.StatusForbidden, "accessDenied")
	code, stdout, stderr := runCLI(t, "validate", "--config", e.file, "--check-credentials")
	if code != exitUsage {
		t.Errorf("exit %d, want %d\n%s%s", code, exitUsage, stdout, stderr)
	}
	want := "FAILED: permission denied reading dataset test-project:twilio_chat (HTTP 403): grant roles/bigquery.dataEditor on the dataset and roles/bigquery.jobUser on the project to"
	if got := checkLines(stdout)["bigquery dataset test-project:"+credDataset]; !strings.HasPrefix(got, want) {
		t.Errorf("bigquery line %q, want it to start %q", got, want)
	}
}

// TestValidateSendsNothingWithoutTheFlag: plain validate stays offline.
func TestValidateSendsNothingWithoutTheFlag(t *testing.T) {
	e := newCredEnv(t, credOptions{dataset: "US"})
	code, stdout, stderr := runCLI(t, "validate", "--config", e.file)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	if strings.Contains(stdout, "credentials") {
		t.Errorf("checks printed without --check-credentials:\n%s", stdout)
	}
	if n := e.tw.Stats().Requests; n != 0 {
		t.Errorf("Twilio got %d requests", n)
	}
	if r := e.bq.Requests(); len(r) != 0 {
		t.Errorf("BigQuery got %q", r)
	}
}

// TestCheckCredentialsLocal: a local staging and warehouse are checked
// without being created; a file where a directory should be fails.
func TestCheckCredentialsLocal(t *testing.T) {
	world := twiliotest.NewWorld(twiliotest.WorldSpec{Seed: 6, Services: 1, UsersPerService: 2, MaxBindingsPerUser: 1})
	srv := twiliotest.NewServer(twiliotest.Options{World: world, AccountSID: world.AccountSID, AuthToken: credToken})
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "afile"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CRED_TEST_TOKEN", credToken)
	write := func(staging, warehouse string) string {
		p := filepath.Join(dir, "bindsync.yaml")
		cfg := fmt.Sprintf("twilio:\n  base_url: %s\n  account_sid: %s\n  auth_token: ${CRED_TEST_TOKEN}\nservices:\n  - sid: %s\n    users: all\nstaging: %s\nwarehouse:\n  local:\n    path: %s\n",
			srv.URL(), world.AccountSID, world.Services[0].SID, staging, warehouse)
		if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	code, stdout, stderr := runCLI(t, "validate", "--config", write("new/staging", "."), "--check-credentials")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	lines := checkLines(stdout)
	if got := lines["staging "+filepath.Join(dir, "new/staging")]; got != "OK: directory does not exist yet; the first run creates it" {
		t.Errorf("staging line %q\n%s", got, stdout)
	}
	if got := lines["warehouse local "+dir]; got != "OK: directory exists" {
		t.Errorf("warehouse line %q\n%s", got, stdout)
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); !os.IsNotExist(err) {
		t.Errorf("the check created staging: %v", err)
	}

	code, stdout, _ = runCLI(t, "validate", "--config", write("afile/staging", "afile"), "--check-credentials")
	if code != exitUsage {
		t.Errorf("exit %d, want %d\n%s", code, exitUsage, stdout)
	}
	lines = checkLines(stdout)
	if got, want := lines["staging "+filepath.Join(dir, "afile/staging")], "FAILED: staging "+filepath.Join(dir, "afile/staging")+" cannot be created: "+filepath.Join(dir, "afile")+" is not a directory"; got != want {
		t.Errorf("staging line %q, want %q", got, want)
	}
	if got, want := lines["warehouse local "+filepath.Join(dir, "afile")], "FAILED: warehouse.local.path "+filepath.Join(dir, "afile")+" exists and is not a directory"; got != want {
		t.Errorf("warehouse line %q, want %q", got, want)
	}
}

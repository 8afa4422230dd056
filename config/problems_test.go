package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestEveryProblemInOnePass checks that a file with problems of every
// kind (unknown keys, unset variables, values that do not decode, SIDs,
// enums, numbers, schedule, staging and warehouse rules, a key given
// twice) gets them all in one report, each with its file, line and path,
// sorted by line, and none twice.
func TestEveryProblemInOnePass(t *testing.T) {
	t.Setenv("EVERY_PROBLEM_FORMAT", "fancy")
	_, err := LoadFile("testdata/every_problem.yaml")
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v, want an *Error", err)
	}
	const f = "testdata/every_problem.yaml"
	want := []string{
		f + ":2: twilio.account_sid: must be AC followed by 32 hexadecimal digits: it has 5 characters, not 34 (the value is not shown, in case it is a secret)",
		// Not also "auth_token: is required": the unset variable says it.
		f + ":3: twilio.auth_token: environment variable EVERY_PROBLEM_UNSET is not set",
		f + ":4: twilio.page_size: must be between 1 and 1000 (got 0)",
		f + ":5: twilio.concurrency: cannot read string `many` into int",
		f + ":6: twilio.pagesize: unknown key; known keys here: account_sid, api_key_secret, api_key_sid, auth_token, base_url, concurrency, max_attempts, max_response_bytes, page_size, request_timeout, requests_per_second, unavailable_after, users_page_size",
		f + `:10: services[0].binding_types[1]: must be one of apn, fcm, gcm (got "sms")`,
		f + `:11: services[1].sid: must match ^IS[0-9a-fA-F]{32}$ (got "IS123")`,
		f + `:12: services[1].users[1]: "alice" is already listed as users[0]`,
		// Not also "users: is required".
		f + `:14: services[2].users: must be "all" or a list of user SIDs and identities (got "everyone")`,
		f + `:15: staging: bucket name "B" is not a valid GCS bucket name`,
		// A required key left out is placed at its section's line.
		f + `:17: warehouse.bigquery.dataset: must be 1 to 1000 letters, digits and underscores (got "")`,
		f + ":19: warehouse.bigquery.partition_expiration_days: must be >= 0 (got -1)",
		f + ":21: export.batch_rows: must be between 1 and 1048576 (got 0)",
		f + `:22: schedule: expected exactly 5 fields, found 2: [every night] (got "every night"); leave the key out for the default, "CRON_TZ=UTC 0 2 * * *"`,
		f + `:24: log.level: must be one of debug, info, warn, error (got "loud")`,
		f + `:25: log.format: must be one of auto, json, console (got "fancy")`,
		f + ":26: log: key is given twice (first on line 23); the first is used",
	}
	if got := e.Lines(); !slices.Equal(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !strings.HasPrefix(err.Error(), "invalid configuration (17 problems):\n  "+want[0]+"\n") {
		t.Errorf("Error() = %q", err)
	}
}

// roundsBase is a valid file whose lines the edits of
// TestOnePassFindsWhatRoundsFind break one at a time.
const roundsBase = `twilio:
  account_sid: AC0123456789abcdef0123456789abcdef
  auth_token: t0123456789
  page_size: 50
  concurrency: 4
services:
  - sid: IS0123456789abcdef0123456789abcdef
    users: all
    binding_types: [gcm]
  - sid: ISfedcba9876543210fedcba9876543210
    users: [alice, bob]
staging: ./st
warehouse:
  local:
    path: w
export:
  batch_rows: 100
schedule: "@daily"
log:
  level: info
`

// TestOnePassFindsWhatRoundsFind breaks a valid file in many places at
// once and checks that the report is exactly the union of the reports of
// each break alone: the checks that used to stop at the first round
// (unknown keys and variables, then decoding, then validation) no longer
// hide one another.
func TestOnePassFindsWhatRoundsFind(t *testing.T) {
	edits := []struct{ old, new string }{
		{"  concurrency: 4\n", "  concurrency: 4\n  pagesize: 5\n"},
		{"auth_token: t0123456789", "auth_token: ${ROUNDS_UNSET}"},
		{"page_size: 50", "page_size: 0"},
		{"sid: ISfedcba9876543210fedcba9876543210", "sid: IS123"},
		{"[gcm]", "[sms]"},
		{"[alice, bob]", "[alice, alice]"},
		{"staging: ./st", "staging: gs://B/x"},
		{"    path: w", `    path: ""`},
		{"batch_rows: 100", "batch_rows: lots"},
		{`schedule: "@daily"`, "schedule: every night"},
		{"level: info", "level: loud"},
		{"log:\n", "metrics:\n  pushgateway: ftp://x\nlog:\n"},
	}
	problems := func(doc string) []Problem {
		t.Helper()
		_, err := Parse([]byte(doc), lookup)
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("err = %v for\n%s", err, doc)
		}
		return e.Problems
	}
	if _, err := Parse([]byte(roundsBase), lookup); err != nil {
		t.Fatalf("the base file: %v", err)
	}
	key := func(p Problem) string { return p.Path + ": " + p.Message }
	var want []string
	all := roundsBase
	for _, ed := range edits {
		if !strings.Contains(roundsBase, ed.old) {
			t.Fatalf("edit %q does not apply", ed.old)
		}
		alone := problems(strings.Replace(roundsBase, ed.old, ed.new, 1))
		if len(alone) != 1 {
			t.Errorf("edit %q alone: %d problems, want 1: %v", ed.new, len(alone), alone)
		}
		for _, p := range alone {
			want = append(want, key(p))
		}
		all = strings.Replace(all, ed.old, ed.new, 1)
	}
	together := problems(all)
	var got []string
	for i, p := range together {
		got = append(got, key(p))
		if p.Line <= 0 {
			t.Errorf("%v has no line", p)
		}
		if i > 0 && p.Line < together[i-1].Line {
			t.Errorf("%v comes after line %d: not sorted by line", p, together[i-1].Line)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("in one pass:\n%s\nwant, break by break:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestProblemsWithoutALineComeLast checks that keys missing at the top
// level, which no line can show, follow the problems that have one.
func TestProblemsWithoutALineComeLast(t *testing.T) {
	doc := "twilio:\n  account_sid: AC0123456789abcdef0123456789abcdef\n  auth_token: t\n  page_size: 0\n"
	_, err := Parse([]byte(doc), lookup)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v", err)
	}
	want := []string{
		"line 4: twilio.page_size: must be between 1 and 1000 (got 0)",
		"services: at least one service is required",
		"warehouse: is required: warehouse.local.path and/or warehouse.bigquery",
	}
	if got := e.Lines(); !slices.Equal(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestReadsOnlyWhatIsRead checks Options.Reads, which `bindsync status`
// uses: with the secrets and everything else it does not read unset or
// wrong, a file still loads for its staging, but not when what it reads
// is wrong, nor when a key is misspelt anywhere.
func TestReadsOnlyWhatIsRead(t *testing.T) {
	env := map[string]string{"READS_STAGING": "gs://my-bucket/bindsync", "READS_KEYFILE": "/etc/key.json"}
	lookupReads := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	doc := `twilio:
  account_sid: ${TWILIO_ACCOUNT_SID_UNSET}
  auth_token: ${TWILIO_AUTH_TOKEN_UNSET}
  api_key_secret: ${TWILIO_API_KEY_SECRET_UNSET}
  page_size: 0
services:
  - sid: ${SERVICE_SID_UNSET}
    users: all
staging: ${READS_STAGING}
warehouse:
  bigquery:
    project: ${GCP_PROJECT_UNSET}
    dataset: bindsync
    credentials_file: ${READS_KEYFILE}
metrics:
  pushgateway: ${PUSHGATEWAY_WITH_PASSWORD_UNSET}
`
	opts := Options{Reads: []string{"staging", "warehouse.bigquery.credentials_file"}}
	cfg, err := ParseWith([]byte(doc), lookupReads, opts)
	if err != nil {
		t.Fatalf("a file read for its staging: %v", err)
	}
	if cfg.Staging != "gs://my-bucket/bindsync" || cfg.Warehouse.BigQuery.CredentialsFile != "/etc/key.json" {
		t.Errorf("staging %q, credentials file %q", cfg.Staging, cfg.Warehouse.BigQuery.CredentialsFile)
	}
	if cfg.Twilio.AuthToken != "" || cfg.Twilio.AccountSID != "" {
		t.Errorf("unset secrets read as %q, %q; want empty", cfg.Twilio.AccountSID, cfg.Twilio.AuthToken)
	}
	// Without Reads the same file is refused, for each of those reasons.
	_, err = ParseWith([]byte(doc), lookupReads, Options{})
	for _, w := range []string{"TWILIO_ACCOUNT_SID_UNSET is not set", "TWILIO_AUTH_TOKEN_UNSET is not set", "twilio.page_size", "SERVICE_SID_UNSET", "GCP_PROJECT_UNSET", "PUSHGATEWAY_WITH_PASSWORD_UNSET"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("without Reads: err = %v, want it to say %q", err, w)
		}
	}
	// What is read must still be right.
	for _, tt := range []struct{ name, doc, want string }{
		{"staging unset", strings.Replace(doc, "${READS_STAGING}", "${READS_STAGING_UNSET}", 1), "line 9: staging: environment variable READS_STAGING_UNSET is not set"},
		{"staging invalid", strings.Replace(doc, "${READS_STAGING}", "s3://b/x", 1), `line 9: staging: must be a local directory or gs://bucket/prefix (got "s3://b/x")`},
		{"key file unset", strings.Replace(doc, "${READS_KEYFILE}", "${READS_KEYFILE_UNSET}", 1), "line 14: warehouse.bigquery.credentials_file: environment variable READS_KEYFILE_UNSET is not set"},
		{"misspelt key", strings.Replace(doc, "staging:", "stagign:", 1), "line 9: stagign: unknown key"},
		{"undecodable value", strings.Replace(doc, "page_size: 0", "page_size: many", 1), "line 5: twilio.page_size: cannot read string `many` into int"},
	} {
		_, err := ParseWith([]byte(tt.doc), lookupReads, opts)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
}

// TestLine checks where Config.Line places a path of the file it was
// parsed from: its own line, else its nearest enclosing section's.
func TestLine(t *testing.T) {
	cfg, err := Parse([]byte(roundsBase), lookup)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{
		"twilio.page_size":           4,
		"services[1]":                10,
		"services[1].users":          11,
		"services[1].users[1]":       11,
		"warehouse.local.path":       15,
		"warehouse.bigquery.table":   13, // not in the file: its section's line
		"twilio.requests_per_second": 1,
		"metrics.job":                0, // no metrics section at all
	} {
		if got := cfg.Line(path); got != want {
			t.Errorf("Line(%q) = %d, want %d", path, got, want)
		}
	}
	if got := Default().Line("twilio.page_size"); got != 0 {
		t.Errorf("Line of a Config built in code = %d, want 0", got)
	}
}

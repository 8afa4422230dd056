package main

// End-to-end tests of the privacy policy (export.columns): the binary
// reads the fake Twilio and publishes to the local warehouse and the fake
// BigQuery; the rows are compared with the world, the treated columns
// with an HMAC computed here, independently of bindsync's code.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"

	"github.com/bindsync/bindsync/bq"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/internal/snapshottest"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

// e2eHashKey is the hash key every e2e run finds in E2E_HASH_KEY.
const e2eHashKey = "e2e-hash-K3y+/=-of-more-than-32-bytes"

// e2ePolicy treats each column of both tables, every treatment used.
var e2ePolicy = schemas.Policy{Endpoint: schemas.Drop, Identity: schemas.Hash, UsersUser: schemas.Hash, UsersIdentity: schemas.Hash}

// e2ePolicyConfig is export.columns for e2ePolicy.
const e2ePolicyConfig = "  columns:\n    hash_key: ${E2E_HASH_KEY}\n    user_bindings:\n      endpoint: drop\n      identity: hash\n    users:\n      user: hash\n      identity: hash\n"

// hmacOf is the hash an analyst computes for v with the key.
func hmacOf(v string) string {
	m := hmac.New(sha256.New, []byte(e2eHashKey))
	m.Write([]byte(v))
	return hex.EncodeToString(m.Sum(nil))
}

func treatE2E(t schemas.Treatment, s *string) *string {
	switch {
	case s == nil || t == schemas.Keep || t == "":
		return s
	case t == schemas.Drop:
		return nil
	}
	h := hmacOf(*s)
	return &h
}

// wantUnder returns the bindings a run must publish under p, rendered by
// canonical, sorted.
func (e *e2e) wantUnder(p schemas.Policy, canonical func(twilio.Binding) string) []string {
	var out []string
	for _, s := range e.services {
		for _, u := range snapshottest.UsersOf(e.world, s) {
			for _, b := range e.world.Bindings(s.Service, u, s.Types) {
				b.Endpoint, b.Identity = treatE2E(p.Endpoint, b.Endpoint), treatE2E(p.Identity, b.Identity)
				out = append(out, canonical(b))
			}
		}
	}
	sort.Strings(out)
	return out
}

// userRow is one users-table row as the checks see it.
type userRow struct {
	service, user string
	identity      *string
	bindings      int64
	state         string
}

// checkUsersUnder asserts that rows are the world's users under p: every
// user once, addressed as the run addresses it and treated, with its
// identity (where the row has one) treated, and its number of bindings.
func (e *e2e) checkUsersUnder(where string, rows []userRow, p schemas.Policy) {
	e.t.Helper()
	var got []string
	identities := 0
	for _, r := range rows {
		u := e.world.Service(r.service)
		var wu *twiliotest.User
		for _, s := range e.services {
			if s.Service != r.service {
				continue
			}
			for _, addressed := range snapshottest.UsersOf(e.world, s) {
				if want := treatE2E(p.UsersUser, &addressed); (want == nil && r.user == "") || (want != nil && *want == r.user) {
					wu = u.User(addressed)
					got = append(got, fmt.Sprintf("%s|%s|%d|%s", r.service, addressed, r.bindings, r.state))
				}
			}
		}
		if wu == nil {
			e.t.Errorf("%s: users row %q matches no user of the world treated by %s", where, r.user, p.UsersUser)
			continue
		}
		if r.identity != nil {
			identities++
			if want := treatE2E(p.UsersIdentity, &wu.Identity); want == nil || *r.identity != *want {
				e.t.Errorf("%s: user %s has identity %q, want %v", where, wu.SID, *r.identity, want)
			}
		}
	}
	sort.Strings(got)
	snapshottest.Equal(e.t, got, snapshottest.WantUsers(e.world, e.services, nil))
	if p.UsersIdentity != schemas.Drop && identities == 0 {
		e.t.Errorf("%s: no users row holds an identity: the identity check proves nothing", where)
	}
}

// localUsers reads the users of date from the local warehouse.
func (e *e2e) localUsers(date time.Time) []userRow {
	e.t.Helper()
	dir := exporter.LocalWarehouse{Path: filepath.Join(e.dir, "warehouse")}.UsersSnapshotDir(date)
	files, _ := filepath.Glob(filepath.Join(dir, "*.parquet"))
	if len(files) == 0 {
		e.t.Fatalf("no users files in %s", dir)
	}
	var out []userRow
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			e.t.Fatal(err)
		}
		st, _ := f.Stat()
		err = exporter.ReadUsersFile(context.Background(), f, st.Size(), func(u schemas.UserRow) error {
			out = append(out, userRow{u.ServiceSID, u.User, u.Identity, u.Bindings, u.State})
			return nil
		})
		f.Close()
		if err != nil {
			e.t.Fatal(err)
		}
	}
	return out
}

// bqUsers reads the users of date from the fake BigQuery.
func (e *bqE2E) bqUsers(date time.Time) []userRow {
	var out []userRow
	for _, r := range e.bq.Rows(bqDataset, "user_bindings_users", date.Format("20060102")) {
		u := userRow{service: fmt.Sprint(r["service_sid"]), bindings: r["bindings"].(int64), state: fmt.Sprint(r["state"])}
		if s, ok := r["user"].(string); ok {
			u.user = s
		}
		if s, ok := r["identity"].(string); ok {
			u.identity = &s
		}
		out = append(out, u)
	}
	return out
}

// checkNoKey asserts the key, in any common encoding, is in none of the
// texts nor in any file under the test's directory (staging, warehouse,
// checkpoints) but the configuration, which names its variable only.
func (e *e2e) checkNoKey(texts ...string) {
	e.t.Helper()
	secrets := []string{e2eHashKey, hex.EncodeToString([]byte(e2eHashKey)), base64.StdEncoding.EncodeToString([]byte(e2eHashKey))}
	for i, text := range texts {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				e.t.Errorf("output %d shows the hash key (%q)", i, s)
			}
		}
	}
	files := 0
	err := filepath.WalkDir(e.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, s := range secrets {
			if strings.Contains(string(data), s) {
				e.t.Errorf("%s holds the hash key (%q)", path, s)
			}
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if files < 3 {
		e.t.Errorf("only %d files under %s: nothing to check", files, e.dir)
	}
}

// TestE2EPrivacyPolicy publishes a day without a policy, then sets one
// and publishes two more days, to the local warehouse and BigQuery: the
// days under the policy hold the treated values (the same on both days and
// in both tables), the BigQuery tables' descriptions say what is treated,
// the first day is not rewritten anywhere, and the key is in no file and
// no output.
func TestE2EPrivacyPolicy(t *testing.T) {
	t.Parallel()
	e := newBQE2E(t, twiliotest.WorldSpec{Seed: 31, Services: 2, UsersPerService: 30, MaxBindingsPerUser: 30},
		twiliotest.Faults{}, bqE2EOptions{})
	day1, day2, day3 := e2eDay, e2eDay.AddDate(0, 0, 1), e2eDay.AddDate(0, 0, 2)
	var outputs []string
	run := func(day time.Time) {
		t.Helper()
		r := e.mustRun("--snapshot-date", day.Format(time.DateOnly), "--log-level", "debug")
		outputs = append(outputs, r.stdout, r.stderr)
	}
	run(day1)
	e.checkExact()
	e.checkBQExact(day1)
	localDay1 := dirFiles(t, filepath.Join(e.dir, "warehouse", "user_bindings", "snapshot_date=2026-11-26"), filepath.Join(e.dir, "warehouse", "user_bindings_users", "snapshot_date=2026-11-26"))

	// validate shows no key either.
	e.editConfig("  commit_interval: 100ms\n", "  commit_interval: 100ms\n"+e2ePolicyConfig)
	v := e.run(e2eToken, "validate", "--config", e.config)
	if v.code != 0 {
		t.Fatalf("validate: exit %d\n%s", v.code, v.stderr)
	}
	outputs = append(outputs, v.stdout, v.stderr)

	run(day2)
	run(day3)
	for _, day := range []time.Time{day2, day3} {
		want := e.wantUnder(e2ePolicy, snapshottest.Canonical)
		snapshottest.Equal(t, snapshottest.ReadLocal(t, filepath.Join(e.dir, "warehouse"), day), want)
		snapshottest.Equal(t, e.bqRows(day), e.wantUnder(e2ePolicy, canonicalBQ))
		e.checkUsersUnder("local "+day.Format(time.DateOnly), e.localUsers(day), e2ePolicy)
		e.checkUsersUnder("BigQuery "+day.Format(time.DateOnly), e.bqUsers(day), e2ePolicy)
	}
	// The hash of an identity is the same in both tables: every hashed
	// user in the users table that has bindings is found in user_bindings.
	hashed := map[string]bool{}
	for _, r := range e.bq.Rows(bqDataset, bqTable, day3.Format("20060102")) {
		if s, ok := r[schemas.ColIdentity].(string); ok {
			hashed[s] = true
		}
	}
	joined := 0
	for _, u := range e.bqUsers(day3) {
		if u.bindings > 0 && u.identity != nil {
			if !hashed[*u.identity] {
				t.Errorf("users identity %s does not join user_bindings", *u.identity)
			}
			joined++
		}
	}
	if joined == 0 {
		t.Error("no user with bindings and an identity: the join proves nothing")
	}

	// BigQuery says what the columns hold; the day before the policy is
	// as it was, there and in the local warehouse.
	for _, c := range []struct {
		name string
		want bigquery.Schema
	}{{bqTable, bq.Schema(e2ePolicy.BindingSchema())}, {"user_bindings_users", bq.Schema(e2ePolicy.UsersSchema())}} {
		md := e.bq.Table(bqDataset, c.name)
		if md == nil {
			t.Fatalf("no table %s", c.name)
		}
		for i, f := range md.Schema.Fields {
			if f.Description != c.want[i].Description {
				t.Errorf("%s.%s description = %q, want %q", c.name, f.Name, f.Description, c.want[i].Description)
			}
		}
	}
	if d := e.bq.Table(bqDataset, bqTable).Schema.Fields[6]; d.Name != schemas.ColIdentity || !strings.Contains(d.Description, "HMAC-SHA-256") {
		t.Errorf("identity column of BigQuery: %+v", d)
	}
	e.checkBQExact(day1)
	e.checkExact()
	if got := dirFiles(t, filepath.Join(e.dir, "warehouse", "user_bindings", "snapshot_date=2026-11-26"), filepath.Join(e.dir, "warehouse", "user_bindings_users", "snapshot_date=2026-11-26")); !mapsEqual(got, localDay1) {
		t.Error("the local warehouse's day before the policy was rewritten")
	}
	e.checkNoKey(outputs...)
}

// dirFiles returns the content of every file under dirs, by path.
func dirFiles(t *testing.T, dirs ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range entries {
			data, err := os.ReadFile(filepath.Join(dir, en.Name()))
			if err != nil {
				t.Fatal(err)
			}
			out[filepath.Join(dir, en.Name())] = string(data)
		}
	}
	return out
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestE2EPrivacyKillAndResume kills a run under the policy and resumes
// it: the published snapshot is exact under the policy (parts rewritten
// while resuming are not hashed twice).
func TestE2EPrivacyKillAndResume(t *testing.T) {
	t.Parallel()
	e := newE2E(t, twiliotest.WorldSpec{Seed: 32, Services: 2, UsersPerService: 200, MaxBindingsPerUser: 80},
		twiliotest.Faults{Latency: 10 * time.Millisecond},
		"export:\n  commit_interval: 100ms\n  part_rows: 1000\n"+e2ePolicyConfig)
	cmd, out := e.startRun(30)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if cmd.ProcessState.ExitCode() == 0 {
		t.Fatalf("the run finished before it was killed:\n%s", out)
	}
	r := e.runSnapshot()
	if r.code != 0 {
		t.Fatalf("rerun: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	snapshottest.Equal(t, e.published(), e.wantUnder(e2ePolicy, snapshottest.Canonical))
	e.checkUsersUnder("local", e.localUsers(e2eDay), e2ePolicy)
	e.checkNoKey(out.String(), r.stdout, r.stderr)
}

// TestE2EPrivacyPolicyChangedMidSnapshot sets a policy while a snapshot
// is half read: the run that resumes it refuses to publish parts written
// in clear under the new policy and says what to do; --force reads it
// again, all of it under the policy.
func TestE2EPrivacyPolicyChangedMidSnapshot(t *testing.T) {
	t.Parallel()
	e := newE2E(t, twiliotest.WorldSpec{Seed: 33, Services: 1, UsersPerService: 300, MaxBindingsPerUser: 60},
		twiliotest.Faults{Latency: 10 * time.Millisecond}, "export:\n  commit_interval: 100ms\n")
	// User by user, so that the kill finds users done and the rest unread
	// (a service walk finishes its users all at once, at its end).
	data, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.config, []byte(strings.Replace(string(data), "    users: all\n", "    users: all\n    strategy: per_user\n", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, out := e.startRun(20)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if cmd.ProcessState.ExitCode() == 0 {
		t.Fatalf("the run finished before it was killed:\n%s", out)
	}
	data, err = os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.config, []byte(strings.Replace(string(data), "  commit_interval: 100ms\n", "  commit_interval: 100ms\n"+e2ePolicyConfig, 1)), 0o600); err != nil {
		t.Fatal(err)
	}

	// The killed run's last requests may still be finishing in the
	// server: count from when the server has settled.
	before := e.srv.Stats().Requests
	for settled := 0; settled < 3; {
		time.Sleep(30 * time.Millisecond)
		if n := e.srv.Stats().Requests; n != before {
			before, settled = n, 0
			continue
		}
		settled++
	}
	r := e.runSnapshot()
	if r.code == 0 {
		t.Fatalf("a snapshot half read in clear was published under a hashing policy:\n%s", r.stdout)
	}
	if n := e.srv.Stats().Requests - before; n != 0 {
		t.Errorf("the refused resume made %d requests to Twilio; it must stop before reading", n)
	}
	for _, w := range []string{"privacy policy", "--force"} {
		if !strings.Contains(r.stderr+r.stdout, w) {
			t.Errorf("the refusal does not say %q:\n%s\n%s", w, r.stdout, r.stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(e.dir, "warehouse", "user_bindings")); err == nil {
		t.Fatal("something was published")
	}

	r2 := e.runSnapshot("--force")
	if r2.code != 0 {
		t.Fatalf("--force: exit %d\n%s\n%s", r2.code, r2.stdout, r2.stderr)
	}
	snapshottest.Equal(t, e.published(), e.wantUnder(e2ePolicy, snapshottest.Canonical))
	e.checkUsersUnder("local", e.localUsers(e2eDay), e2ePolicy)
	e.checkNoKey(out.String(), r.stdout, r.stderr, r2.stdout, r2.stderr)
}

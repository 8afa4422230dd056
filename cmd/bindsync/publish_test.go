package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

// TestE2EPublishAlone: a snapshot read completely whose publishing failed
// is published by `bindsync publish` without reading Twilio, exactly;
// `publish` of a snapshot that is not complete, or already published, is
// an error (exit 1) that leaves it as it is.
func TestE2EPublishAlone(t *testing.T) {
	t.Parallel()
	e := newE2E(t, twiliotest.WorldSpec{Seed: 7, Services: 2, UsersPerService: 30, MaxBindingsPerUser: 20}, twiliotest.Faults{}, "")
	day := e2eDay.Format(time.DateOnly)
	publish := func() result {
		return e.run(e2eToken, "publish", "--config", e.config, "--snapshot-date", day)
	}

	if r := publish(); r.code != 1 || !strings.Contains(r.stderr, string(checkpoint.StateNoCheckpoint)) {
		t.Fatalf("publish without a checkpoint: exit %d, want 1 naming %q\nstderr:\n%s", r.code, checkpoint.StateNoCheckpoint, r.stderr)
	}

	// A file where the warehouse should be: the run reads every user,
	// then cannot publish.
	wh := filepath.Join(e.dir, "warehouse")
	if err := os.WriteFile(wh, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := e.runSnapshot(); r.code != 1 {
		t.Fatalf("run into a blocked warehouse: exit %d, want 1\nstderr:\n%s", r.code, r.stderr)
	}
	if st := e.checkpointState(); st.Describe() != checkpoint.StateComplete {
		t.Fatalf("after the failed publish the snapshot is %q, want complete", st.Describe())
	}
	requests := e.srv.Stats().Requests
	if err := os.Remove(wh); err != nil {
		t.Fatal(err)
	}

	// Publishing never calls Twilio, so it runs where the Twilio secrets
	// are not set (the hash key of a privacy policy would be needed).
	r := e.runBare("publish", "--config", e.config, "--snapshot-date", day)
	if r.code != 0 {
		t.Fatalf("publish without Twilio's secrets: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "published to local warehouse") {
		t.Errorf("publish printed %q", r.stdout)
	}
	e.checkExact()
	if got := e.srv.Stats().Requests; got != requests {
		t.Errorf("publish sent %d requests to Twilio, want none", got-requests)
	}
	st := e.checkpointState()
	if !st.Published || !st.Cleaned {
		t.Errorf("after publish: published %v, cleaned %v", st.Published, st.Cleaned)
	}

	if r := publish(); r.code != 1 || !strings.Contains(r.stderr, string(checkpoint.StatePublished)) {
		t.Fatalf("publish of a published snapshot: exit %d, want 1 naming %q\nstderr:\n%s", r.code, checkpoint.StatePublished, r.stderr)
	}
	e.checkExact()
}

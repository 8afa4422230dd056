package worker

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/internal/snapshottest"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

const privacyKey = "worker-test-hash-key-of-32-bytes-or-more"

// lockedBuffer is a log sink safe for the run's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRunUnderPrivacyPolicy runs a snapshot, interrupted and resumed,
// under a policy that hashes identities and drops endpoints: the
// published rows are the world's with those columns treated (hashes
// computed here), and the key is in no log line and no file of staging
// or the warehouse.
func TestRunUnderPrivacyPolicy(t *testing.T) {
	t.Parallel()
	e := newEnv(t, twiliotest.WorldSpec{Seed: 41, Services: 2, UsersPerService: 50, MaxBindingsPerUser: 60}, twiliotest.Faults{})
	policy := schemas.Policy{Endpoint: schemas.Drop, Identity: schemas.Hash, UsersUser: schemas.Hash, UsersIdentity: schemas.Hash}
	privacy, err := exporter.NewPrivacy(policy, []byte(privacyKey))
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	opts := e.options()
	opts.PartRows = 300
	opts.Privacy = privacy
	opts.Logger = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&logs), zap.DebugLevel))

	ctx, cancel := context.WithCancel(context.Background())
	src := &interrupting{Source: e.client, n: 40, cancel: cancel}
	if _, err := Run(ctx, src, opts, day); err == nil {
		t.Fatal("the interrupted run succeeded")
	}
	if _, err := Run(context.Background(), e.client, opts, day); err != nil {
		t.Fatal(err)
	}

	hash := func(s string) string {
		m := hmac.New(sha256.New, []byte(privacyKey))
		m.Write([]byte(s))
		return hex.EncodeToString(m.Sum(nil))
	}
	var want []string
	for _, s := range e.want() {
		var b twilio.Binding
		if err := json.Unmarshal([]byte(s), &b); err != nil {
			t.Fatal(err)
		}
		b.Endpoint = nil
		if b.Identity != nil {
			h := hash(*b.Identity)
			b.Identity = &h
		}
		want = append(want, snapshottest.Canonical(b))
	}
	sort.Strings(want)
	snapshottest.Equal(t, e.published(), want)

	if strings.Contains(logs.String(), privacyKey) {
		t.Error("a log line holds the hash key")
	}
	if !strings.Contains(logs.String(), `"level":"debug"`) && !strings.Contains(logs.String(), `"level":"info"`) {
		t.Error("nothing was logged: the log check proves nothing")
	}
	files := 0
	for _, dir := range []string{filepath.Dir(e.store.URI("x")), e.warehouse.Path} {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			files++
			if bytes.Contains(data, []byte(privacyKey)) {
				t.Errorf("%s holds the hash key", path)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if files < 3 {
		t.Errorf("only %d files: nothing to check", files)
	}
}

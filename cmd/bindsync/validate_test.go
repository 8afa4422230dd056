package main

import (
	"io"
	"strings"
	"testing"

	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/bindsync/bindsync/config"
	"github.com/bindsync/bindsync/staging"
)

// TestValidateAcceptsWhatARunOpens checks, staging location by location,
// that `bindsync validate` accepts exactly what a run opens: every
// location it accepts opens (a local directory, a bucket prefix on a fake
// GCS), and every one it refuses is refused by `bindsync run` too, and by
// the GCS store itself for a gs:// URI, so the rule is not stricter than
// the run's either.
func TestValidateAcceptsWhatARunOpens(t *testing.T) {
	t.Setenv("CLI_TEST_TOKEN", "tok-value-123")
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", PublicHost: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	long := strings.Repeat("b", 63)
	for _, b := range []string{"bindsync-stage", "my.bucket.example", long} {
		srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: b})
	}
	t.Setenv("STORAGE_EMULATOR_HOST", srv.URL())

	tests := []struct {
		staging string
		refused string // "" when accepted; else what the error says
	}{
		{"st", ""},
		{"a/b/c", ""},
		{"gs://bindsync-stage/bindsync", ""},
		{"gs://bindsync-stage", ""},
		{"gs://bindsync-stage/", ""},
		{"gs://bindsync-stage/a/b/", ""},
		{"gs://my.bucket.example/x", ""},
		{"gs://" + long + "/x", ""},
		{"gs://B/x", `staging: bucket name "B" is not a valid GCS bucket name`},
		{"gs://ab/x", `staging: bucket name "ab" is not a valid GCS bucket name`},
		{"gs://" + long + "b/x", `staging: bucket name "` + long + `b" is not a valid GCS bucket name`},
		{"gs://bucket..x/y", `staging: bucket name "bucket..x" is not a valid GCS bucket name`},
		{"gs://user:s3cr3t@bucket/x", "staging: the bucket name is not a valid GCS bucket name (the value is not shown"},
		{"gs://bindsync-stage//x", `staging: the prefix after the bucket must be a slash-separated path without empty, . or .. elements (got "gs://bindsync-stage//x")`},
		{"gs://bindsync-stage/a/../b", "staging: the prefix after the bucket must be"},
		{"gs://bindsync-stage/./x", "staging: the prefix after the bucket must be"},
		{"s3://bucket/x", `staging: must be a local directory or gs://bucket/prefix (got "s3://bucket/x")`},
	}
	for _, tt := range tests {
		t.Run(tt.staging, func(t *testing.T) {
			file := writeFile(t, strings.Replace(goodConfig, "staging: st", "staging: "+tt.staging, 1))
			code, _, stderr := runCLI(t, "validate", "--config", file)
			if tt.refused != "" {
				if code != exitUsage || !strings.Contains(stderr, tt.refused) {
					t.Fatalf("validate: exit %d, stderr %q; want exit %d saying %q", code, stderr, exitUsage, tt.refused)
				}
				// The subtest's name, and so the file's path, holds the value.
				if strings.Contains(strings.ReplaceAll(stderr, file, ""), "s3cr3t") {
					t.Errorf("validate shows a credential: %s", stderr)
				}
				if code, _, runErr := runCLI(t, "run", "--config", file); code != exitUsage || !strings.Contains(runErr, tt.refused) {
					t.Errorf("run: exit %d, stderr %q; want it refused as validate does", code, runErr)
				}
				if strings.HasPrefix(tt.staging, "gs://") {
					if _, _, err := staging.ParseGCSURI(tt.staging); err == nil {
						t.Errorf("the GCS store accepts %q, which validate refuses", tt.staging)
					}
				}
				return
			}
			if code != 0 {
				t.Fatalf("validate: exit %d: %s", code, stderr)
			}
			cfg, err := config.LoadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			store, err := openStaging(t.Context(), cfg)
			if err != nil {
				t.Fatalf("a run cannot open staging %q that validate accepts: %v", tt.staging, err)
			}
			if c, ok := store.(io.Closer); ok {
				c.Close()
			}
			if _, ok := store.(staging.Locker); !ok {
				t.Errorf("staging %q (%T) takes no locks", tt.staging, store)
			}
		})
	}
}

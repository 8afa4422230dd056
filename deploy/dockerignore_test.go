package deploy

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// TestDockerignore reads the repository's .dockerignore with Docker's own
// pattern matcher: every file the image build needs (go.mod, go.sum, the
// main module's non-test Go sources) stays in the context, and what the
// build does not need is kept out.
func TestDockerignore(t *testing.T) {
	f, err := os.Open("../.dockerignore")
	if err != nil {
		t.Fatalf("%v: the build context of deploy/Dockerfile is the repository root, whose .dockerignore keeps the context small", err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	excluded := func(rel string) bool {
		t.Helper()
		ok, err := pm.MatchesOrParentMatches(filepath.FromSlash(rel))
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}

	needed := 0
	err = filepath.WalkDir("..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel("..", p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			// Not part of the main module's build: version control, this
			// module, test data.
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || rel == "deploy" || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if rel == "go.mod" || rel == "go.sum" || (strings.HasSuffix(rel, ".go") && !strings.HasSuffix(rel, "_test.go")) {
			needed++
			if excluded(rel) {
				t.Errorf(".dockerignore excludes %s, which the image build needs", rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if needed < 10 {
		t.Fatalf("found only %d files the build needs: the walk of the repository went wrong", needed)
	}

	for _, rel := range []string{
		".git/HEAD",
		"deploy/go.mod",
		"deploy/kustomize/base/cronjob.yaml",
		"config/testdata/good.yaml",
		"cmd/bindsync/e2e_test.go",
		"bin/bindsync",
		"demo-out/user_bindings/snapshot_date=2026-11-26/part-0.parquet",
		"bindsync",
	} {
		if !excluded(rel) {
			t.Errorf(".dockerignore lets %s into the build context", rel)
		}
	}
}

package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEPackageTableMatchesTheTree keeps the README's table of packages
// the list of the main module's packages: a package added or removed
// without its row fails here.
func TestREADMEPackageTableMatchesTheTree(t *testing.T) {
	root := filepath.Join("..", "..")
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	// The table runs from its header to the first line that is not a row.
	_, table, ok := strings.Cut(string(readme), "| package | what it does |\n|---|---|\n")
	if !ok {
		t.Fatal("README has no package table (| package | what it does |)")
	}
	if end := strings.Index(table, "\n\n"); end >= 0 {
		table = table[:end]
	}
	rows := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([^`]+)` \\|").FindAllStringSubmatch(table, -1) {
		rows[m[1]] = true
	}
	packages := map[string]bool{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			name := d.Name()
			if rel != "." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "demo-out" || name == "bin" || rel == "deploy") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			packages[filepath.ToSlash(filepath.Dir(rel))] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(packages) < 10 {
		t.Fatalf("found only %d packages under %s; the walk is wrong", len(packages), root)
	}
	for p := range packages {
		if !rows[p] {
			t.Errorf("package %s has no row in the README's package table", p)
		}
	}
	for r := range rows {
		if !packages[r] && r != "deploy" { // deploy is a module of its own
			t.Errorf("the README's package table names %s, which is not a package", r)
		}
	}
}

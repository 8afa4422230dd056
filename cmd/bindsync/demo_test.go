package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/bindsync/bindsync/config"
)

// TestDemoLeavesAConfig runs the demo on a small world: it explains why it
// reads fewer users than the world holds, leaves a configuration that
// loads and points at the demo's staging and warehouse, and a second run
// with it finds the snapshot published.
func TestDemoLeavesAConfig(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo-out")
	code, stdout, stderr := runCLI(t, "demo", "--users", "30", "--dir", dir, "--faults=false")
	if code != exitOK {
		t.Fatalf("demo: exit %d\n%s\n%s", code, stdout, stderr)
	}
	d := newDemoWorld(30, false)
	for _, want := range []string{
		"3 services and 90 users",
		"the configuration reads every user of the first two services, and of the third only " + itoa(len(d.listed)) + " listed users",
		"and their gcm and fcm bindings, as a configuration may: " + itoa(60+len(d.listed)) + " users",
		"bindsync status --config " + filepath.Join(dir, "bindsync.yaml"),
		"bindsync demo --serve --dir " + dir + " --users 30 --faults=false",
		"bindsync run --config " + filepath.Join(dir, "bindsync.yaml") + " --force",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the demo does not say %q:\n%s", want, stdout)
		}
	}
	path := filepath.Join(dir, "bindsync.yaml")
	cfg, err := config.LoadFile(path)
	if err != nil {
		t.Fatalf("the demo's configuration does not load: %v", err)
	}
	if cfg.Twilio.BaseURL != "http://"+demoAddr || cfg.Staging != filepath.Join(dir, "staging") || cfg.Warehouse.Local.Path != filepath.Join(dir, "warehouse") {
		t.Errorf("the demo's configuration: base_url %s, staging %s, warehouse %s", cfg.Twilio.BaseURL, cfg.Staging, cfg.Warehouse.Local.Path)
	}
	if len(cfg.Services) != 3 || len(cfg.Services[2].Users.List) != len(d.listed) {
		t.Errorf("the demo's configuration has %d services, want the demo's 3 with %d listed users", len(cfg.Services), len(d.listed))
	}
	if code, out, errOut := runCLI(t, "status", "--config", path, "--check"); code != exitOK || !strings.HasPrefix(out, "OK: snapshot") {
		t.Errorf("status --check: exit %d\n%s\n%s", code, out, errOut)
	}
	if code, out, errOut := runCLI(t, "run", "--config", path, "--progress", "0"); code != exitOK || !strings.Contains(out, "was already published") {
		t.Errorf("second run: exit %d\n%s\n%s", code, out, errOut)
	}
}

// TestDemoServe serves the demo world and runs --force with the demo's
// configuration against it (on a free port rather than the fixed one).
func TestDemoServe(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo-out")
	if code, stdout, stderr := runCLI(t, "demo", "--users", "20", "--dir", dir); code != exitOK {
		t.Fatalf("demo: exit %d\n%s\n%s", code, stdout, stderr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"demo", "--serve", "--users", "20", "--dir", dir, "--addr", "127.0.0.1:0"}, pw, io.Discard)
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	var url string
	for lines.Scan() {
		l := lines.Text()
		if _, after, ok := strings.Cut(l, "serves at "); ok {
			url = strings.Fields(after)[0]
			break
		}
	}
	if url == "" {
		cancel()
		t.Fatalf("demo --serve printed no URL: %v", <-done)
	}
	// Keep reading, so that the server's last lines do not block it.
	go func() {
		for lines.Scan() {
		}
	}()
	path := filepath.Join(dir, "bindsync.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(data), "http://"+demoAddr, url, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, "run", "--config", path, "--force", "--progress", "0")
	cancel()
	if err := <-done; err != nil {
		t.Errorf("demo --serve: %v", err)
	}
	if code != exitOK || !strings.Contains(stdout, "succeeded") {
		t.Fatalf("run --force against demo --serve: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if rep := statusJSON(t, path); len(rep.EarlierRuns) != 1 {
		t.Errorf("after --force, status lists %d earlier runs, want the demo's", len(rep.EarlierRuns))
	}
	if code, _, stderr := runCLI(t, "demo", "--serve", "--addr", "0.0.0.0:0"); code != exitUsage || !strings.Contains(stderr, "must be a loopback address") {
		t.Errorf("demo --serve on all interfaces: exit %d\n%s", code, stderr)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

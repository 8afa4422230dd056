package bench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/bindsync/bindsync/twilio/twiliotest"
)

// memoryUsersEnv names the users per service of BenchmarkRunMemory's
// world; the benchmark is skipped without it. `make bench-memory` sets
// 83,000: 2 services, 4,979,021 bindings.
const memoryUsersEnv = "BINDSYNC_BENCH_MEMORY_USERS"

// BenchmarkRunMemory measures the peak resident memory of whole `bindsync
// run` processes, the figure an operator sizes a pod by: the binary is
// built and run as a child against faketwilio in a process of its own
// (2 services of $BINDSYNC_BENCH_MEMORY_USERS users each, 32 users in
// flight, users listed through the Users API and read one by one), at
// PageSize 1000 (a first snapshot, then the next night, whose digest is
// merged with the first's) and at PageSize 50. Each prints peak-RSS-MiB
// (the child's ru_maxrss: every resident page, the executable's own
// included), bindings/s and cpu-s (the child's user and system time).
func BenchmarkRunMemory(b *testing.B) {
	users, _ := strconv.Atoi(os.Getenv(memoryUsersEnv))
	if users <= 0 {
		b.Skipf("set %s to the users per service (83000 for 5 million bindings)", memoryUsersEnv)
	}
	bindsync, err := buildCommand("github.com/bindsync/bindsync/cmd/bindsync")
	if err != nil {
		b.Fatal(err)
	}
	fake, err := startFakeProcess(twiliotest.WorldSpec{Seed: worldSeed, Services: worldServices,
		UsersPerService: users, MaxBindingsPerUser: maxBindingsPerUser})
	if err != nil {
		b.Fatal(err)
	}
	defer fake.stop()
	want := int64(fake.world.TotalBindings())
	b.Logf("world: %d services, %d users, %d bindings, faketwilio in process %d",
		len(fake.world.Services), len(fake.world.Services)*users, want, fake.cmd.Process.Pid)

	for _, pageSize := range []int{1000, 50} {
		dir := b.TempDir()
		config := filepath.Join(dir, "bindsync.yaml")
		if err := os.WriteFile(config, memoryConfig(fake, pageSize), 0o600); err != nil {
			b.Fatal(err)
		}
		nights := []string{"2026-12-01", "2026-12-02"}
		if pageSize == 50 {
			nights = nights[:1]
		}
		for i, night := range nights {
			name := fmt.Sprintf("PageSize=%d/first-snapshot", pageSize)
			if i > 0 {
				name = fmt.Sprintf("PageSize=%d/next-night", pageSize)
			}
			b.Run(name, func(b *testing.B) {
				for b.Loop() {
					measureRun(b, bindsync, config, night, want)
				}
			})
		}
	}
}

// snapshotRows finds the rows of the snapshot in run's summary.
var snapshotRows = regexp.MustCompile(`the snapshot holds (\d+) rows`)

// measureRun runs bindsync run for night with config once and reports its
// figures; the run must end well with want rows in its snapshot. A night
// already published is read again: its staging and warehouse go first.
func measureRun(b *testing.B, bindsync, config, night string, want int64) {
	dir := filepath.Dir(config)
	for _, sub := range []string{"staging", "warehouse"} {
		if err := os.RemoveAll(filepath.Join(dir, sub, "snapshots", night)); err != nil {
			b.Fatal(err)
		}
	}
	cmd := exec.Command(bindsync, "run", "--config", config, "--snapshot-date", night, "--progress", "0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		b.Fatalf("bindsync run: %v\n%s", err, out.Bytes())
	}
	m := snapshotRows.FindSubmatch(out.Bytes())
	if m == nil {
		b.Fatalf("bindsync run printed no snapshot rows:\n%s", out.Bytes())
	}
	if rows, _ := strconv.ParseInt(string(m[1]), 10, 64); rows != want {
		b.Fatalf("the snapshot holds %d rows, the world %d bindings", rows, want)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		b.Fatal("no resource usage for the child")
	}
	b.ReportMetric(float64(ru.Maxrss)/1024, "peak-RSS-MiB") // kilobytes on Linux
	b.ReportMetric(float64(want)/wall.Seconds(), "bindings/s")
	b.ReportMetric(time.Duration(ru.Utime.Nano()+ru.Stime.Nano()).Seconds(), "cpu-s")
}

// memoryConfig is the configuration of BenchmarkRunMemory's runs.
func memoryConfig(fake *fakeProcess, pageSize int) []byte {
	var c bytes.Buffer
	fmt.Fprintf(&c, "twilio:\n  base_url: %s\n  account_sid: %s\n  auth_token: %s\n  page_size: %d\n  concurrency: %d\n",
		fake.base, fake.world.AccountSID, twiliotest.DefaultAuthToken, pageSize, exportInFlight)
	c.WriteString("services:\n")
	for _, s := range fake.world.Services {
		fmt.Fprintf(&c, "  - sid: %s\n    strategy: per_user\n    users: all\n", s.SID)
	}
	c.WriteString("staging: staging\nwarehouse:\n  local:\n    path: warehouse\n")
	return c.Bytes()
}

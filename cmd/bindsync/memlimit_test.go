package main

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bindsync/bindsync/twilio/twiliotest"
)

// TestMemoryLimitFromEnvironment runs the binary: an explicit GOMEMLIMIT
// is the limit in force and is logged as such; AUTOMEMLIMIT=off (or no
// container limit) leaves the runtime without one.
func TestMemoryLimitFromEnvironment(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  string
		want string
	}{
		{"GOMEMLIMIT=123MiB", `"bytes":128974848,"source":"GOMEMLIMIT"`},
		{"AUTOMEMLIMIT=off", `"msg":"no Go memory limit"`},
	} {
		e := newE2E(t, twiliotest.WorldSpec{Seed: 3, Services: 1, UsersPerService: 5, MaxBindingsPerUser: 5}, twiliotest.Faults{}, "")
		cmd := exec.Command(binary, "run", "--config", e.config, "--snapshot-date", e2eDay.Format(time.DateOnly))
		cmd.Env = append(e.env(e2eToken), "GOMEMLIMIT=", "AUTOMEMLIMIT=", tc.env)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: run: %v\n%s", tc.env, err, out)
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: log does not hold %s:\n%s", tc.env, tc.want, out)
		}
	}
}

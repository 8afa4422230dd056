// Package metricstest reads Prometheus text exposition for tests: every
// sample by its series, such as `bindsync_runs_total{status="failed"}`.
package metricstest

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
)

// Samples parses the text exposition format into value by series.
func Samples(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("bad sample line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("bad sample line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// Check fails t for every series of want that got lacks or holds with
// another value.
func Check(t testing.TB, got, want map[string]float64) {
	t.Helper()
	for series, w := range want {
		g, ok := got[series]
		if !ok {
			t.Errorf("%s: missing", series)
			continue
		}
		if g != w {
			t.Errorf("%s = %v, want %v", series, g, w)
		}
	}
}

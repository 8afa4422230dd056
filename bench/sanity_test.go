package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

// TestWorkloadsReadEveryBinding runs both benchmark workloads once on a
// small world: each must read every binding, and the pipeline must publish
// each of them exactly once, or the benchmark figures would describe a
// partial or duplicated read.
func TestWorkloadsReadEveryBinding(t *testing.T) {
	f, err := newFixture(twiliotest.WorldSpec{Seed: worldSeed, Services: 2, UsersPerService: 40, MaxBindingsPerUser: maxBindingsPerUser})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := int64(f.world.TotalBindings())
	if want < 2*twiliotest.HeavyBindings {
		t.Fatalf("test setup: the world has only %d bindings", want)
	}
	ctx := context.Background()
	dir := t.TempDir()

	tests := []struct {
		name string
		run  func() (int64, error)
	}{
		{"decode only", func() (int64, error) { return f.decodeAll(ctx) }},
		{"pipeline", func() (int64, error) {
			res, err := f.pipeline(ctx, dir, 0)
			if err != nil {
				return 0, err
			}
			if len(res.Parts) == 0 || len(res.Published) != 1 {
				t.Errorf("pipeline committed %d parts and published to %q, want at least one part and one warehouse", len(res.Parts), res.Published)
			}
			published, err := publishedRows(t, exporter.LocalWarehouse{Path: filepath.Join(dir, "warehouse")})
			if err != nil {
				return 0, err
			}
			if published != res.Rows {
				t.Errorf("the warehouse holds %d distinct bindings, the run reported %d rows", published, res.Rows)
			}
			return res.Rows, nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.run()
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("read %d bindings, want %d", got, want)
			}
			if err := checkCount(f, got); err != nil {
				t.Errorf("checkCount(%d) = %v, want nil", got, err)
			}
		})
	}
	if err := checkCount(f, want+1); err == nil {
		t.Errorf("checkCount(%d) = nil, want an error", want+1)
	}
}

// publishedRows counts the distinct bindings of the snapshot published in
// wh, failing the test when a binding SID appears twice.
func publishedRows(t *testing.T, wh exporter.LocalWarehouse) (int64, error) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(wh.SnapshotDir(snapshotDate), "*.parquet"))
	if err != nil {
		return 0, err
	}
	seen := map[string]bool{}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			return 0, err
		}
		err = exporter.ReadParquetFile(context.Background(), bytes.NewReader(data), int64(len(data)), func(r schemas.Row) error {
			if seen[*r.Binding.SID] {
				t.Errorf("binding %s published twice", *r.Binding.SID)
			}
			seen[*r.Binding.SID] = true
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("read %s: %w", name, err)
		}
	}
	return int64(len(seen)), nil
}

// TestHeapSamplerSeesAllocation holds a large allocation while the sampler
// runs: its peak must be at least that much above the heap before.
func TestHeapSamplerSeesAllocation(t *testing.T) {
	const size = 48 << 20
	samples := newHeapSamples()
	settleHeap()
	before := readHeap(samples)
	s := startHeapSampler(sampleEvery)
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte(i)
	}
	peak := s.Stop()
	runtime.KeepAlive(buf)
	if got := above(peak.objects, before.objects); got < size {
		t.Errorf("peak heap above the start = %d bytes, want at least %d", got, size)
	}
	after := readHeap(samples)
	if got := after.allocated - before.allocated; got < size {
		t.Errorf("allocated during the test = %d bytes, want at least %d", got, size)
	}
}

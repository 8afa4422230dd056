package exporter

import (
	"context"
	"encoding/base64"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"testing"
	"time"

	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio"
)

// benchBinding is binding i of a synthetic account on day (0 or 1),
// shaped like real ones: 34-character SIDs, a URL of some 150 characters
// and a push token of 152. On day 1, 2% of day 0's bindings are gone, 5%
// updated, and 1% are new.
func benchBinding(i, day int) (twilio.Binding, bool) {
	h := fnv.New64a()
	fmt.Fprint(h, i)
	x := h.Sum64()
	if day == 1 && x%100 < 2 {
		return twilio.Binding{}, false
	}
	svc := fmt.Sprintf("IS%032x", x%4)
	sid := fmt.Sprintf("BS%016x%016x", x, uint64(i))
	user := fmt.Sprintf("US%032x", i/3)
	created := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(x%(3*365*24*3600)) * time.Second)
	updated := created
	// A push token is random: 114 bytes in base64, 152 characters.
	raw := make([]byte, 114)
	rng := rand.New(rand.NewPCG(x, uint64(i)))
	for j := range raw {
		raw[j] = byte(rng.Uint32())
	}
	if day == 1 && x%100 >= 2 && x%100 < 7 {
		updated = created.Add(24 * time.Hour)
		raw[0]++
	}
	token := base64.RawURLEncoding.EncodeToString(raw)
	typ := twilio.BindingTypes[x%3]
	b := twilio.Binding{
		SID: &sid, AccountSID: ptr("AC" + fmt.Sprintf("%032x", 1)), ServiceSID: &svc,
		DateCreated: &created, DateUpdated: &updated, Endpoint: &token,
		Identity: ptr(fmt.Sprintf("customer-%08d@example.com", i/3)), UserSID: &user,
		CredentialSID: ptr(fmt.Sprintf("CR%032x", x%3)), BindingType: &typ,
		MessageTypes: []string{"new_message", "added_to_channel"},
		URL:          ptr("https://chat.twilio.com/v2/Services/" + svc + "/Users/" + user + "/Bindings/" + sid),
	}
	return b, true
}

// writeBenchParts writes the snapshot of day (rows bindings, plus 1% new
// on day 1) as parts of 500,000 rows.
func writeBenchParts(b *testing.B, store staging.Store, rows, day int) []PartInfo {
	b.Helper()
	ctx := context.Background()
	meta := schemas.RowMeta{SnapshotDate: time.Date(2026, 11, 20+day, 0, 0, 0, 0, time.UTC), SyncedAt: time.Date(2026, 11, 20+day, 2, 0, 0, 0, time.UTC)}
	var parts []PartInfo
	var w *PartWriter
	batch := make([]twilio.Binding, 0, 1000)
	flush := func() {
		if err := w.Append(batch); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	total := rows
	if day == 1 {
		total += rows / 100
	}
	for i := range total {
		if w == nil {
			var err error
			if w, err = NewPartWriter(ctx, store, fmt.Sprintf("day%d/part-%05d.parquet", day, len(parts)), meta, PartOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		if bd, ok := benchBinding(i, day); ok {
			batch = append(batch, bd)
		}
		if len(batch) == cap(batch) {
			flush()
		}
		if w.Rows()+int64(len(batch)) >= 500_000 || i == total-1 {
			flush()
			info, err := w.Close()
			if err != nil {
				b.Fatal(err)
			}
			parts = append(parts, info)
			w = nil
		}
	}
	return parts
}

// heapPeak samples the bytes of live and dead heap objects every 5 ms.
type heapPeak struct {
	stop chan struct{}
	done chan uint64
}

func startHeapPeak() *heapPeak {
	p := &heapPeak{stop: make(chan struct{}), done: make(chan uint64)}
	go func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		var peak uint64
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
			select {
			case <-p.stop:
				p.done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

func (p *heapPeak) Stop() uint64 {
	close(p.stop)
	return <-p.done
}

// BenchmarkChanges builds the digests of two daily snapshots from their
// parts and the changes between them: twice the work a publish adds for
// the changes table. BINDSYNC_BENCH_ROWS sets the size (default 200,000
// bindings). from=runs merges the digests from the runs written beside
// the parts, as publishing does; from=parts reads the parts back and
// sorts their rows (a part without usable runs). Measured on a shared
// 2-core machine (AMD EPYC):
//
//	bindings   from   time    rows/s   peak-heap-MiB  digest-B/row  changes
//	  200,000  runs    2.4s  165,500    42            161           15,884
//	  200,000  parts   4.8s   83,200    80            161           15,884
//	1,000,000  runs   14.6s  136,900    73            164           79,342
//	1,000,000  parts  20.7s   96,800    80            164           79,342
//
// Before runs, from parts only: 44,500 rows/s and a peak heap of 155 MiB
// for 5,000,000 bindings (224.5 s).
//
// peak-heap-MiB is the highest heap (live and garbage) sampled during the
// work, above the heap before it: the sort's buffer (DefaultSortBytes,
// from=parts), a row group of the parts being read (from=parts), the row
// group of changes being written (up to DefaultRowGroupRows rows) and the
// runs being merged (at most mergeFanIn, half a megabyte each). It stops
// growing once the changes fill a row group.
func BenchmarkChanges(b *testing.B) {
	rows := 200_000
	if v := os.Getenv("BINDSYNC_BENCH_ROWS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("BINDSYNC_BENCH_ROWS=%q: want a positive number", v)
		}
		rows = n
	}
	store, err := staging.NewDir(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	day0 := writeBenchParts(b, store, rows, 0)
	day1 := writeBenchParts(b, store, rows, 1)
	// from=runs is publishing as it is done (digests merged from the runs
	// written beside the parts); from=parts reads the parts back and sorts
	// their rows, as when a part has no usable runs.
	for _, fromRuns := range []bool{true, false} {
		name := "from=parts"
		if fromRuns {
			name = "from=runs"
		}
		b.Run(name, func(b *testing.B) { benchChanges(b, store, rows, day0, day1, fromRuns) })
	}
}

func benchChanges(b *testing.B, store staging.Store, rows int, day0, day1 []PartInfo, fromRuns bool) {
	ctx := context.Background()
	digest := func(name string, date time.Time, parts []PartInfo, opts DigestOptions) (DigestInfo, error) {
		if fromRuns {
			info, _, err := WritePartsDigest(ctx, store, name, date, parts, opts)
			return info, err
		}
		return WriteDigest(ctx, store, name, date, PartsSource(store, parts), opts)
	}
	tmp := b.TempDir()
	var peak uint64
	var digestBytes, changes int64
	for b.Loop() {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		sampler := startHeapPeak()
		d0, err := digest("digest-0", time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC), day0, DigestOptions{TempDir: tmp})
		if err != nil {
			b.Fatal(err)
		}
		d1, err := digest("digest-1", time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC), day1, DigestOptions{TempDir: tmp})
		if err != nil {
			b.Fatal(err)
		}
		prev := DigestRef{Store: store, Name: d0.Name, Date: time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC), Info: d0}
		info, err := WriteChanges(ctx, ChangesOptions{Previous: &prev, Current: DigestRef{Store: store, Name: d1.Name, Date: time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC), Info: d1}, Store: store, Name: "changes.parquet"})
		if err != nil {
			b.Fatal(err)
		}
		p := sampler.Stop()
		if p > before.HeapAlloc {
			peak = max(peak, p-before.HeapAlloc)
		}
		digestBytes, changes = d1.Bytes, info.Part.Rows
	}
	b.ReportMetric(float64(rows), "bindings")
	b.ReportMetric(float64(rows)*2*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(digestBytes)/float64(rows), "digest-B/row")
	b.ReportMetric(float64(changes), "changes")
}

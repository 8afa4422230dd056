package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/twilio/twiliotest"
	"github.com/bindsync/bindsync/worker"
)

// Workload of every benchmark. MaxBindingsPerUser 120 gives about 30
// bindings per user on average (see twiliotest.WorldSpec), so the shared
// world holds about 120,000 bindings in some 5,300 pages.
const (
	worldSeed          = 7
	worldServices      = 2
	usersPerService    = 2000
	maxBindingsPerUser = 120
	pageSize           = 50
	// concurrency is the worker's default: users read at once, and the
	// client's cap on requests in flight.
	concurrency = 16
	// sampleEvery is the period of the heap sampler.
	sampleEvery = 5 * time.Millisecond
)

// snapshotDate is the date every pipeline run writes; each iteration has a
// directory of its own, so no run finds an earlier one's snapshot.
var snapshotDate = time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)

// fixture is one fake Twilio serving one world, and the client both
// workloads read it with.
type fixture struct {
	world    *twiliotest.World
	srv      *twiliotest.Server
	client   *twilio.Client
	services []worker.Service
	// warmPages is the requests (users and bindings pages) one complete
	// read of the world takes, counted during warm.
	warmPages int64
}

// newFixture starts a server for the world of spec. Close it when done.
func newFixture(spec twiliotest.WorldSpec) (*fixture, error) {
	world := twiliotest.NewWorld(spec)
	srv := twiliotest.NewServer(twiliotest.Options{World: world})
	client, err := twilio.New(twilio.Config{
		BaseURL:     srv.URL(),
		Username:    world.AccountSID,
		Password:    twiliotest.DefaultAuthToken,
		MaxInFlight: concurrency,
	})
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("twilio client for the fake server: %w", err)
	}
	f := &fixture{world: world, srv: srv, client: client}
	for _, s := range world.Services {
		// User by user, as the decode-only baseline reads them, so that
		// the gap between the two is what exporting costs.
		f.services = append(f.services, worker.Service{SID: s.SID, AllUsers: true, Strategy: worker.StrategyPerUser})
	}
	return f, nil
}

// warm reads the whole world once, unmeasured, so that the server's
// per-page bookkeeping has reached its full size and the client's
// connections are open before the first measured iteration.
func (f *fixture) warm(ctx context.Context) error {
	before := f.srv.Stats().Requests
	n, err := f.decodeAll(ctx)
	if err != nil {
		return fmt.Errorf("warm up: %w", err)
	}
	f.warmPages = f.srv.Stats().Requests - before
	if want := int64(f.world.TotalBindings()); n != want {
		return fmt.Errorf("warm up: read %d bindings, the world has %d", n, want)
	}
	return nil
}

// Close stops the fake server.
func (f *fixture) Close() { f.srv.Close() }

// describe logs the size of the world, to read bindings/s against.
func (f *fixture) describe(b *testing.B) {
	b.Helper()
	users := 0
	for _, s := range f.world.Services {
		users += len(s.Users)
	}
	b.Logf("world: %d services, %d users, %d bindings, %d pages (users and bindings) at PageSize %d",
		len(f.world.Services), users, f.world.TotalBindings(), f.warmPages, pageSize)
}

// decodeAll is the baseline workload: list the users of every service and
// page through every user's bindings, at most concurrency users at once,
// decoding every page and dropping it. It returns the bindings read.
func (f *fixture) decodeAll(ctx context.Context) (int64, error) {
	type user struct{ service, sid string }
	var total atomic.Int64
	users := make(chan user, concurrency) // as the worker: the lister runs a little ahead
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(users)
		for _, svc := range f.services {
			next := ""
			for {
				page, err := f.client.ListUsers(gctx, twilio.UsersQuery{ServiceSID: svc.SID, PageSize: pageSize, Next: next})
				if err != nil {
					return err
				}
				for _, u := range page.Users {
					select {
					case users <- user{svc.SID, u.SID}:
					case <-gctx.Done():
						return gctx.Err()
					}
				}
				if page.Next == "" {
					break
				}
				next = page.Next
			}
		}
		return nil
	})
	for range concurrency {
		g.Go(func() error {
			for u := range users {
				n, err := f.decodeUser(gctx, u.service, u.sid)
				if err != nil {
					return err
				}
				total.Add(n)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	return total.Load(), nil
}

// decodeUser pages through the bindings of one user and returns how many
// there were.
func (f *fixture) decodeUser(ctx context.Context, serviceSID, userSID string) (int64, error) {
	q := twilio.BindingsQuery{ServiceSID: serviceSID, User: userSID, PageSize: pageSize}
	var n int64
	for {
		page, err := f.client.ListBindings(ctx, q)
		if err != nil {
			return n, err
		}
		n += int64(len(page.Bindings))
		if page.Next == "" {
			return n, nil
		}
		q.Next = page.Next
	}
}

// pipeline runs the whole snapshot into a staging store and a local
// warehouse under dir, which must not hold an earlier snapshot. partRows 0
// keeps the worker's default part size.
func (f *fixture) pipeline(ctx context.Context, dir string, partRows int) (*worker.Result, error) {
	store, err := staging.NewDir(filepath.Join(dir, "staging"))
	if err != nil {
		return nil, fmt.Errorf("staging store: %w", err)
	}
	opts := worker.Options{
		Services:    f.services,
		PageSize:    pageSize,
		Concurrency: concurrency,
		Store:       store,
		Publishers:  []exporter.Publisher{exporter.LocalWarehouse{Path: filepath.Join(dir, "warehouse")}},
		PartRows:    partRows,
	}
	res, err := worker.Run(ctx, f.client, opts, snapshotDate)
	if err != nil {
		return nil, fmt.Errorf("pipeline run: %w", err)
	}
	return res, nil
}

// shared is the fixture BenchmarkDecodeOnly and BenchmarkPipeline both
// measure against, started by the first of them and closed by TestMain.
var shared struct {
	once sync.Once
	f    *fixture
	err  error
}

func sharedFixture(b *testing.B) *fixture {
	b.Helper()
	shared.once.Do(func() {
		shared.f, shared.err = newFixture(twiliotest.WorldSpec{
			Seed:               worldSeed,
			Services:           worldServices,
			UsersPerService:    usersPerService,
			MaxBindingsPerUser: maxBindingsPerUser,
		})
		if shared.err == nil {
			shared.err = shared.f.warm(context.Background())
		}
	})
	if shared.err != nil {
		b.Fatal(shared.err)
	}
	shared.f.describe(b)
	return shared.f
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.f != nil {
		shared.f.Close()
	}
	if exportFake.p != nil {
		exportFake.p.stop()
	}
	os.Exit(code)
}

// Names of the runtime/metrics samples the figures come from.
const (
	heapObjectsMetric = "/memory/classes/heap/objects:bytes"
	heapLiveMetric    = "/gc/heap/live:bytes"
	heapAllocsMetric  = "/gc/heap/allocs:bytes"
)

// heapReading is one reading of the heap metrics, in bytes.
type heapReading struct {
	// objects is the heap of live objects and of garbage not yet swept.
	objects uint64
	// live is what the last completed collection found alive.
	live uint64
	// allocated is the heap allocated since the program started.
	allocated uint64
}

// newHeapSamples returns the samples readHeap fills; one set per goroutine.
func newHeapSamples() []metrics.Sample {
	return []metrics.Sample{{Name: heapObjectsMetric}, {Name: heapLiveMetric}, {Name: heapAllocsMetric}}
}

func readHeap(s []metrics.Sample) heapReading {
	metrics.Read(s)
	return heapReading{objects: s[0].Value.Uint64(), live: s[1].Value.Uint64(), allocated: s[2].Value.Uint64()}
}

// heapSampler records the highest heap seen while it runs.
type heapSampler struct {
	stop chan struct{}
	done chan heapReading
}

// startHeapSampler reads the heap every period until Stop.
func startHeapSampler(period time.Duration) *heapSampler {
	s := &heapSampler{stop: make(chan struct{}), done: make(chan heapReading, 1)}
	go func() {
		samples := newHeapSamples()
		var peak heapReading
		sample := func() {
			r := readHeap(samples)
			peak.objects = max(peak.objects, r.objects)
			peak.live = max(peak.live, r.live)
		}
		sample()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				sample()
			case <-s.stop:
				sample()
				s.done <- peak
				return
			}
		}
	}()
	return s
}

// Stop ends the sampling and returns the highest objects and live heap
// seen; allocated is left zero.
func (s *heapSampler) Stop() heapReading {
	close(s.stop)
	return <-s.done
}

// outcome is what one iteration of a workload did.
type outcome struct {
	bindings int64
	parts    int
}

// figures accumulates the measurements of a benchmark's iterations. Peaks
// are the highest over the iterations, each above the heap just before
// its iteration, in bytes.
type figures struct {
	bindings  int64
	allocated uint64
	peakHeap  uint64
	peakLive  uint64
	parts     int // of the last iteration
}

// measure runs one iteration of work with the timer on and the heap
// sampled. It expects the timer on and leaves it on, as b.Loop requires;
// the forced collection and the sampler setup around work are not timed.
func (fig *figures) measure(b *testing.B, work func() (outcome, error)) {
	b.Helper()
	samples := newHeapSamples()
	b.StopTimer()
	settleHeap()
	before := readHeap(samples)
	sampler := startHeapSampler(sampleEvery)
	b.StartTimer()
	out, err := work()
	b.StopTimer()
	peak := sampler.Stop()
	after := readHeap(samples)
	if err != nil {
		b.Fatal(err)
	}
	fig.bindings += out.bindings
	fig.allocated += after.allocated - before.allocated
	fig.peakHeap = max(fig.peakHeap, above(peak.objects, before.objects))
	fig.peakLive = max(fig.peakLive, above(peak.live, before.live))
	fig.parts = out.parts
	b.StartTimer()
}

// settleHeap collects twice: the first collection moves sync.Pool
// contents to the pools' victim caches, the second frees them, so a
// reading right after holds only what is really alive and the pools'
// leftovers are not freed during the next measurement, under its baseline.
func settleHeap() {
	runtime.GC()
	runtime.GC()
}

// above is a-b, or 0 when a is not above b.
func above(a, b uint64) uint64 {
	if a <= b {
		return 0
	}
	return a - b
}

// report sends the figures to the benchmark output; call it after the loop.
func (fig *figures) report(b *testing.B, withParts bool) {
	b.Helper()
	if fig.bindings == 0 {
		b.Fatal("no bindings were read")
	}
	b.ReportMetric(float64(fig.bindings)/b.Elapsed().Seconds(), "bindings/s")
	b.ReportMetric(float64(fig.peakHeap)/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(fig.peakLive)/(1<<20), "peak-live-MiB")
	b.ReportMetric(float64(fig.allocated)/float64(fig.bindings), "B/binding")
	if withParts {
		b.ReportMetric(float64(fig.parts), "parts")
	}
}

// checkCount fails the benchmark when a workload read another number of
// bindings than the world holds: a figure over a partial read means nothing.
func checkCount(f *fixture, got int64) error {
	if want := int64(f.world.TotalBindings()); got != want {
		return fmt.Errorf("read %d bindings, the world has %d", got, want)
	}
	return nil
}

// BenchmarkDecodeOnly is the baseline: the client alone reading every
// binding of the shared world.
func BenchmarkDecodeOnly(b *testing.B) {
	f := sharedFixture(b)
	ctx := context.Background()
	var fig figures
	for b.Loop() {
		fig.measure(b, func() (outcome, error) {
			n, err := f.decodeAll(ctx)
			if err == nil {
				err = checkCount(f, n)
			}
			return outcome{bindings: n}, err
		})
	}
	fig.report(b, false)
}

// BenchmarkPipeline is the whole snapshot of the shared world, end to end.
func BenchmarkPipeline(b *testing.B) {
	benchPipeline(b, sharedFixture(b), 0)
}

// Worlds of BenchmarkPipelineScaling: the same shape as the shared world,
// the large one with four times the users. Parts are kept below the
// exporter's row group (exporter.DefaultRowGroupRows), so that both worlds
// fill several parts and the buffered part reaches its full size in both:
// with the default part size the small world would never fill one row
// group and its peak would be lower for that reason alone.
var scalingUsers = []int{1000, 4000}

const scalingPartRows = 25_000

// BenchmarkPipelineScaling runs the pipeline on a small and a large world;
// compare their peak-heap-MiB. It reports figures only.
func BenchmarkPipelineScaling(b *testing.B) {
	for _, users := range scalingUsers {
		b.Run(fmt.Sprintf("users=%d", users*worldServices), func(b *testing.B) {
			f, err := newFixture(twiliotest.WorldSpec{
				Seed:               worldSeed,
				Services:           worldServices,
				UsersPerService:    users,
				MaxBindingsPerUser: maxBindingsPerUser,
			})
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if err := f.warm(context.Background()); err != nil {
				b.Fatal(err)
			}
			f.describe(b)
			benchPipeline(b, f, scalingPartRows)
		})
	}
}

// benchPipeline measures worker.Run on f, each iteration into a fresh
// directory that is removed afterwards (untimed).
func benchPipeline(b *testing.B, f *fixture, partRows int) {
	b.Helper()
	ctx := context.Background()
	root := b.TempDir()
	var fig figures
	for b.Loop() {
		b.StopTimer()
		dir, err := os.MkdirTemp(root, "run-")
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		fig.measure(b, func() (outcome, error) {
			res, err := f.pipeline(ctx, dir, partRows)
			if err != nil {
				return outcome{}, err
			}
			return outcome{bindings: res.Rows, parts: len(res.Parts)}, checkCount(f, res.Rows)
		})
		b.StopTimer()
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	fig.report(b, true)
}

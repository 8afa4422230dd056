package bench

// Benchmarks of how well bindsync uses Twilio's latency and the account's
// concurrency limit (issue 8, parts 2 and 3), against the in-process fake
// with a latency per request:
//
//   - BenchmarkConcurrencyLimit: 20 ms per request, an account limit of 8
//     requests in flight (429 past it, no Retry-After), bindsync allowed 32.
//     The ideal is 8 / 20 ms = 400 requests/s.
//   - BenchmarkLatencyBound: 50 ms per request, 16 in flight, no limit. The
//     ideal is 16 / 50 ms = 320 requests/s.
//
//   - BenchmarkSparseWorld: 20 ms per request, 16 in flight, no limit, three
//     services of 1,000 users read end to end with each strategy: per_user
//     (a request per user at least) and service (one Users list and one
//     Bindings list per service, users/100 + bindings/50 requests).
//   - BenchmarkAccountLimits: 50 ms per request, an account limit of N for
//     N of 4, 16 and 64, bindsync allowed N and 4N, 300×N users.
//
// The worlds above are small, for a quick look; `make bench` reads the
// first three on the world of issue 8 instead (BINDSYNC_BENCH_LOAD_WORLD=3x3000,
// see loadWorld), once each.
//
// Each reads a sparse world (most users have 0 to 2 bindings, so about one
// bindings page per user) either with the Twilio client alone ("client":
// one goroutine lists the users, as many fetchers as the concurrency read
// their bindings) or with worker.Run end to end ("pipeline", user by user
// unless the case names the service strategy). Each iteration starts with
// a new client, so a figure includes the limiter's slow start and its
// first 429s.
//
// Figures (means over the iterations):
//
//   - req/s: answers with status 200 per second of the iteration;
//   - ideal-req/s and ratio: N ÷ latency, and req/s over it;
//   - 429s: answers 429 per iteration, and 429-pct their share of requests;
//   - failed-users: users that could not be read;
//   - req/user: requests (of every status) per user;
//   - users/s: users read per second, with ns/op the figure that compares
//     the strategies: the service walk makes few requests, one after the
//     other within a service, so its req/s stays far below the ideal
//     while it reads the users sooner;
//   - cap: the client's cap on requests in flight at the end.
//
// A benchmark prints figures; no test asserts a duration.

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/twilio/twiliotest"
	"github.com/bindsync/bindsync/worker"
)

// loadCase is one setting of the fake and the client.
type loadCase struct {
	latency time.Duration
	// limit is the account's limit on requests in flight; 0 is none.
	limit int
	// inFlight is bindsync's concurrency: the client's MaxInFlight, and the
	// fetchers or the worker's users at once.
	inFlight      int
	noLoadHeaders bool
	world         twiliotest.WorldSpec
	// strategy is the pipeline's way of reading the services; "" is
	// per_user.
	strategy worker.Strategy
}

// ideal is the requests per second that the limit, or the concurrency when
// there is none, allows at the latency.
func (lc loadCase) ideal() float64 {
	n := lc.inFlight
	if lc.limit > 0 {
		n = min(n, lc.limit)
	}
	return float64(n) / lc.latency.Seconds()
}

// sparseWorld is a world where most users have 0 to 2 bindings: the cost is
// the number of requests, not the bytes.
func sparseWorld(services, users int) twiliotest.WorldSpec {
	return twiliotest.WorldSpec{Seed: worldSeed, Services: services, UsersPerService: users, MaxBindingsPerUser: 2}
}

// loadWorld is sparseWorld(services, users), or the world that
// BINDSYNC_BENCH_LOAD_WORLD names as SERVICESxUSERS (users per service),
// for a measurement on the world of issue 8 ("3x3000"), where a run's fixed
// cost (lock, checkpoint, publishing: 60 to 80 ms) weighs less than on the
// short default runs.
func loadWorld(b *testing.B, services, users int) twiliotest.WorldSpec {
	if v := os.Getenv("BINDSYNC_BENCH_LOAD_WORLD"); v != "" {
		if _, err := fmt.Sscanf(v, "%dx%d", &services, &users); err != nil || services < 1 || users < 1 {
			b.Fatalf("BINDSYNC_BENCH_LOAD_WORLD=%q: want SERVICESxUSERS, such as 3x3000", v)
		}
	}
	return sparseWorld(services, users)
}

// loadRun is what one iteration did.
type loadRun struct {
	elapsed     time.Duration
	ok, n429    int64
	requests    int64
	users       int64
	failedUsers int64
	cap         int
}

// loadFigures sums the iterations of a benchmark.
type loadFigures struct {
	runs []loadRun
}

func (lf *loadFigures) report(b *testing.B, lc loadCase) {
	b.Helper()
	var elapsed time.Duration
	var ok, n429, requests, users, failed int64
	for _, r := range lf.runs {
		elapsed += r.elapsed
		ok += r.ok
		n429 += r.n429
		requests += r.requests
		users += r.users
		failed += r.failedUsers
	}
	if ok == 0 || users == 0 {
		b.Fatal("nothing was read")
	}
	iterations := float64(len(lf.runs))
	rate := float64(ok) / elapsed.Seconds()
	b.ReportMetric(rate, "req/s")
	b.ReportMetric(lc.ideal(), "ideal-req/s")
	b.ReportMetric(rate/lc.ideal(), "ratio")
	b.ReportMetric(float64(n429)/iterations, "429s")
	b.ReportMetric(100*float64(n429)/float64(requests), "429-pct")
	b.ReportMetric(float64(failed)/iterations, "failed-users")
	b.ReportMetric(float64(requests)/float64(users), "req/user")
	b.ReportMetric(float64(users)/elapsed.Seconds(), "users/s")
	b.ReportMetric(float64(lf.runs[len(lf.runs)-1].cap), "cap")
}

// newLoadServer starts the fake of lc. Close it when done.
func newLoadServer(lc loadCase) *twiliotest.Server {
	return twiliotest.NewServer(twiliotest.Options{
		World:         twiliotest.NewWorld(lc.world),
		NoLoadHeaders: lc.noLoadHeaders,
		Faults:        twiliotest.Faults{Latency: lc.latency, MaxConcurrent: lc.limit},
	})
}

func newLoadClient(srv *twiliotest.Server, lc loadCase) (*twilio.Client, error) {
	c, err := twilio.New(twilio.Config{
		BaseURL:     srv.URL(),
		Username:    srv.World().AccountSID,
		Password:    twiliotest.DefaultAuthToken,
		MaxInFlight: lc.inFlight,
	})
	if err != nil {
		return nil, fmt.Errorf("twilio client for the fake server: %w", err)
	}
	return c, nil
}

// measureLoad runs one iteration of work against srv with a new client, and
// counts what the server answered during it.
func measureLoad(b *testing.B, srv *twiliotest.Server, lc loadCase, work func(*twilio.Client) (users, failed int64, err error)) loadRun {
	b.Helper()
	c, err := newLoadClient(srv, lc)
	if err != nil {
		b.Fatal(err)
	}
	before := srv.Stats()
	start := time.Now()
	users, failed, err := work(c)
	elapsed := time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	after := srv.Stats()
	return loadRun{
		elapsed:     elapsed,
		ok:          after.ByStatus[200] - before.ByStatus[200],
		n429:        after.ByStatus[429] - before.ByStatus[429],
		requests:    after.Requests - before.Requests,
		users:       users,
		failedUsers: failed,
		cap:         c.InFlightLimit(),
	}
}

// readWithClient is the client-alone workload: one goroutine lists the
// users of every service, lc.inFlight fetchers page through their
// bindings. A user whose read fails is counted and skipped. The lister may
// run two Users pages ahead, so that the fetchers never wait for it: this
// is the client's ceiling, which the pipeline is to reach.
func readWithClient(ctx context.Context, c *twilio.Client, world *twiliotest.World, fetchers int) (users, failed int64, err error) {
	type user struct{ service, sid string }
	queue := make(chan user, 2*twilio.MaxUsersPageSize)
	var nUsers, nFailed atomic.Int64
	var wg sync.WaitGroup
	for range fetchers {
		wg.Go(func() {
			for u := range queue {
				nUsers.Add(1)
				q := twilio.BindingsQuery{ServiceSID: u.service, User: u.sid, PageSize: twilio.MaxBindingsPageSize}
				for {
					page, err := c.ListBindings(ctx, q)
					if err != nil {
						nFailed.Add(1)
						break
					}
					if page.Next == "" {
						break
					}
					q.Next = page.Next
				}
			}
		})
	}
	defer func() {
		close(queue)
		wg.Wait()
		users, failed = nUsers.Load(), nFailed.Load()
	}()
	for _, svc := range world.Services {
		q := twilio.UsersQuery{ServiceSID: svc.SID, PageSize: twilio.MaxUsersPageSize}
		for {
			page, err := c.ListUsers(ctx, q)
			if err != nil {
				return 0, 0, fmt.Errorf("list users of %s: %w", svc.SID, err)
			}
			for _, u := range page.Users {
				queue <- user{svc.SID, u.SID}
			}
			if page.Next == "" {
				break
			}
			q.Next = page.Next
		}
	}
	return 0, 0, nil
}

// readWithPipeline runs worker.Run on every service of world into dir,
// reading the services with strategy ("" is per_user).
func readWithPipeline(ctx context.Context, c *twilio.Client, world *twiliotest.World, concurrency int, dir string, strategy worker.Strategy) (users, failed int64, err error) {
	store, err := staging.NewDir(filepath.Join(dir, "staging"))
	if err != nil {
		return 0, 0, fmt.Errorf("staging store: %w", err)
	}
	var services []worker.Service
	for _, s := range world.Services {
		services = append(services, worker.Service{SID: s.SID, AllUsers: true, Strategy: cmp.Or(strategy, worker.StrategyPerUser)})
		users += int64(len(s.Users))
	}
	res, err := worker.Run(ctx, c, worker.Options{
		Services:    services,
		Concurrency: concurrency,
		Store:       store,
		Publishers:  []exporter.Publisher{exporter.LocalWarehouse{Path: filepath.Join(dir, "warehouse")}},
	}, snapshotDate)
	if res != nil {
		failed = int64(len(res.Failed))
	}
	if err != nil && failed == 0 {
		return users, failed, fmt.Errorf("pipeline run: %w", err)
	}
	return users, failed, nil
}

// benchLoad runs the client-alone and the pipeline workloads of lc.
func benchLoad(b *testing.B, lc loadCase, pipeline bool) {
	srv := newLoadServer(lc)
	defer srv.Close()
	ctx := context.Background()
	root := b.TempDir()
	var fig loadFigures
	for b.Loop() {
		if !pipeline {
			fig.runs = append(fig.runs, measureLoad(b, srv, lc, func(c *twilio.Client) (int64, int64, error) {
				return readWithClient(ctx, c, srv.World(), lc.inFlight)
			}))
			continue
		}
		b.StopTimer()
		dir, err := os.MkdirTemp(root, "run-")
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		fig.runs = append(fig.runs, measureLoad(b, srv, lc, func(c *twilio.Client) (int64, int64, error) {
			return readWithPipeline(ctx, c, srv.World(), lc.inFlight, dir, lc.strategy)
		}))
		b.StopTimer()
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	fig.report(b, lc)
}

// BenchmarkConcurrencyLimit: 20 ms latency, an account limit of 8 in flight,
// bindsync allowed 32; the client alone with and without Twilio's load
// headers, and the pipeline. About 5 s per sub-benchmark at -benchtime 3x.
func BenchmarkConcurrencyLimit(b *testing.B) {
	lc := loadCase{latency: 20 * time.Millisecond, limit: 8, inFlight: 32, world: loadWorld(b, 1, 600)}
	b.Run("client", func(b *testing.B) { benchLoad(b, lc, false) })
	noHeaders := lc
	noHeaders.noLoadHeaders = true
	b.Run("client-no-load-headers", func(b *testing.B) { benchLoad(b, noHeaders, false) })
	pipe := lc
	pipe.world = loadWorld(b, 2, 300)
	b.Run("pipeline", func(b *testing.B) { benchLoad(b, pipe, true) })
}

// BenchmarkLatencyBound: 50 ms latency, 16 in flight, no account limit; the
// client alone (the ceiling) and the pipeline, which is to keep every slot
// busy across users and services. About 6 s per sub-benchmark at
// -benchtime 3x.
func BenchmarkLatencyBound(b *testing.B) {
	lc := loadCase{latency: 50 * time.Millisecond, inFlight: 16, world: loadWorld(b, 1, 600)}
	b.Run("client", func(b *testing.B) { benchLoad(b, lc, false) })
	pipe := lc
	pipe.world = loadWorld(b, 2, 300)
	b.Run("pipeline", func(b *testing.B) { benchLoad(b, pipe, true) })
}

// BenchmarkAccountLimits: 50 ms latency, an account limit of N in flight
// (429 past it, no Retry-After) for N of 4, 16 and 64, bindsync allowed N
// and 4N; the client alone and the pipeline, on a world of 300×N users so
// that each run lasts about 15 s, the client's slow start (some 6 round
// trips to reach 64) and the pipeline's fixed costs included: on runs of
// 5 s those two weigh three times as much (0.88 instead of 0.92 at N = 64),
// which says more about the benchmark than about a nightly run. The ideal
// is N ÷ 50 ms.
func BenchmarkAccountLimits(b *testing.B) {
	for _, n := range []int{4, 16, 64} {
		for _, allowed := range []int{n, 4 * n} {
			lc := loadCase{latency: 50 * time.Millisecond, limit: n, inFlight: allowed, world: sparseWorld(1, 300*n)}
			b.Run(fmt.Sprintf("N=%d/concurrency=%d/client", n, allowed), func(b *testing.B) { benchLoad(b, lc, false) })
			b.Run(fmt.Sprintf("N=%d/concurrency=%d/pipeline", n, allowed), func(b *testing.B) { benchLoad(b, lc, true) })
		}
	}
}

// BenchmarkSparseWorld: 20 ms latency, 16 in flight, no account limit; three
// services of 1,000 users, most with 0 to 2 bindings, read end to end with
// each strategy. About 4 s (per_user) and 1 s (service) per iteration on
// the default world.
func BenchmarkSparseWorld(b *testing.B) {
	for _, strategy := range []worker.Strategy{worker.StrategyPerUser, worker.StrategyService} {
		lc := loadCase{latency: 20 * time.Millisecond, inFlight: 16, world: loadWorld(b, 3, 1000), strategy: strategy}
		b.Run(string(strategy), func(b *testing.B) { benchLoad(b, lc, true) })
	}
}

// TestLoadWorkloadsCount runs both load workloads once on a small world
// under an account limit: each must read every user once, with no failure,
// and the server must see one Users page per hundred users and one bindings
// page per user, or the figures above would count something else.
func TestLoadWorkloadsCount(t *testing.T) {
	lc := loadCase{latency: time.Millisecond, limit: 3, inFlight: 12, world: sparseWorld(2, 150)}
	srv := newLoadServer(lc)
	defer srv.Close()
	ctx := context.Background()
	wantUsers := int64(2 * 150)
	wantPages := wantUsers + 2*2 // two Users pages per service
	for _, pipeline := range []bool{false, true} {
		t.Run(fmt.Sprintf("pipeline=%v", pipeline), func(t *testing.T) {
			c, err := newLoadClient(srv, lc)
			if err != nil {
				t.Fatal(err)
			}
			before := srv.Stats()
			var users, failed int64
			if pipeline {
				users, failed, err = readWithPipeline(ctx, c, srv.World(), lc.inFlight, t.TempDir(), "")
			} else {
				users, failed, err = readWithClient(ctx, c, srv.World(), lc.inFlight)
			}
			if err != nil {
				t.Fatal(err)
			}
			after := srv.Stats()
			if users != wantUsers || failed != 0 {
				t.Errorf("read %d users, %d failed; want %d and none", users, failed, wantUsers)
			}
			if pages := after.ByStatus[200] - before.ByStatus[200]; pages != wantPages {
				t.Errorf("server answered %d pages, want %d", pages, wantPages)
			}
			if after.MaxAdmitted > int64(lc.limit) {
				t.Errorf("server admitted %d at once, above its limit %d", after.MaxAdmitted, lc.limit)
			}
		})
	}
}

// TestSparseWorldRequests runs the pipeline once per strategy on a sparse
// world: user by user it costs a Users page per hundred users and a
// bindings page per user; the service walk a Users page per hundred users
// and a Bindings page per fifty bindings, per service. Both read every
// user, with no failure.
func TestSparseWorldRequests(t *testing.T) {
	lc := loadCase{latency: time.Millisecond, inFlight: 8, world: sparseWorld(3, 250)}
	srv := newLoadServer(lc)
	defer srv.Close()
	ctx := context.Background()
	ceil := func(n, d int) int64 { return int64((n + d - 1) / d) }
	for _, strategy := range []worker.Strategy{worker.StrategyPerUser, worker.StrategyService} {
		t.Run(string(strategy), func(t *testing.T) {
			c, err := newLoadClient(srv, lc)
			if err != nil {
				t.Fatal(err)
			}
			var want int64
			for _, s := range srv.World().Services {
				want += ceil(len(s.Users), twilio.MaxUsersPageSize)
				if strategy == worker.StrategyPerUser {
					want += int64(len(s.Users))
					continue
				}
				bindings := 0
				for _, u := range s.Users {
					bindings += u.NumBindings
				}
				want += max(1, ceil(bindings, twilio.MaxServiceBindingsPageSize))
			}
			before := srv.Stats()
			users, failed, err := readWithPipeline(ctx, c, srv.World(), lc.inFlight, t.TempDir(), strategy)
			if err != nil {
				t.Fatal(err)
			}
			if users != 3*250 || failed != 0 {
				t.Errorf("read %d users, %d failed; want %d and none", users, failed, 3*250)
			}
			if got := srv.Stats().Requests - before.Requests; got != want {
				t.Errorf("%d requests, want %d", got, want)
			}
		})
	}
}

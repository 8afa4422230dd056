package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/twilio/bindjson"
	"github.com/bindsync/bindsync/twilio/twiliotest"
	"github.com/bindsync/bindsync/worker"
)

// The world of BenchmarkExport, served by faketwilio in a process of its
// own so that its CPU and memory are not the benchmark's: about 300,000
// bindings (2 services of 5,000 users, 30 bindings each on average).
const (
	exportUsersPerService = 5000
	// exportInFlight is the users read at once and the requests in flight.
	exportInFlight = 32
)

// exportPageSizes are the bindings page sizes measured: Twilio's documented
// largest for this list (50), and 1,000, which the fake accepts, for pages
// twenty times longer.
var exportPageSizes = []int{50, 1000}

// fakeProcess is faketwilio running as a child process.
type fakeProcess struct {
	cmd   *exec.Cmd
	base  string // http://127.0.0.1:port
	world *twiliotest.World
}

var exportFake struct {
	once sync.Once
	p    *fakeProcess
	err  error
}

// exportFakePID is the process ID of the running faketwilio, 0 before.
var exportFakePID int

// sharedFakeProcess builds faketwilio and starts it once for the package;
// TestMain stops it.
func sharedFakeProcess(b *testing.B) *fakeProcess {
	b.Helper()
	exportFake.once.Do(func() {
		exportFake.p, exportFake.err = startFakeProcess(twiliotest.WorldSpec{Seed: worldSeed, Services: worldServices,
			UsersPerService: exportUsersPerService, MaxBindingsPerUser: maxBindingsPerUser})
		if exportFake.err == nil {
			exportFakePID = exportFake.p.cmd.Process.Pid
		}
	})
	if exportFake.err != nil {
		b.Fatal(exportFake.err)
	}
	return exportFake.p
}

func startFakeProcess(spec twiliotest.WorldSpec) (*fakeProcess, error) {
	bin, err := buildCommand("github.com/bindsync/bindsync/twilio/twiliotest/cmd/faketwilio")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0",
		"-seed", strconv.FormatInt(spec.Seed, 10), "-services", strconv.Itoa(spec.Services),
		"-users", strconv.Itoa(spec.UsersPerService), "-max-bindings", strconv.Itoa(spec.MaxBindingsPerUser))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start faketwilio: %w", err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("faketwilio printed no address: %w", err)
	}
	base := strings.TrimSpace(line)
	if !strings.HasPrefix(base, "http://127.0.0.1:") {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("faketwilio listens on %q, not on the loopback interface", base)
	}
	// The same spec gives the same world: the benchmark knows the
	// services and the count of bindings without asking the server.
	return &fakeProcess{cmd: cmd, base: base, world: twiliotest.NewWorld(spec)}, nil
}

// buildCommand builds the command of package pkg into a new temporary
// directory and returns the binary's path.
func buildCommand(pkg string) (string, error) {
	dir, err := os.MkdirTemp("", "bindsync-bench-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, path.Base(pkg))
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %v\n%s", pkg, err, out)
	}
	return bin, nil
}

func (p *fakeProcess) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
	}
}

// plainClient is the usual way to read the lists: net/http, basic auth,
// encoding/json into structs (twilio.Binding), next_page_url followed.
// It has no retries and no checks: it is the floor of what a client costs.
type plainClient struct {
	http *http.Client
	base string
	user string
}

func newPlainClient(base, accountSID string) *plainClient {
	tr := &http.Transport{MaxIdleConnsPerHost: exportInFlight, MaxConnsPerHost: exportInFlight}
	return &plainClient{http: &http.Client{Transport: tr}, base: base, user: accountSID}
}

// get fetches ref (a path and query, or an absolute next_page_url whose
// host is replaced by the fake's) and hands the body to decode.
func (c *plainClient) get(ctx context.Context, ref string, decode func(io.Reader) error) error {
	if u, err := url.Parse(ref); err == nil && u.IsAbs() {
		ref = u.RequestURI()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+ref, nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(c.user, twiliotest.DefaultAuthToken)
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", ref, resp.Status)
	}
	return decode(resp.Body)
}

// users lists the SIDs of a service's users, 100 a page.
func (c *plainClient) users(ctx context.Context, service string, send func(string) error) error {
	ref := "/v2/Services/" + service + "/Users?PageSize=100"
	for ref != "" {
		var page struct {
			Meta  twilio.Meta   `json:"meta"`
			Users []twilio.User `json:"users"`
		}
		if err := c.get(ctx, ref, func(r io.Reader) error { return json.NewDecoder(r).Decode(&page) }); err != nil {
			return err
		}
		for _, u := range page.Users {
			if err := send(u.SID); err != nil {
				return err
			}
		}
		ref = ""
		if page.Meta.NextPageURL != nil {
			ref = *page.Meta.NextPageURL
		}
	}
	return nil
}

// pageDecoder decodes one Bindings page and returns its record count and
// next_page_url ("" after the last page).
type pageDecoder func(r io.Reader) (records int, next string, err error)

// decodeJSON is encoding/json into structs of pointers.
func decodeJSON(r io.Reader) (int, string, error) {
	var page struct {
		Meta     twilio.Meta      `json:"meta"`
		Bindings []twilio.Binding `json:"bindings"`
	}
	if err := json.NewDecoder(r).Decode(&page); err != nil {
		return 0, "", err
	}
	next := ""
	if page.Meta.NextPageURL != nil {
		next = *page.Meta.NextPageURL
	}
	return len(page.Bindings), next, nil
}

// fastDecoder is bindjson into a sink that keeps nothing: the decoder
// alone, body buffer reused.
type fastDecoder struct {
	buf bytes.Buffer
	dec bindjson.Decoder
}

func (f *fastDecoder) decode(r io.Reader) (int, string, error) {
	f.buf.Reset()
	if _, err := f.buf.ReadFrom(r); err != nil {
		return 0, "", err
	}
	var sink countingSink
	page, err := f.dec.DecodePage(f.buf.Bytes(), &sink)
	if err != nil {
		return 0, "", err
	}
	next := ""
	if page.Meta.NextPageURL != nil {
		next = *page.Meta.NextPageURL
	}
	return page.Records, next, nil
}

// readAll lists every user of every service and pages through every
// user's bindings, exportInFlight users at once, each page decoded by the
// worker's decoder. It returns the bindings read.
func readAll(ctx context.Context, c *plainClient, services []string, pageSize int, newDecoder func() pageDecoder) (int64, error) {
	var total atomic.Int64
	users := make(chan [2]string, exportInFlight)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(users)
		for _, svc := range services {
			err := c.users(gctx, svc, func(sid string) error {
				select {
				case users <- [2]string{svc, sid}:
					return nil
				case <-gctx.Done():
					return gctx.Err()
				}
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	for range exportInFlight {
		g.Go(func() error {
			decode := newDecoder()
			for u := range users {
				ref := "/v2/Services/" + u[0] + "/Users/" + u[1] + "/Bindings?PageSize=" + strconv.Itoa(pageSize)
				for ref != "" {
					var n int
					err := c.get(gctx, ref, func(r io.Reader) error {
						var err error
						n, ref, err = decode(r)
						return err
					})
					if err != nil {
						return err
					}
					total.Add(int64(n))
				}
			}
			return nil
		})
	}
	err := g.Wait()
	return total.Load(), err
}

// rssReader reads the process's peak resident set (VmHWM), after resetting
// it, from /proc; ok is false where that cannot be done.
type rssReader struct{ ok bool }

func newRSSReader() rssReader {
	return rssReader{ok: os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil}
}

// reset makes the peak start again from the resident set of now.
func (r rssReader) reset() {
	if r.ok {
		_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	}
}

// peak returns VmHWM in bytes.
func (r rssReader) peak() uint64 {
	if !r.ok {
		return 0
	}
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// cpuTime returns the CPU time (user and system) this process used so
// far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// childCPU returns the CPU time the process pid used so far, from
// /proc/PID/stat (in clock ticks of 10 ms); false where it cannot be read.
func childCPU(pid int) (time.Duration, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from after its closing one. utime and stime are fields 14 and 15.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, true
}

// exportRun is one workload of BenchmarkExport.
type exportRun func(ctx context.Context, dir string) (int64, error)

// measureExport runs work for every b.Loop iteration and reports
// bindings/s, B/binding, CPU per binding of this process and of the fake,
// and peak RSS of this process (peak heap where RSS cannot be read).
//
// With a baseline, each iteration first runs it, outside the timing, and
// reports the median over the iterations of the pairs' ratios:
// x-DecodeJSON, the baseline's time over work's (work's rate over the
// baseline's), and cpu-x-DecodeJSON, work's CPU time over the baseline's.
// Pairs taken a few seconds apart hold when the shared machine's speed
// drifts between sub-benchmarks, which ratios of separate runs do not.
func measureExport(b *testing.B, want int64, baseline, work exportRun) {
	measureExportAfter(b, want, baseline, nil, work)
}

// measureExportAfter is measureExport with prepare run in each iteration's
// directory before work, outside the timing and the figures.
func measureExportAfter(b *testing.B, want int64, baseline, prepare, work exportRun) {
	b.Helper()
	ctx := context.Background()
	root := b.TempDir()
	rss := newRSSReader()
	var fig figures
	var peakRSS uint64
	var cpu, fakeCPU time.Duration
	fakeOK := exportFakePID != 0
	var wallRatios, cpuRatios []float64
	for b.Loop() {
		b.StopTimer()
		dir, err := os.MkdirTemp(root, "run-")
		if err != nil {
			b.Fatal(err)
		}
		if prepare != nil {
			if _, err := prepare(ctx, dir); err != nil {
				b.Fatal(err)
			}
		}
		var baseWall, baseCPU time.Duration
		if baseline != nil {
			start, startCPU := time.Now(), cpuTime()
			if n, err := baseline(ctx, ""); err != nil || n != want {
				b.Fatalf("baseline: read %d bindings of %d: %v", n, want, err)
			}
			baseWall, baseCPU = time.Since(start), cpuTime()-startCPU
		}
		settleHeap()
		rss.reset()
		b.StartTimer()
		fig.measure(b, func() (outcome, error) {
			start, startWall := cpuTime(), time.Now()
			fakeStart, ok1 := childCPU(exportFakePID)
			defer func() {
				used, wall := cpuTime()-start, time.Since(startWall)
				cpu += used
				fakeEnd, ok2 := childCPU(exportFakePID)
				fakeCPU += fakeEnd - fakeStart
				fakeOK = fakeOK && ok1 && ok2
				if baseline != nil {
					wallRatios = append(wallRatios, baseWall.Seconds()/wall.Seconds())
					cpuRatios = append(cpuRatios, used.Seconds()/baseCPU.Seconds())
				}
			}()
			n, err := work(ctx, dir)
			if err == nil && n != want {
				err = fmt.Errorf("read %d bindings, the world has %d", n, want)
			}
			return outcome{bindings: n}, err
		})
		b.StopTimer()
		peakRSS = max(peakRSS, rss.peak())
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	rate := float64(fig.bindings) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "bindings/s")
	b.ReportMetric(float64(fig.allocated)/float64(fig.bindings), "B/binding")
	b.ReportMetric(float64(cpu.Microseconds())/float64(fig.bindings), "cpu-µs/binding")
	if fakeOK {
		b.ReportMetric(float64(fakeCPU.Microseconds())/float64(fig.bindings), "fake-cpu-µs/binding")
	}
	if rss.ok {
		b.ReportMetric(float64(peakRSS)/(1<<20), "peak-RSS-MiB")
	} else {
		b.ReportMetric(float64(fig.peakHeap)/(1<<20), "peak-heap-MiB")
	}
	if len(wallRatios) > 0 {
		b.ReportMetric(median(wallRatios), "x-DecodeJSON")
		b.ReportMetric(median(cpuRatios), "cpu-x-DecodeJSON")
	}
}

// median returns the median of xs (the mean of the middle two for an even
// count).
func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchmarkExport compares, in one run against one faketwilio process, at
// each page size: DecodeJSON, the usual client (encoding/json into
// structs, nothing else); DecodeFast, bindjson alone; and Pipeline,
// `bindsync run`'s worker end to end (client with retries and checks,
// Arrow, Parquet with zstd, checkpoint, publishing to a local warehouse).
// Every reader but DecodeJSON runs each iteration paired with a DecodeJSON
// pass right before it and reports x-DecodeJSON, the median of its
// bindings/s over that pass's: above 1 means the whole export is faster
// than a plain client only decoding; and cpu-x-DecodeJSON, the median of
// its CPU time over that pass's.
func BenchmarkExport(b *testing.B) {
	p := sharedFakeProcess(b)
	want := int64(p.world.TotalBindings())
	var services []string
	var wsvcs []worker.Service
	for _, s := range p.world.Services {
		services = append(services, s.SID)
		wsvcs = append(wsvcs, worker.Service{SID: s.SID, AllUsers: true, Strategy: worker.StrategyPerUser}) // as the baselines read
	}
	plain := newPlainClient(p.base, p.world.AccountSID)
	client, err := twilio.New(twilio.Config{
		BaseURL: p.base, Username: p.world.AccountSID, Password: twiliotest.DefaultAuthToken,
		MaxInFlight: exportInFlight,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("world: %d services, %d users, %d bindings, faketwilio in process %d", len(services), len(services)*exportUsersPerService, want, p.cmd.Process.Pid)
	for _, size := range exportPageSizes {
		decodeJSONRun := func(ctx context.Context, _ string) (int64, error) {
			return readAll(ctx, plain, services, size, func() pageDecoder { return decodeJSON })
		}
		b.Run(fmt.Sprintf("PageSize=%d/DecodeJSON", size), func(b *testing.B) {
			measureExport(b, want, nil, decodeJSONRun)
		})
		b.Run(fmt.Sprintf("PageSize=%d/DecodeFast", size), func(b *testing.B) {
			measureExport(b, want, decodeJSONRun, func(ctx context.Context, _ string) (int64, error) {
				return readAll(ctx, plain, services, size, func() pageDecoder { return new(fastDecoder).decode })
			})
		})
		pipeline := func(date time.Time) exportRun {
			return func(ctx context.Context, dir string) (int64, error) {
				store, err := staging.NewDir(filepath.Join(dir, "staging"))
				if err != nil {
					return 0, err
				}
				res, err := worker.Run(ctx, client, worker.Options{
					Services: wsvcs, PageSize: size, Concurrency: exportInFlight, Store: store,
					Publishers: []exporter.Publisher{exporter.LocalWarehouse{Path: filepath.Join(dir, "warehouse")}},
				}, date)
				if err != nil {
					return 0, err
				}
				return res.Rows, nil
			}
		}
		b.Run(fmt.Sprintf("PageSize=%d/Pipeline", size), func(b *testing.B) {
			measureExport(b, want, decodeJSONRun, pipeline(snapshotDate))
		})
		// A night after the first: the day before is published (outside
		// the timing), so the changes compare with its digest instead of
		// writing every binding as initial.
		b.Run(fmt.Sprintf("PageSize=%d/PipelineNextDay", size), func(b *testing.B) {
			measureExportAfter(b, want, decodeJSONRun, pipeline(snapshotDate.AddDate(0, 0, -1)), pipeline(snapshotDate))
		})
	}
}

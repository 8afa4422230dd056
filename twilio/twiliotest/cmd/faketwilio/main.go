// Command faketwilio serves a twiliotest world on the loopback interface, for
// end-to-end tests that need the fake Twilio in a process of its own (for
// example to kill and restart it while bindsync runs).
//
// It prints the base URL as the first line of standard output, serves until
// SIGINT or SIGTERM, then prints the server's Stats as one JSON line. The
// world is NewWorld of the flags, so a test builds the same world in its own
// process to know what bindsync must export.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/bindsync/bindsync/twilio/twiliotest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "faketwilio:", err)
		os.Exit(1)
	}
}

// run parses args, serves until ctx ends and reports on stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("faketwilio", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:0", "loopback address to listen on")
	var spec twiliotest.WorldSpec
	fs.Int64Var(&spec.Seed, "seed", 1, "world seed")
	fs.IntVar(&spec.Services, "services", 1, "number of services")
	fs.IntVar(&spec.UsersPerService, "users", 100, "users per service")
	fs.IntVar(&spec.MaxBindingsPerUser, "max-bindings", 150, "most bindings of one user")
	fs.StringVar(&spec.AccountSID, "account-sid", "", "account SID (default twiliotest.DefaultAccountSID)")
	fs.BoolVar(&spec.ControlIdentities, "control-identities", false, "give some users identities with control characters")
	var opts twiliotest.Options
	fs.StringVar(&opts.AuthToken, "auth-token", twiliotest.DefaultAuthToken, "accepted auth token")
	fs.IntVar(&opts.MaxPageSize, "max-page-size", 0, "largest accepted PageSize (default 1000)")
	fs.IntVar(&opts.PageSizeCap, "page-size-cap", 0, "serve at most this many items per page")
	fs.BoolVar(&opts.StrictPageSize, "strict-page-size", false, "answer 400 to PageSize above 50 (bindings) or 100 (users)")
	fs.BoolVar(&opts.NoLoadHeaders, "no-load-headers", false, "leave out the Twilio-Concurrent-Requests and Twilio-Request-Duration headers")
	f := &opts.Faults
	fs.Int64Var(&f.Seed, "fault-seed", 0, "seed of the fault generator")
	fs.Float64Var(&f.Rate429, "rate-429", 0, "probability of a 429 per request")
	fs.DurationVar(&f.RetryAfter, "retry-after", 0, "Retry-After sent with injected 429s")
	fs.IntVar(&f.RetryAfterEvery, "retry-after-every", 0, "send Retry-After with only every n-th injected 429")
	fs.Float64Var(&f.Rate500, "rate-500", 0, "probability of a 500 per request")
	fs.Float64Var(&f.Rate503, "rate-503", 0, "probability of a 503 per request")
	fs.Float64Var(&f.RateDrop, "rate-drop", 0, "probability of closing the connection without a response")
	fs.Float64Var(&f.RateTruncate, "rate-truncate", 0, "probability of a truncated 200")
	fs.DurationVar(&f.Latency, "latency", 0, "delay added to every request")
	fs.IntVar(&f.MaxConcurrent, "max-concurrent", 0, "answer 429 above this many requests in flight")
	fs.Func("bindings-paging", "make bindings lists page without end: "+pagingNames(), pagingFlag(&f.BindingsPaging))
	fs.Func("users-paging", "make Users lists page without end: "+pagingNames(), pagingFlag(&f.UsersPaging))
	fs.Func("service-bindings-paging", "make service-wide Bindings lists page without end: "+pagingNames(), pagingFlag(&f.ServiceBindingsPaging))
	fs.Func("delete-after-first-page", "delete this user (SID or identity) once its first bindings page is served; repeatable", listFlag(&f.DeleteAfterFirstPage))
	fs.BoolVar(&f.DuplicateUsers, "duplicate-users", false, "repeat users within and across Users pages")
	fs.BoolVar(&f.NextPageOtherUser, "next-page-other-user", false, "make bindings next_page_url name another user")
	fs.Func("null-binding-type", "serve this user's (SID or identity) bindings with binding_type null or missing; repeatable", listFlag(&f.NullBindingTypeUsers))
	fs.Int64Var(&f.HugeField, "huge-field", 0, "stream a string field of this many bytes in every bindings page")
	fs.Int64Var(&f.GzipBomb, "gzip-bomb", 0, "send bindings pages gzipped, inflating to about this many bytes")
	fs.Func("body-fault-user", "limit -huge-field and -gzip-bomb to this user (SID or identity); repeatable", listFlag(&f.BodyFaultUsers))
	fs.BoolVar(&f.EchoCredentials, "echo-credentials", false, "quote the request's credentials in error bodies")
	fs.BoolVar(&f.HostileErrors, "hostile-errors", false, "fill error messages with terminal escapes and newlines, 64 KB long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := checkLoopback(*addr); err != nil {
		return err
	}

	opts.World = twiliotest.NewWorld(spec)
	srv := twiliotest.NewUnstartedServer(opts)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	if _, err := fmt.Fprintf(stdout, "http://%s\n", ln.Addr()); err != nil {
		_ = hs.Close()
		return fmt.Errorf("print address: %w", err)
	}

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutdown); err != nil {
		_ = hs.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	if err := json.NewEncoder(stdout).Encode(srv.Stats()); err != nil {
		return fmt.Errorf("print stats: %w", err)
	}
	return nil
}

// pagingNames lists the accepted values of the paging flags.
func pagingNames() string {
	names := make([]string, len(twiliotest.PagingFaults))
	for i, pf := range twiliotest.PagingFaults {
		names[i] = string(pf)
	}
	return strings.Join(names, ", ")
}

// pagingFlag sets *dst to one of twiliotest.PagingFaults.
func pagingFlag(dst *twiliotest.PagingFault) func(string) error {
	return func(v string) error {
		if !slices.Contains(twiliotest.PagingFaults, twiliotest.PagingFault(v)) {
			return fmt.Errorf("must be one of %s (got %q)", pagingNames(), v)
		}
		*dst = twiliotest.PagingFault(v)
		return nil
	}
}

// listFlag appends every value of a repeated flag to *dst.
func listFlag(dst *[]string) func(string) error {
	return func(v string) error {
		*dst = append(*dst, v)
		return nil
	}
}

// checkLoopback refuses to listen anywhere but on a loopback address: the
// fake is for tests on one machine.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-addr %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-addr %q: must be a loopback address", addr)
	}
	return nil
}

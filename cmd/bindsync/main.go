// Command bindsync copies Twilio Programmable Chat v2 user bindings into a
// warehouse (a local Parquet directory or BigQuery), one complete snapshot
// a day, resuming where a failed run stopped.
//
// Usage:
//
//	bindsync run --config FILE [--snapshot-date YYYY-MM-DD] [--force] [--allow-future]
//	bindsync validate --config FILE [--check-credentials]
//	bindsync serve --config FILE
//	bindsync status --config FILE [--snapshot-date YYYY-MM-DD] [--json | --check [--max-age 26h]]
//	bindsync publish --config FILE --snapshot-date YYYY-MM-DD
//	bindsync demo [--dir DIR] [--serve]
//
// Exit codes: 0 done, 1 the run failed (run it again to resume; a panic is
// a failed run too), 2 bad usage, configuration or credentials. `status
// --check` exits 0 when a snapshot was published within --max-age and 1
// otherwise, for monitors. `validate --check-credentials` exits 0 when
// every check passed, 2 when one calls for a change of configuration,
// credentials or permissions, 1 when the failures may pass by themselves.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/bindsync/bindsync/worker"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// memLimit and memLimitSource are the Go memory limit main set and where
// it came from; run and serve log them.
var (
	memLimit       int64
	memLimitSource string
)

func main() {
	memLimit, memLimitSource = setMemoryLimit()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// usageError marks errors of the caller's making: flags, configuration,
// credentials. They exit with code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// errSilent is returned when the message was already printed (by flag
// parsing or a failed run's summary); only the exit code is left to give.
type errSilent struct{ code int }

func (e errSilent) Error() string { return fmt.Sprintf("exit %d", e.code) }

// exitCode prints err, if any, and returns the exit code it calls for. The
// text is escaped (and redacted, when a command made err presentable).
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var s errSilent
	if errors.As(err, &s) {
		return s.code
	}
	fmt.Fprintf(stderr, "bindsync: %s\n", errorText(err, nil))
	var u usageError
	if errors.As(err, &u) && !errors.Is(err, worker.ErrPanic) {
		return exitUsage
	}
	return exitFailed
}

const usageText = `bindsync copies Twilio Chat v2 user bindings into a warehouse.

Usage:
  bindsync run      --config FILE [--snapshot-date YYYY-MM-DD] [--force] [--allow-future]
  bindsync validate --config FILE [--check-credentials]
  bindsync serve    --config FILE
  bindsync status   --config FILE [--snapshot-date YYYY-MM-DD] [--json | --check [--max-age 26h]]
  bindsync publish  --config FILE --snapshot-date YYYY-MM-DD
  bindsync demo     [--dir DIR] [--serve]
  bindsync version

Every command takes --log-level debug|info|warn|error (or BINDSYNC_LOG_LEVEL).
Run "bindsync COMMAND -h" for the flags of a command.
`

// run runs the command of args. A panic on its goroutine becomes an error
// wrapping worker.ErrPanic, like a panic in the worker's goroutines: the
// run failed (exit 1), and the logs and checkpoint stand.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = worker.Recovered(v)
		}
	}()
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return errSilent{exitUsage}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(ctx, rest, stdout, stderr)
	case "validate":
		return cmdValidate(ctx, rest, stdout, stderr)
	case "demo":
		return cmdDemo(ctx, rest, stdout, stderr)
	case "serve":
		return cmdServe(ctx, rest, stdout, stderr)
	case "status":
		return cmdStatus(ctx, rest, stdout, stderr)
	case "publish":
		return cmdPublish(ctx, rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "bindsync %s\n", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usageText)
		return nil
	default:
		fmt.Fprint(stderr, usageText)
		return usagef("unknown command %q", cmd)
	}
}

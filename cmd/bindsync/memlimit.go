package main

import (
	"io"
	"log/slog"
	"math"
	"os"
	"runtime/debug"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"go.uber.org/zap"
)

// memLimitRatio is the share of the container's memory limit that the Go
// heap may use before the collector works harder: the rest is headroom for
// what the runtime does not count (stacks, Parquet's and zstd's buffers
// outside the heap, the kernel's page cache charged to the container).
const memLimitRatio = 0.9

// setMemoryLimit sets the Go runtime's soft memory limit to memLimitRatio
// of the cgroup's memory limit, unless GOMEMLIMIT is set (it wins) or
// AUTOMEMLIMIT=off; AUTOMEMLIMIT=0.8 changes the ratio. Outside a
// container with a limit it changes nothing. It returns the limit in
// force and where it came from, for the log.
func setMemoryLimit() (limit int64, source string) {
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		return debug.SetMemoryLimit(-1), "GOMEMLIMIT"
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	limit, err := memlimit.Set(
		memlimit.WithRatio(memLimitRatio),
		memlimit.WithProvider(memlimit.FromCgroup),
		memlimit.WithLogger(quiet),
	)
	switch {
	case err != nil:
		return debug.SetMemoryLimit(-1), "none (" + err.Error() + ")"
	case limit == math.MaxInt64:
		return limit, "none (no container memory limit)"
	default:
		return limit, "container memory limit"
	}
}

// logMemoryLimit says which memory limit the process runs under; nothing
// when main did not set one (tests call run directly).
func logMemoryLimit(log *zap.Logger, limit int64, source string) {
	if source == "" {
		return
	}
	if limit == math.MaxInt64 {
		log.Info("no Go memory limit", zap.String("source", source))
		return
	}
	log.Info("Go memory limit", zap.Int64("bytes", limit), zap.String("source", source))
}

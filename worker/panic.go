package worker

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/bindsync/bindsync/internal/safetext"
)

// ErrPanic is wrapped by the error of a run in which a goroutine panicked.
// The panic is a bug, but an error of the run like any other: the
// checkpoint stands, `bindsync run` exits 1 and `serve` goes on.
var ErrPanic = errors.New("panic")

// Bounds of the text Recovered keeps: a panic value can hold anything (an
// API response), and the error lands in logs and the checkpoint.
const (
	panicValueBytes = 512
	panicFrames     = 8
)

// Recovered turns v, a value returned by recover(), into an error wrapping
// ErrPanic. Its text is one line: the value (control characters escaped,
// cut at 512 bytes) and the innermost frames of the panicking goroutine's
// stack, from the frame that panicked outwards, as function (file:line).
// Call it in the deferred function that recovered, on the goroutine that
// panicked, or the stack is another one:
//
//	defer func() {
//		if v := recover(); v != nil {
//			err = worker.Recovered(v)
//		}
//	}()
func Recovered(v any) error {
	value := safetext.Truncate(safetext.Escape(fmt.Sprint(v)), panicValueBytes)
	return &panicError{value: value, stack: panicStack()}
}

type panicError struct {
	value string
	stack []string
}

func (e *panicError) Error() string {
	if len(e.stack) == 0 {
		return "panic: " + e.value
	}
	return fmt.Sprintf("panic: %s [at %s]", e.value, strings.Join(e.stack, " < "))
}

func (e *panicError) Unwrap() error { return ErrPanic }

// panicStack returns the frames below the runtime's panic machinery, the
// function that panicked first. Without a panic in progress (Recovered
// called outside a deferred recover) it returns the caller's frames.
func panicStack() []string {
	pcs := make([]uintptr, 64)
	n := runtime.Callers(3, pcs) // skip Callers, panicStack, Recovered
	var all []runtime.Frame
	frames := runtime.CallersFrames(pcs[:n])
	for more := n > 0; more; {
		var f runtime.Frame
		f, more = frames.Next()
		all = append(all, f)
	}
	// Skip the recovering function and runtime.gopanic, then the runtime's
	// helpers that raised the panic (runtime.goPanicIndex, sigpanic...).
	rest := all
	for i, f := range all {
		if f.Function == "runtime.gopanic" {
			rest = all[i+1:]
			for len(rest) > 0 && strings.HasPrefix(rest[0].Function, "runtime.") {
				rest = rest[1:]
			}
			break
		}
	}
	var out []string
	for _, f := range rest {
		if len(out) == panicFrames || f.Function == "runtime.goexit" {
			break
		}
		out = append(out, fmt.Sprintf("%s (%s:%d)", shortFunc(f.Function), filepath.Base(f.File), f.Line))
	}
	return out
}

// shortFunc drops the module path from a function name:
// github.com/bindsync/bindsync/worker.(*run).fetch becomes
// worker.(*run).fetch.
func shortFunc(name string) string {
	if i := strings.LastIndex(name, "/"); i >= 0 {
		return name[i+1:]
	}
	return name
}

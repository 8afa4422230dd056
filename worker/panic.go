package worker

import (
	"errors"
	"fmt"
	"runtime/debug"
)

// ErrPanic marks an error that a recovered panic became.
var ErrPanic = errors.New("panic")

// Recovered turns a recovered value into an error wrapping ErrPanic.
func Recovered(v any) error {
	return fmt.Errorf("%w: %v\n%s", ErrPanic, v, debug.Stack())
}

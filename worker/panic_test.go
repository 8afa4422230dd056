package worker

import (
	"errors"
	"strings"
	"testing"
)

func panicsWithIndex(i int) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = Recovered(v)
		}
	}()
	var s []int
	_ = s[i]
	return nil
}

func TestRecovered(t *testing.T) {
	t.Parallel()
	err := panicsWithIndex(3)
	if !errors.Is(err, ErrPanic) {
		t.Fatalf("err = %v, want ErrPanic wrapped", err)
	}
	text := err.Error()
	if !strings.HasPrefix(text, "panic: runtime error: index out of range [3] with length 0 [at worker.panicsWithIndex (panic_test.go:") {
		t.Errorf("the error does not start at the panicking function:\n%s", text)
	}
	if !strings.Contains(text, "< worker.TestRecovered (panic_test.go:") || strings.Contains(text, "\n") {
		t.Errorf("the error is not one line with the callers:\n%s", text)
	}

	done := make(chan error)
	go func() {
		defer func() { done <- Recovered(recover()) }()
		panic("line\nforged" + strings.Repeat("x", 100_000))
	}()
	err = <-done
	if !errors.Is(err, ErrPanic) || len(err.Error()) > 2048 {
		t.Errorf("a huge panic value is not cut: %d bytes", len(err.Error()))
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("a newline of the panic value is kept: %.300s", err)
	}
	if !strings.Contains(err.Error(), "bytes more)") || !strings.Contains(err.Error(), "worker.TestRecovered.func") {
		t.Errorf("err = %.300s...", err)
	}
}

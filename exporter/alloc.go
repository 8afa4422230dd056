package exporter

import (
	"slices"
	"sync"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// bufferPool is the default memory.Allocator of parts: a GoAllocator that
// keeps the large buffers Arrow and the Parquet writer free, by size
// class, for the next allocations of their class. Every batch and every
// Parquet page allocates and frees buffers of much the same sizes (most of
// a part's allocated bytes), which the garbage collector would otherwise
// find, clear and hand out again.
//
// A buffer is cleared when it is freed, so that it is handed out as new
// memory is (zeroed), and so that anything still reading a buffer after
// freeing it reads zeros rather than the next owner's bytes: the exact
// comparisons of every test would see it. Buffers below poolMin come from
// the GoAllocator alone; a pooled class is a multiple of the page size, so
// its buffers are page-aligned as Arrow wants (64 bytes).
var bufferPool = newPoolAllocator()

const (
	poolMin = 4 << 10
	poolMax = 64 << 20
)

type poolAllocator struct {
	small   memory.Allocator
	classes []int       // buffer sizes, ascending: four a power of two
	pools   []sync.Pool // of *[]byte, one per class
}

func newPoolAllocator() *poolAllocator {
	a := &poolAllocator{small: memory.NewGoAllocator()}
	for size := poolMin; size <= poolMax; size *= 2 {
		for _, quarter := range []int{4, 5, 6, 7} {
			if c := size / 4 * quarter; c <= poolMax {
				a.classes = append(a.classes, c)
			}
		}
	}
	a.pools = make([]sync.Pool, len(a.classes))
	return a
}

// class returns the index of the smallest class that holds size, or -1.
func (a *poolAllocator) class(size int) int {
	if size < poolMin || size > poolMax {
		return -1
	}
	i, _ := slices.BinarySearch(a.classes, size)
	return i
}

func (a *poolAllocator) Allocate(size int) []byte {
	c := a.class(size)
	if c < 0 {
		return a.small.Allocate(size)
	}
	if p, ok := a.pools[c].Get().(*[]byte); ok {
		return (*p)[:size]
	}
	return make([]byte, size, a.classes[c])
}

func (a *poolAllocator) Reallocate(size int, b []byte) []byte {
	if size <= cap(b) {
		return b[:size]
	}
	nb := a.Allocate(size)
	copy(nb, b)
	a.Free(b)
	return nb
}

// Free keeps b for a later allocation if it is a pooled buffer.
func (a *poolAllocator) Free(b []byte) {
	c := a.class(cap(b))
	if c < 0 || a.classes[c] != cap(b) {
		return // not one of ours: the garbage collector takes it
	}
	b = b[:cap(b)]
	clear(b)
	a.pools[c].Put(&b)
}

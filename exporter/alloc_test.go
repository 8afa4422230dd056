package exporter

import (
	"bytes"
	"reflect"
	"testing"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

func TestPoolAllocator(t *testing.T) {
	a := newPoolAllocator()
	for _, size := range []int{0, 1, 100, poolMin - 1, poolMin, poolMin + 1, 1 << 20, 3<<20 + 5, poolMax, poolMax + 1} {
		b := a.Allocate(size)
		if len(b) != size {
			t.Fatalf("Allocate(%d) gave %d bytes", size, len(b))
		}
		if size > 0 && uintptr(unsafe.Pointer(&b[0]))%64 != 0 {
			t.Errorf("Allocate(%d) is not 64-byte aligned", size)
		}
		if !bytes.Equal(b, make([]byte, size)) {
			t.Errorf("Allocate(%d) is not zeroed", size)
		}
		for i := range b {
			b[i] = 0xa5
		}
		a.Free(b)
		// What comes back, from the pool or not, is zeroed, including
		// the room a Reallocate within its capacity uncovers.
		again := a.Allocate(size)
		if !bytes.Equal(again[:cap(again)], make([]byte, cap(again))) {
			t.Errorf("Allocate(%d) after a Free hands out dirty memory", size)
		}
		a.Free(again)
	}
	// Reallocate keeps the bytes, whether it grows in place or not.
	b := a.Allocate(poolMin)
	copy(b, "abc")
	b = a.Reallocate(poolMin+10, b)
	if string(b[:3]) != "abc" || len(b) != poolMin+10 {
		t.Errorf("Reallocate within the class lost the bytes or the size")
	}
	b = a.Reallocate(4<<20, b)
	if string(b[:3]) != "abc" || len(b) != 4<<20 || !bytes.Equal(b[3:poolMin+10], make([]byte, poolMin+7)) {
		t.Errorf("Reallocate to a larger class lost the bytes or the size")
	}
	// A buffer of a size no class has is left to the garbage collector,
	// never handed out again.
	odd := make([]byte, poolMin+3)
	a.Free(odd)
	if got := a.Allocate(poolMin + 3); cap(got) == cap(odd) && &got[0] == &odd[0] {
		t.Error("a buffer the pool did not allocate was handed out")
	}
}

// TestPartsWithPoolAllocatorDoNotLeak writes parts through a checked
// allocator over the pool: every buffer allocated is freed.
func TestPartsWithPoolAllocatorDoNotLeak(t *testing.T) {
	mem := memory.NewCheckedAllocator(newPoolAllocator())
	store := newMemStore()
	bs := runsWorld(600)
	info := writePart(t, store, "p.parquet", bs, PartOptions{BatchRows: 100, RowGroupRows: 250, Allocator: mem})
	mem.AssertSize(t, 0)
	if got := readAll(t, store, info.Name); !reflect.DeepEqual(got, wantRows(bs, testMeta)) {
		t.Errorf("the part's %d rows differ from the %d written", len(got), len(bs))
	}
}

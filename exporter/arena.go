package exporter

import "syscall"

// newBlock returns an arena block of arenaChunk bytes mapped outside the
// Go heap: records fill it in bulk and it lives as long as a sort or a
// part writer, so the garbage collector has nothing to scan in it, and it
// does not raise the heap's goal (GOGC would otherwise keep about as much
// again for it). freeBlock unmaps it; nothing may read it after.
func newBlock() []byte {
	b, err := syscall.Mmap(-1, 0, arenaChunk, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return make([]byte, arenaChunk) // no mapping to spare: the heap will do
	}
	return b
}

// freeBlock releases a block of newBlock.
// syscall.Munmap refuses (EINVAL) a block it did not map, one from the
// heap: the collector takes those.
func freeBlock(b []byte) { _ = syscall.Munmap(b) }

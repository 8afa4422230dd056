package exporter

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/klauspost/compress/zstd"
)

// Parquet's zstd pages go through pageCodec, and what it writes is plain
// zstd that any reader decodes, from goroutines at once.
func TestPagesCompressedByTheSharedEncoder(t *testing.T) {
	codec, err := compress.GetCodec(compress.Codecs.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	pc, ok := codec.(*pageCodec)
	if !ok {
		t.Fatalf("the zstd codec registered for Parquet is %T, want *pageCodec", codec)
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				src := bytes.Repeat([]byte(fmt.Sprintf("page %d of goroutine %d;", i, g)), 50*(i+1))
				out := pc.EncodeLevel(nil, src, zstdLevel)
				back, err := dec.DecodeAll(out, nil)
				if err != nil || !bytes.Equal(back, src) {
					errs <- fmt.Errorf("goroutine %d page %d: %d bytes back, want %d (%v)", g, i, len(back), len(src), err)
					return
				}
				if got, err := compress.Decode(codec, nil, out); err != nil || !bytes.Equal(got, src) {
					errs <- fmt.Errorf("goroutine %d page %d: the codec decodes %d bytes, want %d (%v)", g, i, len(got), len(src), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if _, err := compress.Decode(codec, nil, []byte("not zstd at all")); err == nil {
		t.Error("a damaged page decodes without an error")
	}
	level := zstd.EncoderLevelFromZstd(zstdLevel)
	if pc.encoder(level) != pc.encoder(level) {
		t.Error("a new encoder for every page: the encoder of a level is not kept")
	}
}

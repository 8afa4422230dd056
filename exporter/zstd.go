package exporter

import (
	"io"
	"runtime"
	"sync"

	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/klauspost/compress/zstd"
)

// Parquet compresses every page through the codec registered for its
// compression. Arrow's zstd codec takes an encoder from a sync.Pool for
// each page and resets it when it gives it back; the pool is emptied at
// every garbage collection, so a long export builds encoders (tables of
// some hundred KiB each) again and again. pageCodec replaces it for the
// whole process: one encoder per level, built once, shared by every part
// writer (EncodeAll may be called concurrently; each call takes one of
// the encoder's block encoders), with a window fit for pages. Decoding and
// streaming stay arrow's.
func init() {
	arrow, err := compress.GetCodec(compress.Codecs.Zstd)
	if err != nil {
		panic("exporter: arrow has no zstd codec: " + err.Error())
	}
	compress.RegisterCodec(compress.Codecs.Zstd, &pageCodec{Codec: arrow})
}

// pageWindow is the zstd window of pages: a page is about dataPageBytes,
// so a larger window finds nothing more, while each block encoder keeps a
// history of twice the window (16 MiB for the two of a 2-core machine at
// the default window of 4 MiB, 1 MiB at this one).
const pageWindow = dataPageBytes

// pageCodec is arrow's zstd codec with encoders kept for the process.
type pageCodec struct {
	compress.Codec
	encoders sync.Map // zstd.EncoderLevel → *zstd.Encoder
}

// encoder returns the encoder of level, built on first use. The options
// are arrow's, so pages are encoded as arrow would encode them.
func (c *pageCodec) encoder(level zstd.EncoderLevel) *zstd.Encoder {
	if e, ok := c.encoders.Load(level); ok {
		return e.(*zstd.Encoder)
	}
	e, err := zstd.NewWriter(nil, zstd.WithZeroFrames(true), zstd.WithEncoderLevel(level),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithAllLitEntropyCompression(true),
		zstd.WithWindowSize(pageWindow))
	if err != nil {
		panic("exporter: zstd encoder: " + err.Error()) // the options are constants
	}
	actual, loaded := c.encoders.LoadOrStore(level, e)
	if loaded {
		e.Close()
	}
	return actual.(*zstd.Encoder)
}

func (c *pageCodec) Encode(dst, src []byte) []byte {
	return c.encoder(zstd.SpeedDefault).EncodeAll(src, dst[:0])
}

func (c *pageCodec) EncodeLevel(dst, src []byte, level int) []byte {
	l := zstd.EncoderLevelFromZstd(level)
	if level == compress.DefaultCompressionLevel {
		l = zstd.SpeedDefault
	}
	return c.encoder(l).EncodeAll(src, dst[:0])
}

// DecodeWithError is arrow's, so that a damaged page is an error rather
// than a panic.
func (c *pageCodec) DecodeWithError(dst, src []byte) ([]byte, error) {
	return compress.Decode(c.Codec, dst, src)
}

func (c *pageCodec) NewReader(r io.Reader) io.ReadCloser {
	return c.Codec.(compress.StreamingCodec).NewReader(r)
}

func (c *pageCodec) NewWriter(w io.Writer) io.WriteCloser {
	return c.Codec.(compress.StreamingCodec).NewWriter(w)
}

func (c *pageCodec) NewWriterLevel(w io.Writer, level int) (io.WriteCloser, error) {
	return c.Codec.(compress.StreamingCodec).NewWriterLevel(w, level)
}

package exporter

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
	"unsafe"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/twilio"
)

// A record is one binding row in the compact binary form that digests and
// the runs of the external sort hold: every field of the API and
// synced_at, the sort key (service_sid, sid) first. A string is
// uvarint(0) for null or uvarint(len+1) and its bytes; a timestamp is a
// byte 0 for null or 1 and varint(microseconds); message_types is
// uvarint(0) for null or uvarint(n+1) and n strings as uvarint(len) and
// bytes; synced_at is varint(microseconds). Records are ordered by
// compareRecords.

// errBadRecord is returned (wrapped) for a record that does not decode.
var errBadRecord = errors.New("malformed record")

// appendRecord appends the record of r to dst.
func appendRecord(dst []byte, r *schemas.Row) []byte {
	return appendBindingRecord(dst, &r.Binding, r.SyncedAt)
}

// appendBindingRecord appends the record of the row of b read at syncedAt
// to dst.
func appendBindingRecord(dst []byte, b *twilio.Binding, syncedAt time.Time) []byte {
	dst = appendOptString(dst, b.ServiceSID)
	dst = appendOptString(dst, b.SID)
	dst = appendOptString(dst, b.AccountSID)
	dst = appendOptTime(dst, b.DateCreated)
	dst = appendOptTime(dst, b.DateUpdated)
	dst = appendOptString(dst, b.Endpoint)
	dst = appendOptString(dst, b.Identity)
	dst = appendOptString(dst, b.UserSID)
	dst = appendOptString(dst, b.CredentialSID)
	dst = appendOptString(dst, b.BindingType)
	if b.MessageTypes == nil {
		dst = binary.AppendUvarint(dst, 0)
	} else {
		dst = binary.AppendUvarint(dst, uint64(len(b.MessageTypes))+1)
		for _, mt := range b.MessageTypes {
			dst = binary.AppendUvarint(dst, uint64(len(mt)))
			dst = append(dst, mt...)
		}
	}
	dst = appendOptString(dst, b.URL)
	return binary.AppendVarint(dst, syncedAt.UnixMicro())
}

func appendOptString(dst []byte, s *string) []byte {
	if s == nil {
		return binary.AppendUvarint(dst, 0)
	}
	dst = binary.AppendUvarint(dst, uint64(len(*s))+1)
	return append(dst, *s...)
}

func appendOptTime(dst []byte, t *time.Time) []byte {
	if t == nil {
		return append(dst, 0)
	}
	return binary.AppendVarint(append(dst, 1), t.UnixMicro())
}

// recordDecoder reads the fields of one record in order.
type recordDecoder struct {
	data []byte
	err  error
}

func (d *recordDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.data)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad length", errBadRecord)
		return 0
	}
	d.data = d.data[n:]
	return v
}

// bytes returns the next n bytes, sharing the record's memory.
func (d *recordDecoder) bytes(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.data)) {
		d.err = fmt.Errorf("%w: a field runs past the end", errBadRecord)
		return nil
	}
	b := d.data[:n:n]
	d.data = d.data[n:]
	return b
}

// optBytes returns a string field: null, or its bytes.
func (d *recordDecoder) optBytes() (b []byte, null bool) {
	n := d.uvarint()
	if d.err != nil || n == 0 {
		return nil, true
	}
	return d.bytes(n - 1), false
}

func (d *recordDecoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.data)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad number", errBadRecord)
		return 0
	}
	d.data = d.data[n:]
	return v
}

// optTime returns a timestamp field: its value, or false when it is null.
func (d *recordDecoder) optTime() (time.Time, bool) {
	if d.err != nil {
		return time.Time{}, false
	}
	if len(d.data) == 0 {
		d.err = fmt.Errorf("%w: a timestamp runs past the end", errBadRecord)
		return time.Time{}, false
	}
	flag := d.data[0]
	d.data = d.data[1:]
	switch flag {
	case 0:
		return time.Time{}, false
	case 1:
		t := time.UnixMicro(d.varint()).UTC()
		return t, d.err == nil
	}
	d.err = fmt.Errorf("%w: timestamp flag %d", errBadRecord, flag)
	return time.Time{}, false
}

// decodeRecord decodes a record into a row (snapshot_date left zero). The
// row does not share rec's memory.
func decodeRecord(rec []byte) (schemas.Row, error) {
	var v rowView
	r, err := v.decode(rec)
	if err != nil {
		return schemas.Row{}, err
	}
	return r.Clone(), nil
}

// rowView decodes records into one row reused from record to record,
// whose strings share the record's bytes: each decoded row is valid only
// while its record is, and until the next decode.
type rowView struct {
	row   schemas.Row
	strs  [9]string
	times [2]time.Time
	types []string
}

func (v *rowView) decode(rec []byte) (*schemas.Row, error) {
	d := recordDecoder{data: rec}
	str := func(slot *string) *string {
		b, null := d.optBytes()
		if null || d.err != nil {
			return nil
		}
		*slot = view(b)
		return slot
	}
	tm := func(slot *time.Time) *time.Time {
		t, ok := d.optTime()
		if !ok {
			return nil
		}
		*slot = t
		return slot
	}
	b := &v.row.Binding
	b.ServiceSID = str(&v.strs[0])
	b.SID = str(&v.strs[1])
	b.AccountSID = str(&v.strs[2])
	b.DateCreated = tm(&v.times[0])
	b.DateUpdated = tm(&v.times[1])
	b.Endpoint = str(&v.strs[3])
	b.Identity = str(&v.strs[4])
	b.UserSID = str(&v.strs[5])
	b.CredentialSID = str(&v.strs[6])
	b.BindingType = str(&v.strs[7])
	b.MessageTypes = nil
	if n := d.uvarint(); n > 0 && d.err == nil {
		if n-1 > uint64(len(d.data)) {
			return nil, fmt.Errorf("%w: %d message types in %d bytes", errBadRecord, n-1, len(d.data))
		}
		if v.types == nil {
			v.types = make([]string, 0, 4)
		}
		v.types = v.types[:0]
		for i := uint64(1); i < n && d.err == nil; i++ {
			v.types = append(v.types, view(d.bytes(d.uvarint())))
		}
		b.MessageTypes = v.types
	}
	b.URL = str(&v.strs[8])
	v.row.SyncedAt = time.UnixMicro(d.varint()).UTC()
	if d.err == nil && len(d.data) != 0 {
		d.err = fmt.Errorf("%w: %d bytes after the last field", errBadRecord, len(d.data))
	}
	if d.err != nil {
		return nil, d.err
	}
	return &v.row, nil
}

// view is b as a string sharing its bytes.
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// recordKey returns the sort key of a record: service_sid and sid, each
// null or bytes shared with the record.
func recordKey(rec []byte) (svc []byte, svcNull bool, sid []byte, sidNull bool, err error) {
	d := recordDecoder{data: rec}
	svc, svcNull = d.optBytes()
	sid, sidNull = d.optBytes()
	return svc, svcNull, sid, sidNull, d.err
}

// compareKeysFast is compareKeys for the usual records, whose keys have
// the same length in both (every SID has 34 characters): a field whose
// length prefix is the same single byte in both compares as bytes. It
// reports false when a field is null, or the lengths differ, or the
// prefix takes more than a byte, and compareKeys decodes the keys.
func compareKeysFast(a, b []byte) (int, bool) {
	for range 2 {
		if len(a) == 0 || len(b) == 0 || a[0] != b[0] || a[0] == 0 || a[0] >= 0x80 {
			return 0, false
		}
		n := int(a[0]) // the length plus one: the field is a[1:n]
		if len(a) < n || len(b) < n {
			return 0, false
		}
		if c := bytes.Compare(a[1:n], b[1:n]); c != 0 {
			return c, true
		}
		a, b = a[n:], b[n:]
	}
	return 0, true
}

// compareKeys orders two records by service_sid, then sid, a null first.
// A malformed record sorts first; reading it fails later.
func compareKeys(a, b []byte) int {
	if c, ok := compareKeysFast(a, b); ok {
		return c
	}
	return compareKeysDecoded(a, b)
}

// compareKeysDecoded is compareKeys for any records.
func compareKeysDecoded(a, b []byte) int {
	as, asn, ai, ain, aerr := recordKey(a)
	bs, bsn, bi, bin, berr := recordKey(b)
	if aerr != nil || berr != nil {
		return compareBool(aerr == nil, berr == nil)
	}
	if c := compareOpt(as, asn, bs, bsn); c != 0 {
		return c
	}
	return compareOpt(ai, ain, bi, bin)
}

// compareRecords is the total order of records: by key, then by the
// record's bytes, so that sorting is deterministic even when a key
// repeats.
func compareRecords(a, b []byte) int {
	if c := compareKeys(a, b); c != 0 {
		return c
	}
	return bytes.Compare(a, b)
}

func compareOpt(a []byte, aNull bool, b []byte, bNull bool) int {
	if aNull || bNull {
		return compareBool(!aNull, !bNull)
	}
	return bytes.Compare(a, b)
}

// compareBool orders false before true.
func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// changedColumns returns the columns of schemas.ComparedColumns whose
// values differ between old and new, in schema order; nil when none does.
// synced_at is not compared.
func changedColumns(old, new *twilio.Binding) []string {
	var out []string
	str := func(col string, a, b *string) {
		if (a == nil) != (b == nil) || a != nil && *a != *b {
			out = append(out, col)
		}
	}
	tm := func(col string, a, b *time.Time) {
		if (a == nil) != (b == nil) || a != nil && !a.Equal(*b) {
			out = append(out, col)
		}
	}
	str(schemas.ColSID, old.SID, new.SID)
	str(schemas.ColAccountSID, old.AccountSID, new.AccountSID)
	str(schemas.ColServiceSID, old.ServiceSID, new.ServiceSID)
	tm(schemas.ColDateCreated, old.DateCreated, new.DateCreated)
	tm(schemas.ColDateUpdated, old.DateUpdated, new.DateUpdated)
	str(schemas.ColEndpoint, old.Endpoint, new.Endpoint)
	str(schemas.ColIdentity, old.Identity, new.Identity)
	str(schemas.ColUserSID, old.UserSID, new.UserSID)
	str(schemas.ColCredentialSID, old.CredentialSID, new.CredentialSID)
	str(schemas.ColBindingType, old.BindingType, new.BindingType)
	if (old.MessageTypes == nil) != (new.MessageTypes == nil) || !slices.Equal(old.MessageTypes, new.MessageTypes) {
		out = append(out, schemas.ColMessageTypes)
	}
	str(schemas.ColURL, old.URL, new.URL)
	return out
}

// Compression of digests: zstd at its fastest level with a small window,
// so that an open digest costs about half a megabyte of decoder memory (a
// 512 KiB window costs 1.2 MiB, for under 1% smaller streams), and a
// damaged one cannot ask for more. Sort runs use S2 instead (runBlock).
const (
	recordWindow     = 128 << 10
	recordReadBuffer = 64 << 10
	// maxRecordBytes bounds a record read back: larger than any row a
	// part accepts (a few fields of MaxValueBytes would not fit in a
	// Twilio response anyway), so a larger length means damage.
	maxRecordBytes = 1 << 30
)

// streamConcurrency is the blocks of a record stream compressed or
// decompressed at once: 2 compresses (or decompresses) one block in a
// goroutine of its own while the caller fills (or reads) the next, so a
// digest or a sort run costs the caller about its records' encoding alone
// and uses a second core, at the price of a block or two more of memory.
const streamConcurrency = 2

// recordWriter writes a stream of records: each as uvarint(len) and its
// bytes, then uvarint(0) and uvarint(count) to mark a complete stream,
// all compressed (zstd for a digest, S2 for a sort run).
type recordWriter struct {
	enc  io.WriteCloser
	buf  *bufio.Writer
	n    int64
	lenb [2 * binary.MaxVarintLen64]byte
}

func newRecordWriter(w io.Writer) (*recordWriter, error) {
	enc, err := zstd.NewWriter(w,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithWindowSize(recordWindow),
		zstd.WithEncoderConcurrency(streamConcurrency),
		zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, fmt.Errorf("start compressed records: %w", err)
	}
	return &recordWriter{enc: enc, buf: bufio.NewWriterSize(enc, recordReadBuffer)}, nil
}

// runBlock is the block size of the runs of the external sort, which are
// compressed with S2 rather than zstd: they live for one sort, on local
// disk, where speed matters more than size. Measured on sorted binding
// records, S2 runs take 215 bytes a record against zstd's 160, and
// BenchmarkChanges (16 MiB runs) takes 3.0 s instead of 3.9 s. Each open
// run costs about two blocks of memory and runReadBuffer: a merge of
// mergeFanIn runs holds about 3 MiB, where blocks of 128 KiB held 11.
// Runs written with blocks up to maxRunBlock (as earlier versions wrote
// them) are still read.
const (
	runBlock      = 32 << 10
	maxRunBlock   = 128 << 10
	runReadBuffer = 16 << 10
)

// newRunWriter is newRecordWriter for a run of the external sort.
func newRunWriter(w io.Writer) *recordWriter {
	enc := s2.NewWriter(w, s2.WriterConcurrency(streamConcurrency), s2.WriterBlockSize(runBlock))
	return &recordWriter{enc: enc, buf: bufio.NewWriterSize(enc, recordReadBuffer)}
}

func (w *recordWriter) write(rec []byte) error {
	if len(rec) == 0 {
		return fmt.Errorf("%w: empty record", errBadRecord)
	}
	n := binary.PutUvarint(w.lenb[:], uint64(len(rec)))
	if _, err := w.buf.Write(w.lenb[:n]); err != nil {
		return err
	}
	if _, err := w.buf.Write(rec); err != nil {
		return err
	}
	w.n++
	return nil
}

// finish writes the end of the stream and flushes it; the underlying
// writer is not closed.
func (w *recordWriter) finish() error {
	n := binary.PutUvarint(w.lenb[:], 0)
	n += binary.PutUvarint(w.lenb[n:], uint64(w.n))
	if _, err := w.buf.Write(w.lenb[:n]); err != nil {
		return err
	}
	if err := w.buf.Flush(); err != nil {
		return err
	}
	return w.enc.Close()
}

// abort releases the encoder without finishing the stream.
func (w *recordWriter) abort() { w.enc.Close() }

// errStreamEnd is returned by recordReader.next at the end of a complete
// stream.
var errStreamEnd = io.EOF

// recordReader reads a stream written by recordWriter. A stream cut short
// or followed by anything is an error wrapping errBadRecord, never a
// silent end.
type recordReader struct {
	buf     *bufio.Reader
	release func()
	rec     []byte
	n       int64
	end     bool
}

func newRecordReader(r io.Reader) (*recordReader, error) {
	dec, err := zstd.NewReader(r,
		zstd.WithDecoderConcurrency(streamConcurrency),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(recordWindow))
	if err != nil {
		return nil, fmt.Errorf("open compressed records: %w", err)
	}
	return &recordReader{buf: bufio.NewReaderSize(dec, recordReadBuffer), release: dec.Close}, nil
}

// newRunReader reads a run written by newRunWriter.
func newRunReader(r io.Reader) *recordReader {
	dec := s2.NewReader(r, s2.ReaderMaxBlockSize(maxRunBlock), s2.ReaderAllocBlock(runBlock))
	return &recordReader{buf: bufio.NewReaderSize(dec, runReadBuffer), release: func() {}}
}

// next returns the next record, valid until the following call, or
// errStreamEnd after the last one.
func (r *recordReader) next() ([]byte, error) {
	if r.end {
		return nil, errStreamEnd
	}
	size, err := binary.ReadUvarint(r.buf)
	if err != nil {
		return nil, r.cut(err)
	}
	if size == 0 {
		count, err := binary.ReadUvarint(r.buf)
		if err != nil {
			return nil, r.cut(err)
		}
		if int64(count) != r.n {
			return nil, fmt.Errorf("%w: the stream says %d records, %d were read", errBadRecord, count, r.n)
		}
		if _, err := r.buf.ReadByte(); err != io.EOF {
			if err == nil {
				return nil, fmt.Errorf("%w: data after the end of the stream", errBadRecord)
			}
			return nil, r.cut(err)
		}
		r.end = true
		return nil, errStreamEnd
	}
	if size > maxRecordBytes {
		return nil, fmt.Errorf("%w: a record of %d bytes", errBadRecord, size)
	}
	if uint64(cap(r.rec)) < size {
		r.rec = make([]byte, size)
	}
	r.rec = r.rec[:size]
	if _, err := io.ReadFull(r.buf, r.rec); err != nil {
		return nil, r.cut(err)
	}
	r.n++
	return r.rec, nil
}

// cut describes a read error: an early end is damage, anything else is
// passed on.
func (r *recordReader) cut(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: the stream ends after %d records, before its end mark", errBadRecord, r.n)
	}
	return fmt.Errorf("read records: %w", err)
}

func (r *recordReader) close() { r.release() }

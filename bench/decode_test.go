package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/twilio/bindjson"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

// The decode benchmarks compare, on the same in-memory pages and without
// any HTTP, the two ways of turning a Bindings page body into rows:
//
//   - BenchmarkDecodeEncodingJSON: what the Twilio client does today, a
//     json.Decoder into the client's page struct of pointers, and nothing
//     else: the decode-only baseline of issue 9.
//   - BenchmarkDecodeFast: bindjson.Decoder into a sink that only counts,
//     the least a consumer can do.
//   - BenchmarkDecodeToArrowEncodingJSON: the baseline, then
//     schemas.AppendBinding of every row into Arrow builders, as the
//     exporter does today.
//   - BenchmarkDecodeToArrowFast: bindjson.Decoder into a sink that appends
//     straight into the same Arrow builders.
//   - BenchmarkDecodeToArrowFastDict: the same with dictionary builders for
//     the low-cardinality columns (account_sid, service_sid,
//     credential_sid, binding_type), the schema change proposed for the
//     exporter.
//
// Each runs at PageSize 50 and 1000 and reports bindings/s, B/binding and
// allocs/binding (all allocation of the measured loop, divided by the
// bindings decoded) and json-B/binding, the mean size of a record's JSON.

// decodeWorkload is the number of bindings each iteration decodes: enough
// pages of 1000 to make the figures steady, few enough to keep the pages in
// a few tens of megabytes.
const decodeWorkload = 20000

// pageSet is a list of page bodies and the bindings they hold.
type pageSet struct {
	pages    [][]byte
	bindings int
	bytes    int
}

var (
	pageSetsOnce sync.Once
	pageSets     map[int]pageSet
)

// decodePages returns decodeWorkload bindings of the benchmark world as
// pages of size records, each as the fake server writes it.
func decodePages(tb testing.TB, size int) pageSet {
	pageSetsOnce.Do(func() {
		world := twiliotest.NewWorld(twiliotest.WorldSpec{
			Seed: worldSeed, Services: worldServices, UsersPerService: usersPerService, MaxBindingsPerUser: maxBindingsPerUser,
		})
		var all []twilio.Binding
		for bd := range world.AllBindings() {
			all = append(all, bd)
			if len(all) == decodeWorkload {
				break
			}
		}
		pageSets = map[int]pageSet{}
		for _, n := range []int{50, 1000} {
			var set pageSet
			for start := 0; start < len(all); start += n {
				end := min(start+n, len(all))
				data, err := json.Marshal(benchPage(all[start:end], n, start/n, end < len(all)))
				if err != nil {
					panic(err)
				}
				set.pages = append(set.pages, data)
				set.bindings += end - start
				set.bytes += len(data)
			}
			pageSets[n] = set
		}
	})
	set, ok := pageSets[size]
	if !ok {
		tb.Fatalf("no pages of size %d", size)
	}
	return set
}

// benchPage is a page as the fake server writes it, with a next page URL
// holding a page token while there are more.
func benchPage(bs []twilio.Binding, size, page int, more bool) any {
	base := "https://chat.twilio.com/v2/Services/IS0123456789abcdef0123456789abcdef/Users/US0123456789abcdef0123456789abcdef/Bindings"
	meta := twilio.Meta{
		Key: "bindings", Page: page, PageSize: size,
		URL:          fmt.Sprintf("%s?PageSize=%d&Page=%d", base, size, page),
		FirstPageURL: fmt.Sprintf("%s?PageSize=%d&Page=0", base, size),
	}
	if more {
		next := fmt.Sprintf("%s?PageSize=%d&Page=%d&PageToken=PT%s", base, size, page+1, *bs[len(bs)-1].SID)
		meta.NextPageURL = &next
	}
	return struct {
		Bindings []twilio.Binding `json:"bindings"`
		Meta     twilio.Meta      `json:"meta"`
	}{bs, meta}
}

// clientPage is the bindings half of the Twilio client's list body.
type clientPage struct {
	Meta     *twilio.Meta     `json:"meta"`
	Bindings []twilio.Binding `json:"bindings"`
}

// runDecode runs decode over every page of the set per iteration and
// reports the per-binding figures.
func runDecode(b *testing.B, size int, decode func(page []byte) (int, error)) {
	set := decodePages(b, size)
	// One unmeasured pass warms the buffers that a long run reuses.
	for _, p := range set.pages {
		if _, err := decode(p); err != nil {
			b.Fatal(err)
		}
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	iterations := 0
	for b.Loop() {
		n := 0
		for _, p := range set.pages {
			k, err := decode(p)
			if err != nil {
				b.Fatal(err)
			}
			n += k
		}
		if n != set.bindings {
			b.Fatalf("decoded %d bindings, want %d", n, set.bindings)
		}
		iterations++
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	total := float64(iterations * set.bindings)
	b.ReportMetric(total/b.Elapsed().Seconds(), "bindings/s")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/total, "B/binding")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/total, "allocs/binding")
	b.ReportMetric(float64(set.bytes)/float64(set.bindings), "json-B/binding")
}

var decodePageSizes = []int{50, 1000}

func BenchmarkDecodeEncodingJSON(b *testing.B) {
	for _, size := range decodePageSizes {
		b.Run(fmt.Sprintf("PageSize=%d", size), func(b *testing.B) {
			runDecode(b, size, func(data []byte) (int, error) {
				var page clientPage
				err := json.NewDecoder(bytes.NewReader(data)).Decode(&page)
				return len(page.Bindings), err
			})
		})
	}
}

func BenchmarkDecodeFast(b *testing.B) {
	for _, size := range decodePageSizes {
		b.Run(fmt.Sprintf("PageSize=%d", size), func(b *testing.B) {
			var d bindjson.Decoder
			sink := &countingSink{}
			runDecode(b, size, func(data []byte) (int, error) {
				p, err := d.DecodePage(data, sink)
				return p.Records, err
			})
		})
	}
}

func BenchmarkDecodeToArrowEncodingJSON(b *testing.B) {
	for _, size := range decodePageSizes {
		b.Run(fmt.Sprintf("PageSize=%d", size), func(b *testing.B) {
			rb := array.NewRecordBuilder(memory.NewGoAllocator(), schemas.Binding())
			defer rb.Release()
			meta := schemas.RowMeta{SnapshotDate: snapshotDate, SyncedAt: snapshotDate.Add(time.Hour)}
			rows := 0
			runDecode(b, size, func(data []byte) (int, error) {
				var page clientPage
				if err := json.NewDecoder(bytes.NewReader(data)).Decode(&page); err != nil {
					return 0, err
				}
				for i := range page.Bindings {
					schemas.AppendBinding(rb, meta, &page.Bindings[i])
				}
				rows = flushRows(rb, rows+len(page.Bindings))
				return len(page.Bindings), nil
			})
		})
	}
}

func BenchmarkDecodeToArrowFast(b *testing.B) {
	for _, size := range decodePageSizes {
		b.Run(fmt.Sprintf("PageSize=%d", size), func(b *testing.B) {
			rb := array.NewRecordBuilder(memory.NewGoAllocator(), schemas.Binding())
			defer rb.Release()
			sink, err := newArrowSink(rb, schemas.RowMeta{SnapshotDate: snapshotDate, SyncedAt: snapshotDate.Add(time.Hour)})
			if err != nil {
				b.Fatal(err)
			}
			var d bindjson.Decoder
			rows := 0
			runDecode(b, size, func(data []byte) (int, error) {
				p, err := d.DecodePage(data, sink)
				rows = flushRows(rb, rows+p.Records)
				return p.Records, err
			})
		})
	}
}

func BenchmarkDecodeToArrowFastDict(b *testing.B) {
	for _, size := range decodePageSizes {
		b.Run(fmt.Sprintf("PageSize=%d", size), func(b *testing.B) {
			rb := array.NewRecordBuilder(memory.NewGoAllocator(), dictSchema())
			defer rb.Release()
			sink, err := newArrowSink(rb, schemas.RowMeta{SnapshotDate: snapshotDate, SyncedAt: snapshotDate.Add(time.Hour)})
			if err != nil {
				b.Fatal(err)
			}
			var d bindjson.Decoder
			rows := 0
			runDecode(b, size, func(data []byte) (int, error) {
				p, err := d.DecodePage(data, sink)
				rows = flushRows(rb, rows+p.Records)
				return p.Records, err
			})
		})
	}
}

// dictColumns are the columns with few distinct values in a snapshot: one
// account, a few services and credentials, three binding types.
var dictColumns = []string{schemas.ColAccountSID, schemas.ColServiceSID, schemas.ColCredentialSID, schemas.ColBindingType}

// dictSchema is schemas.Binding with dictionary-encoded dictColumns.
func dictSchema() *arrow.Schema {
	base := schemas.Binding()
	fields := base.Fields()
	for i, f := range fields {
		if slices.Contains(dictColumns, f.Name) {
			fields[i].Type = &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int32, ValueType: arrow.BinaryTypes.String}
		}
	}
	md := base.Metadata()
	return arrow.NewSchema(fields, &md)
}

// batchRows is the rows of one Arrow record batch in the Arrow benchmarks,
// about what the exporter's byte-bounded batches hold.
const batchRows = 8192

// flushRows releases a record batch once rows reach batchRows, as the
// exporter hands batches to the Parquet writer, and returns the rows left.
func flushRows(rb *array.RecordBuilder, rows int) int {
	if rows < batchRows {
		return rows
	}
	rb.NewRecordBatch().Release()
	return 0
}

// countingSink touches every value and keeps nothing: the decoder's own
// cost.
type countingSink struct{ bytes, values int }

func (s *countingSink) BeginRecord()                      {}
func (s *countingSink) String(f bindjson.Field, v []byte) { s.bytes += len(v) }
func (s *countingSink) Time(f bindjson.Field, us int64)   { s.values++ }
func (s *countingSink) Null(f bindjson.Field)             { s.values++ }
func (s *countingSink) EndRecord() error                  { return nil }
func (s *countingSink) StringList(f bindjson.Field, vs [][]byte) {
	for _, v := range vs {
		s.bytes += len(v)
	}
}

// arrowSink appends each field straight into the column builders of the
// Binding schema: the recipe for the exporter. Strings are appended as the
// bytes the decoder hands over, with no Go string in between; the columns
// bindsync adds (snapshot_date, synced_at) are appended at EndRecord.
type arrowSink struct {
	str        [bindjson.NumFields]*array.BinaryBuilder
	dict       [bindjson.NumFields]*array.BinaryDictionaryBuilder
	err        error // the first failure of a dictionary builder
	ts         [bindjson.NumFields]*array.TimestampBuilder
	list       *array.ListBuilder
	listValues *array.BinaryBuilder
	snapshot   *array.Date32Builder
	syncedAt   *array.TimestampBuilder
	date       arrow.Date32
	synced     arrow.Timestamp
}

func newArrowSink(rb *array.RecordBuilder, meta schemas.RowMeta) (*arrowSink, error) {
	s := &arrowSink{
		date:   arrow.Date32FromTime(meta.SnapshotDate.UTC()),
		synced: arrow.Timestamp(meta.SyncedAt.UnixMicro()),
	}
	col := func(name string) (array.Builder, error) {
		idx := rb.Schema().FieldIndices(name)
		if len(idx) != 1 {
			return nil, fmt.Errorf("schema has %d columns %q", len(idx), name)
		}
		return rb.Field(idx[0]), nil
	}
	for f := range bindjson.Field(bindjson.NumFields) {
		if f == bindjson.LinksUser {
			continue // not a column: the worker maps it to user_sid
		}
		c, err := col(f.String())
		if err != nil {
			return nil, err
		}
		switch cb := c.(type) {
		case *array.StringBuilder:
			s.str[f] = cb.BinaryBuilder
		case *array.BinaryDictionaryBuilder:
			s.dict[f] = cb
		case *array.TimestampBuilder:
			s.ts[f] = cb
		case *array.ListBuilder:
			s.list = cb
			s.listValues = cb.ValueBuilder().(*array.StringBuilder).BinaryBuilder
		default:
			return nil, fmt.Errorf("column %s has builder %T", f, c)
		}
	}
	c, err := col(schemas.ColSnapshotDate)
	if err != nil {
		return nil, err
	}
	s.snapshot = c.(*array.Date32Builder)
	if c, err = col(schemas.ColSyncedAt); err != nil {
		return nil, err
	}
	s.syncedAt = c.(*array.TimestampBuilder)
	return s, nil
}

func (s *arrowSink) BeginRecord() {}

func (s *arrowSink) String(f bindjson.Field, v []byte) {
	if b := s.str[f]; b != nil {
		b.Append(v)
	} else if d := s.dict[f]; d != nil {
		if err := d.Append(v); err != nil && s.err == nil {
			s.err = fmt.Errorf("append %s: %w", f, err)
		}
	}
}

func (s *arrowSink) Time(f bindjson.Field, us int64) { s.ts[f].Append(arrow.Timestamp(us)) }

func (s *arrowSink) StringList(f bindjson.Field, vs [][]byte) {
	s.list.Append(true)
	for _, v := range vs {
		s.listValues.Append(v)
	}
}

func (s *arrowSink) Null(f bindjson.Field) {
	switch {
	case s.str[f] != nil:
		s.str[f].AppendNull()
	case s.dict[f] != nil:
		s.dict[f].AppendNull()
	case s.ts[f] != nil:
		s.ts[f].AppendNull()
	case f == bindjson.MessageTypes:
		s.list.AppendNull()
	}
}

func (s *arrowSink) EndRecord() error {
	s.snapshot.Append(s.date)
	s.syncedAt.Append(s.synced)
	return s.err
}

// TestArrowSinkEqualsAppendBinding checks the benchmark's Arrow sink
// against the exporter's way, on the benchmark pages: both must build equal
// record batches, or the two Arrow benchmarks would not measure the same
// work.
func TestArrowSinkEqualsAppendBinding(t *testing.T) {
	set := decodePages(t, 50)
	meta := schemas.RowMeta{SnapshotDate: snapshotDate, SyncedAt: snapshotDate.Add(time.Hour)}
	want := array.NewRecordBuilder(memory.NewGoAllocator(), schemas.Binding())
	defer want.Release()
	got := array.NewRecordBuilder(memory.NewGoAllocator(), schemas.Binding())
	defer got.Release()
	sink, err := newArrowSink(got, meta)
	if err != nil {
		t.Fatal(err)
	}
	var d bindjson.Decoder
	for _, data := range set.pages[:20] {
		var page clientPage
		if err := json.Unmarshal(data, &page); err != nil {
			t.Fatal(err)
		}
		for i := range page.Bindings {
			schemas.AppendBinding(want, meta, &page.Bindings[i])
		}
		if _, err := d.DecodePage(data, sink); err != nil {
			t.Fatal(err)
		}
	}
	w, g := want.NewRecordBatch(), got.NewRecordBatch()
	defer w.Release()
	defer g.Release()
	if w.NumRows() != 1000 || !array.RecordEqual(w, g) {
		t.Fatalf("the Arrow sink built %d rows that differ from AppendBinding's %d", g.NumRows(), w.NumRows())
	}
}

// TestDictionarySchemaRoundTripsParquet writes the benchmark pages through
// the dictionary sink and pqarrow, reads the file back and finds every
// value of the plain schema's batch: dictionary columns are a change of
// the Arrow schema only, not of what readers get.
func TestDictionarySchemaRoundTripsParquet(t *testing.T) {
	set := decodePages(t, 50)
	meta := schemas.RowMeta{SnapshotDate: snapshotDate, SyncedAt: snapshotDate.Add(time.Hour)}
	plain := array.NewRecordBuilder(memory.NewGoAllocator(), schemas.Binding())
	defer plain.Release()
	dict := array.NewRecordBuilder(memory.NewGoAllocator(), dictSchema())
	defer dict.Release()
	var d bindjson.Decoder
	for _, rb := range []*array.RecordBuilder{plain, dict} {
		sink, err := newArrowSink(rb, meta)
		if err != nil {
			t.Fatal(err)
		}
		for _, data := range set.pages[:20] {
			if _, err := d.DecodePage(data, sink); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := plain.NewRecordBatch()
	defer want.Release()
	rec := dict.NewRecordBatch()
	defer rec.Release()

	var buf bytes.Buffer
	w, err := pqarrow.NewFileWriter(rec.Schema(), &buf,
		parquet.NewWriterProperties(parquet.WithCompression(compress.Codecs.Zstd)),
		pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	tbl, err := pqarrow.ReadTable(context.Background(), bytes.NewReader(buf.Bytes()), nil, pqarrow.ArrowReadProperties{}, memory.NewGoAllocator())
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Release()
	if tbl.NumRows() != want.NumRows() || want.NumRows() != 1000 {
		t.Fatalf("read %d rows, wrote %d", tbl.NumRows(), want.NumRows())
	}
	dictRead := 0
	for i, f := range want.Schema().Fields() {
		col := tbl.Column(i)
		if col.Len() != int(want.NumRows()) || len(col.Data().Chunks()) != 1 {
			t.Fatalf("column %s: %d rows in %d chunks", f.Name, col.Len(), len(col.Data().Chunks()))
		}
		got := col.Data().Chunk(0)
		if d, ok := got.(*array.Dictionary); ok {
			values := d.Dictionary().(*array.String)
			ref := want.Column(i).(*array.String)
			for r := range ref.Len() {
				if ref.IsNull(r) != d.IsNull(r) || !ref.IsNull(r) && ref.Value(r) != values.Value(d.GetValueIndex(r)) {
					t.Fatalf("column %s row %d: read %q, want %q", f.Name, r, values.Value(d.GetValueIndex(r)), ref.Value(r))
				}
			}
			dictRead++
			continue
		}
		if !array.Equal(got, want.Column(i)) {
			t.Fatalf("column %s differs after the round trip", f.Name)
		}
	}
	if dictRead != len(dictColumns) {
		t.Fatalf("%d columns read back as dictionaries, want the %d written so", dictRead, len(dictColumns))
	}
}

package bindjson_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bindsync/bindsync/twilio/bindjson"
)

func TestRealPagesEqualEncodingJSON(t *testing.T) {
	var d bindjson.Decoder
	for name, data := range realPages(t) {
		t.Run(name, func(t *testing.T) {
			got := checkEquivalent(t, &d, data)
			if got.err != nil {
				t.Fatalf("a real page fails: %v", got.err)
			}
			if !got.page.HasMeta || !got.page.HasBindings || got.page.Meta.Key != "bindings" {
				t.Fatalf("page = %+v, want meta and bindings", got.page)
			}
			wide := strings.HasPrefix(name, "service-wide")
			for i, r := range got.recs {
				if r.SID == nil || r.DateCreated == nil || r.BindingType == nil || r.Identity == nil {
					t.Fatalf("record %d lacks a field the fake always sends: %s", i, dump(r))
				}
				if (r.UserSID == nil) != wide {
					t.Fatalf("record %d: user_sid %v on a %s page", i, r.UserSID, name)
				}
				if (got.links[i] != nil) != wide {
					t.Fatalf("record %d: links.user %v on a %s page", i, got.links[i], name)
				}
				if wide && !strings.Contains(*got.links[i], "/Users/") {
					t.Fatalf("record %d: links.user = %q", i, *got.links[i])
				}
			}
		})
	}
}

func TestHostileBodiesEqualEncodingJSON(t *testing.T) {
	var d bindjson.Decoder
	for i, body := range hostileSeeds {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			checkEquivalent(t, &d, []byte(body))
		})
	}
}

// TestCutPagesEqualEncodingJSON cuts a real page at every length and
// changes single bytes: every cut fails as truncated, and each changed body
// is decoded as encoding/json decodes it.
func TestCutPagesEqualEncodingJSON(t *testing.T) {
	var d bindjson.Decoder
	page := realPages(t)["user a/b"]
	for n := 0; n < len(page); n++ {
		got := checkEquivalent(t, &d, page[:n])
		if n > 0 && !errors.Is(got.err, bindjson.ErrTruncated) {
			t.Fatalf("page cut at %d of %d: error %v, want ErrTruncated", n, len(page), got.err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	replacements := []byte("\x00\x1f \"\\/{}[],:0-.eEtfnu\x80\xff")
	for range 3000 {
		body := []byte(string(page))
		body[rng.IntN(len(body))] = replacements[rng.IntN(len(replacements))]
		checkEquivalent(t, &d, body)
	}
}

func TestDecodeValues(t *testing.T) {
	s := func(v string) *string { return &v }
	utc := func(v string) *time.Time {
		tm, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			t.Fatal(err)
		}
		tm = tm.UTC()
		return &tm
	}
	tests := []struct {
		name string
		body string
		want []bindjson.Binding
	}{
		{"invalid UTF-8 becomes U+FFFD byte by byte", "{\"bindings\":[{\"identity\":\"a\xffb\xed\xa0\x80\"}]}",
			[]bindjson.Binding{{Identity: s("a\uFFFDb\uFFFD\uFFFD\uFFFD")}}},
		{"lone and reversed surrogates become U+FFFD", `{"bindings":[{"identity":"\ud800x\udc00\ud800\ud83d\ude00"}]}`,
			[]bindjson.Binding{{Identity: s("\uFFFDx\uFFFD\uFFFD😀")}}},
		{"escapes", `{"bindings":[{"endpoint":"\"\\\/\b\f\n\r\t\u0000\u00e9"}]}`,
			[]bindjson.Binding{{Endpoint: s("\"\\/\b\f\n\r\t\x00é")}}},
		{"the last duplicate wins, null included", `{"bindings":[{"sid":"a","sid":"b","endpoint":"e","endpoint":null}]}`,
			[]bindjson.Binding{{SID: s("b")}}},
		{"keys match case-insensitively", "{\"Bindings\":[{\"SID\":\"a\",\"\u017fid\":\"b\",\"Binding_Type\":\"apn\"}]}",
			[]bindjson.Binding{{SID: s("b"), BindingType: s("apn")}}},
		{"null, empty and null elements in message_types", `{"bindings":[{"message_types":null},{"message_types":[]},{"message_types":[null,"a"]}]}`,
			[]bindjson.Binding{{}, {MessageTypes: []string{}}, {MessageTypes: []string{"", "a"}}}},
		{"a repeated list keeps earlier elements under nulls", `{"bindings":[{"message_types":["a","b","c"],"message_types":["x"],"message_types":[null,null,null,null]}]}`,
			[]bindjson.Binding{{MessageTypes: []string{"x", "b", "c", ""}}}},
		{"a repeated bindings list decodes over the earlier records", `{"bindings":[{"sid":"a","identity":"i"},{"sid":"b"}],"bindings":[{"sid":"c"},null,{}]}`,
			[]bindjson.Binding{{SID: s("c"), Identity: s("i")}, {SID: s("b")}, {}}},
		{"an empty repeated list starts afresh", `{"bindings":[{"sid":"a"}],"bindings":[],"bindings":[null]}`,
			[]bindjson.Binding{{}}},
		{"Twilio's timestamps and others", `{"bindings":[{"date_created":"2016-10-21T11:37:03Z","date_updated":"2016-10-21T13:37:03.5+02:00"},{"date_created":"0000-01-01T00:00:00Z","date_updated":"2000-02-29T23:59:59Z"}]}`,
			[]bindjson.Binding{{DateCreated: utc("2016-10-21T11:37:03Z"), DateUpdated: nil}, {DateCreated: utc("0000-01-01T00:00:00Z"), DateUpdated: utc("2000-02-29T23:59:59Z")}}},
	}
	var d bindjson.Decoder
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkEquivalent(t, &d, []byte(tt.body))
			if got.err != nil {
				t.Fatal(got.err)
			}
			if tt.name == "Twilio's timestamps and others" {
				// The offset form keeps its zone, as encoding/json does: compare
				// the instant only.
				if !got.recs[0].DateUpdated.Equal(*utc("2016-10-21T11:37:03.5Z")) {
					t.Fatalf("date_updated = %v", got.recs[0].DateUpdated)
				}
				got.recs[0].DateUpdated = nil
			}
			if !reflect.DeepEqual(got.recs, tt.want) {
				t.Fatalf("records\n%s\nwant\n%s", dump(got.recs), dump(tt.want))
			}
		})
	}
}

func TestLinksUser(t *testing.T) {
	body := `{"bindings":[{"links":{"user":"https://x/Users/a%2Fb"}},{"links":5},{"links":{"user":7}},{"links":{"USER":"u"}},{"links":{"user":"u"},"links":{}},{}]}`
	var d bindjson.Decoder
	got := checkEquivalent(t, &d, []byte(body))
	want := []string{"https://x/Users/a%2Fb", "<nil>", "<nil>", "u", "u", "<nil>"}
	var links []string
	for _, l := range got.links {
		if l == nil {
			links = append(links, "<nil>")
		} else {
			links = append(links, *l)
		}
	}
	if !reflect.DeepEqual(links, want) {
		t.Fatalf("links.user = %q, want %q", links, want)
	}
}

func TestMeta(t *testing.T) {
	var d bindjson.Decoder
	got := checkEquivalent(t, &d, []byte(`{"meta":{"page":1,"key":"k","next_page_url":"https://a/b?PageToken=a%2Bb=.","previous_page_url":"p"},"meta":{"page_size":2,"key":null,"previous_page_url":null,"extra":[{}]}}`))
	next := "https://a/b?PageToken=a%2Bb=."
	want := bindjson.Meta{Key: "k", Page: 1, PageSize: 2, NextPageURL: &next}
	if !got.page.HasMeta || got.page.HasBindings || !reflect.DeepEqual(got.page.Meta, want) {
		t.Fatalf("page = %+v (meta %s), want meta %s and no bindings", got.page, dump(got.page.Meta), dump(want))
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		body string
		kind error
		path string
	}{
		{``, bindjson.ErrTruncated, ""},
		{`{"bindings":[{"sid":"a`, bindjson.ErrTruncated, "bindings[0].sid"},
		{`{"bindings":[{},{"sid":"a"`, bindjson.ErrTruncated, "bindings[1]"},
		{`{"bindings":[{},{"sid":5}]}`, bindjson.ErrType, "bindings[1].sid"},
		{`{"bindings":[{"date_updated":"yesterday"}]}`, bindjson.ErrType, "bindings[0].date_updated"},
		{`{"bindings":[{"message_types":[{}]}]}`, bindjson.ErrType, "bindings[0].message_types"},
		{`{"bindings":[7]}`, bindjson.ErrType, "bindings[0]"},
		{`{"bindings":{}}`, bindjson.ErrType, "bindings"},
		{`{"meta":{"page_size":50.5}}`, bindjson.ErrType, "meta.page_size"},
		{`{"meta":"m"}`, bindjson.ErrType, "meta"},
		{`[]`, bindjson.ErrType, ""},
		{`{"bindings":[{"sid":"a"}]}}`, bindjson.ErrSyntax, ""},
		{`{"bindings":[{"sid":"a\qb"}]}`, bindjson.ErrSyntax, "bindings[0].sid"},
		{`{"bindings":[{"other":[1,,2]}]}`, bindjson.ErrSyntax, `bindings[0]."other"`},
		{`{"x":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`, bindjson.ErrSyntax, `"x"`},
	}
	var d bindjson.Decoder
	for _, tt := range tests {
		got := checkEquivalent(t, &d, []byte(tt.body))
		var e *bindjson.Error
		if !errors.As(got.err, &e) || !errors.Is(got.err, tt.kind) || e.Path != tt.path {
			t.Errorf("body %.60q: error %v (path %q), want %v at %q", tt.body, got.err, pathOf(got.err), tt.kind, tt.path)
		}
	}
}

func pathOf(err error) string {
	var e *bindjson.Error
	if errors.As(err, &e) {
		return e.Path
	}
	return ""
}

// TestMaxRecords shows the one failure encoding/json does not have: a
// list of more records than MaxRecords.
func TestMaxRecords(t *testing.T) {
	body := `{"bindings":[` + strings.TrimSuffix(strings.Repeat("{},", 5), ",") + `]}`
	d := bindjson.Decoder{MaxRecords: 5}
	if got := checkEquivalent(t, &d, []byte(body)); got.page.Records != 5 {
		t.Fatalf("5 records at MaxRecords 5: %+v, %v", got.page, got.err)
	}
	d.MaxRecords = 4
	_, err := d.DecodePage([]byte(body), &callSink{})
	if !errors.Is(err, bindjson.ErrTooManyRecords) {
		t.Fatalf("5 records at MaxRecords 4: error %v, want ErrTooManyRecords", err)
	}
	big := `{"bindings":[` + strings.TrimSuffix(strings.Repeat("null,", bindjson.DefaultMaxRecords+1), ",") + `]}`
	if _, err := bindjson.DecodePage([]byte(big), &callSink{}); !errors.Is(err, bindjson.ErrTooManyRecords) {
		t.Fatalf("%d records by default: error %v, want ErrTooManyRecords", bindjson.DefaultMaxRecords+1, err)
	}
}

// TestTwilioTimestamps compares the decoder's own parsing of Twilio's
// timestamp form with time.Time's on random and edge dates, valid or not.
func TestTwilioTimestamps(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var stamps []string
	for range 3000 {
		stamps = append(stamps, fmt.Sprintf("%04d-%02d-%02dT%02d:%02d:%02dZ",
			rng.IntN(10000), rng.IntN(14), rng.IntN(33), rng.IntN(26), rng.IntN(62), rng.IntN(62)))
	}
	for _, y := range []int{0, 1, 4, 100, 400, 1600, 1900, 1970, 1999, 2000, 2100, 2400, 9999} {
		for _, md := range []string{"01-01", "02-28", "02-29", "03-01", "12-31"} {
			stamps = append(stamps, fmt.Sprintf("%04d-%sT23:59:59Z", y, md))
		}
	}
	var d bindjson.Decoder
	for _, s := range stamps {
		checkEquivalent(t, &d, []byte(`{"bindings":[{"date_created":"`+s+`"}]}`))
	}
}

// TestDecoderReuse decodes a long page, then a short one, then a failing
// one, then the long one again with the same Decoder: nothing of a page
// shows in the next.
func TestDecoderReuse(t *testing.T) {
	var d bindjson.Decoder
	pages := realPages(t)
	long, short := pages["heavy user, first page"], pages["user a/b"]
	first := checkEquivalent(t, &d, long)
	checkEquivalent(t, &d, short)
	checkEquivalent(t, &d, []byte(`{"bindings":[{"sid":"a"},{"sid":1}]}`))
	checkEquivalent(t, &d, []byte(`{"bindings":[null,null]}`))
	again := checkEquivalent(t, &d, long)
	if !reflect.DeepEqual(first, again) {
		t.Fatal("the same page decodes differently the second time")
	}
}

// stopSink fails at its second record.
type stopSink struct {
	callSink
	records int
}

var errStop = errors.New("sink full")

func (s *stopSink) EndRecord() error {
	s.records++
	if s.records == 2 {
		return errStop
	}
	return nil
}

func TestSinkErrorStops(t *testing.T) {
	sink := &stopSink{}
	_, err := bindjson.DecodePage(realPages(t)["heavy user, first page"], sink)
	if !errors.Is(err, errStop) || sink.records != 2 {
		t.Fatalf("error %v after %d records, want the sink's error after 2", err, sink.records)
	}
}

// TestDecodeAllocations shows that a reused Decoder allocates per page, not
// per record: only the meta strings of the page.
func TestDecodeAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts are checked in full runs")
	}
	page := realPages(t)["heavy user, first page"]
	var d bindjson.Decoder
	sink := &countSink{}
	if _, err := d.DecodePage(page, sink); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(20, func() {
		if _, err := d.DecodePage(page, sink); err != nil {
			t.Fatal(err)
		}
	})
	// url, first_page_url, next_page_url and its pointer.
	if allocs > 4 {
		t.Fatalf("%v allocations for a page of 50 records, want at most 4", allocs)
	}
}

// countSink only counts bytes, the least work a sink can do.
type countSink struct{ bytes, fields int }

func (s *countSink) BeginRecord()                      {}
func (s *countSink) String(f bindjson.Field, v []byte) { s.bytes += len(v) }
func (s *countSink) Time(f bindjson.Field, us int64)   { s.fields++ }
func (s *countSink) Null(f bindjson.Field)             { s.fields++ }
func (s *countSink) EndRecord() error                  { return nil }
func (s *countSink) StringList(f bindjson.Field, vs [][]byte) {
	for _, v := range vs {
		s.bytes += len(v)
	}
}

func TestDecodeBindings(t *testing.T) {
	for _, tt := range []struct {
		body    string
		records int // -1: no list
	}{
		{`{"meta":{}}`, -1},
		{`{"bindings":null}`, -1},
		{`{"bindings":[]}`, 0},
		{`{"bindings":[{"sid":"a","links":{"user":"u"}},{}]}`, 2},
	} {
		bs, links, page, err := bindjson.DecodeBindings([]byte(tt.body))
		if err != nil {
			t.Fatalf("%s: %v", tt.body, err)
		}
		if tt.records < 0 && (bs != nil || links != nil || page.HasBindings) ||
			tt.records >= 0 && (bs == nil || len(bs) != tt.records || len(links) != tt.records || !page.HasBindings) {
			t.Fatalf("%s: %d bindings (nil %v), %d links, HasBindings %v", tt.body, len(bs), bs == nil, len(links), page.HasBindings)
		}
	}
	bs, links, _, err := bindjson.DecodeBindings([]byte(`{"bindings":[{"sid":"a","links":{"user":"u"}},{}]}`))
	if err != nil || *bs[0].SID != "a" || *links[0] != "u" || bs[1].SID != nil || links[1] != nil {
		t.Fatalf("DecodeBindings: %s, %v, %v", dump(bs), links, err)
	}
	if bs, links, _, err := bindjson.DecodeBindings([]byte(`{"bindings":[{"sid":1}]}`)); err == nil || bs != nil || links != nil {
		t.Fatalf("a bad page gives %v, %v, %v", bs, links, err)
	}
}

// TestCollectorTime covers the Collector fed by a sink-less caller, with
// microseconds.
func TestCollectorTime(t *testing.T) {
	var c bindjson.Collector
	c.BeginRecord()
	c.Time(bindjson.DateCreated, 1477049823_123456)
	c.Null(bindjson.DateUpdated)
	if err := c.EndRecord(); err != nil {
		t.Fatal(err)
	}
	want := time.Date(2016, 10, 21, 11, 37, 3, 123456000, time.UTC)
	if got := c.Bindings[0].DateCreated; got == nil || !got.Equal(want) || got.Location() != time.UTC || c.Bindings[0].DateUpdated != nil {
		t.Fatalf("DateCreated = %v, want %v", got, want)
	}
}

// TestParseThenEmit checks the two steps of DecodePage: Parse calls no
// sink, Emit replays the page once, and Emit without a parsed page fails.
func TestParseThenEmit(t *testing.T) {
	page := realPages(t)["heavy user, first page"]
	var d bindjson.Decoder
	p, err := d.Parse(page)
	if err != nil || p.Records != 50 || p.Meta.NextPageURL == nil {
		t.Fatalf("Parse: %+v, %v", p, err)
	}
	var c bindjson.Collector
	if err := d.Emit(&c); err != nil || len(c.Bindings) != 50 {
		t.Fatalf("Emit: %d records, %v", len(c.Bindings), err)
	}
	want, _, _, err := bindjson.DecodeBindings(page)
	if err != nil || !reflect.DeepEqual(c.Bindings, want) {
		t.Fatalf("Parse and Emit differ from DecodeBindings (%v)", err)
	}
	if err := d.Emit(&c); !errors.Is(err, bindjson.ErrNotParsed) {
		t.Fatalf("a second Emit: %v, want ErrNotParsed", err)
	}
	if _, err := d.Parse([]byte(`{"bindings":[{"sid":1}]}`)); err == nil {
		t.Fatal("Parse accepted a bad page")
	}
	if err := d.Emit(&c); !errors.Is(err, bindjson.ErrNotParsed) {
		t.Fatalf("Emit after a failed Parse: %v, want ErrNotParsed", err)
	}
	if _, err := d.Parse(page); err != nil {
		t.Fatal(err)
	}
	d.Reset()
	if err := d.Emit(&c); !errors.Is(err, bindjson.ErrNotParsed) {
		t.Fatalf("Emit after Reset: %v, want ErrNotParsed", err)
	}
}

// TestDecodePageConcurrent decodes pages from several goroutines through
// the pooled DecodePage: each gets its own page's records.
func TestDecodePageConcurrent(t *testing.T) {
	pages := realPages(t)
	want := map[string][]bindjson.Binding{}
	for name, data := range pages {
		bs, _, _, err := bindjson.DecodeBindings(data)
		if err != nil {
			t.Fatal(err)
		}
		want[name] = bs
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(pages)*4)
	for range 4 {
		for name, data := range pages {
			wg.Go(func() {
				for range 20 {
					var c bindjson.Collector
					if _, err := bindjson.DecodePage(data, &c); err != nil {
						errs <- err
						return
					}
					if len(c.Bindings) != len(want[name]) || len(c.Bindings) > 0 && !reflect.DeepEqual(c.Bindings, want[name]) {
						errs <- fmt.Errorf("page %q decoded differently", name)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

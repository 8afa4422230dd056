// Package bindjson decodes the body of a Twilio Chat v2 Bindings page
// straight into a Sink, field by field, without building a struct per
// record: the fast path from the HTTP body to Arrow builders.
//
// It reads both lists of bindings: the User Bindings list
// (/v2/Services/{ServiceSid}/Users/{UserSid}/Bindings) and the service-wide
// list (/v2/Services/{ServiceSid}/Bindings), whose records lack user_sid and
// carry links.user instead.
//
// # Same result as encoding/json
//
// For any input, the records, the meta block and whether decoding fails
// are what encoding/json's Unmarshal gives for
//
//	struct {
//		Meta     *twilio.Meta `json:"meta"`
//		Bindings []Binding    `json:"bindings"`
//	}
//
// where Binding is twilio.Binding with binding_type a *string (a JSON null
// stays null). That covers keys in any order and matched
// case-insensitively (Unicode simple folding, as bytes.EqualFold), unknown
// keys skipped whatever they hold, duplicate keys (the last one wins; a
// repeated "bindings" list or "message_types" list decodes over the
// earlier one element by element, as encoding/json reuses a slice's
// backing array), invalid UTF-8 replaced by U+FFFD, lone surrogates,
// nesting deeper than 10,000 levels, numbers of any size in skipped
// values, data after the page, and timestamps in any form that
// time.Time's UnmarshalJSON accepts. FuzzDecodeEqualsEncodingJSON holds
// the package to this.
//
// Two differences are deliberate: a "bindings" list longer than
// Decoder.MaxRecords fails with ErrTooManyRecords (bounding memory), and
// the "links" object, which twilio.Binding does not have, is read for
// links.user but never fails the page, whatever it holds. A "users" key is
// unknown here and skipped, where the Twilio client's shared list body
// would type-check it as a Users list.
//
// Callers that want structs get them from the same decoder with
// DecodeBindings or a Collector.
//
// # Cost
//
// Strings that need no unescaping are handed to the sink as slices of the
// body; a page is decoded into a table of offsets that the Decoder reuses,
// then replayed into the sink. Timestamps in Twilio's form
// "2006-01-02T15:04:05Z" are parsed without the time package; any other
// form goes through time.Time's UnmarshalJSON. With a reused Decoder, a
// page costs a few allocations (its meta strings), not one per field.
//
// The package depends on nothing of bindsync, so that package twilio can
// use it.
package bindjson

import (
	"errors"
	"strconv"
	"sync"
	"time"
)

// Field names one field of a binding record, in the order the sink gets
// them.
type Field uint8

// The fields of a binding record. LinksUser is links.user of the
// service-wide list (the user's URL, ending in its identity); records of
// the User Bindings list have none.
const (
	SID Field = iota
	AccountSID
	ServiceSID
	DateCreated
	DateUpdated
	Endpoint
	Identity
	UserSID
	CredentialSID
	BindingType
	MessageTypes
	URL
	LinksUser
	// NumFields is the number of fields of a record.
	NumFields = 13
)

// fieldNames are the JSON names of the fields, LinksUser aside.
var fieldNames = [NumFields]string{
	SID:           "sid",
	AccountSID:    "account_sid",
	ServiceSID:    "service_sid",
	DateCreated:   "date_created",
	DateUpdated:   "date_updated",
	Endpoint:      "endpoint",
	Identity:      "identity",
	UserSID:       "user_sid",
	CredentialSID: "credential_sid",
	BindingType:   "binding_type",
	MessageTypes:  "message_types",
	URL:           "url",
	LinksUser:     "links.user",
}

// String returns the field's JSON name ("links.user" for LinksUser).
func (f Field) String() string {
	if f < NumFields {
		return fieldNames[f]
	}
	return "Field(" + strconv.Itoa(int(f)) + ")"
}

// Sink receives the records of a page.
//
// For each record, DecodePage calls BeginRecord, then exactly one method
// per field in Field order (SID first, LinksUser last), then EndRecord:
//
//   - String for a string field holding a string. v is unescaped, valid
//     UTF-8, and valid only during the call: copy it to keep it.
//   - Time for DateCreated and DateUpdated holding a timestamp:
//     microseconds since the Unix epoch (UTC), finer digits truncated
//     toward the past, as time.Time.UnixMicro does.
//   - StringList for MessageTypes holding a list: vs is non-nil (empty for
//     []); the slice and its elements are valid only during the call. An
//     element that was null is the empty string, as encoding/json makes it.
//   - Null for a field that is JSON null or missing, whatever its kind.
//
// DecodePage calls the sink only once the whole body has decoded without
// error, so a sink never sees part of a bad page. An error from EndRecord
// stops DecodePage, which returns it wrapped; the sink has then seen the
// records up to that one.
type Sink interface {
	BeginRecord()
	String(f Field, v []byte)
	Time(f Field, micros int64)
	StringList(f Field, vs [][]byte)
	Null(f Field)
	EndRecord() error
}

// ExactTimeSink is a Sink that wants timestamps as time.Time, exactly as
// time.Time's UnmarshalJSON returns them (nanoseconds and location kept).
// DecodePage calls ExactTime instead of Time when the sink implements it.
type ExactTimeSink interface {
	Sink
	ExactTime(f Field, t time.Time)
}

// Meta is the paging block of a page. Its fields, in name, type and order,
// are those of twilio.Meta, so that twilio.Meta(m) converts it.
type Meta struct {
	Key             string  `json:"key"`
	URL             string  `json:"url"`
	Page            int     `json:"page"`
	PageSize        int     `json:"page_size"`
	FirstPageURL    string  `json:"first_page_url"`
	PreviousPageURL *string `json:"previous_page_url"`
	NextPageURL     *string `json:"next_page_url"`
}

// Page is what DecodePage learnt of a page besides its records.
type Page struct {
	// Meta is the "meta" object; zero when HasMeta is false.
	Meta Meta
	// HasMeta reports whether the body has a "meta" object (not missing,
	// not null): where encoding/json leaves a *Meta nil, it is false.
	HasMeta bool
	// HasBindings reports whether the body has a "bindings" list, possibly
	// empty (not missing, not null): where encoding/json leaves the slice
	// nil, it is false.
	HasBindings bool
	// Records is the number of records the sink received.
	Records int
}

// MaxBodyLen is the longest body DecodePage accepts. The Twilio client's
// own limit (32 MiB by default) is far below it; it exists because the
// Decoder keeps offsets in 32 bits.
const MaxBodyLen = 512 << 20

// DefaultMaxRecords is the default of Decoder.MaxRecords: ten times the
// largest page Twilio documents (1,000).
const DefaultMaxRecords = 10000

// Decoder decodes pages, keeping its buffers from one page to the next. A
// Decoder is not safe for concurrent use; the zero value is ready to use.
//
// While it decodes a page it holds 208 bytes per record (at most
// MaxRecords records), 8 bytes per message_types element, and a copy of
// the strings that needed unescaping; between pages it keeps these buffers
// up to the size of a page of about 2,000 records and drops larger
// ones, and it never keeps the body.
type Decoder struct {
	// MaxRecords bounds the records of a "bindings" list; 0 means
	// DefaultMaxRecords. A list of more fails with ErrTooManyRecords.
	MaxRecords int

	// data is the body being decoded; nil between pages.
	data []byte
	// parsed says that the tables hold a page that Parse accepted and
	// that Emit has not replayed yet.
	parsed bool
	// scratch holds the strings that needed unescaping or UTF-8 repair.
	scratch []byte
	// keyBuf holds the last key that needed unescaping.
	keyBuf []byte
	// stack holds the open containers of a value being skipped.
	stack []byte

	// slots are the records of the "bindings" list; the first nslots hold
	// what encoding/json's slice would hold in its backing array, the first
	// nrec are the list. They differ only after a repeated "bindings" key.
	slots   []slot
	nslots  int
	nrec    int
	hasList bool
	// items are the elements of every message_types list.
	items []span
	// times are the timestamps not in Twilio's own form.
	times []time.Time

	meta    Meta
	hasMeta bool

	// list is the StringList argument, reused.
	list [][]byte
}

// Buffers above these sizes are dropped after a page instead of being kept
// for the next, so that one huge page does not pin its memory.
const (
	retainScratch = 256 << 10
	retainItems   = 8 << 10
	retainTimes   = 2 << 10
	retainSlots   = 2 << 10
)

// DecodePage decodes one Bindings page body into sink and returns what it
// learnt of the page: Parse, then Emit. On error, sink has not been
// called, unless the error comes from the sink itself. The error is an
// *Error for a bad body.
func (d *Decoder) DecodePage(body []byte, sink Sink) (Page, error) {
	p, err := d.Parse(body)
	if err != nil {
		return Page{}, err
	}
	if err := d.Emit(sink); err != nil {
		return p, err
	}
	return p, nil
}

// Parse decodes body without calling a sink, so that the caller can check
// the page (its meta block, its next page URL, its record count) before
// any record reaches a sink; Emit then hands the records over. The
// Decoder holds on to body until Emit or Reset, and body must not change
// meanwhile. The error is an *Error for a bad body.
func (d *Decoder) Parse(body []byte) (Page, error) {
	d.parsed = false
	if err := d.parse(body); err != nil {
		d.Reset()
		return Page{}, err
	}
	d.parsed = true
	p := Page{HasMeta: d.hasMeta, HasBindings: d.hasList, Records: d.nrec}
	if d.hasMeta {
		p.Meta = d.meta
	}
	return p, nil
}

// ErrNotParsed is the error of Emit without a successful Parse before it.
var ErrNotParsed = errors.New("bindjson: Emit without a page parsed")

// Emit calls sink for every record of the page that the last Parse
// decoded, as the Sink contract says, then releases the body: a page is
// emitted once. An error from EndRecord stops it and is returned wrapped.
func (d *Decoder) Emit(sink Sink) error {
	if !d.parsed {
		return ErrNotParsed
	}
	defer d.Reset()
	return d.emit(sink)
}

// Reset drops the page being decoded, if any, and with it the Decoder's
// hold on its body; buffers grown beyond what a normal page needs are
// dropped too. Emit and a failing Parse call it; a caller that parses a
// page and then decides not to emit it should.
func (d *Decoder) Reset() {
	d.parsed = false
	d.release()
}

// release drops the body and any buffer grown beyond what a normal page
// needs.
func (d *Decoder) release() {
	d.data = nil
	d.meta = Meta{}
	d.nslots, d.nrec = 0, 0
	if cap(d.scratch) > retainScratch {
		d.scratch = nil
	}
	if cap(d.items) > retainItems {
		d.items = nil
	}
	if cap(d.times) > retainTimes {
		d.times = nil
	}
	if cap(d.slots) > retainSlots {
		d.slots = nil
	}
	if cap(d.keyBuf) > retainScratch {
		d.keyBuf = nil
	}
	if cap(d.stack) > maxNestingDepth/10 {
		d.stack = nil
	}
}

var pool = sync.Pool{New: func() any { return new(Decoder) }}

// DecodePage decodes body with a Decoder taken from a pool, with the
// default MaxRecords. See Decoder.DecodePage.
func DecodePage(body []byte, sink Sink) (Page, error) {
	d := pool.Get().(*Decoder)
	defer pool.Put(d)
	return d.DecodePage(body, sink)
}

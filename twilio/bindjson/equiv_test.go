package bindjson_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/twilio/bindjson"
)

// refPage is the bindings half of the Twilio client's list body: what
// encoding/json makes of a Bindings page.
type refPage struct {
	Meta     *twilio.Meta       `json:"meta"`
	Bindings []bindjson.Binding `json:"bindings"`
}

// The decoder's Meta converts to twilio.Meta: same fields, same types.
var _ = twilio.Meta(bindjson.Meta{})

// TestBindingMirrorsTwilio checks that bindjson.Binding has the fields,
// JSON names and types of twilio.Binding, so that the fuzz test compares
// against what the client decodes. binding_type may still be a plain
// string in twilio.Binding, which turns a null into ""; the export needs
// the null, so bindjson.Binding keeps a *string.
func TestBindingMirrorsTwilio(t *testing.T) {
	got, want := reflect.TypeFor[bindjson.Binding](), reflect.TypeFor[twilio.Binding]()
	if got.NumField() != want.NumField() {
		t.Fatalf("bindjson.Binding has %d fields, twilio.Binding %d", got.NumField(), want.NumField())
	}
	for i := range got.NumField() {
		g, w := got.Field(i), want.Field(i)
		if g.Name != w.Name || g.Tag.Get("json") != w.Tag.Get("json") {
			t.Errorf("field %d: bindjson.Binding has %s %q, twilio.Binding %s %q", i, g.Name, g.Tag.Get("json"), w.Name, w.Tag.Get("json"))
		}
		if g.Type != w.Type && !(g.Name == "BindingType" && w.Type.Kind() == reflect.String) {
			t.Errorf("field %s: bindjson.Binding has %s, twilio.Binding %s", g.Name, g.Type, w.Type)
		}
	}
}

// orderSink checks the call order the Sink contract promises and passes
// every call on to a Collector.
type orderSink struct {
	t    testing.TB
	c    bindjson.Collector
	next bindjson.Field // the field the next call must be for
	open bool
}

var _ bindjson.ExactTimeSink = (*orderSink)(nil)

func (s *orderSink) field(f bindjson.Field, how string) {
	s.t.Helper()
	if !s.open {
		s.t.Fatalf("%s(%s) outside a record", how, f)
	}
	if f != s.next {
		s.t.Fatalf("%s(%s) where the sink expected field %s", how, f, s.next)
	}
	switch {
	case how == "String" && (f == bindjson.DateCreated || f == bindjson.DateUpdated || f == bindjson.MessageTypes),
		how == "ExactTime" && f != bindjson.DateCreated && f != bindjson.DateUpdated,
		how == "StringList" && f != bindjson.MessageTypes:
		s.t.Fatalf("%s for field %s", how, f)
	}
	s.next++
}

func (s *orderSink) BeginRecord() {
	if s.open {
		s.t.Fatal("BeginRecord inside a record")
	}
	s.open, s.next = true, 0
	s.c.BeginRecord()
}

func (s *orderSink) String(f bindjson.Field, v []byte) {
	s.field(f, "String")
	s.c.String(f, v)
}

func (s *orderSink) Time(f bindjson.Field, micros int64) {
	s.t.Fatalf("Time(%s) on a sink that takes exact times", f)
}

func (s *orderSink) ExactTime(f bindjson.Field, t time.Time) {
	s.field(f, "ExactTime")
	s.c.ExactTime(f, t)
}

func (s *orderSink) StringList(f bindjson.Field, vs [][]byte) {
	s.field(f, "StringList")
	if vs == nil {
		s.t.Fatalf("StringList(%s, nil)", f)
	}
	s.c.StringList(f, vs)
}

func (s *orderSink) Null(f bindjson.Field) {
	s.field(f, "Null")
	s.c.Null(f)
}

func (s *orderSink) EndRecord() error {
	if !s.open || s.next != bindjson.NumFields {
		s.t.Fatalf("EndRecord after field %d of %d", s.next, bindjson.NumFields)
	}
	s.open = false
	return s.c.EndRecord()
}

// callSink records every call as text, times as microseconds: the view of
// a sink that does not take exact times.
type callSink struct {
	calls []string
}

func (s *callSink) BeginRecord() { s.calls = append(s.calls, "{") }
func (s *callSink) String(f bindjson.Field, v []byte) {
	s.calls = append(s.calls, fmt.Sprintf("%s=%q", f, v))
}
func (s *callSink) Time(f bindjson.Field, us int64) {
	s.calls = append(s.calls, fmt.Sprintf("%s=%dus", f, us))
}
func (s *callSink) Null(f bindjson.Field) { s.calls = append(s.calls, fmt.Sprintf("%s=null", f)) }
func (s *callSink) EndRecord() error      { s.calls = append(s.calls, "}"); return nil }
func (s *callSink) StringList(f bindjson.Field, vs [][]byte) {
	s.calls = append(s.calls, fmt.Sprintf("%s=%q", f, vs))
}

// expectedCalls is what callSink must record for the records of a page.
func expectedCalls(bs []bindjson.Binding, links []*string) []string {
	var calls []string
	str := func(f bindjson.Field, p *string) {
		if p == nil {
			calls = append(calls, fmt.Sprintf("%s=null", f))
		} else {
			calls = append(calls, fmt.Sprintf("%s=%q", f, *p))
		}
	}
	tm := func(f bindjson.Field, p *time.Time) {
		if p == nil {
			calls = append(calls, fmt.Sprintf("%s=null", f))
		} else {
			calls = append(calls, fmt.Sprintf("%s=%dus", f, p.UnixMicro()))
		}
	}
	for i, b := range bs {
		calls = append(calls, "{")
		str(bindjson.SID, b.SID)
		str(bindjson.AccountSID, b.AccountSID)
		str(bindjson.ServiceSID, b.ServiceSID)
		tm(bindjson.DateCreated, b.DateCreated)
		tm(bindjson.DateUpdated, b.DateUpdated)
		str(bindjson.Endpoint, b.Endpoint)
		str(bindjson.Identity, b.Identity)
		str(bindjson.UserSID, b.UserSID)
		str(bindjson.CredentialSID, b.CredentialSID)
		str(bindjson.BindingType, b.BindingType)
		if b.MessageTypes == nil {
			calls = append(calls, "message_types=null")
		} else {
			vs := make([][]byte, len(b.MessageTypes))
			for j, m := range b.MessageTypes {
				vs[j] = []byte(m)
			}
			calls = append(calls, fmt.Sprintf("%s=%q", bindjson.MessageTypes, vs))
		}
		str(bindjson.URL, b.URL)
		str(bindjson.LinksUser, links[i])
		calls = append(calls, "}")
	}
	return calls
}

// decoded is the outcome of the fast decoder on one body.
type decoded struct {
	page  bindjson.Page
	recs  []bindjson.Binding
	links []*string
	err   error
}

// decodeFast decodes data with d into a Collector (checking the call
// order), then again into a callSink, and checks that both views agree.
func decodeFast(t testing.TB, d *bindjson.Decoder, data []byte) decoded {
	t.Helper()
	sink := &orderSink{t: t}
	page, err := d.DecodePage(data, sink)
	out := decoded{page: page, recs: sink.c.Bindings, links: sink.c.LinksUsers, err: err}
	calls := &callSink{}
	page2, err2 := d.DecodePage(data, calls)
	if (err == nil) != (err2 == nil) || !reflect.DeepEqual(page, page2) {
		t.Fatalf("decoding twice differs: %+v, %v then %+v, %v", page, err, page2, err2)
	}
	if err != nil {
		if len(sink.c.Bindings) != 0 || sink.open || len(calls.calls) != 0 {
			t.Fatalf("the sink was called for a page that fails (%v)", err)
		}
		var e *bindjson.Error
		if !errors.As(err, &e) {
			t.Fatalf("error %v (%T) is not a *bindjson.Error", err, err)
		}
		return out
	}
	if page.Records != len(out.recs) || len(out.links) != len(out.recs) {
		t.Fatalf("Page.Records = %d, the sink got %d records and %d links", page.Records, len(out.recs), len(out.links))
	}
	if want := expectedCalls(out.recs, out.links); !reflect.DeepEqual(calls.calls, want) {
		t.Fatalf("a plain sink got calls\n%q\nwhere the exact sink implies\n%q", calls.calls, want)
	}
	return out
}

// checkEquivalent asserts that the fast decoder and encoding/json agree on
// data: both fail, or both succeed with the same meta and records.
func checkEquivalent(t testing.TB, d *bindjson.Decoder, data []byte) decoded {
	t.Helper()
	var want refPage
	wantErr := json.Unmarshal(data, &want)
	got := decodeFast(t, d, data)
	if (wantErr == nil) != (got.err == nil) {
		t.Fatalf("body %q:\nencoding/json: %v\nbindjson:      %v", truncate(data), wantErr, got.err)
	}
	if wantErr != nil {
		return got
	}
	if got.page.HasMeta != (want.Meta != nil) {
		t.Fatalf("body %q: HasMeta = %v, encoding/json meta = %v", truncate(data), got.page.HasMeta, want.Meta)
	}
	if want.Meta != nil {
		if m := twilio.Meta(got.page.Meta); !reflect.DeepEqual(m, *want.Meta) {
			t.Fatalf("body %q: meta\n%s\nencoding/json:\n%s", truncate(data), dump(m), dump(*want.Meta))
		}
	} else if got.page.Meta != (bindjson.Meta{}) {
		t.Fatalf("body %q: no meta, yet Page.Meta = %+v", truncate(data), got.page.Meta)
	}
	if got.page.HasBindings != (want.Bindings != nil) {
		t.Fatalf("body %q: HasBindings = %v, encoding/json bindings nil = %v", truncate(data), got.page.HasBindings, want.Bindings == nil)
	}
	if len(got.recs) != len(want.Bindings) {
		t.Fatalf("body %q: %d records, encoding/json %d", truncate(data), len(got.recs), len(want.Bindings))
	}
	for i := range want.Bindings {
		if !reflect.DeepEqual(got.recs[i], want.Bindings[i]) {
			t.Fatalf("body %q: record %d\n%s\nencoding/json:\n%s", truncate(data), i, dump(got.recs[i]), dump(want.Bindings[i]))
		}
	}
	return got
}

func truncate(data []byte) []byte {
	if len(data) > 2000 {
		return append(bytes.Clone(data[:2000]), "…"...)
	}
	return data
}

// dump renders a value with its pointers followed, nulls and empty lists
// told apart.
func dump(v any) string {
	var b bytes.Buffer
	dumpValue(&b, reflect.ValueOf(v))
	return b.String()
}

func dumpValue(b *bytes.Buffer, v reflect.Value) {
	switch {
	case v.Kind() == reflect.Pointer && v.IsNil():
		b.WriteString("nil")
	case v.Kind() == reflect.Pointer:
		b.WriteString("&")
		dumpValue(b, v.Elem())
	case v.Type() == reflect.TypeFor[time.Time]():
		t := v.Interface().(time.Time)
		fmt.Fprintf(b, "%s(%s)", t.Format(time.RFC3339Nano), t.Location())
	case v.Kind() == reflect.Struct:
		b.WriteString("{")
		for i := range v.NumField() {
			fmt.Fprintf(b, "\n  %s: ", v.Type().Field(i).Name)
			dumpValue(b, v.Field(i))
		}
		b.WriteString("}")
	case v.Kind() == reflect.Slice && v.IsNil():
		b.WriteString("nil")
	default:
		fmt.Fprintf(b, "%#v", v.Interface())
	}
}

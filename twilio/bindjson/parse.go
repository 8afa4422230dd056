package bindjson

import (
	"bytes"
	"fmt"
	"strconv"
	"time"
)

// span locates a string in the body or, when scratchBit is set in n, in
// Decoder.scratch.
type span struct {
	off uint32
	n   uint32
}

const scratchBit = 1 << 31

func bodySpan(start, end int) span { return span{off: uint32(start), n: uint32(end - start)} }

func scratchSpan(start, end int) span {
	return span{off: uint32(start), n: uint32(end-start) | scratchBit}
}

func (d *Decoder) bytesOf(s span) []byte {
	if s.n&scratchBit != 0 {
		return d.scratch[s.off : s.off+s.n&^scratchBit]
	}
	return d.data[s.off : s.off+s.n]
}

// kind says what a val holds.
type kind uint8

const (
	kNull     kind = iota // null or missing
	kString               // a string: s
	kTimeFast             // a timestamp in Twilio's form: seconds since the epoch, UTC
	kTimeSlow             // any other timestamp: Decoder.times[s.off]
	kList                 // a string list: Decoder.items[s.off:][:s.n], backing back
)

// val is the value of one field of a record. It is kept to 16 bytes, as a
// page of 1,000 records is a table of 13,000 of them (208 kB), written
// once and read once, and its memory traffic counts.
type val struct {
	s    span   // kString: the string; kTimeFast: the seconds, low then high half; kTimeSlow, kList: see kind
	back uint32 // kList: the length of the backing array, at least s.n
	kind kind
}

func fastTime(sec int64) val {
	return val{kind: kTimeFast, s: span{off: uint32(sec), n: uint32(uint64(sec) >> 32)}}
}

func (v *val) seconds() int64 { return int64(uint64(v.s.n)<<32 | uint64(v.s.off)) }

// slot is one record of the "bindings" list.
type slot [NumFields]val

// pageKey names the keys of the page object that the decoder reads; the
// rest are skipped.
type pageKey uint8

const (
	keyOther pageKey = iota
	keyBindings
	keyMeta
)

// Record keys that are not a field of their own: links, read for
// LinksUser, and any other key, skipped.
const (
	fieldOther = Field(255)
	fieldLinks = Field(254)
)

// recordField maps a record key to its field, matching encoding/json:
// exactly, else case-insensitively.
func recordField(key []byte) Field {
	switch string(key) {
	case "sid":
		return SID
	case "account_sid":
		return AccountSID
	case "service_sid":
		return ServiceSID
	case "date_created":
		return DateCreated
	case "date_updated":
		return DateUpdated
	case "endpoint":
		return Endpoint
	case "identity":
		return Identity
	case "user_sid":
		return UserSID
	case "credential_sid":
		return CredentialSID
	case "binding_type":
		return BindingType
	case "message_types":
		return MessageTypes
	case "url":
		return URL
	case "links":
		return fieldLinks
	}
	for f := SID; f < LinksUser; f++ {
		if bytes.EqualFold(key, []byte(fieldNames[f])) {
			return f
		}
	}
	if bytes.EqualFold(key, []byte("links")) {
		return fieldLinks
	}
	return fieldOther
}

// metaField numbers the fields of Meta.
type metaField uint8

const (
	metaOther metaField = iota
	metaKey
	metaURL
	metaPage
	metaPageSize
	metaFirstPageURL
	metaPreviousPageURL
	metaNextPageURL
)

var metaNames = [...]string{
	metaKey:             "key",
	metaURL:             "url",
	metaPage:            "page",
	metaPageSize:        "page_size",
	metaFirstPageURL:    "first_page_url",
	metaPreviousPageURL: "previous_page_url",
	metaNextPageURL:     "next_page_url",
}

func metaFieldOf(key []byte) metaField {
	for f := metaKey; f <= metaNextPageURL; f++ {
		if bytes.EqualFold(key, []byte(metaNames[f])) {
			return f
		}
	}
	return metaOther
}

func pageKeyOf(key []byte) pageKey {
	switch {
	case bytes.EqualFold(key, []byte("bindings")):
		return keyBindings
	case bytes.EqualFold(key, []byte("meta")):
		return keyMeta
	}
	return keyOther
}

// parse decodes body into the decoder's tables.
func (d *Decoder) parse(body []byte) error {
	if len(body) > MaxBodyLen {
		return &Error{Kind: ErrBodyTooLarge, Msg: fmt.Sprintf("body of %d bytes is over %d", len(body), MaxBodyLen)}
	}
	d.data = body
	d.scratch = d.scratch[:0]
	d.items = d.items[:0]
	d.times = d.times[:0]
	d.nslots, d.nrec, d.hasList = 0, 0, false
	d.meta, d.hasMeta = Meta{}, false

	i, err := d.valueAt(0)
	if err != nil {
		return err
	}
	switch body[i] {
	case '{':
		i, err = d.page(i)
	case 'n':
		// encoding/json leaves the page as it is for a top-level null.
		i, err = d.null(i)
	default:
		err = d.wrongType(i, "a page object")
	}
	if err != nil {
		return err
	}
	if i = d.ws(i); i < len(body) {
		return syntaxErr(i, "invalid character %s after top-level value", quoteChar(body[i]))
	}
	return nil
}

// page decodes the page object at i.
func (d *Decoder) page(i int) (int, error) {
	data := d.data
	i = d.ws(i + 1)
	if i < len(data) && data[i] == '}' {
		return i + 1, nil
	}
	for {
		var key []byte
		var err error
		if i, err = d.keyAt(i); err != nil {
			return i, err
		}
		if i, key, err = d.key(i); err != nil {
			return i, err
		}
		if i, err = d.colon(i); err != nil {
			return i, err
		}
		switch pageKeyOf(key) {
		case keyBindings:
			i, err = d.bindings(i)
		case keyMeta:
			i, err = d.metaObject(i)
		default:
			name := string(key)
			if i, err = d.skip(i, 1); err != nil {
				return i, withPath(err, func() string { return strconv.Quote(name) })
			}
		}
		if err != nil {
			return i, err
		}
		var more bool
		if i, more, err = d.next(i, '}'); err != nil || !more {
			return i, err
		}
	}
}

// bindings decodes the "bindings" value at i into the slots, over what an
// earlier "bindings" key left there, as encoding/json decodes into the
// same slice.
func (d *Decoder) bindings(i int) (int, error) {
	data := d.data
	switch data[i] {
	case 'n':
		d.nslots, d.nrec, d.hasList = 0, 0, false
		return d.null(i)
	case '[':
	default:
		return i, withPath(d.wrongType(i, "a list of bindings or null"), func() string { return "bindings" })
	}
	max := d.MaxRecords
	if max <= 0 {
		max = DefaultMaxRecords
	}
	n := 0
	i = d.ws(i + 1)
	if i < len(data) && data[i] == ']' {
		i++
	} else {
		for {
			var err error
			if i, err = d.valueAt(i); err != nil {
				return i, err
			}
			if n >= max {
				return i, &Error{Offset: i, Path: "bindings", Kind: ErrTooManyRecords, Msg: fmt.Sprintf("more than %d records", max)}
			}
			if n >= d.nslots {
				if n < len(d.slots) {
					d.slots[n] = slot{}
				} else {
					d.slots = append(d.slots, slot{})
				}
				d.nslots = n + 1
			}
			switch data[i] {
			case '{':
				i, err = d.record(i, &d.slots[n], n)
			case 'n':
				// A null element leaves the element as it is.
				i, err = d.null(i)
			default:
				err = d.wrongType(i, "a binding object")
			}
			if err != nil {
				rec := n
				return i, withPath(err, func() string { return "bindings[" + strconv.Itoa(rec) + "]" })
			}
			n++
			var more bool
			if i, more, err = d.next(i, ']'); err != nil {
				return i, err
			}
			if !more {
				break
			}
		}
	}
	if n == 0 {
		// encoding/json gives an empty list a new backing array.
		d.nslots = 0
	}
	d.nrec, d.hasList = n, true
	return i, nil
}

// record decodes the record object at i into s, over what s holds.
func (d *Decoder) record(i int, s *slot, n int) (int, error) {
	data := d.data
	i = d.ws(i + 1)
	if i < len(data) && data[i] == '}' {
		return i + 1, nil
	}
	for {
		var key []byte
		var err error
		if i, err = d.keyAt(i); err != nil {
			return i, err
		}
		if i, key, err = d.key(i); err != nil {
			return i, err
		}
		if i, err = d.colon(i); err != nil {
			return i, err
		}
		f := recordField(key)
		switch f {
		case DateCreated, DateUpdated:
			i, err = d.timeValue(i, &s[f])
		case MessageTypes:
			i, err = d.listValue(i, &s[f])
		case fieldLinks:
			i, err = d.links(i, &s[LinksUser])
		case fieldOther:
			name := string(key)
			if i, err = d.skip(i, 3); err != nil {
				return i, withPath(err, func() string { return "bindings[" + strconv.Itoa(n) + "]." + strconv.Quote(name) })
			}
		default:
			i, err = d.stringValue(i, &s[f])
		}
		if err != nil {
			if f < NumFields || f == fieldLinks {
				name := "links"
				if f < NumFields {
					name = fieldNames[f]
				}
				err = withPath(err, func() string { return "bindings[" + strconv.Itoa(n) + "]." + name })
			}
			return i, err
		}
		var more bool
		if i, more, err = d.next(i, '}'); err != nil || !more {
			return i, err
		}
	}
}

// stringValue decodes a nullable string at i into v.
func (d *Decoder) stringValue(i int, v *val) (int, error) {
	switch d.data[i] {
	case '"':
		i, s, err := d.str(i)
		if err != nil {
			return i, err
		}
		*v = val{kind: kString, s: s}
		return i, nil
	case 'n':
		*v = val{}
		return d.null(i)
	}
	return i, d.wrongType(i, "a string or null")
}

// timeValue decodes a nullable timestamp at i into v. Twilio's own form is
// read here; any other string goes to time.Time's UnmarshalJSON with its
// quotes and escapes as they are, which is what encoding/json does, so
// that it fails, or succeeds, on exactly the same strings.
func (d *Decoder) timeValue(i int, v *val) (int, error) {
	switch d.data[i] {
	case '"':
		end, err := d.skipString(i)
		if err != nil {
			return end, err
		}
		if sec, ok := parseTwilioTime(d.data[i+1 : end-1]); ok {
			*v = fastTime(sec)
			return end, nil
		}
		var t time.Time
		if err := t.UnmarshalJSON(d.data[i:end]); err != nil {
			return end, typeErr(i, "%v", err)
		}
		*v = val{kind: kTimeSlow, s: span{off: uint32(len(d.times))}}
		d.times = append(d.times, t)
		return end, nil
	case 'n':
		*v = val{}
		return d.null(i)
	}
	return i, d.wrongType(i, "an RFC 3339 timestamp string or null")
}

// listValue decodes a nullable list of strings at i into v. A list decoded
// over an earlier one of the same record (a repeated key, or a repeated
// "bindings" list) keeps the earlier elements where the new one has null,
// as encoding/json does when it decodes into the slice's backing array.
func (d *Decoder) listValue(i int, v *val) (int, error) {
	data := d.data
	switch data[i] {
	case 'n':
		*v = val{}
		return d.null(i)
	case '[':
	default:
		return i, d.wrongType(i, "a list of strings or null")
	}
	old := *v
	if old.kind != kList {
		old = val{}
	}
	start := len(d.items)
	n := 0
	i = d.ws(i + 1)
	if i < len(data) && data[i] == ']' {
		// An empty list gets a new, empty backing array.
		*v = val{kind: kList, s: span{off: uint32(start)}}
		return i + 1, nil
	}
	for {
		var err error
		if i, err = d.valueAt(i); err != nil {
			return i, err
		}
		switch data[i] {
		case '"':
			var s span
			if i, s, err = d.str(i); err != nil {
				return i, err
			}
			d.items = append(d.items, s)
		case 'n':
			if i, err = d.null(i); err != nil {
				return i, err
			}
			var s span // the zero string, at a fresh index
			if uint32(n) < old.back {
				s = d.items[old.s.off+uint32(n)]
			}
			d.items = append(d.items, s)
		default:
			return i, d.wrongType(i, "a string or null")
		}
		n++
		var more bool
		if i, more, err = d.next(i, ']'); err != nil {
			return i, err
		}
		if !more {
			break
		}
	}
	back := uint32(n)
	if old.back > back {
		d.items = append(d.items, d.items[old.s.off+back:old.s.off+old.back]...)
		back = old.back
	}
	*v = val{kind: kList, s: span{off: uint32(start), n: uint32(n)}, back: back}
	return i, nil
}

// links reads links.user from the "links" value at i into v. twilio.Binding
// has no links, so encoding/json skips the value whatever it holds: only
// its syntax can fail the page. A links that is not an object, or a user
// that is not a string, gives null.
func (d *Decoder) links(i int, v *val) (int, error) {
	data := d.data
	if data[i] != '{' {
		*v = val{}
		return d.skip(i, 3)
	}
	i = d.ws(i + 1)
	if i < len(data) && data[i] == '}' {
		return i + 1, nil
	}
	for {
		var key []byte
		var err error
		if i, err = d.keyAt(i); err != nil {
			return i, err
		}
		if i, key, err = d.key(i); err != nil {
			return i, err
		}
		if i, err = d.colon(i); err != nil {
			return i, err
		}
		if bytes.EqualFold(key, []byte("user")) && data[i] == '"' {
			var s span
			if i, s, err = d.str(i); err != nil {
				return i, err
			}
			*v = val{kind: kString, s: s}
		} else {
			if bytes.EqualFold(key, []byte("user")) {
				*v = val{}
			}
			if i, err = d.skip(i, 4); err != nil {
				return i, err
			}
		}
		var more bool
		if i, more, err = d.next(i, '}'); err != nil || !more {
			return i, err
		}
	}
}

// metaObject decodes the "meta" value at i over what an earlier "meta" key
// left, as encoding/json decodes into the same *Meta.
func (d *Decoder) metaObject(i int) (int, error) {
	data := d.data
	switch data[i] {
	case 'n':
		d.meta, d.hasMeta = Meta{}, false
		return d.null(i)
	case '{':
	default:
		return i, withPath(d.wrongType(i, "a meta object or null"), func() string { return "meta" })
	}
	d.hasMeta = true
	i = d.ws(i + 1)
	if i < len(data) && data[i] == '}' {
		return i + 1, nil
	}
	for {
		var key []byte
		var err error
		if i, err = d.keyAt(i); err != nil {
			return i, err
		}
		if i, key, err = d.key(i); err != nil {
			return i, err
		}
		if i, err = d.colon(i); err != nil {
			return i, err
		}
		f := metaFieldOf(key)
		switch f {
		case metaKey:
			i, err = d.metaString(i, &d.meta.Key)
		case metaURL:
			i, err = d.metaString(i, &d.meta.URL)
		case metaFirstPageURL:
			i, err = d.metaString(i, &d.meta.FirstPageURL)
		case metaPage:
			i, err = d.metaInt(i, &d.meta.Page)
		case metaPageSize:
			i, err = d.metaInt(i, &d.meta.PageSize)
		case metaPreviousPageURL:
			i, err = d.metaURL(i, &d.meta.PreviousPageURL)
		case metaNextPageURL:
			i, err = d.metaURL(i, &d.meta.NextPageURL)
		default:
			i, err = d.skip(i, 2)
		}
		if err != nil {
			name := string(key)
			if f != metaOther {
				name = metaNames[f]
			}
			return i, withPath(err, func() string { return "meta." + name })
		}
		var more bool
		if i, more, err = d.next(i, '}'); err != nil || !more {
			return i, err
		}
	}
}

// metaString decodes a string at i into dst; null leaves dst as it is, as
// encoding/json does for a string field.
func (d *Decoder) metaString(i int, dst *string) (int, error) {
	switch d.data[i] {
	case '"':
		i, s, err := d.str(i)
		if err == nil {
			// The list key is always "bindings": keep it without allocating.
			if b := d.bytesOf(s); string(b) == "bindings" {
				*dst = "bindings"
			} else {
				*dst = string(b)
			}
		}
		return i, err
	case 'n':
		return d.null(i)
	}
	return i, d.wrongType(i, "a string")
}

// metaURL decodes a nullable string at i into dst.
func (d *Decoder) metaURL(i int, dst **string) (int, error) {
	switch d.data[i] {
	case '"':
		i, s, err := d.str(i)
		if err == nil {
			v := string(d.bytesOf(s))
			*dst = &v
		}
		return i, err
	case 'n':
		*dst = nil
		return d.null(i)
	}
	return i, d.wrongType(i, "a string or null")
}

// metaInt decodes an integer at i into dst; null leaves dst as it is. A
// number with a fraction or an exponent, or out of range, fails as it does
// in encoding/json, even when its value is whole.
func (d *Decoder) metaInt(i int, dst *int) (int, error) {
	c := d.data[i]
	switch {
	case c == 'n':
		return d.null(i)
	case c == '-' || isDigit(c):
		end, integer, err := d.number(i)
		if err != nil {
			return end, err
		}
		lit := d.data[i:end]
		if !integer {
			return end, typeErr(i, "number %s is not an integer", lit)
		}
		n, ok := parseInt(lit)
		if !ok {
			return end, typeErr(i, "number %s does not fit an int", lit)
		}
		*dst = n
		return end, nil
	}
	return i, d.wrongType(i, "an integer")
}

// emit replays the decoded records into sink.
func (d *Decoder) emit(sink Sink) error {
	exact, _ := sink.(ExactTimeSink)
	for r := 0; r < d.nrec; r++ {
		s := &d.slots[r]
		sink.BeginRecord()
		for f := range Field(NumFields) {
			v := &s[f]
			switch v.kind {
			case kNull:
				sink.Null(f)
			case kString:
				sink.String(f, d.bytesOf(v.s))
			case kTimeFast:
				if exact != nil {
					exact.ExactTime(f, time.Unix(v.seconds(), 0).UTC())
				} else {
					sink.Time(f, v.seconds()*1e6)
				}
			case kTimeSlow:
				t := d.times[v.s.off]
				if exact != nil {
					exact.ExactTime(f, t)
				} else {
					sink.Time(f, t.UnixMicro())
				}
			case kList:
				list := d.list[:0]
				for _, it := range d.items[v.s.off : v.s.off+v.s.n] {
					list = append(list, d.bytesOf(it))
				}
				if list == nil {
					list = [][]byte{}
				}
				sink.StringList(f, list)
				clear(list)
				d.list = list[:0]
			}
		}
		if err := sink.EndRecord(); err != nil {
			return fmt.Errorf("bindjson: record %d: %w", r, err)
		}
	}
	return nil
}

// parseInt parses an integer literal already checked by number, as
// strconv.ParseInt does for an int, without making a string of it.
func parseInt(lit []byte) (int, bool) {
	if len(lit) > 18 || strconv.IntSize == 32 && len(lit) > 9 {
		n, err := strconv.ParseInt(string(lit), 10, strconv.IntSize)
		return int(n), err == nil
	}
	neg := lit[0] == '-'
	if neg {
		lit = lit[1:]
	}
	n := 0
	for _, c := range lit {
		n = n*10 + int(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

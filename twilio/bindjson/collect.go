package bindjson

import "time"

// Binding is one record as Go values, for callers that want structs rather
// than a Sink. Its fields are those of twilio.Binding, in the same order,
// with the same types and JSON names; binding_type is a *string, so that a
// null sent against the API's contract stays null. Once twilio.Binding's
// BindingType is a *string too, twilio.Binding(b) converts one into the
// other at no cost.
type Binding struct {
	SID           *string    `json:"sid"`
	AccountSID    *string    `json:"account_sid"`
	ServiceSID    *string    `json:"service_sid"`
	DateCreated   *time.Time `json:"date_created"`
	DateUpdated   *time.Time `json:"date_updated"`
	Endpoint      *string    `json:"endpoint"`
	Identity      *string    `json:"identity"`
	UserSID       *string    `json:"user_sid"`
	CredentialSID *string    `json:"credential_sid"`
	BindingType   *string    `json:"binding_type"`
	MessageTypes  []string   `json:"message_types"`
	URL           *string    `json:"url"`
}

// Collector is a Sink that keeps every record as a Binding, with its
// timestamps exactly as encoding/json decodes them: the typed result of
// the same decoder, equal to encoding/json's decoding into twilio.Binding
// field for field. It allocates for every value that differs from the
// same field of the record before; a value equal to it (the account,
// service, user, identity, credential and type repeat through a page)
// shares that record's pointer, so records must be treated as read-only.
// The export path should use a Sink of its own instead.
type Collector struct {
	// Bindings are the records received, in order.
	Bindings []Binding
	// LinksUsers holds, for each record, its links.user, or nil when it has
	// none (records of the User Bindings list).
	LinksUsers []*string

	cur   Binding
	links *string
	// prev holds the string pointers of the record before, by field; types
	// the message types of the record before.
	prev  [NumFields]*string
	types []string
}

var _ ExactTimeSink = (*Collector)(nil)

// Reset empties the collector and returns what it held.
func (c *Collector) Reset() ([]Binding, []*string) {
	bs, ls := c.Bindings, c.LinksUsers
	c.Bindings, c.LinksUsers = nil, nil
	c.prev, c.types = [NumFields]*string{}, nil
	return bs, ls
}

// BeginRecord starts a record.
func (c *Collector) BeginRecord() { c.cur, c.links = Binding{}, nil }

// String sets a string field.
func (c *Collector) String(f Field, v []byte) {
	p := c.stringField(f)
	if p == nil {
		return
	}
	if last := c.prev[f]; last != nil && *last == string(v) {
		*p = last
		return
	}
	s := string(v)
	*p = &s
	c.prev[f] = &s
}

// Time sets a timestamp given in microseconds; DecodePage calls ExactTime
// instead, and Time serves callers that feed the Collector themselves.
func (c *Collector) Time(f Field, micros int64) {
	c.ExactTime(f, time.UnixMicro(micros).UTC())
}

// ExactTime sets a timestamp.
func (c *Collector) ExactTime(f Field, t time.Time) {
	switch f {
	case DateCreated:
		c.cur.DateCreated = &t
	case DateUpdated:
		c.cur.DateUpdated = &t
	}
}

// StringList sets MessageTypes to a copy of vs.
func (c *Collector) StringList(f Field, vs [][]byte) {
	if f != MessageTypes {
		return
	}
	list := make([]string, len(vs))
	for i, v := range vs {
		// Types repeat from record to record: reuse their strings.
		if i < len(c.types) && c.types[i] == string(v) {
			list[i] = c.types[i]
		} else {
			list[i] = string(v)
		}
	}
	c.cur.MessageTypes = list
	c.types = list
}

// Null leaves a field nil; BeginRecord has already cleared it.
func (c *Collector) Null(f Field) {}

// EndRecord appends the record.
func (c *Collector) EndRecord() error {
	c.Bindings = append(c.Bindings, c.cur)
	c.LinksUsers = append(c.LinksUsers, c.links)
	return nil
}

func (c *Collector) stringField(f Field) **string {
	switch f {
	case SID:
		return &c.cur.SID
	case AccountSID:
		return &c.cur.AccountSID
	case ServiceSID:
		return &c.cur.ServiceSID
	case Endpoint:
		return &c.cur.Endpoint
	case Identity:
		return &c.cur.Identity
	case UserSID:
		return &c.cur.UserSID
	case CredentialSID:
		return &c.cur.CredentialSID
	case BindingType:
		return &c.cur.BindingType
	case URL:
		return &c.cur.URL
	case LinksUser:
		return &c.links
	}
	return nil
}

// DecodeBindings decodes body with a pooled Decoder into Bindings: the
// sink-free way to read a page. bindings is nil when the page has no
// "bindings" list, and empty, not nil, for an empty one. links holds each
// record's links.user (nil when it has none). On error it returns no
// records.
func DecodeBindings(body []byte) (bindings []Binding, links []*string, page Page, err error) {
	var c Collector
	page, err = DecodePage(body, &c)
	if err != nil {
		return nil, nil, page, err
	}
	bindings, links = c.Reset()
	if page.HasBindings && bindings == nil {
		// An empty list is not a missing one, as with encoding/json.
		bindings, links = []Binding{}, []*string{}
	}
	return bindings, links, page, nil
}

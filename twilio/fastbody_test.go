package twilio

import (
	"encoding/json"
	"reflect"
	"testing"
)

// wholeBodySeeds are User Bindings pages, well-formed and not.
var wholeBodySeeds = []string{
	`{"meta":{"page":0,"page_size":50,"key":"bindings","url":"u","first_page_url":"f","previous_page_url":null,"next_page_url":"https://chat.twilio.com/v2/Services/IS1/Users/US1/Bindings?PageToken=PT1"},"bindings":[{"sid":"BS1","account_sid":"AC1","service_sid":"IS1","date_created":"2026-01-02T03:04:05Z","date_updated":"2026-01-02T03:04:05.123Z","endpoint":"e\u00e9\ud800","identity":"a@b","user_sid":"US1","credential_sid":null,"binding_type":"apn","message_types":["a",null],"url":"x"}]}`,
	`{"meta":{},"bindings":[]}`,
	`{"meta":null,"bindings":null}`,
	`{"bindings":[{"SID":"upper","sid":"lower","binding_type":null,"message_types":[]}],"META":{"page":1}}`,
	`{"meta":{"page":"1"},"bindings":[]}`,
	`{"meta":{},"bindings":[{"date_created":"yesterday"}]}`,
	`{"meta":{},"bindings":[]} x`,
	`{"meta":{},"bindings":[`,
	`[]`,
	``,
}

// FuzzWholeBodyEqualsEncodingJSON holds the client's fast decoding of a
// User Bindings page to encoding/json's: the same body value, and an error
// exactly when encoding/json fails.
func FuzzWholeBodyEqualsEncodingJSON(f *testing.F) {
	for _, s := range wholeBodySeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var want, got bindingsBody
		werr := json.Unmarshal(data, &want)
		gerr := got.decodeWhole(data)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("body %q: encoding/json error %v, fast error %v", data, werr, gerr)
		}
		if werr == nil && !reflect.DeepEqual(want, got) {
			t.Fatalf("body %q:\nencoding/json %+v\nfast          %+v", data, want, got)
		}
	})
}

// TestServiceBodyLinks: the service-wide list's links.user arrives as
// Links.User; a links value that is not an object is no link (nil), where
// encoding/json would refuse the page: a caller never resolves a user
// from it either way.
func TestServiceBodyLinks(t *testing.T) {
	var b serviceBindingsBody
	if err := b.decodeWhole([]byte(`{"meta":{"page":0},"bindings":[{"sid":"BS1","links":{"user":"https://chat.twilio.com/v2/Services/IS1/Users/a%40b"}},{"sid":"BS2","links":5},{"sid":"BS3"}]}`)); err != nil {
		t.Fatal(err)
	}
	if len(b.Bindings) != 3 || b.Meta == nil {
		t.Fatalf("body = %+v, want 3 bindings and a meta", b)
	}
	if l := b.Bindings[0].Links; l == nil || l.User == nil || *l.User != "https://chat.twilio.com/v2/Services/IS1/Users/a%40b" {
		t.Errorf("links of BS1 = %+v", l)
	}
	for _, i := range []int{1, 2} {
		if b.Bindings[i].Links != nil {
			t.Errorf("links of %s = %+v, want nil", *b.Bindings[i].SID, b.Bindings[i].Links)
		}
	}
}

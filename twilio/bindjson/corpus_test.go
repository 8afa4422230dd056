package bindjson_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

// testWorld is a small generated world whose users include the special and
// control-character identities.
func testWorld() *twiliotest.World {
	return twiliotest.NewWorld(twiliotest.WorldSpec{
		Seed: 11, Services: 1, UsersPerService: 24, MaxBindingsPerUser: 130, ControlIdentities: true,
	})
}

// userPage is a User Bindings page as the fake server writes it.
func userPage(t testing.TB, svc string, u *twiliotest.User, bs []twilio.Binding, next bool) []byte {
	t.Helper()
	base := fmt.Sprintf("%s/v2/Services/%s/Users/%s/Bindings", twiliotest.DefaultPublicBaseURL, svc, u.SID)
	meta := twilio.Meta{
		Key: "bindings", URL: base + "?PageSize=50&Page=0", Page: 0, PageSize: 50,
		FirstPageURL: base + "?PageSize=50&Page=0",
	}
	if next {
		n := base + "?PageSize=50&Page=1&PageToken=PT" + url.QueryEscape("a+b/c=")
		meta.NextPageURL = &n
	}
	data, err := json.Marshal(struct {
		Bindings []twilio.Binding `json:"bindings"`
		Meta     twilio.Meta      `json:"meta"`
	}{bs, meta})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// serviceWidePage is a page of the service-wide Bindings list: records
// without user_sid, with links.user naming the user by identity, meta
// first.
func serviceWidePage(t testing.TB, svc string, bs []twilio.Binding) []byte {
	t.Helper()
	recs := make([]map[string]any, len(bs))
	for i, b := range bs {
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		delete(m, "user_sid")
		m["url"] = fmt.Sprintf("%s/v2/Services/%s/Bindings/%s", twiliotest.DefaultPublicBaseURL, svc, *b.SID)
		m["links"] = map[string]string{
			"user": fmt.Sprintf("%s/v2/Services/%s/Users/%s", twiliotest.DefaultPublicBaseURL, svc, url.PathEscape(*b.Identity)),
		}
		recs[i] = m
	}
	base := fmt.Sprintf("%s/v2/Services/%s/Bindings", twiliotest.DefaultPublicBaseURL, svc)
	data, err := json.Marshal(map[string]any{
		"meta": map[string]any{
			"page": 0, "page_size": 50, "key": "bindings", "url": base + "?PageSize=50&Page=0",
			"first_page_url": base + "?PageSize=50&Page=0", "previous_page_url": nil, "next_page_url": nil,
		},
		"bindings": recs,
	})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// realPages returns real-looking pages of the test world: per-user pages
// (the heavy user's first page of 50, a special identity's, a control
// identity's, an empty one) and a service-wide page.
func realPages(t testing.TB) map[string][]byte {
	w := testWorld()
	svc := w.Services[0]
	pages := map[string][]byte{}
	var heavy *twiliotest.User
	for i := range svc.Users {
		u := &svc.Users[i]
		if u.NumBindings >= twiliotest.HeavyBindings && heavy == nil {
			heavy = u
		}
	}
	if heavy == nil {
		t.Fatal("test world has no heavy user")
	}
	pages["heavy user, first page"] = userPage(t, svc.SID, heavy, heavy.Bindings()[:50], true)
	for i := range svc.Users {
		u := &svc.Users[i]
		switch {
		case u.Identity == "a/b" || u.Identity == "ünï" || strings.HasPrefix(u.Identity, "esc") || strings.HasPrefix(u.Identity, "bidi"):
			pages["user "+u.Identity] = userPage(t, svc.SID, u, u.Bindings(), false)
		}
	}
	pages["empty page"] = userPage(t, svc.SID, heavy, []twilio.Binding{}, false)
	var all []twilio.Binding
	for i := range svc.Users {
		all = append(all, svc.Users[i].Bindings()...)
		if len(all) >= 50 {
			break
		}
	}
	pages["service-wide"] = serviceWidePage(t, svc.SID, all[:50])
	return pages
}

// smallRealPages are real-looking pages of two or three records: a user's
// with a next page, one of a control-character identity, and a
// service-wide one.
func smallRealPages(t testing.TB) [][]byte {
	w := testWorld()
	svc := w.Services[0]
	var pages [][]byte
	for i := range svc.Users {
		u := &svc.Users[i]
		if u.Identity == "a/b" || strings.HasPrefix(u.Identity, "esc") {
			bs := u.Bindings()
			pages = append(pages, userPage(t, svc.SID, u, bs[:min(3, len(bs))], true))
		}
	}
	u := &svc.Users[0]
	pages = append(pages, serviceWidePage(t, svc.SID, u.Bindings()[:min(2, u.NumBindings)]))
	return pages
}

// hostileSeeds are bodies a broken or hostile server may send, each a case
// the decoder must get exactly as encoding/json does.
var hostileSeeds = []string{
	``,
	` `,
	`null`,
	` null `,
	`{}`,
	`[]`,
	`"page"`,
	`42`,
	`true`,
	`{"bindings":[],"meta":{}}`,
	`{"bindings":null,"meta":null}`,
	`{"bindings":{},"meta":{}}`,
	`{"bindings":[1],"meta":{}}`,
	`{"bindings":["x"]}`,
	`{"bindings":[[]]}`,
	`{"bindings":[null,{}]}`,
	`{"bindings":[{"sid":null,"binding_type":null,"message_types":null}]}`,
	`{"bindings":[{"sid":1}]}`,
	`{"bindings":[{"sid":true}]}`,
	`{"bindings":[{"sid":{}}]}`,
	`{"bindings":[{"message_types":"new_message"}]}`,
	`{"bindings":[{"message_types":[1]}]}`,
	`{"bindings":[{"message_types":[null,"a",null]}]}`,
	`{"bindings":[{"message_types":["a","b","c"],"message_types":["x",null],"message_types":[null,null,null,null]}]}`,
	`{"bindings":[{"message_types":["a","b"],"message_types":[]}, {"message_types":["a"],"message_types":null}]}`,
	`{"bindings":[{"sid":"a","identity":"x","message_types":["m","n"]},{"sid":"b"}],"bindings":[{"sid":"c","message_types":[null]},null,null]}`,
	`{"bindings":[{"sid":"a"}],"bindings":[],"bindings":[null]}`,
	`{"bindings":[{"sid":"a"}],"bindings":null}`,
	`{"meta":{"page":1,"key":"a"},"meta":{"page_size":2,"key":null}}`,
	`{"meta":{"page":1},"meta":null,"meta":{"url":"u"}}`,
	`{"meta":{"page":1.0}}`,
	`{"meta":{"page":1e2}}`,
	`{"meta":{"page":-0}}`,
	`{"meta":{"page":-12}}`,
	`{"meta":{"page":9223372036854775807}}`,
	`{"meta":{"page":9223372036854775808}}`,
	`{"meta":{"page":"1"}}`,
	`{"meta":{"page":null,"key":null,"next_page_url":null}}`,
	`{"meta":{"next_page_url":5}}`,
	`{"meta":{"next_page_url":"https://chat.twilio.com/v2/x?PageToken=a%2Bb"}}`,
	`{"meta":[]}`,
	`{"META":{"PAGE_SIZE":3},"BINDINGS":[{"SID":"s","Binding_Type":"apn","Message_Types":[]}]}`,
	"{\"binding\u017f\":[{\"\u017fid\":\"long s\"}],\"meta\":{\"\u212aey\":\"kelvin\"}}",
	`{"bindings":[{"\u0073id":"escaped key","s\u0069d":"again"}]}`,
	`{"bindings":[{"sid":"\u00e9\ud83d\ude00\ud800\udc00x\ud800\u0041\udc00\ud800"}]}`,
	`{"bindings":[{"sid":"\u0000\b\f\n\r\t\/\\\""}]}`,
	"{\"bindings\":[{\"sid\":\"bad \xff utf8 \xed\xa0\x80 \xc3\"}]}",
	"{\"bindings\":[{\"sid\":\"valid \xef\xbf\xbd replacement\"}]}",
	"{\"bindings\":[{\"\xff\":1}]}",
	"{\"bindings\":[{\"sid\":\"tab\there\"}]}",
	`{"bindings":[{"sid":"\x"}]}`,
	`{"bindings":[{"sid":"\u12"}]}`,
	`{"bindings":[{"sid":"\u12G4"}]}`,
	`{"bindings":[{"date_created":"2016-10-21T11:37:03Z"}]}`,
	`{"bindings":[{"date_created":"2016-10-21T11:37:03.123456789Z"}]}`,
	`{"bindings":[{"date_created":"2016-10-21T11:37:03+02:00"}]}`,
	`{"bindings":[{"date_created":"2016-10-21T11:37:03-00:00"}]}`,
	`{"bindings":[{"date_created":"2016-10-21t11:37:03z"}]}`,
	`{"bindings":[{"date_created":"2016-02-30T11:37:03Z"}]}`,
	`{"bindings":[{"date_created":"2016-02-29T23:59:59Z","date_updated":"2015-02-29T00:00:00Z"}]}`,
	`{"bindings":[{"date_created":"2016-10-21T24:00:00Z"}]}`,
	`{"bindings":[{"date_created":"2016-10-21T11:37:60Z"}]}`,
	`{"bindings":[{"date_created":"0000-01-01T00:00:00Z"}]}`,
	`{"bindings":[{"date_created":"9999-12-31T23:59:59Z"}]}`,
	`{"bindings":[{"date_created":"1969-12-31T23:59:59.999999999Z"}]}`,
	`{"bindings":[{"date_created":"2016-10-21T11:37:03\u005a"}]}`,
	`{"bindings":[{"date_created":"2016-10-21 11:37:03Z"}]}`,
	`{"bindings":[{"date_created":""}]}`,
	`{"bindings":[{"date_created":1477049823}]}`,
	`{"bindings":[{"date_created":null,"date_updated":{}}]}`,
	`{"bindings":[{"links":{"user":"https://chat.twilio.com/v2/Services/IS1/Users/a%2Fb"}}]}`,
	`{"bindings":[{"links":5},{"links":{"user":7}},{"links":{"USER":"u","user":null}},{"links":null}]}`,
	`{"bindings":[{"links":{"user":"u"},"links":{}}]}`,
	`{"bindings":[{"links":[1,2,{"user":"x"}]}]}`,
	`{"bindings":[{"links":{"user":"\x"}}]}`,
	`{"bindings":[{"extra":{"a":[1,2.5e-3,-0,true,false,null,"s"]},"sid":"s"}],"users":[1],"other":{}}`,
	`{"bindings":[{"extra":123456789012345678901234567890e999999999}]}`,
	`{"bindings":[{"extra":01}]}`,
	`{"bindings":[{"extra":1.}]}`,
	`{"bindings":[{"extra":-}]}`,
	`{"bindings":[{"extra":.5}]}`,
	`{"bindings":[{"extra":1e}]}`,
	`{"bindings":[{"extra":tru}]}`,
	`{"bindings":[{"extra":nul}]}`,
	`{"bindings":[{"sid":"a",}]}`,
	`{"bindings":[{"sid":"a"},]}`,
	`{"bindings":[{"sid" "a"}]}`,
	`{"bindings":[{sid:"a"}]}`,
	`{"bindings":[{"sid":'a'}]}`,
	`{"bindings":[]} x`,
	`{"bindings":[]} {}`,
	`{"bindings":[]}` + "\n\t\r ",
	"\xef\xbb\xbf{}",
	`{"bindings":[{"sid":"a"`,
	`{"bindings":[{"sid":"a`,
	`{"bindings":[{"sid"`,
	`{"bindings":[`,
	`{"bindings"`,
	`{`,
	strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
	`{"x":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}`,
	`{"x":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`,
	`{"bindings":[{"x":` + strings.Repeat(`{"a":`, 9997) + `1` + strings.Repeat("}", 9997) + `}]}`,
	`{"bindings":[{"x":` + strings.Repeat(`{"a":`, 9998) + `1` + strings.Repeat("}", 9998) + `}]}`,
}

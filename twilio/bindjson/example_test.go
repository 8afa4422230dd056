package bindjson_test

import (
	"fmt"

	"github.com/bindsync/bindsync/twilio/bindjson"
)

// typeCounter counts bindings per binding_type, a Sink that keeps nothing
// of the body.
type typeCounter struct {
	counts map[string]int
}

func (c *typeCounter) BeginRecord()                             {}
func (c *typeCounter) Time(f bindjson.Field, micros int64)      {}
func (c *typeCounter) StringList(f bindjson.Field, vs [][]byte) {}
func (c *typeCounter) EndRecord() error                         { return nil }

func (c *typeCounter) String(f bindjson.Field, v []byte) {
	if f == bindjson.BindingType {
		c.counts[string(v)]++ // a map index by string(v) does not allocate
	}
}

func (c *typeCounter) Null(f bindjson.Field) {
	if f == bindjson.BindingType {
		c.counts["<null>"]++
	}
}

func ExampleDecoder_DecodePage() {
	body := []byte(`{
		"meta": {"page": 0, "page_size": 50, "key": "bindings", "next_page_url": null},
		"bindings": [
			{"sid": "BS1", "binding_type": "apn", "message_types": ["new_message"]},
			{"sid": "BS2", "binding_type": "fcm", "links": {"user": "https://chat.twilio.com/v2/Services/IS1/Users/alice"}},
			{"sid": "BS3", "binding_type": "apn"}
		]}`)
	var d bindjson.Decoder // keep one per goroutine: it reuses its buffers
	sink := &typeCounter{counts: map[string]int{}}
	page, err := d.DecodePage(body, sink)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(page.Records, "records; last page:", page.Meta.NextPageURL == nil)
	fmt.Println("apn:", sink.counts["apn"], "fcm:", sink.counts["fcm"])
	// Output:
	// 3 records; last page: true
	// apn: 2 fcm: 1
}

func ExampleDecodeBindings() {
	bs, links, _, err := bindjson.DecodeBindings([]byte(`{"bindings":[{"sid":"BS1","identity":"alice","links":{"user":"https://chat.twilio.com/v2/Services/IS1/Users/alice"}}],"meta":{}}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(*bs[0].SID, *bs[0].Identity, bs[0].UserSID == nil, *links[0])
	// Output: BS1 alice true https://chat.twilio.com/v2/Services/IS1/Users/alice
}

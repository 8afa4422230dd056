package bindjson_test

import (
	"testing"

	"github.com/bindsync/bindsync/twilio/bindjson"
)

// FuzzDecodeEqualsEncodingJSON holds the decoder to encoding/json on any
// body: the same records field by field (nulls, missing fields and empty
// lists told apart, times to the nanosecond and their location), the same
// meta block, and an error exactly when encoding/json fails. It also checks
// the Sink contract: every field once per record, in order, and no call at
// all for a page that fails. The seeds are real pages of the fake server
// (per user and service-wide, a few records each) and hostile bodies.
func FuzzDecodeEqualsEncodingJSON(f *testing.F) {
	for _, page := range smallRealPages(f) {
		f.Add(page)
	}
	// Seeds of tens of kilobytes (real pages of 50, deep nesting) are left
	// to the unit tests: the fuzzer mutates and minimizes small inputs far
	// faster.
	for _, body := range hostileSeeds {
		if len(body) <= 4<<10 {
			f.Add([]byte(body))
		}
	}
	// A Decoder per worker process, reused across inputs, so that a page
	// leaking into the next would show. MaxRecords is out of the fuzzer's
	// reach: it is the one documented difference.
	d := &bindjson.Decoder{MaxRecords: 1 << 30}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkEquivalent(t, d, data)
	})
}

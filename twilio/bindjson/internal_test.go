package bindjson

import (
	"math/rand/v2"
	"testing"
)

// TestPlainRun checks the eight-bytes-at-a-time scan against the plain
// table byte by byte, on random strings dense in the bytes it must stop at.
func TestPlainRun(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	alphabet := []byte("abc XYZ09\"\\\x00\x1f\x20\x7f\x80\xbf\xff~!")
	for range 20000 {
		data := make([]byte, rng.IntN(40))
		for i := range data {
			if rng.IntN(6) == 0 {
				data[i] = alphabet[rng.IntN(len(alphabet))]
			} else {
				data[i] = byte(rng.IntN(256))
			}
		}
		from := 0
		if len(data) > 0 {
			from = rng.IntN(len(data) + 1)
		}
		want := from
		for want < len(data) && plain[data[want]] {
			want++
		}
		if got := plainRun(data, from); got != want {
			t.Fatalf("plainRun(%q, %d) = %d, want %d", data, from, got, want)
		}
	}
}

// TestParseTwilioTimeRejects lists forms the fast path must leave to the
// time package.
func TestParseTwilioTimeRejects(t *testing.T) {
	for _, s := range []string{
		"2016-10-21T11:37:03+00:00", "2016-10-21T11:37:03.0Z", "2016-10-21t11:37:03Z", "2016-10-21T11:37:03z",
		"2016-13-01T00:00:00Z", "2016-00-01T00:00:00Z", "2016-02-30T00:00:00Z", "2015-02-29T00:00:00Z",
		"2016-01-00T00:00:00Z", "2016-01-01T24:00:00Z", "2016-01-01T00:60:00Z", "2016-01-01T00:00:60Z",
		"+016-01-01T00:00:00Z", "2016-1-01T00:00:00Z", "2016-01-01 00:00:00Z", "2016-01-01T00:00:0aZ",
	} {
		if sec, ok := parseTwilioTime([]byte(s)); ok {
			t.Errorf("parseTwilioTime(%q) = %d, true; want false", s, sec)
		}
	}
}

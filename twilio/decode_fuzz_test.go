package twilio

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// bodyTransport answers every request with the same 200 body, gzipped
// with Content-Encoding gzip when gz is set (a transport of the caller's
// own, so the client inflates it itself).
type bodyTransport struct {
	body []byte
	gz   bool
}

func (b bodyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	header := http.Header{"Content-Type": {"application/json"}}
	body := b.body
	if b.gz {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(body)
		_ = zw.Close()
		body = buf.Bytes()
		header.Set("Content-Encoding", "gzip")
	}
	return &http.Response{
		StatusCode:    http.StatusOK,
		Header:        header,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       r,
	}, nil
}

// fuzzMaxBody is the body limit of the fuzzed client, small enough for
// the fuzzer to cross it.
const fuzzMaxBody = 64 << 10

// hostileBody is a body a hostile or broken server may send, and what the
// client must make of it.
type hostileBody struct {
	name string
	body string
	// want is nil when the page is accepted, else the sentinel the error
	// wraps; retryable says whether Retryable holds for it.
	want      error
	retryable bool
}

func hostileBodies() []hostileBody {
	page := func(bindings, meta string) string { return `{"bindings":` + bindings + `,"meta":` + meta + `}` }
	next := `https://chat.twilio.com/v2/Services/` + testService + `/Users/alice/Bindings?Page=1&PageToken=`
	return []hostileBody{
		{"huge numbers", page(`[]`, `{"page":1e999999,"page_size":99999999999999999999999}`), ErrBadResponse, true},
		{"fraction and string numbers", page(`[]`, `{"page":-0.5,"page_size":"50"}`), ErrBadResponse, true},
		{"wrong field types", page(`[{"sid":12345678901234567890,"binding_type":["apn"],"message_types":"new_message"}]`, `{}`), ErrBadResponse, true},
		{"impossible date", page(`[{"date_created":"2016-10-21T11:37:03+99:99"}]`, `{}`), ErrBadResponse, true},
		{"bindings an object", page(`{"sid":"BS1"}`, `{}`), ErrBadResponse, true},
		{"meta a list", page(`[]`, `[]`), ErrBadResponse, true},
		{"next_page_url a number", page(`[]`, `{"next_page_url":12}`), ErrBadResponse, true},
		{"70 KB page token", page(`[]`, `{"next_page_url":"`+next+strings.Repeat("A", 70<<10)+`"}`), ErrResponseTooLarge, false},
		{"field as large as the limit", page(`[{"endpoint":"`+strings.Repeat("x", fuzzMaxBody)+`"}]`, `{}`), ErrResponseTooLarge, false},
		{"2,000 null binding types", page(`[`+strings.Repeat(`{"binding_type":null},`, 2000)+`{}]`, `{}`), nil, false},
		{"nesting 20,000 deep", strings.Repeat("[", 20000) + strings.Repeat("]", 20000), ErrBadResponse, true},
		{"nesting 5,000 deep in an ignored field", `{"bindings":[],"meta":` + strings.Repeat(`{"x":`, 5000) + `1` + strings.Repeat("}", 5000) + `}`, nil, false},
		{"padding past the limit", `{"bindings":[],"meta":{}}` + strings.Repeat(" ", fuzzMaxBody), ErrResponseTooLarge, false},
		{"two JSON values", `{"bindings":[],"meta":{}}{"bindings":[{"sid":"BS2"}],"meta":{}}`, ErrBadResponse, true},
		{"escapes and NUL in a string", `{"bindings":[],"meta":{"key":"\ud800\udc00\u0000\u001b[2J"}}`, nil, false},
		{"list given twice, null last", `{"bindings":[],"bindings":null,"meta":{}}`, ErrBadResponse, false},
		{"byte order mark", "\xef\xbb\xbf" + page(`[]`, `{}`), ErrBadResponse, true},
		{"cut off", page(`[]`, `{}`)[:20], ErrBadResponse, true},
		{"empty", ``, ErrBadResponse, true},
		{"null", `null`, ErrBadResponse, false},
	}
}

// FuzzBindingsPage feeds the client arbitrary response bodies, plain or
// gzipped. It must never panic; what it accepts must hold exactly the
// bindings of the body, and what it refuses must be a classified error.
func FuzzBindingsPage(f *testing.F) {
	f.Add([]byte(`{"bindings":[],"meta":{"next_page_url":null}}`), false)
	f.Add([]byte(`{"bindings":[{"sid":"BS1","binding_type":"gcm","message_types":null,"date_created":"2016-10-21T11:37:03Z"}],"meta":{"page":0,"page_size":50,"next_page_url":"https://chat.twilio.com/v2/Services/`+testService+`/Users/alice/Bindings?PageSize=50&Page=1&PageToken=a%2Bb"}}`), true)
	f.Add([]byte(`{"bindings":[{"date_created":"yesterday"}],"meta":{}}`), false)
	f.Add([]byte(`{"meta":{"next_page_url":"https://evil.example.com/x"},"bindings":[]}`), false)
	f.Add([]byte(`{"bindings":[`), true)
	f.Add([]byte(`[]`), false)
	for _, h := range hostileBodies() {
		f.Add([]byte(h.body), false)
		f.Add([]byte(h.body), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, gz bool) {
		c, err := New(Config{
			BaseURL:      "http://127.0.0.1:1",
			Username:     "AC0",
			Password:     "secret",
			HTTPClient:   &http.Client{Transport: bodyTransport{body: body, gz: gz}},
			MaxAttempts:  1,
			MaxBodyBytes: fuzzMaxBody,
		})
		if err != nil {
			t.Fatal(err)
		}
		page, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice", PageSize: 50})
		if err != nil {
			if !errors.Is(err, ErrBadResponse) && !errors.Is(err, ErrForeignNextPage) && !errors.Is(err, ErrResponseTooLarge) && !Retryable(err) {
				t.Fatalf("unclassified error: %v", err)
			}
			if errors.Is(err, ErrResponseTooLarge) && len(body) <= fuzzMaxBody {
				t.Fatalf("a body of %d bytes was refused as over %d: %v", len(body), fuzzMaxBody, err)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("error shows the password: %v", err)
			}
			return
		}
		if len(body) > fuzzMaxBody+maxTrailing {
			t.Fatalf("accepted a body of %d bytes, over the limit of %d", len(body), fuzzMaxBody)
		}
		var raw struct {
			Bindings []json.RawMessage `json:"bindings"`
		}
		if err := json.NewDecoder(bytes.NewReader(body)).Decode(&raw); err != nil {
			t.Fatalf("accepted a body encoding/json rejects: %v", err)
		}
		if len(page.Bindings) != len(raw.Bindings) {
			t.Fatalf("decoded %d bindings, body has %d", len(page.Bindings), len(raw.Bindings))
		}
		if page.Next != "" {
			if err := checkPage(page.Next, bindingsResource(testService, "alice")); err != nil {
				t.Fatalf("Next %q fails its own check: %v", page.Next, err)
			}
		}
	})
}

// TestHostileBodies checks what becomes of each hostile body of the fuzz
// corpus, plain and gzipped.
func TestHostileBodies(t *testing.T) {
	for _, h := range hostileBodies() {
		for _, gz := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/gzip=%v", h.name, gz), func(t *testing.T) {
				c, err := New(Config{
					BaseURL: "http://127.0.0.1:1", Username: "AC0", Password: "secret",
					HTTPClient:  &http.Client{Transport: bodyTransport{body: []byte(h.body), gz: gz}},
					MaxAttempts: 1, MaxBodyBytes: fuzzMaxBody,
				})
				if err != nil {
					t.Fatal(err)
				}
				_, err = c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice"})
				if h.want == nil {
					if err != nil {
						t.Fatalf("error = %v, want the page accepted", err)
					}
					return
				}
				if !errors.Is(err, h.want) || Retryable(err) != h.retryable {
					t.Errorf("error = %v (retryable %v), want %v, retryable %v", err, Retryable(err), h.want, h.retryable)
				}
			})
		}
	}
}

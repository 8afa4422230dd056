package twilio

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"
)

// bodyTransport answers every request with the same 200 body.
type bodyTransport struct{ body []byte }

func (b bodyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode:    http.StatusOK,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(b.body)),
		ContentLength: int64(len(b.body)),
		Request:       r,
	}, nil
}

// FuzzBindingsPage feeds the client arbitrary response bodies. It must never
// panic; what it accepts must hold exactly the bindings of the body, and
// what it refuses must be a classified error.
func FuzzBindingsPage(f *testing.F) {
	f.Add([]byte(`{"bindings":[],"meta":{"next_page_url":null}}`))
	f.Add([]byte(`{"bindings":[{"sid":"BS1","binding_type":"gcm","message_types":null,"date_created":"2016-10-21T11:37:03Z"}],"meta":{"page":0,"page_size":50,"next_page_url":"https://chat.twilio.com/v2/Services/` + testService + `/Users/alice/Bindings?PageSize=50&Page=1&PageToken=a%2Bb"}}`))
	f.Add([]byte(`{"bindings":[{"date_created":"yesterday"}],"meta":{}}`))
	f.Add([]byte(`{"meta":{"next_page_url":"https://evil.example.com/x"},"bindings":[]}`))
	f.Add([]byte(`{"bindings":[`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := New(Config{
			BaseURL:     "http://127.0.0.1:1",
			Username:    "AC0",
			Password:    "secret",
			HTTPClient:  &http.Client{Transport: bodyTransport{body}},
			MaxAttempts: 1,
		})
		if err != nil {
			t.Fatal(err)
		}
		page, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice", PageSize: 50})
		if err != nil {
			if !errors.Is(err, ErrBadResponse) && !errors.Is(err, ErrForeignNextPage) && !Retryable(err) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
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

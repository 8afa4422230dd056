package twilio

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// gzipMember is data as one gzip member. Members concatenated form one
// valid gzip stream, which lets a test send a large inflated body from a
// small precomputed piece.
func gzipMember(t testing.TB, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw, err := gzip.NewWriterLevel(&b, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// hugeEndpointPage is the start of a bindings page whose one binding has
// an endpoint that never ends; the caller writes the endpoint's bytes.
const hugeEndpointPage = `{"meta": {"key": "bindings", "next_page_url": null}, "bindings": [{"sid": "BS1", "binding_type": "apn", "endpoint": "`

// gzipBomb answers a bindings page whose endpoint inflates to mib MiB, as
// gzip members, with Content-Encoding gzip whether or not it was asked for.
// It records the Accept-Encoding it saw.
func gzipBomb(t testing.TB, mib int, acceptEncoding *string) http.HandlerFunc {
	head := gzipMember(t, []byte(hugeEndpointPage))
	block := gzipMember(t, bytes.Repeat([]byte("x"), 1<<20))
	tail := gzipMember(t, []byte(`"}]}`))
	return func(w http.ResponseWriter, r *http.Request) {
		*acceptEncoding = r.Header.Get("Accept-Encoding")
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		w.WriteHeader(http.StatusOK)
		if _, err := w.Write(head); err != nil {
			return
		}
		for range mib {
			if _, err := w.Write(block); err != nil {
				return // the client hung up
			}
		}
		_, _ = w.Write(tail)
	}
}

// hugeField streams a page whose endpoint is mib MiB long, chunked, without
// building it in memory.
func hugeField(mib int) http.HandlerFunc {
	block := bytes.Repeat([]byte("y"), 1<<20)
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		if _, err := io.WriteString(w, hugeEndpointPage); err != nil {
			return
		}
		for range mib {
			if _, err := w.Write(block); err != nil {
				return
			}
		}
		_, _ = io.WriteString(w, `"}]}`)
	}
}

// totalAlloc is the bytes allocated on the heap so far by the process.
func totalAlloc() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

func TestResponseTooLarge(t *testing.T) {
	const (
		limit    = 1 << 20
		inflated = 256 // MiB: what a client without a limit would hold
	)
	var accepted string
	tests := []struct {
		name     string
		handler  http.HandlerFunc
		client   *http.Client // nil: the client's default transport
		wantGzip string       // Accept-Encoding the server must have seen, if the handler records it
	}{
		{"huge string field, chunked", hugeField(inflated), nil, ""},
		{"Content-Length over the limit", respond(http.StatusOK, strings.Repeat(" ", limit+1)+pageBody(t, "")), nil, ""},
		// Go's transport asks for gzip itself and inflates the body.
		{"gzip bomb inflated by the transport", gzipBomb(t, inflated, &accepted), nil, "gzip"},
		// A transport that does not ask for gzip does not inflate what is
		// sent anyway; the client does, under the same limit.
		{"gzip bomb sent unasked", gzipBomb(t, inflated, &accepted), &http.Client{Transport: &http.Transport{DisableCompression: true}}, ""},
		{"gzip bomb asked for by the caller's transport", gzipBomb(t, inflated, &accepted), &http.Client{Transport: acceptGzip{}}, "gzip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newScriptServer(t, tt.handler)
			c, log := newTestClient(t, srv.URL, func(cfg *Config) {
				cfg.MaxBodyBytes = limit
				cfg.HTTPClient = tt.client
			})
			accepted = "-"
			runtime.GC()
			before := totalAlloc()
			_, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice"})
			allocated := totalAlloc() - before

			if !errors.Is(err, ErrResponseTooLarge) || Retryable(err) {
				t.Fatalf("error = %v, want ErrResponseTooLarge, not retryable", err)
			}
			for _, want := range []string{strconv.Itoa(limit) + " bytes after decompression", bindingsPath("alice"), "twilio.max_response_bytes"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
			if n := len(srv.requests()); n != 1 {
				t.Errorf("server saw %d requests, want 1 (no retry)", n)
			}
			if reasons, _, _ := log.snapshot(); len(reasons) != 0 {
				t.Errorf("retried: %q", reasons)
			}
			if tt.wantGzip != "" && accepted != tt.wantGzip {
				t.Errorf("server saw Accept-Encoding %q, want %q", accepted, tt.wantGzip)
			}
			// Reading the whole body would allocate at least its inflated
			// size; the limit keeps the client to a small multiple of it.
			if allocated > 32<<20 {
				t.Errorf("allocated %d MiB reading a body limited to 1 MiB (%d MiB inflated)", allocated>>20, inflated)
			}
		})
	}
}

// acceptGzip is a transport that asks for gzip itself, so Go's transport
// leaves the body encoded.
type acceptGzip struct{}

func (acceptGzip) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Accept-Encoding", "gzip")
	return http.DefaultTransport.RoundTrip(r)
}

func TestBodyWithinLimit(t *testing.T) {
	body := pageBody(t, "", "BS1", "BS2")
	gz := gzipMember(t, []byte(body))
	gzipped := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(gz)
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		client  *http.Client
	}{
		{"plain, exactly at the limit", respond(http.StatusOK, body), nil},
		{"gzip inflated by the transport", gzipped, nil},
		{"gzip sent unasked", gzipped, &http.Client{Transport: &http.Transport{DisableCompression: true}}},
		{"gzip asked for by the caller", gzipped, &http.Client{Transport: acceptGzip{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newScriptServer(t, tt.handler)
			c, _ := newTestClient(t, srv.URL, func(cfg *Config) {
				cfg.MaxBodyBytes = int64(len(body))
				cfg.HTTPClient = tt.client
			})
			page, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice"})
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Bindings) != 2 || *page.Bindings[1].SID != "BS2" {
				t.Errorf("bindings = %+v, want BS1 and BS2", page.Bindings)
			}
		})
	}
}

func TestContentEncodingRefused(t *testing.T) {
	tests := []struct {
		name      string
		encoding  string
		body      []byte
		is        error
		retryable bool
	}{
		{"brotli", "br", []byte(pageBody(t, "")), ErrBadResponse, false},
		{"not gzip", "gzip", []byte(pageBody(t, "")), ErrBadResponse, false},
		{"gzip cut off", "gzip", gzipMember(t, []byte(pageBody(t, "")))[:30], ErrBadResponse, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newScriptServer(t, func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Encoding", tt.encoding)
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write(tt.body)
			})
			c, _ := newTestClient(t, srv.URL, func(cfg *Config) {
				cfg.MaxAttempts = 1
				cfg.HTTPClient = &http.Client{Transport: &http.Transport{DisableCompression: true}}
			})
			_, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice"})
			if !errors.Is(err, tt.is) || Retryable(err) != tt.retryable {
				t.Errorf("error = %v (retryable %v), want %v, retryable %v", err, Retryable(err), tt.is, tt.retryable)
			}
		})
	}
}

func TestGzipErrorBody(t *testing.T) {
	gz := gzipMember(t, []byte(`{"code": 20404, "message": "gone away", "status": 404}`))
	srv := newScriptServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write(gz)
	})
	c, _ := newTestClient(t, srv.URL, func(cfg *Config) {
		cfg.HTTPClient = &http.Client{Transport: acceptGzip{}}
	})
	_, err := c.ListBindings(context.Background(), BindingsQuery{ServiceSID: testService, User: "alice"})
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Code != 20404 || apiErr.Message != "gone away" {
		t.Errorf("error = %v, want the decoded Twilio error", err)
	}
}

func TestLimitedReader(t *testing.T) {
	for _, size := range []int{0, 1, 9, 10, 11, 100} {
		l := &limitedReader{r: bytes.NewReader(make([]byte, size)), limit: 10}
		data, err := io.ReadAll(l)
		if over := size > 10; over != errors.Is(err, ErrResponseTooLarge) || over != l.exceeded {
			t.Errorf("size %d: err %v, exceeded %v", size, err, l.exceeded)
		}
		if size <= 10 && len(data) != size {
			t.Errorf("size %d: read %d bytes", size, len(data))
		}
		if len(data) > 11 {
			t.Errorf("size %d: read %d bytes past a limit of 10", size, len(data))
		}
	}
}

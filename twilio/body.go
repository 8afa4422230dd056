package twilio

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxTrailing bounds what is read after the JSON value of a 200 body to see
// whether the connection delivered the whole body.
const maxTrailing = 64 << 10

// decodeBody decodes the 200 body of resp into dst, reading at most
// maxBody bytes after decompression. The limit applies to what the JSON
// decoder sees, so it holds whether Go's transport inflated a gzip body (it
// does when it asked for gzip itself) or the body arrives still encoded
// (when the caller's transport asked for it, or the server sent it unasked).
func (c *Client) decodeBody(resp *http.Response, method, path string, dst any) error {
	if resp.ContentLength > c.maxBody && contentEncoding(resp) == "" {
		return c.tooLarge(method, path)
	}
	r, err := decodedBody(resp, method, path)
	if err != nil {
		return err
	}
	body := &limitedReader{r: r, limit: c.maxBody}
	if w, ok := dst.(wholeBody); ok {
		buf := bodyBuffers.Get().(*bytes.Buffer)
		defer func() {
			if buf.Cap() <= maxPooledBody {
				buf.Reset()
				bodyBuffers.Put(buf)
			}
		}()
		buf.Reset()
		if _, err := buf.ReadFrom(body); err != nil {
			return c.bodyError(body, method, path, err)
		}
		if err := w.decodeWhole(buf.Bytes()); err != nil {
			return c.bodyError(body, method, path, err)
		}
		return nil
	}
	dec := json.NewDecoder(body)
	if err := dec.Decode(dst); err != nil {
		return c.bodyError(body, method, path, err)
	}
	// A body shorter than its Content-Length, or a chunked body cut off,
	// shows only when reading on past the JSON value; and anything but
	// white space there means the body is not one JSON value.
	rest := io.MultiReader(dec.Buffered(), io.LimitReader(body, maxTrailing))
	if _, err := io.Copy(whiteSpace{}, rest); err != nil {
		return c.bodyError(body, method, path, err)
	}
	return nil
}

// bodyError classifies a failure to read a 200 body: over the limit, which
// is final, or cut off or not JSON, which another attempt may not meet (a
// proxy's maintenance page comes with 200 too).
func (c *Client) bodyError(body *limitedReader, method, path string, err error) error {
	if body.exceeded {
		return c.tooLarge(method, path)
	}
	return truncatedError(method, path, err)
}

// whiteSpace is a writer that accepts only JSON white space.
type whiteSpace struct{}

var errTrailingData = errors.New("data after the JSON value")

func (whiteSpace) Write(p []byte) (int, error) {
	for i, b := range p {
		if b != ' ' && b != '\t' && b != '\n' && b != '\r' {
			return i, errTrailingData
		}
	}
	return len(p), nil
}

// tooLarge is the error of a body over the limit. It is final: the same
// page would be as large again.
func (c *Client) tooLarge(method, path string) error {
	return fmt.Errorf("twilio: %s %s: %w: over %d bytes after decompression (raise twilio.max_response_bytes to accept larger pages)",
		method, path, ErrResponseTooLarge, c.maxBody)
}

// contentEncoding is the Content-Encoding of resp's body as it will be
// read: "" when there is none or Go's transport has already decoded it.
func contentEncoding(resp *http.Response) string {
	if resp.Uncompressed {
		return ""
	}
	enc := strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Encoding")))
	if enc == "identity" {
		return ""
	}
	return enc
}

// decodedBody is resp's body with its content encoding undone. Only gzip
// is understood, as that is all Twilio sends; any other encoding is an
// unusable response.
func decodedBody(resp *http.Response, method, path string) (io.Reader, error) {
	switch enc := contentEncoding(resp); enc {
	case "":
		return resp.Body, nil
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(resp.Body)
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			return nil, truncatedError(method, path, fmt.Errorf("gzip header: %w", err))
		case err != nil:
			return nil, fmt.Errorf("twilio: %s %s: %w: gzip body: %w", method, path, ErrBadResponse, err)
		}
		return zr, nil
	default:
		return nil, fmt.Errorf("twilio: %s %s: %w: unsupported Content-Encoding %q", method, path, ErrBadResponse, enc)
	}
}

// limitedReader reads r until more than limit bytes have come, then fails
// and sets exceeded. Unlike io.LimitReader it tells a body that ends at the
// limit from one that goes on.
type limitedReader struct {
	r        io.Reader
	limit    int64
	read     int64
	exceeded bool
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.exceeded {
		return 0, ErrResponseTooLarge
	}
	// One byte beyond the limit is enough to know the body goes on.
	if room := l.limit - l.read + 1; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := l.r.Read(p)
	l.read += int64(n)
	if l.read > l.limit {
		l.exceeded = true
		return n, ErrResponseTooLarge
	}
	return n, err
}

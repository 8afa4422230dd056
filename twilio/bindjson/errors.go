package bindjson

import (
	"errors"
	"fmt"
	"strconv"
)

// Sentinels wrapped by every *Error, so that callers classify a failure
// with errors.Is without reading its text.
var (
	// ErrSyntax means the body is not JSON: a character where none may
	// stand, a bad escape, a control character in a string, nesting deeper
	// than encoding/json allows (10,000 levels).
	ErrSyntax = errors.New("invalid JSON")
	// ErrTruncated means the body ended inside its JSON value, as a body cut
	// off in transit does. Another attempt may get the whole page.
	ErrTruncated = errors.New("unexpected end of JSON input")
	// ErrType means the body is JSON but not a Bindings page: a value of the
	// wrong type where the page has a field (a number for "sid", an object
	// for "message_types"), a timestamp that is not RFC 3339, a page number
	// that is not an int. encoding/json fails on exactly these too.
	ErrType = errors.New("value of the wrong type")
	// ErrTooManyRecords means the "bindings" list holds more records than
	// Decoder.MaxRecords. It is the one failure encoding/json does not
	// have; it keeps a body of tiny records from costing memory out of
	// proportion to its size.
	ErrTooManyRecords = errors.New("too many records")
	// ErrBodyTooLarge means the body is longer than MaxBodyLen.
	ErrBodyTooLarge = errors.New("body too large")
)

// Error is a failure to decode a page. It wraps one of the sentinels above.
type Error struct {
	// Offset is the byte offset in the body where the problem was found.
	Offset int
	// Path names the value being decoded, such as "bindings[3].sid" or
	// "meta.page_size"; it is empty at the top level.
	Path string
	// Kind is ErrSyntax, ErrTruncated, ErrType, ErrTooManyRecords or
	// ErrBodyTooLarge.
	Kind error
	// Msg says what was wrong.
	Msg string
}

func (e *Error) Error() string {
	where := "offset " + strconv.Itoa(e.Offset)
	if e.Path != "" {
		where = e.Path + " at " + where
	}
	return "bindjson: " + where + ": " + e.Msg
}

// Unwrap returns Kind, so that errors.Is(err, ErrTruncated) works.
func (e *Error) Unwrap() error { return e.Kind }

func syntaxErr(off int, format string, args ...any) error {
	return &Error{Offset: off, Kind: ErrSyntax, Msg: fmt.Sprintf(format, args...)}
}

func truncErr(off int) error {
	return &Error{Offset: off, Kind: ErrTruncated, Msg: "unexpected end of JSON input"}
}

func typeErr(off int, format string, args ...any) error {
	return &Error{Offset: off, Kind: ErrType, Msg: fmt.Sprintf(format, args...)}
}

// withPath sets the path of err when a deeper call left it empty. It is
// called only on the error path, so building the path costs nothing on
// good pages.
func withPath(err error, path func() string) error {
	var e *Error
	if errors.As(err, &e) && e.Path == "" {
		e.Path = path()
	}
	return err
}

// quoteChar renders an unexpected byte for an error message the way
// encoding/json does: printable ASCII in quotes, anything else as a code.
func quoteChar(c byte) string {
	switch {
	case c == '\'':
		return `'\''`
	case c == '"':
		return `'"'`
	case c >= 0x20 && c < 0x7f:
		return "'" + string(c) + "'"
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

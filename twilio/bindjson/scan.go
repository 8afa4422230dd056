package bindjson

import (
	"encoding/binary"
	"unicode/utf16"
	"unicode/utf8"
)

// maxNestingDepth is encoding/json's limit on open objects and arrays: a
// value nested deeper is a syntax error there, so it is one here too.
const maxNestingDepth = 10000

// plain marks the bytes that a string may hold as they are and that need no
// further look: printable ASCII but the quote and the backslash.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// opaque marks the bytes a string may hold when only its syntax matters:
// everything but control characters, the quote and the backslash. JSON
// syntax does not look at UTF-8, and encoding/json does not either.
var opaque = func() (t [256]bool) {
	for c := 0x20; c < 0x100; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plainRun returns the index of the first byte at or after i that is not
// plain (or len(data)). It looks at eight bytes at a time: most strings of
// a page are plain ASCII, and this loop is where the decoder spends most
// of its time.
func plainRun(data []byte, i int) int {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	for i+8 <= len(data) {
		w := binary.LittleEndian.Uint64(data[i:])
		q := w ^ (ones * '"')
		b := w ^ (ones * '\\')
		// A byte is flagged when it is zero in q or b (a quote or a
		// backslash), below 0x20, or at least 0x80. The subtraction trick can
		// flag a byte above a flagged one, never one below the first, so the
		// first flagged byte is found exactly by the loop below.
		special := ((q - ones) &^ q) | ((b - ones) &^ b) | (w - ones*0x20) | w
		if special&highs != 0 {
			break
		}
		i += 8
	}
	for i < len(data) && plain[data[i]] {
		i++
	}
	return i
}

// ws returns the index of the first byte at or after i that is not JSON
// white space.
func (d *Decoder) ws(i int) int {
	data := d.data
	for i < len(data) {
		switch data[i] {
		case ' ', '\n', '\r', '\t':
			i++
		default:
			return i
		}
	}
	return i
}

// valueAt returns the index of the next value at or after i, failing at the
// end of the body.
func (d *Decoder) valueAt(i int) (int, error) {
	i = d.ws(i)
	if i >= len(d.data) {
		return i, truncErr(i)
	}
	return i, nil
}

// colon reads the colon after an object key at or after i and returns the
// index of the value that follows it.
func (d *Decoder) colon(i int) (int, error) {
	i = d.ws(i)
	if i >= len(d.data) {
		return i, truncErr(i)
	}
	if d.data[i] != ':' {
		return i, syntaxErr(i, "invalid character %s after object key", quoteChar(d.data[i]))
	}
	return d.valueAt(i + 1)
}

// next reads what follows a member or an element of a container closed by
// end: it returns the index after a comma and more=true, or the index after
// end and more=false.
func (d *Decoder) next(i int, end byte) (int, bool, error) {
	i = d.ws(i)
	if i >= len(d.data) {
		return i, false, truncErr(i)
	}
	switch d.data[i] {
	case ',':
		return i + 1, true, nil
	case end:
		return i + 1, false, nil
	}
	what := "object key:value pair"
	if end == ']' {
		what = "array element"
	}
	return i, false, syntaxErr(i, "invalid character %s after %s", quoteChar(d.data[i]), what)
}

// keyAt reads the quote that opens an object key at or after i, failing on
// anything else.
func (d *Decoder) keyAt(i int) (int, error) {
	i = d.ws(i)
	if i >= len(d.data) {
		return i, truncErr(i)
	}
	if d.data[i] != '"' {
		return i, syntaxErr(i, "invalid character %s looking for beginning of object key string", quoteChar(d.data[i]))
	}
	return i, nil
}

// literal checks that the literal lit ("true", "false" or "null") stands at
// i and returns the index after it.
func (d *Decoder) literal(i int, lit string) (int, error) {
	data := d.data
	for k := 0; k < len(lit); k++ {
		if i+k >= len(data) {
			return i + k, truncErr(i + k)
		}
		if data[i+k] != lit[k] {
			return i + k, syntaxErr(i+k, "invalid character %s in literal %s (expecting %s)", quoteChar(data[i+k]), lit, quoteChar(lit[k]))
		}
	}
	return i + len(lit), nil
}

// null reads the literal null at i.
func (d *Decoder) null(i int) (int, error) { return d.literal(i, "null") }

// number checks the syntax of the number at i and returns the index after
// it, and whether it is an integer (no fraction, no exponent).
func (d *Decoder) number(i int) (int, bool, error) {
	data := d.data
	integer := true
	if i < len(data) && data[i] == '-' {
		i++
	}
	if i >= len(data) {
		return i, false, truncErr(i)
	}
	switch c := data[i]; {
	case c == '0':
		i++
	case c >= '1' && c <= '9':
		i++
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	default:
		return i, false, syntaxErr(i, "invalid character %s in numeric literal", quoteChar(c))
	}
	if i < len(data) && data[i] == '.' {
		integer = false
		i++
		if i >= len(data) {
			return i, false, truncErr(i)
		}
		if !isDigit(data[i]) {
			return i, false, syntaxErr(i, "invalid character %s after decimal point in numeric literal", quoteChar(data[i]))
		}
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		integer = false
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i >= len(data) {
			return i, false, truncErr(i)
		}
		if !isDigit(data[i]) {
			return i, false, syntaxErr(i, "invalid character %s in exponent of numeric literal", quoteChar(data[i]))
		}
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	}
	return i, integer, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// hex4 decodes the four hex digits at data[i:], as the \u escape needs.
// ok is false with a syntax or truncation error when they are not there.
func (d *Decoder) hex4(i int) (rune, error) {
	var r rune
	for k := 0; k < 4; k++ {
		if i+k >= len(d.data) {
			return 0, truncErr(i + k)
		}
		c := d.data[i+k]
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, syntaxErr(i+k, "invalid character %s in \\u hexadecimal character escape", quoteChar(c))
		}
		r = r<<4 | rune(c)
	}
	return r, nil
}

// peekU4 is encoding/json's getu4 for the second half of a surrogate pair:
// the rune of a complete \uXXXX escape at i, or -1.
func (d *Decoder) peekU4(i int) rune {
	data := d.data
	if i+6 > len(data) || data[i] != '\\' || data[i+1] != 'u' {
		return -1
	}
	r, err := d.hex4(i + 2)
	if err != nil {
		return -1
	}
	return r
}

// skipString checks the syntax of the string whose opening quote is at i
// and returns the index after its closing quote.
func (d *Decoder) skipString(i int) (int, error) {
	data := d.data
	i++
	for {
		for i < len(data) && opaque[data[i]] {
			i++
		}
		if i >= len(data) {
			return i, truncErr(i)
		}
		switch c := data[i]; c {
		case '"':
			return i + 1, nil
		case '\\':
			i++
			if i >= len(data) {
				return i, truncErr(i)
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if _, err := d.hex4(i + 1); err != nil {
					return i, err
				}
				i += 5
			default:
				return i, syntaxErr(i, "invalid character %s in string escape code", quoteChar(data[i]))
			}
		default:
			return i, syntaxErr(i, "invalid character %s in string literal", quoteChar(c))
		}
	}
}

// str reads the string whose opening quote is at i and returns the index
// after it and its content, unescaped and with invalid UTF-8 replaced by
// U+FFFD byte by byte, as encoding/json unquotes. A string that needs
// neither is not copied: the span points into the body. Otherwise its
// content is appended to d.scratch and the span says so.
func (d *Decoder) str(i int) (int, span, error) {
	data := d.data
	start := i + 1
	i = start
	for {
		i = plainRun(data, i)
		if i >= len(data) {
			return i, span{}, truncErr(i)
		}
		c := data[i]
		switch {
		case c == '"':
			return i + 1, bodySpan(start, i), nil
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				return d.strSlow(start, i)
			}
			i += size
		case c == '\\':
			return d.strSlow(start, i)
		default:
			return i, span{}, syntaxErr(i, "invalid character %s in string literal", quoteChar(c))
		}
	}
}

// strSlow finishes str from i for a string that starts at start and needs
// unescaping or UTF-8 repair: data[start:i] is copied as it is.
func (d *Decoder) strSlow(start, i int) (int, span, error) {
	off := len(d.scratch)
	var err error
	d.scratch, i, err = d.unquote(d.scratch, start, i)
	if err != nil {
		return i, span{}, err
	}
	return i, scratchSpan(off, len(d.scratch)), nil
}

// unquote appends the content of the string that starts at start (after its
// opening quote) to dst, copying data[start:i] as it is and decoding from i
// on, and returns the index after the closing quote. It follows
// encoding/json's unquoteBytes exactly: a lone or reversed surrogate
// becomes U+FFFD, and so does every byte of invalid UTF-8.
func (d *Decoder) unquote(dst []byte, start, i int) ([]byte, int, error) {
	data := d.data
	dst = append(dst, data[start:i]...)
	for {
		if i >= len(data) {
			return dst, i, truncErr(i)
		}
		c := data[i]
		switch {
		case c == '"':
			return dst, i + 1, nil
		case c == '\\':
			i++
			if i >= len(data) {
				return dst, i, truncErr(i)
			}
			switch e := data[i]; e {
			case '"', '\\', '/':
				dst = append(dst, e)
				i++
			case 'b':
				dst = append(dst, '\b')
				i++
			case 'f':
				dst = append(dst, '\f')
				i++
			case 'n':
				dst = append(dst, '\n')
				i++
			case 'r':
				dst = append(dst, '\r')
				i++
			case 't':
				dst = append(dst, '\t')
				i++
			case 'u':
				r, err := d.hex4(i + 1)
				if err != nil {
					return dst, i, err
				}
				i += 5
				if utf16.IsSurrogate(r) {
					if dec := utf16.DecodeRune(r, d.peekU4(i)); dec != utf8.RuneError {
						dst = utf8.AppendRune(dst, dec)
						i += 6
						continue
					}
					r = utf8.RuneError
				}
				dst = utf8.AppendRune(dst, r)
			default:
				return dst, i, syntaxErr(i, "invalid character %s in string escape code", quoteChar(e))
			}
		case c < 0x20:
			return dst, i, syntaxErr(i, "invalid character %s in string literal", quoteChar(c))
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, size := utf8.DecodeRune(data[i:])
			dst = utf8.AppendRune(dst, r)
			i += size
		}
	}
}

// key reads the object key whose opening quote is at i and returns the
// index after it and the key, unescaped. The key is valid until the next
// call of key.
func (d *Decoder) key(i int) (int, []byte, error) {
	data := d.data
	start := i + 1
	j := plainRun(data, start)
	if j < len(data) && data[j] == '"' {
		return j + 1, data[start:j], nil
	}
	var err error
	d.keyBuf, j, err = d.unquote(d.keyBuf[:0], start, j)
	return j, d.keyBuf, err
}

// skip checks the syntax of the value at i, nested in depth open objects
// and arrays, and returns the index after it. It keeps its own stack, so a
// deeply nested value costs no recursion.
func (d *Decoder) skip(i, depth int) (int, error) {
	data := d.data
	stack := d.stack[:0]
	defer func() { d.stack = stack[:0] }()
	var err error
	for {
		// A value starts at i.
		if i, err = d.valueAt(i); err != nil {
			return i, err
		}
		switch c := data[i]; {
		case c == '{' || c == '[':
			if depth+len(stack)+1 > maxNestingDepth {
				return i, syntaxErr(i, "exceeded max depth")
			}
			i = d.ws(i + 1)
			if i >= len(data) {
				return i, truncErr(i)
			}
			if c == '{' && data[i] == '}' || c == '[' && data[i] == ']' {
				i++
				break
			}
			stack = append(stack, c)
			if c == '{' {
				if i, err = d.keyAt(i); err != nil {
					return i, err
				}
				if i, err = d.skipString(i); err != nil {
					return i, err
				}
				if i, err = d.colon(i); err != nil {
					return i, err
				}
			}
			continue
		case c == '"':
			if i, err = d.skipString(i); err != nil {
				return i, err
			}
		case c == '-' || isDigit(c):
			if i, _, err = d.number(i); err != nil {
				return i, err
			}
		case c == 't':
			if i, err = d.literal(i, "true"); err != nil {
				return i, err
			}
		case c == 'f':
			if i, err = d.literal(i, "false"); err != nil {
				return i, err
			}
		case c == 'n':
			if i, err = d.null(i); err != nil {
				return i, err
			}
		default:
			return i, syntaxErr(i, "invalid character %s looking for beginning of value", quoteChar(c))
		}
		// A value ended before i: close the containers it ends.
		for {
			if len(stack) == 0 {
				return i, nil
			}
			open := stack[len(stack)-1]
			end := byte('}')
			if open == '[' {
				end = ']'
			}
			var more bool
			if i, more, err = d.next(i, end); err != nil {
				return i, err
			}
			if !more {
				stack = stack[:len(stack)-1]
				continue
			}
			if open == '{' {
				if i, err = d.keyAt(i); err != nil {
					return i, err
				}
				if i, err = d.skipString(i); err != nil {
					return i, err
				}
				if i, err = d.colon(i); err != nil {
					return i, err
				}
			}
			break
		}
	}
}

// wrongType is the error for the value at i when the page needs a value of
// the kind want there. A value that is not even JSON is a syntax error.
func (d *Decoder) wrongType(i int, want string) error {
	var found string
	switch c := d.data[i]; {
	case c == '{':
		found = "an object"
	case c == '[':
		found = "an array"
	case c == '"':
		found = "a string"
	case c == 't' || c == 'f':
		found = "a boolean"
	case c == 'n':
		found = "null"
	case c == '-' || isDigit(c):
		found = "a number"
	default:
		return syntaxErr(i, "invalid character %s looking for beginning of value", quoteChar(c))
	}
	return typeErr(i, "want %s, found %s", want, found)
}

// Package safetext makes text that bindsync did not write safe to show:
// text from Twilio's API (error messages, identities), from a panic, or
// holding a configured secret. Escape keeps such text from forging a line
// or a terminal sequence, Truncate bounds its size, and a Redactor replaces
// every configured secret before the text reaches a log, a terminal or a
// file. WrapCore applies the three to everything a zap logger writes.
package safetext

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// IsControl reports whether r is a character Escape rewrites: a C0 control
// (tab and newline included), DEL, a C1 control, the Unicode line and
// paragraph separators (U+2028, U+2029), or a bidirectional-text control
// (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069), which can make
// a terminal show text in an order other than the one it is written in.
func IsControl(r rune) bool {
	return r < 0x20 || isBeyondC0(r)
}

// isBeyondC0 is IsControl without the C0 controls, which a JSON encoder
// escapes itself.
func isBeyondC0(r rune) bool {
	switch {
	case r < 0x7f:
		return false
	case r <= 0x9f: // DEL and the C1 controls
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f,
		r >= 0x2028 && r <= 0x202e, // separators, then embeddings and overrides
		r >= 0x2066 && r <= 0x2069: // isolates
		return true
	}
	return false
}

// Escape returns s with every control character (see IsControl) written as
// a visible Go-style escape: "\n" becomes `\n`, "\x1b[2K" becomes `\x1b[2K`,
// U+202E becomes `\u202e`; a byte that is not valid UTF-8 becomes `\xNN`,
// so that a lone 0x9b cannot act as an 8-bit CSI. The result is valid UTF-8
// and holds no control character, so it cannot start a new line or move a
// terminal's cursor whatever s holds. A backslash is left as it is: the
// escapes are for a person to read, not to be undone.
func Escape(s string) string { return escape(s, IsControl) }

// EscapeForJSON is Escape for text that a JSON encoder writes next: it
// leaves the C0 controls (newline, tab, ESC...), which JSON escapes itself,
// and escapes the rest, which JSON leaves raw (DEL, C1, the separators, the
// bidirectional controls, bytes that are not UTF-8).
func EscapeForJSON(s string) string { return escape(s, isBeyondC0) }

func escape(s string, control func(rune) bool) string {
	// Most text needs nothing: return it without copying.
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || control(r) {
			break
		}
		i += size
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case !control(r):
			b.WriteString(s[i : i+size])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += size
	}
	return b.String()
}

// Truncate returns s when it holds at most max bytes; otherwise the longest
// prefix of at most max bytes that ends on a rune boundary, followed by
// "…(N bytes more)", N being the bytes cut. The result is thus at most max
// bytes of s plus that suffix (under 30 bytes). A max below 0 counts as 0.
//
// Redact before truncating: a secret cut in two is no longer recognised,
// and its first half would be shown.
func Truncate(s string, max int) string {
	if max < 0 {
		max = 0
	}
	if len(s) <= max {
		return s
	}
	cut := max
	// Step back over at most the continuation bytes of one rune; a longer
	// run of them is not UTF-8 anyway and is cut where it is.
	for back := 0; back < utf8.UTFMax-1 && cut > 0 && !utf8.RuneStart(s[cut]); back++ {
		cut--
	}
	if !utf8.RuneStart(s[cut]) {
		cut = max
	}
	return fmt.Sprintf("%s…(%d bytes more)", s[:cut], len(s)-cut)
}

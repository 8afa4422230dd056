package safetext

import (
	"encoding/base64"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEscape(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain text, é ü 日本 🙂", "plain text, é ü 日本 🙂"},
		{"a\nb", `a\nb`},
		{"\r\n snapshot published", `\r\n snapshot published`},
		{"\x1b[2K\x1b[1A", `\x1b[2K\x1b[1A`},
		{"tab\there", `tab\there`},
		{"nul\x00del\x7f", `nul\x00del\x7f`},
		{"c1 \u009b31m nel \u0085", `c1 \u009b31m nel \u0085`},
		{"sep \u2028 \u2029", `sep \u2028 \u2029`},
		{"bidi \u202e\u2066\u2069\u200f\u061c", `bidi \u202e\u2066\u2069\u200f\u061c`},
		{"raw csi \x9b2J", `raw csi \x9b2J`},
		{"cut \xe2\x82", `cut \xe2\x82`},
		{`back\slash`, `back\slash`},
	}
	for _, tt := range tests {
		if got := Escape(tt.in); got != tt.want {
			t.Errorf("Escape(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestEscapeForJSONLeavesC0(t *testing.T) {
	in := "line\nnext\x1b[2K \u009b \u202e \x7f \xff"
	want := "line\nnext\x1b[2K " + `\u009b \u202e \x7f \xff`
	if got := EscapeForJSON(in); got != want {
		t.Errorf("EscapeForJSON(%q) = %q, want %q", in, got, want)
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"0123456789abc", 10, "0123456789…(3 bytes more)"},
		{"ab日本", 4, "ab…(6 bytes more)"}, // 日 is 3 bytes: not cut in its middle
		{"ab日本", 5, "ab日…(3 bytes more)"},
		{"🙂🙂", 3, "…(8 bytes more)"},
		{"abc", 0, "…(3 bytes more)"},
		{"abc", -1, "…(3 bytes more)"},
		{"ab\x80\x80\x80\x80\x80", 5, "ab\x80\x80\x80…(2 bytes more)"},
	}
	for _, tt := range tests {
		if got := Truncate(tt.in, tt.max); got != tt.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}

func TestRedact(t *testing.T) {
	const user, token = "AC0123456789abcdef0123456789abcdef", "tok+en/with=chars"
	r := NewRedactor(token, "", "short")
	r.AddBasicAuth(user, token)
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + token))
	tests := []struct{ in, want string }{
		{"nothing secret", "nothing secret"},
		{"the token " + token + " twice " + token, "the token [REDACTED] twice [REDACTED]"},
		{"Authorization: Basic " + basic, "Authorization: Basic [REDACTED]"},
		{"unpadded " + strings.TrimRight(basic, "="), "unpadded [REDACTED]"},
		{"in a query ?t=tok%2Ben%2Fwith%3Dchars&x", "in a query ?t=[REDACTED]&x"},
		{"adjacent " + token + token, "adjacent [REDACTED]"},
		{"a short one is kept: short", "a short one is kept: short"},
	}
	for _, tt := range tests {
		if got := r.Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	var none *Redactor
	if got := none.Redact(token); got != token {
		t.Errorf("a nil Redactor changed the text: %q", got)
	}
}

// TestRedactAcrossTheMarker: a secret that the replacement text completes
// is still never shown.
func TestRedactAcrossTheMarker(t *testing.T) {
	r := NewRedactor("secret-one", "ED]tail")
	got := r.Redact("x secret-onetail y")
	if strings.Contains(got, "ED]tail") || strings.Contains(got, "secret-one") {
		t.Errorf("Redact = %q still holds a secret", got)
	}
}

func FuzzEscape(f *testing.F) {
	for _, s := range []string{"", "a\nb", "\x1b[2K", "\u009b\u202e\u2028", "\xff\xfe", "日本\t"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for name, out := range map[string]string{"Escape": Escape(s), "EscapeForJSON": EscapeForJSON(s)} {
			if !utf8.ValidString(out) {
				t.Fatalf("%s(%q) = %q is not UTF-8", name, s, out)
			}
			for _, r := range out {
				if isBeyondC0(r) || (name == "Escape" && IsControl(r)) {
					t.Fatalf("%s(%q) = %q holds control %U", name, s, out, r)
				}
			}
		}
		if tr := Truncate(s, 7); len(s) > 7 && !strings.HasPrefix(s, strings.SplitN(tr, "…(", 2)[0]) {
			t.Fatalf("Truncate(%q, 7) = %q is not a prefix", s, tr)
		}
	})
}

func FuzzRedact(f *testing.F) {
	f.Add("the token is s3cr3t-token", "s3cr3t-token", "AC01", "other-secret")
	f.Add("[REDACTED]tail", "ED]tail", "x", "secret-one")
	f.Add("QUMwMTpzM2NyM3QtdG9rZW4=", "s3cr3t-token", "AC01", "")
	f.Fuzz(func(t *testing.T, text, secret, user, other string) {
		r := NewRedactor(secret, other)
		r.AddBasicAuth(user, secret)
		out := r.Redact(text)
		for _, p := range r.patterns {
			if strings.Contains(out, p) {
				t.Fatalf("Redact(%q) = %q still holds %q", text, out, p)
			}
		}
		for _, s := range []string{secret, other} {
			if len(s) >= MinSecretLen && !strings.Contains(Redacted, s) && strings.Contains(out, s) {
				t.Fatalf("Redact(%q) = %q still holds the secret %q", text, out, s)
			}
		}
		if !strings.Contains(text, Redacted) && !strings.Contains(out, Redacted) && out != text {
			t.Fatalf("Redact(%q) = %q changed text holding no secret", text, out)
		}
	})
}

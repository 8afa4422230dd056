package safetext

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"sort"
	"strings"
)

// Redacted is what a Redactor puts in place of a secret.
const Redacted = "[REDACTED]"

// MinSecretLen is the length, in bytes, below which a Redactor ignores a
// secret. Replacing every occurrence of a 3-byte "secret" would mangle
// ordinary text (and show which letters the secret holds); real Twilio
// secrets are 32 characters. `bindsync validate` warns about a configured
// secret this short, since it cannot be kept out of the logs.
const MinSecretLen = 6

// maxPasses bounds the passes of Redact. A second pass is needed only when
// a secret can be formed across the replacement text, which takes a secret
// holding "[" or "]"; if the passes run out, the whole text is replaced.
const maxPasses = 4

// A Redactor replaces configured secrets in text: each secret as it is, as
// it appears URL-encoded or inside a JSON string, and, for a username and
// password pair, its HTTP basic-auth encoding. The zero value and nil
// redact nothing. A Redactor is safe for concurrent use once built: add
// every secret before sharing it.
type Redactor struct {
	// patterns are the strings to replace, longest first.
	patterns []string
}

// NewRedactor returns a Redactor of the given secrets. Empty secrets,
// secrets shorter than MinSecretLen and secrets that are part of the text
// Redacted are ignored (the last could never be replaced for good).
func NewRedactor(secrets ...string) *Redactor {
	r := &Redactor{}
	r.Add(secrets...)
	return r
}

// Add adds secrets, with the same rules as NewRedactor.
func (r *Redactor) Add(secrets ...string) {
	for _, s := range secrets {
		if len(s) < MinSecretLen {
			continue
		}
		r.addPattern(s)
		r.addPattern(url.QueryEscape(s))
		r.addPattern(url.PathEscape(s))
		if q, err := json.Marshal(s); err == nil {
			r.addPattern(string(q[1 : len(q)-1]))
		}
	}
	sort.SliceStable(r.patterns, func(i, j int) bool { return len(r.patterns[i]) > len(r.patterns[j]) })
}

// AddBasicAuth adds the HTTP basic-auth encodings of user and pass (the
// base64 of "user:pass", padded or not, standard or URL alphabet), which
// carry the password as surely as the password itself. It adds nothing
// when pass is empty. It does not add pass alone: give it to Add too.
func (r *Redactor) AddBasicAuth(user, pass string) {
	if pass == "" {
		return
	}
	pair := []byte(user + ":" + pass)
	r.Add(
		base64.StdEncoding.EncodeToString(pair),
		base64.RawStdEncoding.EncodeToString(pair),
		base64.URLEncoding.EncodeToString(pair),
		base64.RawURLEncoding.EncodeToString(pair),
	)
}

func (r *Redactor) addPattern(p string) {
	if len(p) < MinSecretLen || strings.Contains(Redacted, p) {
		return
	}
	for _, have := range r.patterns {
		if have == p {
			return
		}
	}
	r.patterns = append(r.patterns, p)
}

// Redact returns s with every occurrence of a secret replaced by Redacted.
// Overlapping or adjacent occurrences become one Redacted. The result
// holds no secret, whatever s holds.
func (r *Redactor) Redact(s string) string {
	if r == nil || len(r.patterns) == 0 {
		return s
	}
	for pass := 0; pass < maxPasses; pass++ {
		out, changed := r.replace(s)
		if !changed {
			return s
		}
		s = out
	}
	if _, changed := r.replace(s); changed {
		return Redacted
	}
	return s
}

// replace replaces, in one pass, every byte range covered by an occurrence
// of a pattern in s, merging ranges that overlap or touch.
func (r *Redactor) replace(s string) (string, bool) {
	type span struct{ start, end int }
	var spans []span
	for _, p := range r.patterns {
		for from := 0; from <= len(s)-len(p); {
			i := strings.Index(s[from:], p)
			if i < 0 {
				break
			}
			spans = append(spans, span{from + i, from + i + len(p)})
			from += i + 1
		}
	}
	if len(spans) == 0 {
		return s, false
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].start < spans[j].start })
	var b strings.Builder
	b.Grow(len(s))
	last := 0
	for i := 0; i < len(spans); {
		start, end := spans[i].start, spans[i].end
		for i++; i < len(spans) && spans[i].start <= end; i++ {
			end = max(end, spans[i].end)
		}
		b.WriteString(s[last:start])
		b.WriteString(Redacted)
		last = end
	}
	b.WriteString(s[last:])
	return b.String(), true
}

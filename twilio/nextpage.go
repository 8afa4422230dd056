package twilio

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// twilioHost is the host next_page_url names on the real API. Requests never
// go there unless it is also the configured BaseURL: a page reference is
// always sent to the client's own host.
const twilioHost = "chat.twilio.com"

// resource is a list resource as its unescaped path segments, e.g.
// {"v2", "Services", "IS…", "Users", "a/b", "Bindings"}. Comparing segments,
// not strings, makes "a%2Fb" (one segment) differ from "a/b" (two).
type resource []string

func bindingsResource(serviceSID, user string) resource {
	return resource{"v2", "Services", serviceSID, "Users", user, "Bindings"}
}

func usersResource(serviceSID string) resource {
	return resource{"v2", "Services", serviceSID, "Users"}
}

// escapedPath is the request path of r, each segment escaped on its own so
// that "/", "?", "%", "#" and spaces stay inside their segment.
func (r resource) escapedPath() string {
	var b strings.Builder
	for _, seg := range r {
		b.WriteString("/")
		b.WriteString(escapeSegment(seg))
	}
	return b.String()
}

// escapeSegment escapes s as one path segment. "." and ".." are escaped too,
// because servers and proxies may resolve them as relative path steps.
func escapeSegment(s string) string {
	if s == "." || s == ".." {
		return strings.ReplaceAll(s, ".", "%2E")
	}
	return url.PathEscape(s)
}

// matches reports whether escapedPath names r. Twilio may name the user of
// a bindings list by its SID in next_page_url even when the request named
// it by identity, so a user SID is accepted in that segment.
func (r resource) matches(escapedPath string) bool {
	segs := strings.Split(escapedPath, "/")
	if len(segs) != len(r)+1 || segs[0] != "" {
		return false
	}
	for i, seg := range segs[1:] {
		v, err := url.PathUnescape(seg)
		if err != nil {
			return false
		}
		if v != r[i] && !(len(r) == 6 && i == 4 && userSIDPattern.MatchString(v)) {
			return false
		}
	}
	return true
}

var userSIDPattern = regexp.MustCompile(`^US[0-9a-fA-F]{32}$`)

// firstPage is the page reference of the first page of r with the given
// query parameters.
func firstPage(r resource, query url.Values) string {
	if len(query) == 0 {
		return r.escapedPath()
	}
	return r.escapedPath() + "?" + query.Encode()
}

// nextPage turns a next_page_url of a page of r into the Next reference of
// the following page: its escaped path and raw query, cut verbatim from raw
// so that the page token keeps every byte. base is the client's BaseURL.
// A URL on another host, or naming another list, is refused with
// ErrForeignNextPage.
func nextPage(raw string, base *url.URL, r resource) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("twilio: next_page_url is not a URL: %w", ErrBadResponse)
	}
	if !trustedHost(u, base) {
		return "", fmt.Errorf("twilio: next_page_url %q: %w", withoutUserinfo(u), ErrForeignNextPage)
	}
	ref := u.RequestURI()
	if !strings.HasSuffix(raw, ref) {
		return "", fmt.Errorf("twilio: next_page_url %q cannot be followed byte for byte: %w", raw, ErrBadResponse)
	}
	if err := checkPage(ref, r); err != nil {
		return "", fmt.Errorf("twilio: next_page_url %q: %w", raw, err)
	}
	return ref, nil
}

// trustedHost reports whether u may name a next page: it must be on the
// real Twilio host over https, or on the configured host, and carry no
// userinfo.
func trustedHost(u, base *url.URL) bool {
	if u.User != nil {
		return false
	}
	return (u.Scheme == "https" && strings.EqualFold(u.Host, twilioHost)) ||
		(u.Scheme == base.Scheme && strings.EqualFold(u.Host, base.Host))
}

// checkPage verifies that ref, a page reference from nextPage or handed back
// by a caller (possibly from a checkpoint), names a page of r and reaches
// the server exactly as written: printable ASCII, an absolute path, and a
// form Go's HTTP client sends without re-escaping.
func checkPage(ref string, r resource) error {
	if !strings.HasPrefix(ref, "/") || !printableASCII(ref) {
		return fmt.Errorf("page reference %q is not a path and query: %w", ref, ErrForeignNextPage)
	}
	u, err := url.Parse("https://" + twilioHost + ref)
	if err != nil || u.Host != twilioHost || u.RequestURI() != ref {
		return fmt.Errorf("page reference %q cannot be sent byte for byte: %w", ref, ErrForeignNextPage)
	}
	if !r.matches(u.EscapedPath()) {
		return fmt.Errorf("page reference %q is not a page of %s: %w", ref, r.escapedPath(), ErrForeignNextPage)
	}
	return nil
}

// printableASCII reports whether s holds only the bytes allowed unescaped in
// a request line, which also keeps it safe in JSON and logs.
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// withoutUserinfo renders u for messages without any userinfo it holds.
func withoutUserinfo(u *url.URL) string {
	shown := *u
	shown.User = nil
	return shown.String()
}

package twilio

import (
	"fmt"
	"net/url"
	"strings"
)

// twilioHost is the host next_page_url names on the real API. Requests never
// go there unless it is also the configured BaseURL: a page reference is
// always sent to the client's own host.
const twilioHost = "chat.twilio.com"

// resource is a list resource as its unescaped path segments, e.g.
// {"v2", "Services", "IS…", "Users", "a/b", "Bindings"}. Comparing segments,
// not strings, makes "a%2Fb" (one segment) differ from "a/b" (two).
type resource struct {
	segs []string
	// userSID, when set, is accepted in place of the user segment of a
	// bindings list: the SID of the user the request named by identity,
	// which Twilio may use in next_page_url instead.
	userSID string
}

// userSegment is the index of the user in the segments of a bindings list.
const userSegment = 4

func bindingsResource(serviceSID, user string) resource {
	return resource{segs: []string{"v2", "Services", serviceSID, "Users", user, "Bindings"}}
}

// serviceBindingsResource is the service-wide Bindings list.
func serviceBindingsResource(serviceSID string) resource {
	return resource{segs: []string{"v2", "Services", serviceSID, "Bindings"}}
}

func usersResource(serviceSID string) resource {
	return resource{segs: []string{"v2", "Services", serviceSID, "Users"}}
}

// userResource is the path of one User, by SID or identity.
func userResource(serviceSID, user string) resource {
	return resource{segs: []string{"v2", "Services", serviceSID, "Users", user}}
}

// isBindings reports whether r is a user's bindings list.
func (r resource) isBindings() bool {
	return len(r.segs) == 6 && r.segs[5] == "Bindings"
}

// escapedPath is the request path of r, each segment escaped on its own so
// that "/", "?", "%", "#" and spaces stay inside their segment.
func (r resource) escapedPath() string {
	var b strings.Builder
	for _, seg := range r.segs {
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

// matches reports whether escapedPath names r.
func (r resource) matches(escapedPath string) bool {
	return r.mismatch(escapedPath) == ""
}

// mismatch says how escapedPath differs from the path of r, or returns ""
// when it names r. Segments are compared byte for byte after unescaping; the
// user segment of a bindings list may also hold r.userSID, and nothing else:
// a next page that names another user would put that user's rows in place
// of the requested one's.
func (r resource) mismatch(escapedPath string) string {
	segs := strings.Split(escapedPath, "/")
	if len(segs) != len(r.segs)+1 || segs[0] != "" {
		return "is not a page of " + r.escapedPath()
	}
	for i, seg := range segs[1:] {
		v, err := url.PathUnescape(seg)
		if err != nil {
			return "is not a page of " + r.escapedPath()
		}
		if v == r.segs[i] {
			continue
		}
		switch {
		case i == 2 && r.segs[1] == "Services":
			return fmt.Sprintf("names service %q, not %q", v, r.segs[i])
		case i == userSegment && r.isBindings() && r.userSID != "" && v == r.userSID:
			continue
		case i == userSegment && r.isBindings() && r.userSID != "":
			return fmt.Sprintf("names user %q, not %q (%s)", v, r.segs[i], r.userSID)
		case i == userSegment && r.isBindings():
			return fmt.Sprintf("names user %q, not %q", v, r.segs[i])
		}
		return "is not a page of " + r.escapedPath()
	}
	return ""
}

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
	if why := r.mismatch(u.EscapedPath()); why != "" {
		return fmt.Errorf("page reference %q %s: %w", ref, why, ErrForeignNextPage)
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

package twilio

import (
	"cmp"
	"encoding/base64"
	"net/url"
	"slices"
	"strings"
)

// redacted replaces a credential in text.
const redacted = "[REDACTED]"

// secretForms lists the ways the credentials may show up in text a server
// sends back: the password as is and escaped for a URL, and the basic-auth
// encoding of username:password (padded or not, standard or URL-safe
// base64). The username alone is an account or API key SID, not a secret.
// Longer forms come first, so that a form containing another is replaced
// whole.
func secretForms(username, password string) []string {
	if password == "" {
		return nil
	}
	basic := []byte(username + ":" + password)
	forms := []string{
		password,
		url.QueryEscape(password),
		url.PathEscape(password),
		base64.StdEncoding.EncodeToString(basic),
		base64.RawStdEncoding.EncodeToString(basic),
		base64.URLEncoding.EncodeToString(basic),
		base64.RawURLEncoding.EncodeToString(basic),
	}
	slices.SortFunc(forms, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	return slices.Compact(forms)
}

// Redact returns s with every occurrence of the client's password, and of
// the basic-auth encoding of its credentials, replaced by "[REDACTED]".
// The client applies it to every error it returns and to the URLs of a
// page's Meta; callers use it on any other text from Twilio before it
// reaches logs, output, metrics or storage.
func (c *Client) Redact(s string) string {
	return redact(s, c.secrets)
}

func redact(s string, secrets []string) string {
	if !holdsAny(s, secrets) {
		return s
	}
	for _, secret := range secrets {
		s = strings.ReplaceAll(s, secret, redacted)
	}
	// A password that is part of the marker itself, or text built so that
	// a replacement completes another occurrence, is removed outright, until
	// none is left: each pass makes s shorter.
	for holdsAny(s, secrets) {
		for _, secret := range secrets {
			s = strings.ReplaceAll(s, secret, "")
		}
	}
	return s
}

func holdsAny(s string, secrets []string) bool {
	for _, secret := range secrets {
		if strings.Contains(s, secret) {
			return true
		}
	}
	return false
}

// holdsSecret reports whether s shows a credential.
func (c *Client) holdsSecret(s string) bool {
	return holdsAny(s, c.secrets)
}

// redactMeta redacts the URLs of a page's paging block, which callers may
// log.
func (c *Client) redactMeta(m *Meta) {
	m.Key = c.Redact(m.Key)
	m.URL = c.Redact(m.URL)
	m.FirstPageURL = c.Redact(m.FirstPageURL)
	for _, p := range []*string{m.PreviousPageURL, m.NextPageURL} {
		if p != nil {
			*p = c.Redact(*p)
		}
	}
}

// redactedError is an error whose message had a credential replaced. It
// unwraps to the original, so errors.Is and errors.As still classify it.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactError returns err, or a redactedError when its message shows a
// credential.
func (c *Client) redactError(err error) error {
	msg := err.Error()
	if !c.holdsSecret(msg) {
		return err
	}
	return &redactedError{msg: c.Redact(msg), err: err}
}

package main

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/bindsync/bindsync/config"
	"github.com/bindsync/bindsync/internal/safetext"
)

// Everything bindsync prints or logs may hold text from Twilio (error
// messages, identities) or, echoed back by a server, a credential. It goes
// out redacted (every configured secret replaced) and escaped (no control
// character, so no forged line or terminal sequence), and long texts cut.

// Bounds of the text printed for one failed user and for one error.
const (
	reasonBytes = 512
	errorBytes  = 4096
)

// newRedactor returns the Redactor of the secrets in cfg: the auth token or
// API key secret, their basic-auth encodings, a password in the
// Pushgateway URL, and the privacy policy's hash key. A nil cfg gives a
// Redactor of nothing.
func newRedactor(cfg *config.Config) *safetext.Redactor {
	r := safetext.NewRedactor()
	if cfg == nil {
		return r
	}
	t := cfg.Twilio
	r.Add(t.AuthToken, t.APIKeySecret)
	r.AddBasicAuth(t.AccountSID, t.AuthToken)
	r.AddBasicAuth(t.APIKeySID, t.APIKeySecret)
	r.Add(cfg.Export.Columns.HashKey)
	if u, err := url.Parse(cfg.Metrics.Pushgateway); err == nil && u.User != nil {
		if pass, ok := u.User.Password(); ok {
			r.Add(pass)
			r.AddBasicAuth(u.User.Username(), pass)
		}
	}
	return r
}

// clean makes one piece of text safe to print on a line of its own.
func clean(red *safetext.Redactor, s string) string {
	return safetext.Escape(red.Redact(s))
}

// cleanReason is clean for the reason a user failed, cut at reasonBytes
// (after redaction, so that no secret is cut in two and half shown).
func cleanReason(red *safetext.Redactor, s string) string {
	return safetext.Escape(safetext.Truncate(red.Redact(dedupePrefixes(s)), reasonBytes))
}

// hintError is an error followed, on a line of its own, by advice that
// bindsync wrote. The advice is the only text of an error allowed a line
// of its own.
type hintError struct {
	err  error
	hint string
}

func (e hintError) Error() string { return e.err.Error() + "\n" + e.hint }
func (e hintError) Unwrap() error { return e.err }

// withHint adds hint to err.
func withHint(err error, hint string) error { return hintError{err: err, hint: hint} }

// shownError is an error whose text is ready for a terminal: redacted with
// the configuration's secrets, escaped, cut. Commands return it once they
// know the configuration, so that main, which prints the error, needs no
// secrets.
type shownError struct {
	err  error
	text string
}

func (e shownError) Error() string { return e.text }
func (e shownError) Unwrap() error { return e.err }

// presentable returns err ready for printing with the secrets of red; nil
// stays nil.
func presentable(err error, red *safetext.Redactor) error {
	if err == nil {
		return nil
	}
	var shown shownError
	if errors.As(err, &shown) && shown.text == err.Error() {
		return err
	}
	return shownError{err: err, text: errorText(err, red)}
}

// errorText renders err for a terminal. An error is one line, escaped and
// cut at errorBytes; only the lines bindsync composes itself keep their
// own lines: the problems of a configuration, and a hint after an error.
func errorText(err error, red *safetext.Redactor) string {
	var shown shownError
	if errors.As(err, &shown) && shown.text == err.Error() {
		return shown.text
	}
	var ce *config.Error
	if errors.As(err, &ce) && ce.Error() == err.Error() {
		// Each problem is cleaned on its own: the line breaks between
		// them are bindsync's, any within them are not.
		lines := ce.Lines()
		for i, l := range lines {
			lines[i] = clean(red, l)
		}
		if len(lines) == 1 {
			return "invalid configuration: " + lines[0]
		}
		return fmt.Sprintf("invalid configuration (%d problems):\n  %s", len(lines), strings.Join(lines, "\n  "))
	}
	var h hintError
	if errors.As(err, &h) && h.Error() == err.Error() {
		return oneError(h.err.Error(), red) + "\n" + clean(red, h.hint)
	}
	return oneError(err.Error(), red)
}

func oneError(s string, red *safetext.Redactor) string {
	return safetext.Escape(safetext.Truncate(red.Redact(dedupePrefixes(s)), errorBytes))
}

// dedupePrefixes collapses a context repeated back to back in an error's
// text ("list users of service IS1: list users of service IS1: credentials
// rejected"), which happens when a caller and the function it calls both
// wrap an error with the same words. The repetition says nothing and hides
// the cause further right. Runs of one or more ": "-separated segments
// that directly repeat are kept once.
func dedupePrefixes(s string) string {
	const sep = ": "
	segs := strings.Split(s, sep)
	if len(segs) < 2 {
		return s
	}
	changed := false
	for k := 1; 2*k <= len(segs); k++ {
		for i := 0; i+2*k <= len(segs); {
			if slices.Equal(segs[i:i+k], segs[i+k:i+2*k]) {
				segs = slices.Delete(segs, i+k, i+2*k)
				changed = true
				continue
			}
			i++
		}
	}
	if !changed {
		return s
	}
	return strings.Join(segs, sep)
}

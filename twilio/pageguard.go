package twilio

import (
	"fmt"
	"hash/maphash"
	"net/url"
	"strconv"
	"strings"
)

// DefaultMaxEmptyPages is how many empty pages in a row, each with a next
// page, a PageGuard allows by default. Twilio may serve an empty page that
// is not the last one, but not page after page of them.
const DefaultMaxEmptyPages = 20

// PageGuard stops a walk through one list that would never end: a server
// that sends a next page seen before, goes backwards, or serves empty pages
// with a next page forever. Use one PageGuard per walk of a list (one
// user's bindings, or one service's users) and call Check after every page.
// A PageGuard is not safe for concurrent use; a walk is sequential anyway.
//
// It keeps a 64-bit hash per page followed, not the references themselves,
// so a walk of a million pages costs a few megabytes at most.
type PageGuard struct {
	list     string
	maxEmpty int
	seed     maphash.Seed
	seen     map[uint64]struct{}
	page     int // Page number of the page last followed; the first page is 0
	empty    int // empty pages with a next page, in a row
}

// NewPageGuard returns a guard for one walk of the list described by list,
// which its errors name (e.g. `bindings of user "alice" in service IS…`).
// maxEmptyPages is how many empty pages with a next page may come in a
// row; 0 or less means DefaultMaxEmptyPages (20).
func NewPageGuard(list string, maxEmptyPages int) *PageGuard {
	if maxEmptyPages <= 0 {
		maxEmptyPages = DefaultMaxEmptyPages
	}
	g := &PageGuard{list: list, maxEmpty: maxEmptyPages, seed: maphash.MakeSeed(), seen: make(map[uint64]struct{})}
	// The walk starts at the first page, which a next page must not name
	// again.
	g.seen[g.key(pageRef{})] = struct{}{}
	return g
}

// Resume tells g that the walk continues from ref, a Next saved by an
// earlier walk of the same list (from a checkpoint), so that a next page
// naming ref again, or a page before it, counts as a loop. Calling it is
// optional; without it the guard only knows the pages of this walk.
func (g *PageGuard) Resume(ref string) {
	r, err := parsePageRef(ref)
	if err != nil {
		return // Check reports a malformed reference when one is followed
	}
	g.seen[g.key(r)] = struct{}{}
	if r.hasPage {
		g.page = r.page
	}
}

// Check is called after each page of the walk with that page's Next and
// its number of records, before Next is followed. It returns nil when the
// walk may go on (or Next is "", the end), and otherwise an error wrapping
// ErrPagingLoop that names the list: Next names a page token already
// followed in this walk, or the first page again; its Page number is not
// above the current page's; or this page is empty and more than
// maxEmptyPages empty pages with a next page have now come in a row. A
// Page parameter that is not one non-negative integer wraps ErrBadResponse.
func (g *PageGuard) Check(next string, records int) error {
	if next == "" {
		return nil
	}
	r, err := parsePageRef(next)
	if err != nil {
		return fmt.Errorf("twilio: paging %s: next page %q: %w: %w", g.list, capText(next, maxErrorText), ErrBadResponse, err)
	}
	if records == 0 {
		g.empty++
	} else {
		g.empty = 0
	}
	var why string
	k := g.key(r)
	_, seen := g.seen[k]
	switch {
	case g.empty > g.maxEmpty:
		why = fmt.Sprintf("%d empty pages in a row, each with a next page (at most %d allowed)", g.empty, g.maxEmpty)
	case r.hasPage && r.page <= g.page:
		why = fmt.Sprintf("next page is page %d, not after page %d", r.page, g.page)
	case seen && r.token == "":
		why = "next page is the first page again"
	case seen:
		why = "next page token was already followed"
	}
	if why != "" {
		return fmt.Errorf("twilio: %w in %s: %s (next page %q)", ErrPagingLoop, g.list, why, capText(next, maxErrorText))
	}
	g.seen[k] = struct{}{}
	if r.hasPage {
		g.page = r.page
	}
	return nil
}

// key hashes what identifies a page: its token, or without one its Page
// number (a reference with neither is the first page).
func (g *PageGuard) key(r pageRef) uint64 {
	if r.token != "" {
		return maphash.String(g.seed, "token\x00"+r.token)
	}
	return maphash.String(g.seed, "page\x00"+strconv.Itoa(max(r.page, 0)))
}

// pageRef is the paging part of a page reference.
type pageRef struct {
	token   string // the PageToken values, unescaped and joined by NUL
	page    int
	hasPage bool
}

// parsePageRef reads PageToken and Page from the query of ref. Values are
// compared unescaped, so that one token escaped two ways is one token; a
// value that does not unescape is kept as sent.
func parsePageRef(ref string) (pageRef, error) {
	_, rawQuery, _ := strings.Cut(ref, "?")
	var (
		r      pageRef
		tokens []string
		pages  []string
	)
	for pair := range strings.SplitSeq(rawQuery, "&") {
		k, v, _ := strings.Cut(pair, "=")
		switch unescapeQuery(k) {
		case "PageToken":
			tokens = append(tokens, unescapeQuery(v))
		case "Page":
			pages = append(pages, unescapeQuery(v))
		}
	}
	r.token = strings.Join(tokens, "\x00")
	switch len(pages) {
	case 0:
	case 1:
		n, err := strconv.Atoi(pages[0])
		if err != nil || n < 0 {
			return r, fmt.Errorf("Page %q is not a page number", pages[0])
		}
		r.page, r.hasPage = n, true
	default:
		return r, fmt.Errorf("Page is given %d times", len(pages))
	}
	return r, nil
}

func unescapeQuery(s string) string {
	if v, err := url.QueryUnescape(s); err == nil {
		return v
	}
	return s
}

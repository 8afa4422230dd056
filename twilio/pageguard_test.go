package twilio

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// ref is a bindings page reference with the given Page and PageToken; an
// empty value leaves the parameter out.
func ref(page, token string) string {
	q := []string{"PageSize=50"}
	if page != "" {
		q = append(q, "Page="+page)
	}
	if token != "" {
		q = append(q, "PageToken="+token)
	}
	return bindingsPath("alice") + "?" + strings.Join(q, "&")
}

type guardStep struct {
	next    string
	records int
}

func TestPageGuard(t *testing.T) {
	const list = `bindings of user "alice"`
	tests := []struct {
		name     string
		maxEmpty int
		resume   string
		steps    []guardStep
		failAt   int    // index of the step that fails; -1 for none
		is       error  // what the failure wraps
		want     string // a part of its message
	}{
		{"a normal walk", 0, "", []guardStep{{ref("1", "T1"), 50}, {ref("2", "T2"), 50}, {ref("3", "T3"), 7}, {"", 0}}, -1, nil, ""},
		{"the same page again", 0, "", []guardStep{{ref("1", "T1"), 50}, {ref("1", "T1"), 50}}, 1, ErrPagingLoop, "page 1, not after page 1"},
		{"a token again with a higher page", 0, "", []guardStep{{ref("1", "T1"), 50}, {ref("2", "T2"), 50}, {ref("3", "T1"), 50}}, 2, ErrPagingLoop, "token was already followed"},
		{"a token escaped another way", 0, "", []guardStep{{ref("", "a%2Bb"), 50}, {ref("", "a+b"), 50}, {ref("", "a%2bb"), 50}}, 2, ErrPagingLoop, "token was already followed"},
		{"backwards", 0, "", []guardStep{{ref("1", "T1"), 50}, {ref("2", "T2"), 50}, {ref("1", "B1"), 50}}, 2, ErrPagingLoop, "page 1, not after page 2"},
		{"page 0 after the first page", 0, "", []guardStep{{ref("0", "T0"), 50}}, 0, ErrPagingLoop, "page 0, not after page 0"},
		{"the first page again", 0, "", []guardStep{{ref("1", "T1"), 50}, {ref("", ""), 50}}, 1, ErrPagingLoop, "first page again"},
		{"no page numbers, new tokens", 0, "", []guardStep{{ref("", "T1"), 50}, {ref("", "T2"), 50}, {ref("", "T3"), 50}}, -1, nil, ""},
		{"page numbers without tokens", 0, "", []guardStep{{ref("1", ""), 50}, {ref("2", ""), 50}, {ref("2", ""), 50}}, 2, ErrPagingLoop, "page 2, not after page 2"},
		{"skipping pages is fine", 0, "", []guardStep{{ref("1", "T1"), 50}, {ref("7", "T7"), 50}}, -1, nil, ""},
		{"three empty pages allowed", 3, "", []guardStep{{ref("1", "T1"), 0}, {ref("2", "T2"), 0}, {ref("3", "T3"), 0}, {"", 0}}, -1, nil, ""},
		{"four empty pages with a next page", 3, "", []guardStep{{ref("1", "T1"), 0}, {ref("2", "T2"), 0}, {ref("3", "T3"), 0}, {ref("4", "T4"), 0}}, 3, ErrPagingLoop, "4 empty pages in a row, each with a next page (at most 3 allowed)"},
		{"empty pages not in a row", 2, "", []guardStep{{ref("1", "T1"), 0}, {ref("2", "T2"), 0}, {ref("3", "T3"), 1}, {ref("4", "T4"), 0}, {ref("5", "T5"), 0}}, -1, nil, ""},
		{"resumed, then backwards", 0, ref("5", "T5"), []guardStep{{ref("4", "T4"), 50}}, 0, ErrPagingLoop, "page 4, not after page 5"},
		{"resumed, then the same token", 0, ref("5", "T5"), []guardStep{{ref("", "T5"), 50}}, 0, ErrPagingLoop, "already followed"},
		{"resumed, then on", 0, ref("5", "T5"), []guardStep{{ref("6", "T6"), 50}}, -1, nil, ""},
		{"page not a number", 0, "", []guardStep{{ref("x", "T1"), 50}}, 0, ErrBadResponse, `Page "x" is not a page number`},
		{"negative page", 0, "", []guardStep{{ref("-1", "T1"), 50}}, 0, ErrBadResponse, "not a page number"},
		{"page twice", 0, "", []guardStep{{ref("1", "T1") + "&Page=9", 50}}, 0, ErrBadResponse, "Page is given 2 times"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewPageGuard(list, tt.maxEmpty)
			if tt.resume != "" {
				g.Resume(tt.resume)
			}
			for i, s := range tt.steps {
				err := g.Check(s.next, s.records)
				if i != tt.failAt {
					if err != nil {
						t.Fatalf("step %d (%q): %v", i, s.next, err)
					}
					continue
				}
				if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), list) {
					t.Fatalf("step %d: error = %v, want %v naming the list and %q", i, err, tt.is, tt.want)
				}
				return
			}
		})
	}
}

func TestPageGuardDefaultEmptyPages(t *testing.T) {
	g := NewPageGuard("users of service IS1", 0)
	for i := 1; i <= DefaultMaxEmptyPages; i++ {
		if err := g.Check(ref(strconv.Itoa(i), "T"+strconv.Itoa(i)), 0); err != nil {
			t.Fatalf("empty page %d: %v", i, err)
		}
	}
	err := g.Check(ref("99", "T99"), 0)
	if !errors.Is(err, ErrPagingLoop) || !strings.Contains(err.Error(), "users of service IS1") {
		t.Errorf("empty page %d: error = %v, want ErrPagingLoop naming the list", DefaultMaxEmptyPages+1, err)
	}
}

// guardModel is PageGuard with exact sets instead of hashes, written
// separately as the reference for FuzzPageGuard.
type guardModel struct {
	maxEmpty, page, empty int
	tokens                map[string]bool
	pages                 map[int]bool
}

func (m *guardModel) check(next string, records int) error {
	if next == "" {
		return nil
	}
	r, err := parsePageRef(next)
	if err != nil {
		return ErrBadResponse
	}
	if records == 0 {
		m.empty++
	} else {
		m.empty = 0
	}
	seen := m.tokens[r.token]
	if r.token == "" {
		seen = m.pages[r.page]
	}
	if m.empty > m.maxEmpty || (r.hasPage && r.page <= m.page) || seen {
		return ErrPagingLoop
	}
	if r.token != "" {
		m.tokens[r.token] = true
	} else {
		m.pages[r.page] = true
	}
	if r.hasPage {
		m.page = r.page
	}
	return nil
}

// FuzzPageGuard walks a guard through a sequence of next page references
// and record counts, one per line of data (the first byte of a line is the
// record count), and compares every answer with an exact model. Whatever
// it accepts holds no repeated token, no page number that fails to grow,
// and no run of empty pages over the limit.
func FuzzPageGuard(f *testing.F) {
	f.Add([]byte("2"+ref("1", "T1")+"\n2"+ref("2", "T2")+"\n0"), uint8(0))
	f.Add([]byte("2"+ref("1", "T1")+"\n2"+ref("1", "T1")), uint8(0))
	f.Add([]byte("0"+ref("1", "a%2Bb")+"\n0"+ref("2", "a+b")), uint8(1))
	f.Add([]byte("0?Page=1\n0?Page=2\n0?Page=3\n0?Page=4"), uint8(2))
	f.Add([]byte("1?PageToken=x&PageToken=y\n1?PageToken=x\n1?PageToken=y&PageToken=x"), uint8(0))
	f.Add([]byte("1?Page=%31&PageToken=%zz\n1?Page=1%00\n1?Page=99999999999999999999999"), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, maxEmpty uint8) {
		const list = "the fuzzed list"
		limit := int(maxEmpty % 8)
		g := NewPageGuard(list, limit)
		if limit == 0 {
			limit = DefaultMaxEmptyPages
		}
		m := &guardModel{maxEmpty: limit, tokens: map[string]bool{}, pages: map[int]bool{0: true}}
		for i, line := range strings.Split(string(data), "\n") {
			if line == "" {
				continue
			}
			records, next := int(line[0]%3), line[1:]
			err := g.Check(next, records)
			want := m.check(next, records)
			if (err == nil) != (want == nil) || (want != nil && !errors.Is(err, want)) {
				t.Fatalf("step %d Check(%q, %d) = %v, model says %v", i, next, records, err, want)
			}
			if err != nil {
				if !strings.Contains(err.Error(), list) {
					t.Fatalf("error %q does not name the list", err)
				}
				return // a walk ends at its first error
			}
		}
	})
}

func ExamplePageGuard() {
	g := NewPageGuard(`bindings of user "alice"`, 0)
	pages := []string{
		"/v2/Services/IS0/Users/alice/Bindings?PageSize=50&Page=1&PageToken=PT1",
		"/v2/Services/IS0/Users/alice/Bindings?PageSize=50&Page=2&PageToken=PT2",
		"/v2/Services/IS0/Users/alice/Bindings?PageSize=50&Page=1&PageToken=PT1",
	}
	for _, next := range pages {
		if err := g.Check(next, 50); err != nil {
			fmt.Println(errors.Is(err, ErrPagingLoop))
			return
		}
	}
	// Output: true
}

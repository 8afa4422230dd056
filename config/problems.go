package config

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Problem is one thing wrong with a configuration file.
type Problem struct {
	// Line is the line of the file the problem is about, from 1. For a
	// required key that is left out it is the line of the section that
	// should hold it; 0 when not even that is in the file (a top-level
	// key), or when the problem is about the file as a whole.
	Line int
	// Path names the field, as services[1].sid; empty when the problem is
	// about the file as a whole (it cannot be read, or is not YAML).
	Path string
	// Message says what is wrong and what is wanted.
	Message string
}

// Format writes the problem on one line, led by file and line the way
// compilers do, so that editors and terminals can jump to it:
// "bindsync.yaml:12: services[1].sid: must match ...". Without a file the
// line is written "line 12: ...".
func (p Problem) Format(file string) string {
	var b strings.Builder
	switch {
	case file != "" && p.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", file, p.Line)
	case file != "":
		b.WriteString(file + ": ")
	case p.Line > 0:
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Path != "" {
		b.WriteString(p.Path + ": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// String is Format without a file.
func (p Problem) String() string { return p.Format("") }

// Error lists every problem of a configuration file, sorted by line.
type Error struct {
	// File is the path of the file as given; empty for a document parsed
	// from memory.
	File     string
	Problems []Problem
}

// Lines returns the problems, one formatted line each (see Problem.Format).
func (e *Error) Lines() []string {
	out := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		out[i] = p.Format(e.File)
	}
	return out
}

// Error is the problems on lines of their own after a heading, or on the
// heading's line when there is one.
func (e *Error) Error() string {
	lines := e.Lines()
	if len(lines) == 1 {
		return "invalid configuration: " + lines[0]
	}
	return fmt.Sprintf("invalid configuration (%d problems):\n  %s", len(lines), strings.Join(lines, "\n  "))
}

// fileProblem is a problem with the file as a whole: it cannot be read.
func fileProblem(err error) *Error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		// The file's name leads the line already.
		return &Error{Problems: []Problem{{Message: fmt.Sprintf("cannot %s: %v", pe.Op, pe.Err)}}}
	}
	return &Error{Problems: []Problem{{Message: err.Error()}}}
}

// collector gathers the problems of a file from the successive checks
// (keys, variables, decoding, validation), which all run, so that one pass
// reports everything. A check reporting on a field that an earlier check
// already reported on (an unset variable, then the empty value it left)
// would only repeat it: such problems are dropped.
type collector struct {
	problems []Problem
	reported []string
}

// add records the problems of one check.
func (c *collector) add(ps []Problem) {
	var paths []string
	for _, p := range ps {
		if p.Path != "" && within(p.Path, c.reported) {
			continue
		}
		c.problems = append(c.problems, p)
		if p.Path != "" {
			paths = append(paths, p.Path)
		}
	}
	c.reported = append(c.reported, paths...)
}

// note records problems that hide none of the later checks: a key given
// twice, whose first value is still decoded and checked.
func (c *collector) note(ps []Problem) {
	c.problems = append(c.problems, ps...)
}

// err returns the problems sorted by line, those without a line last (a
// key to add rather than a line to fix), or nil when there are none.
func (c *collector) err() error {
	if len(c.problems) == 0 {
		return nil
	}
	ps := slices.Clone(c.problems)
	slices.SortStableFunc(ps, func(a, b Problem) int {
		return cmp.Compare(sortLine(a.Line), sortLine(b.Line))
	})
	return &Error{Problems: ps}
}

func sortLine(l int) int {
	if l <= 0 {
		return int(^uint(0) >> 1)
	}
	return l
}

// within reports whether path is one of roots or a field inside one.
func within(path string, roots []string) bool {
	for _, r := range roots {
		if path == r || strings.HasPrefix(path, r+".") || strings.HasPrefix(path, r+"[") {
			return true
		}
	}
	return false
}

// positions maps the path of every key and list item of a document to
// its line, so that problems found on the decoded Config (which knows no
// lines) can name one.
type positions map[string]int

func newPositions(root *yaml.Node) positions {
	pos := positions{}
	pos.walk(root, "")
	return pos
}

func (pos positions) walk(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i]
			kpath := join(path, key.Value)
			if _, seen := pos[kpath]; !seen {
				pos[kpath] = key.Line
			}
			pos.walk(n.Content[i+1], kpath)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			ipath := fmt.Sprintf("%s[%d]", path, i)
			pos[ipath] = item.Line
			pos.walk(item, ipath)
		}
	}
}

// line returns the line of path, or of its nearest enclosing field that
// the file holds (the section a required key is missing from); 0 when
// none is in the file.
func (pos positions) line(path string) int {
	for p := path; p != ""; p = parentPath(p) {
		if l, ok := pos[p]; ok {
			return l
		}
	}
	return 0
}

// parentPath is the path of the field that holds path: "services[1]" for
// "services[1].sid", "services" for "services[1]", "" at the top.
func parentPath(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

// validationProblems turns the "path: message" texts of Validate into
// Problems placed at the line of their field.
func validationProblems(texts []string, pos positions) []Problem {
	out := make([]Problem, 0, len(texts))
	for _, t := range texts {
		path, msg, ok := strings.Cut(t, ": ")
		if !ok {
			out = append(out, Problem{Message: t})
			continue
		}
		out = append(out, Problem{Line: pos.line(path), Path: path, Message: msg})
	}
	return out
}

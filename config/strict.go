package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

func typeOf[T any]() reflect.Type { return reflect.TypeFor[T]() }

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// checkKeys walks the document beside the Go type it decodes into and
// reports every key the type does not have, by path. A key given twice is
// reported in dups, and removed so that decoding (which would stop there)
// goes on and finds the other problems; the first value stands and is
// checked as any other. It also records the path of every line, so that
// decoding errors (which yaml.v3 reports by line) can name the field
// instead.
func checkKeys(n *yaml.Node, t reflect.Type, path string, lines map[int]string, dups *[]Problem) []Problem {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if path != "" {
		if _, ok := lines[n.Line]; !ok {
			lines[n.Line] = path
		}
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	var out []Problem
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
				return nil
			}
			return []Problem{{Line: n.Line, Path: orTop(path), Message: "must be a mapping"}}
		}
		fields := yamlFields(t)
		seen := map[string]int{}
		kept := n.Content[:0:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			kpath := join(path, key.Value)
			lines[key.Line] = kpath
			if first, dup := seen[key.Value]; dup {
				*dups = append(*dups, Problem{Line: key.Line, Path: kpath, Message: fmt.Sprintf("key is given twice (first on line %d); the first is used", first)})
				continue
			}
			seen[key.Value] = key.Line
			kept = append(kept, key, val)
			ft, ok := fields[key.Value]
			if !ok {
				out = append(out, Problem{Line: key.Line, Path: kpath, Message: "unknown key; known keys here: " + known(fields)})
				continue
			}
			out = append(out, checkKeys(val, ft, kpath, lines, dups)...)
		}
		n.Content = kept
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return nil // decoding reports the type error
		}
		for i, item := range n.Content {
			out = append(out, checkKeys(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), lines, dups)...)
		}
	}
	return out
}

// yamlFields maps the YAML keys of a struct type to their field types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = f.Type
	}
	return fields
}

func known(fields map[string]reflect.Type) string {
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func orTop(path string) string {
	if path == "" {
		return "(top level)"
	}
	return path
}

var varPattern = regexp.MustCompile(`\$\$|\$\{([^}]*)\}`)

// expandEnv replaces ${VAR} in every scalar value (never in keys) with the
// variable's value; $$ stands for a literal $. Expansion happens after the
// YAML is parsed, so a secret holding YAML syntax (# or :) cannot change the
// document's shape. An unset or malformed variable is an error naming the
// field.
func expandEnv(n *yaml.Node, path string, lookup func(string) (string, bool)) []Problem {
	var out []Problem
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			out = append(out, expandEnv(c, path, lookup)...)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			out = append(out, expandEnv(n.Content[i+1], join(path, n.Content[i].Value), lookup)...)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			out = append(out, expandEnv(c, fmt.Sprintf("%s[%d]", path, i), lookup)...)
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "$") {
			return nil
		}
		changed := false
		n.Value = varPattern.ReplaceAllStringFunc(n.Value, func(m string) string {
			changed = true
			if m == "$$" {
				return "$"
			}
			name := m[2 : len(m)-1]
			if !validVarName(name) {
				out = append(out, Problem{Line: n.Line, Path: orTop(path), Message: fmt.Sprintf("%q is not a valid environment variable reference", m)})
				return m
			}
			v, ok := lookup(name)
			if !ok {
				out = append(out, Problem{Line: n.Line, Path: orTop(path), Message: fmt.Sprintf("environment variable %s is not set", name)})
				return ""
			}
			return v
		})
		if changed && n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
			// An unquoted reference is read as the type the field wants
			// (a number for page_size: ${PAGE_SIZE}); a quoted one stays a string.
			n.Tag = ""
		}
	}
	return out
}

func validVarName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if r == '_' || (r >= 'A' && r <= 'Z') || (r >= 'a' && r <= 'z') || (i > 0 && r >= '0' && r <= '9') {
			continue
		}
		return false
	}
	return true
}

var linePattern = regexp.MustCompile(`^line (\d+): (.*)$`)

// decodeProblems turns yaml.v3's line-numbered decoding errors into
// problems naming the field of their line. fatal reports an error that
// stopped decoding (anything but a *yaml.TypeError, after which yaml.v3
// goes on with the other fields): the Config is then not worth checking.
func decodeProblems(err error, lines map[int]string) (out []Problem, fatal bool) {
	var te *yaml.TypeError
	var msgs []string
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs, fatal = []string{err.Error()}, true
	}
	for _, m := range msgs {
		out = append(out, lineProblem(m, lines))
	}
	return out, fatal
}

// lineProblem reads one "line N: message" error of yaml.v3.
func lineProblem(m string, lines map[int]string) Problem {
	m = strings.TrimPrefix(m, "yaml: ")
	sm := linePattern.FindStringSubmatch(m)
	if sm == nil {
		return Problem{Message: m}
	}
	line, _ := strconv.Atoi(sm[1])
	msg := strings.ReplaceAll(sm[2], "cannot unmarshal", "cannot read")
	msg = strings.ReplaceAll(msg, "!!str", "string")
	msg = strings.ReplaceAll(msg, "!!int", "number")
	msg = strings.ReplaceAll(msg, "!!map", "mapping")
	msg = strings.ReplaceAll(msg, "!!seq", "list")
	return Problem{Line: line, Path: lines[line], Message: msg}
}

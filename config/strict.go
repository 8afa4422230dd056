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
// reports every key the type does not have, by path. It also records the
// path of every line, so that decoding errors (which yaml.v3 reports by
// line) can name the field instead.
func checkKeys(n *yaml.Node, t reflect.Type, path string, lines map[int]string) []string {
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
	var out []string
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
				return nil
			}
			return []string{fmt.Sprintf("%s: must be a mapping (line %d)", orTop(path), n.Line)}
		}
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			fields[name] = f.Type
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			kpath := join(path, key.Value)
			lines[key.Line] = kpath
			if seen[key.Value] {
				out = append(out, fmt.Sprintf("%s: key is given twice (line %d)", kpath, key.Line))
				continue
			}
			seen[key.Value] = true
			ft, ok := fields[key.Value]
			if !ok {
				out = append(out, fmt.Sprintf("%s: unknown key (line %d); known keys here: %s", kpath, key.Line, known(fields)))
				continue
			}
			out = append(out, checkKeys(val, ft, kpath, lines)...)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return nil // decoding reports the type error
		}
		for i, item := range n.Content {
			out = append(out, checkKeys(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), lines)...)
		}
	}
	return out
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
func expandEnv(n *yaml.Node, path string, lookup func(string) (string, bool)) []string {
	var out []string
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
				out = append(out, fmt.Sprintf("%s: %q is not a valid environment variable reference (line %d)", orTop(path), m, n.Line))
				return m
			}
			v, ok := lookup(name)
			if !ok {
				out = append(out, fmt.Sprintf("%s: environment variable %s is not set (line %d)", orTop(path), name, n.Line))
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
// messages that start with the field's path.
func decodeProblems(err error, lines map[int]string) []string {
	var te *yaml.TypeError
	var msgs []string
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	out := make([]string, 0, len(msgs))
	for _, m := range msgs {
		m = strings.TrimPrefix(m, "yaml: ")
		if sm := linePattern.FindStringSubmatch(m); sm != nil {
			line, _ := strconv.Atoi(sm[1])
			msg := strings.ReplaceAll(sm[2], "cannot unmarshal", "cannot read")
			msg = strings.ReplaceAll(msg, "!!str", "string")
			msg = strings.ReplaceAll(msg, "!!int", "number")
			msg = strings.ReplaceAll(msg, "!!map", "mapping")
			msg = strings.ReplaceAll(msg, "!!seq", "list")
			if p, ok := lines[line]; ok {
				out = append(out, fmt.Sprintf("%s: %s (line %d)", p, msg, line))
				continue
			}
			out = append(out, fmt.Sprintf("line %d: %s", line, msg))
			continue
		}
		out = append(out, m)
	}
	return out
}

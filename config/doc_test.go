package config

import (
	"fmt"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// docFile is the one place every key of the configuration is documented.
const docFile = "../docs/configuration.md"

// docKey is one key of the configuration as the Go type has it: its path
// (services[].sid), its type and its default.
type docKey struct {
	path  string
	typ   reflect.Type
	value reflect.Value // the default; the zero value when there is none
}

// configKeys walks the yaml tags of the configuration's types and returns
// every key a file can give, with the value Default (and SetDefaults, for
// the sections a file adds) gives it. Types that decode themselves (Users,
// ByteSize, durations) are keys, not sections.
func configKeys() []docKey {
	d := Default()
	// Sections that are absent unless a file gives them: present here, so
	// that SetDefaults fills what it fills in a file.
	d.Warehouse = Warehouse{Local: &Local{}, BigQuery: &BigQuery{}}
	d.SetDefaults()
	var keys []docKey
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		t := v.Type()
		switch {
		case path != "" && reflect.PointerTo(t).Implements(unmarshalerType):
		case t.Kind() == reflect.Pointer:
			if v.IsNil() {
				v = reflect.New(t.Elem())
			}
			walk(v.Elem(), path)
			return
		case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
			walk(reflect.New(t.Elem()).Elem(), path+"[]")
			return
		case t.Kind() == reflect.Struct:
			for i := 0; i < t.NumField(); i++ {
				name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
				if name == "" || name == "-" {
					continue
				}
				walk(v.Field(i), join(path, name))
			}
			return
		}
		keys = append(keys, docKey{path: path, typ: t, value: v})
	}
	walk(reflect.ValueOf(d).Elem(), "")
	return keys
}

// docRow is a row of a key table: | `key` | default | description |.
var docRow = regexp.MustCompile("^\\| `([^`]+)` \\| ([^|]+?) \\| (.+) \\|$")

// documentedKeys reads the key tables of the doc: key → default cell.
func documentedKeys(t *testing.T, doc string) map[string]string {
	t.Helper()
	keys := map[string]string{}
	for i, line := range strings.Split(doc, "\n") {
		m := docRow.FindStringSubmatch(line)
		if m == nil {
			if strings.HasPrefix(line, "| `") {
				t.Errorf("%s:%d: a key row that is not | `key` | default | description |: %s", docFile, i+1, line)
			}
			continue
		}
		if _, dup := keys[m[1]]; dup {
			t.Errorf("%s:%d: %s is documented twice", docFile, i+1, m[1])
		}
		keys[m[1]] = m[2]
	}
	return keys
}

// TestEveryKeyDocumented keeps docs/configuration.md and the
// configuration's types in step: every key a file can give is documented,
// the doc names no key that does not exist, and each documented default
// is the one bindsync applies ("—" where there is none).
func TestEveryKeyDocumented(t *testing.T) {
	data, err := os.ReadFile(docFile)
	if err != nil {
		t.Fatal(err)
	}
	documented := documentedKeys(t, string(data))
	keys := configKeys()
	if len(keys) < 30 {
		t.Fatalf("only %d keys found in the configuration's types: the walk is broken", len(keys))
	}
	for _, k := range keys {
		cell, ok := documented[k.path]
		if !ok {
			t.Errorf("%s is not documented in %s (with its default)", k.path, docFile)
			continue
		}
		delete(documented, k.path)
		if err := checkDefault(k, cell); err != nil {
			t.Errorf("%s: %v", k.path, err)
		}
	}
	for _, path := range slices.Sorted(maps.Keys(documented)) {
		t.Errorf("%s documents %s, which is not a key of the configuration", docFile, path)
	}
}

// checkDefault compares the default cell of a key's row with its default:
// "—" for none (the zero value), else a code span read as the key's type,
// as the key's value in a file would be.
func checkDefault(k docKey, cell string) error {
	if cell == "—" {
		if !k.value.IsZero() {
			return fmt.Errorf("documented without a default, but the default is %v", k.value.Interface())
		}
		return nil
	}
	text, ok := strings.CutPrefix(cell, "`")
	if text, ok = strings.CutSuffix(text, "`"); !ok || strings.Contains(text, "`") {
		return fmt.Errorf("default %q must be one code span, or — for none", cell)
	}
	got := reflect.New(k.typ)
	if k.typ.Kind() == reflect.String {
		got.Elem().SetString(text)
	} else if err := yaml.Unmarshal([]byte(text), got.Interface()); err != nil {
		return fmt.Errorf("documented default %q does not read as a %s: %v", text, k.typ, err)
	}
	if !reflect.DeepEqual(got.Elem().Interface(), k.value.Interface()) {
		return fmt.Errorf("documented default %q, but the default is %v", text, k.value.Interface())
	}
	return nil
}

// TestREADMEPointsAtTheDoc: the README's configuration section leads to
// the one place keys are documented, and to the example files.
func TestREADMEPointsAtTheDoc(t *testing.T) {
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(data), "\n## Configuration\n")
	section, _, _ = strings.Cut(section, "\n## ")
	for _, link := range []string{"(docs/configuration.md)", "(deploy/examples/)"} {
		if !strings.Contains(section, link) {
			t.Errorf("the README's configuration section has no link %s", link)
		}
	}
	for _, name := range []string{"config.local.yaml", "config.bigquery.yaml", "config.serve.yaml"} {
		if _, err := os.Stat("../deploy/examples/" + name); err != nil {
			t.Errorf("the docs name deploy/examples/%s: %v", name, err)
		}
	}
}

package bqtest

import (
	"fmt"
	"regexp"
	"strings"

	bigquery "google.golang.org/api/bigquery/v2"
)

const (
	modeNullable = "NULLABLE"
	modeRequired = "REQUIRED"
	modeRepeated = "REPEATED"
)

var fieldNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,299}$`)

// typeNames maps every type name the API accepts to the legacy name it
// answers with (tables created with INT64 come back as INTEGER).
var typeNames = map[string]string{
	"STRING":     "STRING",
	"BYTES":      "BYTES",
	"INTEGER":    "INTEGER",
	"INT64":      "INTEGER",
	"FLOAT":      "FLOAT",
	"FLOAT64":    "FLOAT",
	"NUMERIC":    "NUMERIC",
	"BIGNUMERIC": "BIGNUMERIC",
	"BOOLEAN":    "BOOLEAN",
	"BOOL":       "BOOLEAN",
	"TIMESTAMP":  "TIMESTAMP",
	"DATE":       "DATE",
	"TIME":       "TIME",
	"DATETIME":   "DATETIME",
	"GEOGRAPHY":  "GEOGRAPHY",
	"JSON":       "JSON",
	"RECORD":     "RECORD",
	"STRUCT":     "RECORD",
}

// normalizeFields validates a schema and returns a copy with canonical type
// and mode names. prefix is the dotted path of the enclosing record, for
// messages.
func normalizeFields(prefix string, fields []*bigquery.TableFieldSchema) ([]*bigquery.TableFieldSchema, error) {
	out := make([]*bigquery.TableFieldSchema, 0, len(fields))
	seen := make(map[string]bool)
	for _, f := range fields {
		if f == nil {
			return nil, fmt.Errorf("Empty field in the schema of %q", strings.TrimSuffix(prefix, "."))
		}
		name := prefix + f.Name
		if !fieldNamePattern.MatchString(f.Name) {
			return nil, fmt.Errorf("Invalid field name %q. Fields must contain only letters, numbers, and underscores, start with a letter or underscore, and be at most 300 characters long.", f.Name)
		}
		if seen[strings.ToLower(f.Name)] {
			return nil, fmt.Errorf("Field %s already exists in schema", name)
		}
		seen[strings.ToLower(f.Name)] = true
		typ, ok := typeNames[strings.ToUpper(f.Type)]
		if !ok {
			return nil, fmt.Errorf("Invalid value for type: %s is not a valid value (field %s)", f.Type, name)
		}
		mode := strings.ToUpper(f.Mode)
		if mode == "" {
			mode = modeNullable
		}
		if mode != modeNullable && mode != modeRequired && mode != modeRepeated {
			return nil, fmt.Errorf("Invalid value for mode: %s is not a valid value (field %s)", f.Mode, name)
		}
		n := cloneJSON(f)
		n.Type, n.Mode = typ, mode
		switch {
		case typ == "RECORD" && len(f.Fields) == 0:
			return nil, fmt.Errorf("Field %s is type RECORD but has no schema", name)
		case typ == "RECORD":
			sub, err := normalizeFields(name+".", f.Fields)
			if err != nil {
				return nil, err
			}
			n.Fields = sub
		case len(f.Fields) > 0:
			return nil, fmt.Errorf("Field %s is type %s and cannot have subfields", name, typ)
		}
		out = append(out, n)
	}
	return out, nil
}

// normalizeSchema is normalizeFields for a whole table schema; nil stays nil.
func normalizeSchema(s *bigquery.TableSchema) (*bigquery.TableSchema, error) {
	if s == nil {
		return nil, nil
	}
	fields, err := normalizeFields("", s.Fields)
	if err != nil {
		return nil, err
	}
	return &bigquery.TableSchema{Fields: fields}, nil
}

// fieldIndex finds a field by name; BigQuery column names are
// case-insensitive.
func fieldIndex(fields []*bigquery.TableFieldSchema, name string) int {
	for i, f := range fields {
		if strings.EqualFold(f.Name, name) {
			return i
		}
	}
	return -1
}

func findField(fields []*bigquery.TableFieldSchema, name string) *bigquery.TableFieldSchema {
	if i := fieldIndex(fields, name); i >= 0 {
		return fields[i]
	}
	return nil
}

func schemaFields(s *bigquery.TableSchema) []*bigquery.TableFieldSchema {
	if s == nil {
		return nil
	}
	return s.Fields
}

// sameFields reports whether two normalized schemas have the same names,
// types and modes in the same order.
func sameFields(a, b []*bigquery.TableFieldSchema) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !strings.EqualFold(a[i].Name, b[i].Name) || a[i].Type != b[i].Type || a[i].Mode != b[i].Mode {
			return false
		}
		if !sameFields(a[i].Fields, b[i].Fields) {
			return false
		}
	}
	return true
}

// evolveRules says which schema changes an operation may make.
type evolveRules struct {
	// requireAll: the new schema must name every existing column, as in
	// tables.patch; loads and copies may leave out NULLABLE and REPEATED ones.
	requireAll bool
	// allowAdd: new columns are added (ALLOW_FIELD_ADDITION, tables.patch).
	allowAdd bool
	// allowRelax: REQUIRED columns may become NULLABLE
	// (ALLOW_FIELD_RELAXATION, tables.patch).
	allowRelax bool
}

// evolveFields checks that data or a new schema described by next may go
// into a table whose schema is cur, following BigQuery's rules: no type
// changes, no dropped REQUIRED columns, no tightened modes, additions and
// relaxations only when allowed. It returns the table's resulting schema.
// Errors name the column and read like BigQuery's.
func evolveFields(prefix string, cur, next []*bigquery.TableFieldSchema, r evolveRules) ([]*bigquery.TableFieldSchema, error) {
	out := make([]*bigquery.TableFieldSchema, 0, len(cur)+len(next))
	used := make(map[int]bool)
	for _, c := range cur {
		name := prefix + c.Name
		i := fieldIndex(next, c.Name)
		if i < 0 {
			if r.requireAll || c.Mode == modeRequired {
				return nil, fmt.Errorf("Field %s is missing in new schema", name)
			}
			out = append(out, c)
			continue
		}
		used[i] = true
		n := next[i]
		if n.Type != c.Type {
			return nil, fmt.Errorf("Field %s has changed type from %s to %s", name, c.Type, n.Type)
		}
		merged := cloneJSON(c)
		if r.requireAll {
			merged.Description = n.Description
		}
		switch {
		case n.Mode == c.Mode:
		case c.Mode == modeRequired && n.Mode == modeNullable && r.allowRelax:
			merged.Mode = modeNullable
		case c.Mode == modeNullable && n.Mode == modeRequired && !r.requireAll:
			// Data that always has a value fits a NULLABLE column.
		default:
			return nil, fmt.Errorf("Field %s has changed mode from %s to %s", name, c.Mode, n.Mode)
		}
		if c.Type == "RECORD" {
			sub, err := evolveFields(name+".", c.Fields, n.Fields, r)
			if err != nil {
				return nil, err
			}
			merged.Fields = sub
		}
		out = append(out, merged)
	}
	for i, n := range next {
		if used[i] {
			continue
		}
		if !r.allowAdd {
			return nil, fmt.Errorf("Cannot add fields (field: %s)", prefix+n.Name)
		}
		if n.Mode == modeRequired {
			return nil, fmt.Errorf("Cannot add required fields to an existing schema. (field: %s)", prefix+n.Name)
		}
		out = append(out, n)
	}
	return out, nil
}

// partitionSpec describes time partitioning the way BigQuery's error
// messages do.
func partitionSpec(tp *bigquery.TimePartitioning) string {
	if tp == nil {
		return "none"
	}
	if tp.Field == "" {
		return fmt.Sprintf("interval(type:%s)", strings.ToLower(tp.Type))
	}
	return fmt.Sprintf("interval(type:%s,field:%s)", strings.ToLower(tp.Type), tp.Field)
}

func samePartitioning(a, b *bigquery.TimePartitioning) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return strings.EqualFold(a.Type, b.Type) && strings.EqualFold(a.Field, b.Field)
}

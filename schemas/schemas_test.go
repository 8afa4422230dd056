package schemas

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/bindsync/bindsync/internal/golden"
	"github.com/bindsync/bindsync/twilio"
)

// dumpSchema renders s one column per line: name, type, nullability and
// description, so a schema change reads well in a diff.
func dumpSchema(s *arrow.Schema) string {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	for _, f := range s.Fields() {
		null := "NOT NULL"
		if f.Nullable {
			null = "NULL"
		}
		desc := ""
		if i := f.Metadata.FindKey(DescriptionKey); i >= 0 {
			desc = f.Metadata.Values()[i]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Name, f.Type, null, desc)
	}
	tw.Flush()
	return buf.String()
}

func TestGoldenArrowSchema(t *testing.T) {
	golden.Check(t, "schema.golden", []byte(dumpSchema(Binding())))
}

func TestColumnOrder(t *testing.T) {
	want := []string{"sid", "account_sid", "service_sid", "date_created", "date_updated", "endpoint",
		"identity", "user_sid", "credential_sid", "binding_type", "message_types", "url",
		"snapshot_date", "synced_at"}
	var got []string
	for _, f := range Binding().Fields() {
		got = append(got, f.Name)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("columns = %v, want %v", got, want)
	}
}

func TestDescription(t *testing.T) {
	tests := []struct {
		field, want string
	}{
		{"snapshot_date", "UTC date of the snapshot this row belongs to (partition column)."},
		{"synced_at", "When bindsync read this row from Twilio (UTC)."},
		{"binding_type", "The push technology to use for the User Binding. Can be: apn, gcm, or fcm. See push notification configuration for more info."},
		{"no_such_column", ""},
	}
	for _, tt := range tests {
		if got := Description(tt.field); got != tt.want {
			t.Errorf("Description(%q) = %q, want %q", tt.field, got, tt.want)
		}
	}
	for _, f := range Binding().Fields() {
		if Description(f.Name) == "" {
			t.Errorf("column %s has no description", f.Name)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestRoundTrip(t *testing.T) {
	created := time.Date(2016, 10, 21, 11, 37, 3, 0, time.UTC)
	// A non-UTC instant with microseconds must come back as the same
	// instant in UTC.
	updated := time.Date(2024, 2, 29, 23, 59, 59, 123456000, time.FixedZone("CET", 3600))
	full := twilio.Binding{
		SID:           ptr("BSaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
		AccountSID:    ptr("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
		ServiceSID:    ptr("ISaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
		DateCreated:   &created,
		DateUpdated:   &updated,
		Endpoint:      ptr("TestUser-endpoint"),
		Identity:      ptr("TestUser"),
		UserSID:       ptr("USaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
		CredentialSID: ptr("CRaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
		BindingType:   ptr("gcm"),
		MessageTypes:  []string{"removed_from_channel", "new_message", "added_to_channel", "invited_to_channel"},
		URL:           ptr("https://chat.twilio.com/v2/Services/IS/Users/US/Bindings/BS"),
	}
	tests := []struct {
		name string
		in   twilio.Binding
	}{
		{"full", full},
		{"all nulls", twilio.Binding{}},
		{"empty list", twilio.Binding{BindingType: ptr("fcm"), MessageTypes: []string{}}},
		{"empty strings", twilio.Binding{SID: ptr(""), Identity: ptr(""), BindingType: ptr(""), MessageTypes: []string{""}}},
		{"unicode", twilio.Binding{
			Identity:     ptr("zoë/ünïcødé ? % # 用户 🚀"),
			Endpoint:     ptr("端点\x00nul"),
			BindingType:  ptr("apn"),
			MessageTypes: []string{"新消息", "ä"},
		}},
	}
	meta := RowMeta{
		SnapshotDate: time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC),
		SyncedAt:     time.Date(2025, 3, 14, 2, 3, 4, 5000, time.UTC),
	}

	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	b := array.NewRecordBuilder(mem, Binding())
	defer b.Release()
	for i := range tests {
		AppendBinding(b, meta, &tests[i].in)
	}
	rec := b.NewRecordBatch()
	rows, err := BindingsFromRecord(rec)
	rec.Release()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(tests) {
		t.Fatalf("got %d rows, want %d", len(rows), len(tests))
	}
	for i, tt := range tests {
		want := Row{Binding: tt.in, SnapshotDate: meta.SnapshotDate, SyncedAt: meta.SyncedAt}
		if tt.in.DateUpdated != nil {
			u := tt.in.DateUpdated.UTC()
			want.DateUpdated = &u
		}
		if !reflect.DeepEqual(rows[i], want) {
			t.Errorf("%s: got\n%+v\nwant\n%+v", tt.name, rows[i], want)
		}
	}
	if rows[1].MessageTypes != nil {
		t.Errorf("null list came back as %#v", rows[1].MessageTypes)
	}
	if rows[1].BindingType != nil {
		t.Errorf("null binding_type came back as %q", *rows[1].BindingType)
	}
	if rows[3].BindingType == nil || *rows[3].BindingType != "" {
		t.Errorf("empty binding_type came back as %v", rows[3].BindingType)
	}
	if rows[2].MessageTypes == nil || len(rows[2].MessageTypes) != 0 {
		t.Errorf("empty list came back as %#v", rows[2].MessageTypes)
	}
}

func TestBindingsFromRecordRejects(t *testing.T) {
	mem := memory.NewGoAllocator()
	wrongType := arrow.NewSchema([]arrow.Field{{Name: "sid", Type: arrow.PrimitiveTypes.Int64}}, nil)
	missing := arrow.NewSchema(Binding().Fields()[1:], nil)
	tests := []struct {
		name    string
		schema  *arrow.Schema
		wantErr string
	}{
		{"wrong type", wrongType, "column sid has type int64"},
		{"missing column", missing, `0 columns named "sid"`},
	}
	for _, tt := range tests {
		b := array.NewRecordBuilder(mem, tt.schema)
		rec := b.NewRecordBatch()
		_, err := BindingsFromRecord(rec)
		rec.Release()
		b.Release()
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.wantErr)
		}
	}
}

func TestBindingsFromRecordNullRequired(t *testing.T) {
	mem := memory.NewGoAllocator()
	b := array.NewRecordBuilder(mem, Binding())
	defer b.Release()
	AppendBinding(b, RowMeta{}, &twilio.Binding{BindingType: ptr("apn")})
	// Overwrite the row with a null snapshot_date by building it by hand.
	rec := b.NewRecordBatch()
	defer rec.Release()
	cols := rec.Columns()
	nb := array.NewDate32Builder(mem)
	nb.AppendNull()
	nullCol := nb.NewArray()
	defer nullCol.Release()
	nb.Release()
	replaced := append([]arrow.Array(nil), cols...)
	replaced[idxSnapshotDate] = nullCol
	bad := array.NewRecordBatch(Binding(), replaced, 1)
	defer bad.Release()
	_, err := BindingsFromRecord(bad)
	if err == nil || !strings.Contains(err.Error(), "snapshot_date is null") {
		t.Errorf("err = %v, want null snapshot_date error", err)
	}
}

func TestViolations(t *testing.T) {
	tests := []struct {
		name string
		in   twilio.Binding
		want []string
	}{
		{"valid", twilio.Binding{BindingType: ptr("fcm")}, nil},
		{"every known type", twilio.Binding{BindingType: ptr("apn")}, nil},
		{"null binding_type", twilio.Binding{SID: ptr("BS1")}, []string{ViolationBindingTypeNull}},
		{"empty binding_type", twilio.Binding{BindingType: ptr("")}, []string{ViolationBindingTypeUnknown}},
		{"unknown binding_type", twilio.Binding{BindingType: ptr("voip")}, []string{ViolationBindingTypeUnknown}},
	}
	for _, tt := range tests {
		if got := Violations(&tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: Violations = %q, want %q", tt.name, got, tt.want)
		}
		row := Row{Binding: tt.in}
		if got := row.Violations(); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: Row.Violations = %q, want %q", tt.name, got, tt.want)
		}
	}
	for _, typ := range twilio.BindingTypes {
		if got := Violations(&twilio.Binding{BindingType: ptr(typ)}); got != nil {
			t.Errorf("binding_type %q: Violations = %q, want none", typ, got)
		}
	}
}

// VisitBindings hands out the rows BindingsFromRecord returns, sharing
// rec's memory, while BindingsFromRecord's rows share none of it.
func TestVisitBindingsSharesWhatBindingsFromRecordCopies(t *testing.T) {
	s := func(v string) *string { return &v }
	created := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	in := []twilio.Binding{
		{SID: s("BS1"), AccountSID: s("AC1"), ServiceSID: s("IS1"), DateCreated: &created, Endpoint: s("e1"), Identity: s("i1"),
			UserSID: s("US1"), CredentialSID: s("CR1"), BindingType: s("apn"), MessageTypes: []string{"a", "b"}, URL: s("u1")},
		{SID: s("BS2"), MessageTypes: []string{}},
		{SID: s("BS3")},
	}
	meta := RowMeta{SnapshotDate: time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC), SyncedAt: created}
	b := array.NewRecordBuilder(memory.NewGoAllocator(), Binding())
	defer b.Release()
	for i := range in {
		AppendBinding(b, meta, &in[i])
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	rows, err := BindingsFromRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	values := rec.Column(rec.Schema().FieldIndices(ColSID)[0]).(*array.String).ValueBytes()
	inside := func(p *string) bool {
		if p == nil || len(*p) == 0 {
			return false
		}
		d := uintptr(unsafe.Pointer(unsafe.StringData(*p)))
		start := uintptr(unsafe.Pointer(&values[0]))
		return d >= start && d < start+uintptr(len(values))
	}
	i := 0
	err = VisitBindings(rec, func(r *Row) error {
		if !reflect.DeepEqual(*r, rows[i]) {
			t.Errorf("row %d: visited\n%+v\nBindingsFromRecord\n%+v", i, *r, rows[i])
		}
		if !inside(r.SID) {
			t.Errorf("row %d: the visited sid is a copy", i)
		}
		if inside(rows[i].SID) {
			t.Errorf("row %d: BindingsFromRecord's sid shares the record's memory", i)
		}
		i++
		return nil
	})
	if err != nil || i != len(in) {
		t.Fatalf("visited %d rows of %d: %v", i, len(in), err)
	}
	if rows[1].MessageTypes == nil || len(rows[1].MessageTypes) != 0 || rows[2].MessageTypes != nil {
		t.Errorf("lists: empty %#v, null %#v", rows[1].MessageTypes, rows[2].MessageTypes)
	}
}

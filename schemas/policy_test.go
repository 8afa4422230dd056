package schemas

import (
	"reflect"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/bindsync/bindsync/internal/golden"
)

// treatedPolicy treats every column, each way at least once.
var treatedPolicy = Policy{Endpoint: Hash, Identity: Drop, UsersUser: Drop, UsersIdentity: Hash}

// TestGoldenPolicySchemas pins the schemas written under a policy: the
// descriptions of treated columns say so, and a dropped user is nullable.
func TestGoldenPolicySchemas(t *testing.T) {
	p := treatedPolicy
	golden.Check(t, "policy.golden", []byte(dumpSchema(p.BindingSchema())+"\n"+dumpSchema(p.UsersSchema())))
}

// descriptions adds the description of every column of s to into, under the
// column's name with prefix.
func descriptions(into map[string]string, prefix string, s *arrow.Schema) map[string]string {
	for _, f := range s.Fields() {
		d, _ := f.Metadata.GetValue(DescriptionKey)
		into[prefix+f.Name] = d
	}
	return into
}

func TestPolicyDescriptions(t *testing.T) {
	p := Policy{Endpoint: Hash, Identity: Drop, UsersIdentity: Hash}
	bq := descriptions(map[string]string{}, "", p.BindingSchema())
	descriptions(bq, "users.", p.UsersSchema())
	for col, want := range map[string][]string{
		"endpoint":       {"Hashed", "lowercase hexadecimal HMAC-SHA-256", "64 characters", "export.columns.hash_key", "null stays null", "Partitions written before", Description(ColEndpoint)},
		"identity":       {"Dropped", "always null", Description(ColIdentity)},
		"users.identity": {"Hashed", "HMAC-SHA-256"},
	} {
		for _, w := range want {
			if !strings.Contains(bq[col], w) {
				t.Errorf("description of %s = %q, missing %q", col, bq[col], w)
			}
		}
	}
	for col, desc := range map[string]string{"sid": bq["sid"], "users.user": bq["users.user"]} {
		if strings.Contains(desc, "Hashed") || strings.Contains(desc, "Dropped") {
			t.Errorf("description of kept column %s says it is treated: %q", col, desc)
		}
	}
	if len(bq) != len(columns)+len(userColumns) {
		t.Errorf("%d columns, want %d", len(bq), len(columns)+len(userColumns))
	}
}

func TestPolicyKeepsSchemasWhenKeepingAll(t *testing.T) {
	for _, p := range []Policy{{}, {Endpoint: Keep, Identity: Keep, UsersUser: Keep, UsersIdentity: Keep}} {
		if p.BindingSchema() != Binding() || p.UsersSchema() != Users() || !p.KeepsAll() || p.Hashes() {
			t.Errorf("%v: schemas are not the defaults", p)
		}
	}
	// Treating only the users leaves the bindings schema alone, and the
	// other way round.
	if p := (Policy{UsersUser: Hash}); p.BindingSchema() != Binding() || p.UsersSchema() == Users() {
		t.Error("a users-only policy changed the bindings schema or left the users one")
	}
	if p := (Policy{Endpoint: Drop}); p.UsersSchema() != Users() || p.BindingSchema() == Binding() {
		t.Error("a bindings-only policy changed the users schema or left the bindings one")
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := treatedPolicy.Validate(); err != nil {
		t.Errorf("valid policy: %v", err)
	}
	err := Policy{Endpoint: Keep, UsersIdentity: "encrypt"}.Validate()
	if err == nil || !strings.Contains(err.Error(), "users.identity") || !strings.Contains(err.Error(), `"encrypt"`) {
		t.Errorf("err = %v, want one naming users.identity and the value", err)
	}
	if got := treatedPolicy.String(); got != "user_bindings.endpoint=hash user_bindings.identity=drop users.user=drop users.identity=hash" {
		t.Errorf("String() = %q", got)
	}
	if !(Policy{UsersUser: Hash}).Hashes() || (Policy{Endpoint: Drop}).Hashes() {
		t.Error("Hashes is wrong")
	}
}

// TestUsersDroppedUserRoundTrip: under a policy that drops user, an empty
// User is stored as null and read back as empty.
func TestUsersDroppedUserRoundTrip(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	b := array.NewRecordBuilder(mem, treatedPolicy.UsersSchema())
	defer b.Release()
	in := []UserRow{
		{ServiceSID: "IS1", User: "", UserSID: ptr("US1"), Identity: ptr("ab12"), Bindings: 3, State: UserRead},
		{ServiceSID: "IS1", User: "", Bindings: 0, State: UserGone},
	}
	meta := RowMeta{}
	for i := range in {
		AppendUser(b, meta, &in[i])
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	if n := rec.Column(1).NullN(); n != 2 {
		t.Errorf("%d null users stored, want 2", n)
	}
	out, err := UsersFromRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		in[i].SnapshotDate, in[i].SyncedAt = out[i].SnapshotDate, out[i].SyncedAt
	}
	if !reflect.DeepEqual(out, in) {
		t.Errorf("round trip:\n got %+v\nwant %+v", out, in)
	}
}

// TestPolicyChangesSchema: the changes table's binding columns say what the
// policy did to them, as user_bindings' do; its own columns are untouched,
// and a policy that keeps both columns keeps Changes itself.
func TestPolicyChangesSchema(t *testing.T) {
	if (Policy{UsersUser: Hash}).ChangesSchema() != Changes() {
		t.Error("a users-only policy changed the changes schema")
	}
	p := Policy{Endpoint: Hash, Identity: Drop}
	got := descriptions(map[string]string{}, "", p.ChangesSchema())
	if len(got) != Changes().NumFields() {
		t.Fatalf("%d columns, want %d", len(got), Changes().NumFields())
	}
	if !strings.HasPrefix(got[ColEndpoint], hashedNote) || !strings.HasPrefix(got[ColIdentity], droppedNote) {
		t.Errorf("endpoint %q, identity %q: the treatments are not said", got[ColEndpoint], got[ColIdentity])
	}
	for _, col := range []string{ColChange, ColChangedColumns, ColSID, ColUserSID} {
		if strings.Contains(got[col], "privacy policy") {
			t.Errorf("description of %s = %q says it is treated", col, got[col])
		}
	}
}

package config

import (
	"slices"
	"strings"
	"testing"

	"github.com/bindsync/bindsync/bq"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/worker"
)

// minimal returns Default with only what has no default: credentials, a
// service and a warehouse.
func minimal() *Config {
	c := Default()
	c.Twilio.AccountSID = "AC0123456789abcdef0123456789abcdef"
	c.Twilio.AuthToken = "token-0123456789"
	c.Services = []Service{{SID: "IS0123456789abcdef0123456789abcdef", Users: Users{All: true}}}
	c.Warehouse.Local = &Local{Path: "w"}
	return c
}

// TestDefaultsBeforeValidation checks that a configuration relying on
// defaults validates, that the defaults are set before Validate (which
// changes nothing), and that they are the library packages' own.
func TestDefaultsBeforeValidation(t *testing.T) {
	if p := minimal().Validate(); len(p) != 0 {
		t.Fatalf("Default with credentials, a service and a warehouse: %q", p)
	}

	// A BigQuery section that leaves table and location to the defaults.
	c := minimal()
	c.Warehouse.BigQuery = &BigQuery{Project: "my-project", Dataset: "bindsync"}
	got := c.Validate()
	want := []string{`warehouse.bigquery.table: must be letters, digits and underscores (got "")`, "warehouse.bigquery.location: is required"}
	if !slices.Equal(got, want) {
		t.Errorf("Validate before SetDefaults = %q, want %q", got, want)
	}
	if c.Warehouse.BigQuery.Table != "" || c.Warehouse.BigQuery.Location != "" {
		t.Errorf("Validate changed the configuration: %+v", c.Warehouse.BigQuery)
	}
	c.SetDefaults()
	if p := c.Validate(); len(p) != 0 {
		t.Errorf("Validate after SetDefaults: %q", p)
	}
	if bq := c.Warehouse.BigQuery; bq.Table != DefaultTable || bq.Location != DefaultLocation {
		t.Errorf("SetDefaults: table %q, location %q", bq.Table, bq.Location)
	}

	// The same through a file: Parse sets the defaults, then validates.
	cfg, err := Parse([]byte(base+"  bigquery:\n    project: my-project\n    dataset: bindsync\n    table: ${EMPTY_TABLE}\n"), func(k string) (string, bool) {
		if k == "EMPTY_TABLE" {
			return "", true
		}
		return lookup(k)
	})
	if err != nil {
		t.Fatalf("a file relying on the BigQuery defaults: %v", err)
	}
	if bq := cfg.Warehouse.BigQuery; bq.Table != DefaultTable || bq.Location != DefaultLocation {
		t.Errorf("parsed: table %q, location %q", bq.Table, bq.Location)
	}

	// One source: the defaults are those the packages apply on their own.
	d := Default()
	for _, tt := range []struct {
		name      string
		got, want any
	}{
		{"twilio.base_url", d.Twilio.BaseURL, twilio.DefaultBaseURL},
		{"twilio.page_size", d.Twilio.PageSize, twilio.MaxBindingsPageSize},
		{"twilio.users_page_size", d.Twilio.UsersPageSize, twilio.MaxUsersPageSize},
		{"twilio.concurrency", d.Twilio.Concurrency, worker.DefaultConcurrency},
		{"twilio.request_timeout", d.Twilio.RequestTimeout, twilio.DefaultRequestTimeout},
		{"twilio.max_attempts", d.Twilio.MaxAttempts, twilio.DefaultMaxAttempts},
		{"twilio.max_response_bytes", int64(d.Twilio.MaxResponseBytes), int64(twilio.DefaultMaxBodyBytes)},
		{"twilio.unavailable_after", d.Twilio.UnavailableAfter, twilio.DefaultUnavailableAfter},
		{"export.part_rows", d.Export.PartRows, worker.DefaultPartRows},
		{"export.batch_rows", d.Export.BatchRows, exporter.DefaultBatchRows},
		{"export.row_group_rows", d.Export.RowGroupRows, exporter.DefaultRowGroupRows},
		{"export.batch_bytes", int64(d.Export.BatchBytes), int64(exporter.DefaultBatchBytes)},
		{"export.row_group_bytes", int64(d.Export.RowGroupBytes), int64(exporter.DefaultRowGroupBytes)},
		{"export.commit_interval", d.Export.CommitInterval, worker.DefaultCommitInterval},
	} {
		if tt.got != tt.want {
			t.Errorf("default %s = %v, want the package's %v", tt.name, tt.got, tt.want)
		}
	}
}

// TestSectionValidate checks that each section validates on its own, with
// paths relative to it, and that Config.Validate puts the section's path
// in front.
func TestSectionValidate(t *testing.T) {
	tw := minimal().Twilio
	tw.PageSize = 0
	if got := tw.Validate(); !slices.Equal(got, []string{"page_size: must be between 1 and 1000 (got 0)"}) {
		t.Errorf("Twilio.Validate = %q", got)
	}
	s := Service{SID: "IS123", Users: Users{List: []string{"a", "a"}}}
	if got := s.Validate(); !slices.Equal(got, []string{`sid: must match ^IS[0-9a-fA-F]{32}$ (got "IS123")`, `users[1]: "a" is already listed as users[0]`}) {
		t.Errorf("Service.Validate = %q", got)
	}
	c := minimal()
	c.Services = append(c.Services, s)
	c.Export.PartRows = 0
	c.Log.Level = "loud"
	want := []string{
		`services[1].sid: must match ^IS[0-9a-fA-F]{32}$ (got "IS123")`,
		`services[1].users[1]: "a" is already listed as users[0]`,
		"export.part_rows: must be > 0 (got 0)",
		`log.level: must be one of debug, info, warn, error (got "loud")`,
	}
	if got := c.Validate(); !slices.Equal(got, want) {
		t.Errorf("Config.Validate =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestStagingRuleIsTheStores checks the staging field against the GCS
// store's own rule, including what the bucket pattern alone let through.
func TestStagingRuleIsTheStores(t *testing.T) {
	for _, s := range []string{"./staging", "/var/lib/bindsync", "gs://my-bucket", "gs://my-bucket/a/b/", "gs://a.b.c/x"} {
		if p := ValidateStaging(s); len(p) != 0 {
			t.Errorf("ValidateStaging(%q) = %q, want no problem", s, p)
		}
	}
	for _, s := range []string{"", "gs://my-bucket//x", "gs://my-bucket/a/../b", "gs://" + strings.Repeat("b", 64) + "/x", "gs://a..b/x", "http://x/y"} {
		if p := ValidateStaging(s); len(p) != 1 || !strings.HasPrefix(p[0], "staging: ") {
			t.Errorf("ValidateStaging(%q) = %q, want one staging problem", s, p)
		}
	}
}

// TestLocationDefaultIsTheLoaders keeps the configuration's default
// location the one the BigQuery publisher falls back to; config does not
// import bq, so that deploy's checks stay free of the BigQuery client.
func TestLocationDefaultIsTheLoaders(t *testing.T) {
	if DefaultLocation != bq.DefaultLocation {
		t.Errorf("config.DefaultLocation = %q, bq.DefaultLocation = %q; want one value", DefaultLocation, bq.DefaultLocation)
	}
}

package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var testEnv = map[string]string{
	"TWILIO_ACCOUNT_SID":    "AC0123456789abcdef0123456789abcdef",
	"TWILIO_AUTH_TOKEN":     "tok#en: with yaml",
	"TWILIO_API_KEY_SECRET": "secret",
	"PAGE_SIZE":             "20",
}

func lookup(k string) (string, bool) { v, ok := testEnv[k]; return v, ok }

func TestGoodFiles(t *testing.T) {
	for k, v := range testEnv {
		t.Setenv(k, v)
	}
	t.Run("full", func(t *testing.T) {
		cfg, err := LoadFile("testdata/full.good.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Twilio.AuthToken != "tok#en: with yaml" {
			t.Errorf("auth_token = %q: expansion must not reinterpret YAML", cfg.Twilio.AuthToken)
		}
		if got := cfg.Twilio.Username(); got != testEnv["TWILIO_ACCOUNT_SID"] {
			t.Errorf("username = %q", got)
		}
		if len(cfg.Services) != 2 || !cfg.Services[0].Users.All || cfg.Services[1].Users.All {
			t.Fatalf("services = %+v", cfg.Services)
		}
		if got := strings.Join(cfg.Services[1].Users.List, "|"); got != "US0123456789abcdef0123456789abcdef|alice|a/b" {
			t.Errorf("users = %q", got)
		}
		if got := strings.Join(cfg.Services[1].BindingTypes, ","); got != "gcm,fcm" {
			t.Errorf("binding_types = %q", got)
		}
		dir, _ := filepath.Abs("testdata")
		if cfg.Staging != filepath.Join(dir, "staging") || cfg.Warehouse.Local.Path != filepath.Join(dir, "warehouse") {
			t.Errorf("paths not resolved against the config dir: %q %q", cfg.Staging, cfg.Warehouse.Local.Path)
		}
		if cfg.Twilio.RequestTimeout != DefaultRequestTimeout || cfg.Export.PartRows != DefaultPartRows || cfg.Twilio.MaxAttempts != DefaultMaxAttempts {
			t.Errorf("defaults not applied: %+v %+v", cfg.Twilio, cfg.Export)
		}
	})
	t.Run("bigquery", func(t *testing.T) {
		cfg, err := LoadFile("testdata/bigquery.good.yaml")
		if err != nil {
			t.Fatal(err)
		}
		bq := cfg.Warehouse.BigQuery
		if bq.Table != DefaultTable || bq.Location != DefaultLocation || bq.PartitionExpirationDays != 400 {
			t.Errorf("bigquery = %+v", bq)
		}
		if cfg.Twilio.Username() != "SK0123456789abcdef0123456789abcdef" || cfg.Twilio.Password() != "secret" {
			t.Errorf("api key auth not chosen")
		}
		if cfg.Twilio.RequestTimeout != 10*time.Second || cfg.Twilio.RequestsPerSecond != 25 {
			t.Errorf("twilio = %+v", cfg.Twilio)
		}
		if !cfg.StagingIsGCS() || cfg.Staging != "gs://my-bucket/bindsync" {
			t.Errorf("staging = %q", cfg.Staging)
		}
	})
}

const base = `
twilio:
  account_sid: AC0123456789abcdef0123456789abcdef
  auth_token: t
services:
  - sid: IS0123456789abcdef0123456789abcdef
    users: all
warehouse:
  local:
    path: w
`

func TestBadConfigs(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // every one must appear in the error
	}{
		{"empty", ``, []string{"the file is empty"}},
		{"not a mapping", `- a`, []string{"top level must be a mapping"}},
		{"syntax", "twilio: [", []string{"line"}},
		{"unknown top key", base + "bogus: 1\n", []string{"bogus: unknown key (line 11)"}},
		{"unknown nested key", strings.Replace(base, "auth_token: t", "auth_token: t\n  pagesize: 5", 1), []string{"twilio.pagesize: unknown key", "known keys here:"}},
		{"bad service sid", strings.Replace(base, "IS0123456789abcdef0123456789abcdef", "IS123", 1), []string{`services[0].sid: must match ^IS[0-9a-fA-F]{32}$ (got "IS123")`}},
		{"duplicate service", strings.Replace(base, "    users: all\n", "    users: all\n  - sid: IS0123456789abcdef0123456789abcdef\n    users: all\n", 1), nil},
		{"users missing", strings.Replace(base, "    users: all\n", "", 1), []string{`services[0].users: is required`}},
		{"users bad scalar", strings.Replace(base, "users: all", "users: everyone", 1), []string{`services[0].users: must be "all" or a list`, `"everyone"`}},
		{"duplicate user", strings.Replace(base, "users: all", "users: [alice, alice]", 1), []string{`services[0].users[1]: "alice" is already listed as users[0]`}},
		{"bad binding type", strings.Replace(base, "users: all", "users: all\n    binding_types: [gcm, sms]", 1), []string{`services[0].binding_types[1]: must be one of apn, fcm, gcm (got "sms")`}},
		{"page size too big", strings.Replace(base, "auth_token: t", "auth_token: t\n  page_size: 5000", 1), []string{"twilio.page_size: must be between 1 and 1000 (got 5000)"}},
		{"page size not a number", strings.Replace(base, "auth_token: t", "auth_token: t\n  page_size: fifty", 1), []string{"twilio.page_size: cannot read string `fifty` into int (line 5)"}},
		{"concurrency zero", strings.Replace(base, "auth_token: t", "auth_token: t\n  concurrency: 0", 1), []string{"twilio.concurrency: must be between 1 and 256 (got 0)"}},
		{"bad timeout", strings.Replace(base, "auth_token: t", "auth_token: t\n  request_timeout: soon", 1), []string{"twilio.request_timeout:"}},
		{"missing token", strings.Replace(base, "  auth_token: t\n", "", 1), []string{"twilio.auth_token: is required"}},
		{"bad account sid", strings.Replace(base, "AC0123456789abcdef0123456789abcdef", "AC1", 1), []string{`twilio.account_sid: must match ^AC[0-9a-fA-F]{32}$ (got "AC1")`}},
		{"token and key", strings.Replace(base, "auth_token: t", "auth_token: t\n  api_key_sid: SK0123456789abcdef0123456789abcdef\n  api_key_secret: s", 1), []string{"twilio.auth_token: give either"}},
		{"unset env var", strings.Replace(base, "auth_token: t", "auth_token: ${NOPE_NOT_SET}", 1), []string{"twilio.auth_token: environment variable NOPE_NOT_SET is not set (line 4)"}},
		{"bad env ref", strings.Replace(base, "auth_token: t", "auth_token: ${1X}", 1), []string{`twilio.auth_token: "${1X}" is not a valid environment variable reference`}},
		{"base url with path", strings.Replace(base, "auth_token: t", "auth_token: t\n  base_url: https://chat.twilio.com/v2", 1), []string{"twilio.base_url: must be a scheme and host only"}},
		{"base url relative", strings.Replace(base, "auth_token: t", "auth_token: t\n  base_url: chat.twilio.com", 1), []string{"twilio.base_url: must be an absolute http(s) URL"}},
		{"no warehouse", strings.Replace(base, "warehouse:\n  local:\n    path: w\n", "", 1), []string{"warehouse: is required"}},
		{"no services", "twilio:\n  account_sid: AC0123456789abcdef0123456789abcdef\n  auth_token: t\nwarehouse:\n  local: {path: w}\n", []string{"services: at least one service is required"}},
		{"bad staging scheme", base + "staging: s3://bucket/x\n", []string{`staging: must be a local directory or gs://bucket/prefix (got "s3://bucket/x")`}},
		{"bad bucket", base + "staging: gs://B/x\n", []string{`staging: bucket name "B" is not a valid GCS bucket name`}},
		{"bigquery missing dataset", base + "  bigquery:\n    project: my-project\n", []string{`warehouse.bigquery.dataset: must be 1 to 1000 letters, digits and underscores (got "")`}},
		{"bad schedule", base + "schedule: every night\n", []string{"schedule:", `(got "every night")`}},
		{"bad log level", base + "log:\n  level: loud\n", []string{`log.level: must be one of debug, info, warn, error (got "loud")`}},
		{"duplicate key", base + "staging: a\nstaging: b\n", []string{"staging: key is given twice (line 12)"}},
		{"two documents", base + "---\nstaging: x\n", []string{"exactly one YAML document"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc), lookup)
			if err == nil {
				t.Fatal("no error for a bad configuration")
			}
			want := tt.want
			if want == nil {
				want = []string{"services[1].sid: IS0123456789abcdef0123456789abcdef is already listed as services[0]"}
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nmissing %q", err, w)
				}
			}
		})
	}
}

func TestAllProblemsReportedAtOnce(t *testing.T) {
	doc := strings.Replace(base, "users: all", "users: all\n    binding_types: [sms]", 1)
	doc = strings.Replace(doc, "auth_token: t", "auth_token: t\n  page_size: 0\n  concurrency: 999", 1)
	_, err := Parse([]byte(doc), lookup)
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"twilio.page_size", "twilio.concurrency", "services[0].binding_types[0]"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q misses %q", err, w)
		}
	}
}

func TestEnvExpansion(t *testing.T) {
	doc := strings.Replace(base, "auth_token: t", "auth_token: \"$$literal-${TWILIO_AUTH_TOKEN}\"\n  page_size: ${PAGE_SIZE}", 1)
	cfg, err := Parse([]byte(doc), lookup)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Twilio.AuthToken != "$literal-tok#en: with yaml" {
		t.Errorf("auth_token = %q", cfg.Twilio.AuthToken)
	}
	if cfg.Twilio.PageSize != 20 {
		t.Errorf("page_size = %d, want 20 from ${PAGE_SIZE}", cfg.Twilio.PageSize)
	}
}

func TestLoadFileMissing(t *testing.T) {
	_, err := LoadFile(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(base))
	if b, err := os.ReadFile("testdata/full.good.yaml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("services: [{sid: x, users: [a, b]}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, lookup)
		if err == nil && len(cfg.Validate()) != 0 {
			t.Fatalf("Parse accepted a config that Validate rejects")
		}
	})
}

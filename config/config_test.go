package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/worker"
)

var testEnv = map[string]string{
	"TWILIO_ACCOUNT_SID":    "AC0123456789abcdef0123456789abcdef",
	"TWILIO_AUTH_TOKEN":     "tok#en: with yaml",
	"TWILIO_API_KEY_SECRET": "secret",
	"PAGE_SIZE":             "20",
	"BINDSYNC_HASH_KEY":     "hash-key-0f-32-bytes-or-more-for-tests",
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
		if s0, s1 := cfg.Services[0], cfg.Services[1]; s0.Strategy != worker.StrategyService || s1.Strategy != "" {
			t.Errorf("strategies = %q, %q; want service and none (auto)", s0.Strategy, s1.Strategy)
		}
		dir, _ := filepath.Abs("testdata")
		if cfg.Staging != filepath.Join(dir, "staging") || cfg.Warehouse.Local.Path != filepath.Join(dir, "warehouse") {
			t.Errorf("paths not resolved against the config dir: %q %q", cfg.Staging, cfg.Warehouse.Local.Path)
		}
		if cfg.Twilio.RequestTimeout != DefaultRequestTimeout || cfg.Export.PartRows != DefaultPartRows || cfg.Twilio.MaxAttempts != DefaultMaxAttempts {
			t.Errorf("defaults not applied: %+v %+v", cfg.Twilio, cfg.Export)
		}
		tw, ex := cfg.Twilio, cfg.Export
		if tw.PageSize != 50 || tw.UsersPageSize != 100 || tw.MaxResponseBytes != 32<<20 || tw.UnavailableAfter != 2*time.Minute ||
			ex.BatchBytes != 8<<20 || ex.RowGroupBytes != 16<<20 {
			t.Errorf("defaults of the sizes: %+v %+v", tw, ex)
		}
		if w := cfg.Warnings(); len(w) != 0 {
			t.Errorf("warnings for the defaults: %q", w)
		}
		if p := cfg.Export.Columns.Policy(); !p.KeepsAll() || p.Endpoint != schemas.Keep || p.UsersIdentity != schemas.Keep {
			t.Errorf("default privacy policy = %v, want keep everywhere", p)
		}
	})
	t.Run("sizes", func(t *testing.T) {
		cfg, err := LoadFile("testdata/sizes.good.yaml")
		if err != nil {
			t.Fatal(err)
		}
		tw, ex := cfg.Twilio, cfg.Export
		if tw.PageSize != 200 || tw.UsersPageSize != 1000 || tw.MaxResponseBytes != 64<<20 || tw.UnavailableAfter != 30*time.Second ||
			ex.BatchBytes != 4<<20 || ex.RowGroupBytes != 128<<20 {
			t.Errorf("sizes read: %+v %+v", tw, ex)
		}
		want := []string{
			"twilio.page_size: 200 is above the documented maximum of Twilio's current API (50); Twilio may reject it; bindsync then falls back to 50",
			"twilio.users_page_size: 1000 is above the documented maximum of Twilio's current API (100); Twilio may reject it; bindsync then falls back to 100",
		}
		if got := cfg.Warnings(); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
	t.Run("privacy", func(t *testing.T) {
		cfg, err := LoadFile("testdata/privacy.good.yaml")
		if err != nil {
			t.Fatal(err)
		}
		c := cfg.Export.Columns
		want := schemas.Policy{Endpoint: schemas.Drop, Identity: schemas.Hash, UsersUser: schemas.Hash, UsersIdentity: schemas.Keep}
		if c.Policy() != want || c.HashKey != testEnv["BINDSYNC_HASH_KEY"] {
			t.Errorf("policy = %v", c.Policy())
		}
		p, err := c.Privacy()
		if err != nil || p.Policy() != want {
			t.Errorf("Privacy() = %v, %v", p, err)
		}
		wantWarn := "export.columns.users.identity: is keep while export.columns.user_bindings.identity is hash: the users table holds identities in clear (set it to hash or drop too)"
		if got := cfg.Warnings(); len(got) != 1 || got[0] != wantWarn {
			t.Errorf("warnings = %q, want [%q]", got, wantWarn)
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
		{"unknown top key", base + "bogus: 1\n", []string{"line 11: bogus: unknown key; known keys here: export, http, log, metrics, schedule, services, staging, twilio, warehouse"}},
		{"unknown nested key", strings.Replace(base, "auth_token: t", "auth_token: t\n  pagesize: 5", 1), []string{"twilio.pagesize: unknown key", "known keys here:"}},
		{"bad service sid", strings.Replace(base, "IS0123456789abcdef0123456789abcdef", "IS123", 1), []string{`services[0].sid: must match ^IS[0-9a-fA-F]{32}$ (got "IS123")`}},
		{"duplicate service", strings.Replace(base, "    users: all\n", "    users: all\n  - sid: IS0123456789abcdef0123456789abcdef\n    users: all\n", 1), nil},
		{"users missing", strings.Replace(base, "    users: all\n", "", 1), []string{`services[0].users: is required`}},
		{"users bad scalar", strings.Replace(base, "users: all", "users: everyone", 1), []string{`services[0].users: must be "all" or a list`, `"everyone"`}},
		{"duplicate user", strings.Replace(base, "users: all", "users: [alice, alice]", 1), []string{`services[0].users[1]: "alice" is already listed as users[0]`}},
		{"unknown strategy", strings.Replace(base, "users: all", "users: all\n    strategy: bulk", 1), []string{`services[0].strategy: must be one of auto, per_user, service (got "bulk")`}},
		{"service strategy with a user list", strings.Replace(base, "users: all", "users: [alice, bob]\n    strategy: service", 1), []string{`services[0].strategy: service reads every user through the service's Bindings list and needs users: all (got a list of 2 users); use per_user or auto`}},
		{"bad binding type", strings.Replace(base, "users: all", "users: all\n    binding_types: [gcm, sms]", 1), []string{`services[0].binding_types[1]: must be one of apn, fcm, gcm (got "sms")`}},
		{"page size too big", strings.Replace(base, "auth_token: t", "auth_token: t\n  page_size: 5000", 1), []string{"twilio.page_size: must be between 1 and 1000 (got 5000)"}},
		{"page size not a number", strings.Replace(base, "auth_token: t", "auth_token: t\n  page_size: fifty", 1), []string{"line 5: twilio.page_size: cannot read string `fifty` into int"}},
		{"concurrency zero", strings.Replace(base, "auth_token: t", "auth_token: t\n  concurrency: 0", 1), []string{"twilio.concurrency: must be between 1 and 256 (got 0)"}},
		{"bad timeout", strings.Replace(base, "auth_token: t", "auth_token: t\n  request_timeout: soon", 1), []string{"twilio.request_timeout:"}},
		{"missing token", strings.Replace(base, "  auth_token: t\n", "", 1), []string{"twilio.auth_token: is required"}},
		{"bad account sid", strings.Replace(base, "AC0123456789abcdef0123456789abcdef", "AC1", 1), []string{`twilio.account_sid: must be AC followed by 32 hexadecimal digits: it has 3 characters, not 34 (the value is not shown`}},
		{"token and key", strings.Replace(base, "auth_token: t", "auth_token: t\n  api_key_sid: SK0123456789abcdef0123456789abcdef\n  api_key_secret: s", 1), []string{"twilio.auth_token: give either"}},
		{"unset env var", strings.Replace(base, "auth_token: t", "auth_token: ${NOPE_NOT_SET}", 1), []string{"line 4: twilio.auth_token: environment variable NOPE_NOT_SET is not set"}},
		{"bad env ref", strings.Replace(base, "auth_token: t", "auth_token: ${1X}", 1), []string{`twilio.auth_token: "${1X}" is not a valid environment variable reference`}},
		{"base url with path", strings.Replace(base, "auth_token: t", "auth_token: t\n  base_url: https://chat.twilio.com/v2", 1), []string{"twilio.base_url: must be a scheme and host only"}},
		{"base url relative", strings.Replace(base, "auth_token: t", "auth_token: t\n  base_url: chat.twilio.com", 1), []string{`twilio.base_url: must be an absolute https URL (got "chat.twilio.com")`}},
		{"no warehouse", strings.Replace(base, "warehouse:\n  local:\n    path: w\n", "", 1), []string{"warehouse: is required"}},
		{"no services", "twilio:\n  account_sid: AC0123456789abcdef0123456789abcdef\n  auth_token: t\nwarehouse:\n  local: {path: w}\n", []string{"services: at least one service is required"}},
		{"bad staging scheme", base + "staging: s3://bucket/x\n", []string{`staging: must be a local directory or gs://bucket/prefix (got "s3://bucket/x")`}},
		{"bad bucket", base + "staging: gs://B/x\n", []string{`staging: bucket name "B" is not a valid GCS bucket name`}},
		{"bigquery missing dataset", base + "  bigquery:\n    project: my-project\n", []string{`warehouse.bigquery.dataset: must be 1 to 1000 letters, digits and underscores (got "")`}},
		{"bad schedule", base + "schedule: every night\n", []string{"schedule:", `(got "every night")`}},
		{"empty schedule", base + "schedule: \"\"\n", []string{`line 11: schedule: empty spec string (got ""); leave the key out for the default, "CRON_TZ=UTC 0 2 * * *"`}},
		{"bad log level", base + "log:\n  level: loud\n", []string{`log.level: must be one of debug, info, warn, error (got "loud")`}},
		{"duplicate key", base + "staging: a\nstaging: b\n", []string{"line 12: staging: key is given twice (first on line 11); the first is used"}},
		{"two documents", base + "---\nstaging: x\n", []string{"exactly one YAML document"}},
		{"unknown privacy column", base + "export:\n  columns:\n    user_bindings:\n      sid: hash\n", []string{"line 14: export.columns.user_bindings.sid: unknown key; known keys here: endpoint, identity"}},
		{"privacy treatment not a string", base + "export:\n  columns:\n    users:\n      user: [hash]\n", []string{"export.columns.users.user: cannot read"}},
		{"hash key from an unset variable", base + "export:\n  columns:\n    hash_key: ${NO_SUCH_KEY}\n    user_bindings: {identity: hash}\n", []string{"line 13: export.columns.hash_key: environment variable NO_SUCH_KEY is not set"}},
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
	f.Add([]byte(base + "export:\n  columns:\n    hash_key: ${BINDSYNC_HASH_KEY}\n    user_bindings: {endpoint: hash, identity: drop}\n    users: {user: keep}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, lookup)
		if err == nil && len(cfg.Validate()) != 0 {
			t.Fatalf("Parse accepted a config that Validate rejects")
		}
		var e *Error
		if err != nil && !errors.As(err, &e) {
			t.Fatalf("Parse returned %T, want *Error: %v", err, err)
		}
		if e != nil {
			if len(e.Problems) == 0 {
				t.Fatal("an *Error without problems")
			}
			// Sorted by line, those without one last.
			for i := 1; i < len(e.Problems); i++ {
				if sortLine(e.Problems[i].Line) < sortLine(e.Problems[i-1].Line) {
					t.Fatalf("problems not sorted by line: %q", e.Lines())
				}
			}
		}
		if err == nil {
			// What validates is what a run accepts.
			if _, err := cfg.Export.Columns.Privacy(); err != nil {
				t.Fatalf("Parse accepted a privacy policy that a run rejects: %v", err)
			}
		}
	})
}

// TestBadFiles reads testdata/*.bad.yaml: each must fail with every wanted
// message and must not show any value listed as hidden (secrets, or values
// that may be secrets pasted into the wrong field).
func TestBadFiles(t *testing.T) {
	credentials := "(the value is not shown: it may hold credentials)"
	tests := map[string]struct {
		want   []string
		hidden []string
	}{
		"base_url_credentials": {
			want:   []string{"twilio.base_url: must not hold credentials (user info before @): give them as account_sid and auth_token (the value is not shown)"},
			hidden: []string{"s3cr3t-in-url", "@chat.twilio.com"},
		},
		"base_url_credentials_unparsable": {
			want:   []string{"twilio.base_url: must be an absolute https URL " + credentials},
			hidden: []string{"s3cr3t-in-url"},
		},
		"base_url_http": {
			want: []string{`twilio.base_url: must use https: the credentials would travel in clear; http is allowed only for a loopback host (localhost, 127.0.0.0/8, ::1) (got "http://chat.twilio.com")`},
		},
		"base_url_http_lookalike": {
			want: []string{"twilio.base_url: must use https", `(got "http://localhost.example.com:8080")`},
		},
		"account_sid_holds_token": {
			want: []string{"twilio.account_sid: must be AC followed by 32 hexadecimal digits: it has 32 characters, not 34; " +
				"it does not start with AC; it looks like an auth token or key secret, not a SID (the value is not shown, in case it is a secret)"},
			hidden: []string{"0123456789abcdef0123456789abcdef"},
		},
		"account_sid_holds_text": {
			want:   []string{"twilio.account_sid: must be AC followed by 32 hexadecimal digits: it has 26 characters, not 34; it holds characters other than hexadecimal digits after its first 2"},
			hidden: []string{"s3cr3t", "pasted"},
		},
		"api_key_sid_holds_secret": {
			want:   []string{"twilio.api_key_sid: must be SK followed by 32 hexadecimal digits: it has 24 characters, not 34; it does not start with SK"},
			hidden: []string{"s3cr3t", "pasted"},
		},
		"pushgateway_credentials": {
			want:   []string{"metrics.pushgateway: must be an absolute http(s) URL " + credentials},
			hidden: []string{"s3cr3t-push"},
		},
		"staging_credentials": {
			want:   []string{"staging: must be a local directory or gs://bucket/prefix " + credentials},
			hidden: []string{"s3cr3t-aws", "AKIA"},
		},
		"sizes_out_of_range": {
			want: []string{
				"twilio.page_size: must be between 1 and 1000 (got 1001)",
				"twilio.users_page_size: must be between 1 and 1000 (got 0)",
				"twilio.max_response_bytes: must be between 1KiB and 1GiB (got 512B)",
				"twilio.unavailable_after: must be at least 10s (got 5s)",
				"export.batch_bytes: must be between 64KiB and 1GiB (got 2GiB)",
				"export.row_group_bytes: must be between export.batch_bytes (2GiB) and 4GiB (got 1MiB)",
			},
		},
		"privacy_no_key": {
			want: []string{"export.columns.hash_key: is required when a column is hashed (users.identity: hash): give at least 32 bytes from the environment, like hash_key: ${BINDSYNC_HASH_KEY}"},
		},
		"privacy_short_key": {
			want:   []string{"export.columns.hash_key: must be at least 32 bytes (it has 21; the value is not shown)"},
			hidden: []string{"short-s3cr3t-hash-key", "s3cr3t-hash"},
		},
		"privacy_bad_treatment": {
			want: []string{
				`export.columns.user_bindings.endpoint: must be one of keep, hash, drop (got "encrypt")`,
				`export.columns.users.identity: must be one of keep, hash, drop (got "HASH")`,
			},
		},
		"sizes_unreadable": {
			want: []string{
				`testdata/sizes_unreadable.bad.yaml:4: twilio.max_response_bytes: must be a number of bytes or a size like 32MiB (units B, KiB, MiB, GiB, TiB) (got "lots")`,
				"testdata/sizes_unreadable.bad.yaml:5: twilio.users_page_size: cannot read string `many` into int",
				"testdata/sizes_unreadable.bad.yaml:13: export.batch_bytes: must be a size such as 32MiB, not a list or mapping",
				`testdata/sizes_unreadable.bad.yaml:14: export.row_group_bytes: must be a number of bytes or a size like 32MiB (units B, KiB, MiB, GiB, TiB) (got "32MB")`,
			},
		},
	}
	files, err := filepath.Glob("testdata/*.bad.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(tests) {
		t.Errorf("%d bad files for %d cases: every file needs a case", len(files), len(tests))
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".bad.yaml")
		t.Run(name, func(t *testing.T) {
			tt, ok := tests[name]
			if !ok {
				t.Fatalf("no expected errors for %s", file)
			}
			_, err := LoadFile(file)
			if err == nil {
				t.Fatal("no error for a bad configuration")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nmissing %q", err, w)
				}
			}
			// The token of every file is never shown either.
			for _, h := range append(tt.hidden, "s3cr3t-token-value") {
				if strings.Contains(err.Error(), h) {
					t.Errorf("error %q\nshows %q", err, h)
				}
			}
		})
	}
}

func TestLoopbackHTTPAllowed(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:8080", "http://127.8.9.10", "http://[::1]:9000", "http://localhost:1234", "http://LOCALHOST", "https://chat.twilio.com/"} {
		doc := strings.Replace(base, "auth_token: t", "auth_token: t\n  base_url: "+u, 1)
		if _, err := Parse([]byte(doc), lookup); err != nil {
			t.Errorf("base_url %s refused: %v", u, err)
		}
	}
	for _, u := range []string{"http://10.0.0.1", "http://[::2]", "http://localhost.evil.example", "http://0.0.0.0"} {
		doc := strings.Replace(base, "auth_token: t", "auth_token: t\n  base_url: "+u, 1)
		if _, err := Parse([]byte(doc), lookup); err == nil || !strings.Contains(err.Error(), "must use https") {
			t.Errorf("base_url %s: err = %v, want must use https", u, err)
		}
	}
}

func TestShortSecretWarns(t *testing.T) {
	cfg, err := Parse([]byte(base), lookup)
	if err != nil {
		t.Fatal(err)
	}
	want := "twilio.auth_token: is shorter than 6 characters, too short to be told apart in text: bindsync cannot keep it out of logs and errors (Twilio's are 32)"
	if got := cfg.Warnings(); len(got) != 1 || got[0] != want {
		t.Errorf("warnings = %q, want [%q]", got, want)
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{
		"0": 0, "1024": 1024, "1KiB": 1024, "32MiB": 32 << 20, "32 MiB": 32 << 20, " 1GiB ": 1 << 30, "2TiB": 2 << 40, "7B": 7,
	} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "1.5GiB", "32MB", "32mib", "1k", "9999999999TiB"} {
		if got, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) = %v, want an error", in, got)
		}
	}
	for b, want := range map[ByteSize]string{0: "0B", 1500: "1500B", 1024: "1KiB", 32 << 20: "32MiB", 3 << 30: "3GiB", 1<<20 + 1024: "1025KiB"} {
		if got := b.String(); got != want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(b), got, want)
		}
	}
}

// TestHashKeyLength: a key of exactly exporter.MinHashKeyBytes bytes is
// accepted, one byte less is refused, and the key is never in the error.
func TestHashKeyLength(t *testing.T) {
	for _, n := range []int{31, 32} {
		key := strings.Repeat("k", n-4) + "s3cr"
		doc := base + "export:\n  columns:\n    hash_key: " + key + "\n    user_bindings:\n      endpoint: hash\n"
		_, err := Parse([]byte(doc), lookup)
		if n >= 32 && err != nil {
			t.Errorf("key of %d bytes: %v", n, err)
		}
		if n < 32 && (err == nil || !strings.Contains(err.Error(), "export.columns.hash_key: must be at least 32 bytes (it has 31")) {
			t.Errorf("key of %d bytes: err = %v", n, err)
		}
		if err != nil && strings.Contains(err.Error(), key) {
			t.Errorf("the error shows the key: %v", err)
		}
	}
}

// TestStrategies checks every strategy a service may name, and that the
// worker resolves auto by the users selected.
func TestStrategies(t *testing.T) {
	for _, tt := range []struct {
		users    string
		strategy string
		want     worker.Strategy
	}{
		{"all", "", worker.StrategyService},
		{"all", "auto", worker.StrategyService},
		{"all", "per_user", worker.StrategyPerUser},
		{"all", "service", worker.StrategyService},
		{"[alice]", "", worker.StrategyPerUser},
		{"[alice]", "auto", worker.StrategyPerUser},
		{"[alice]", "per_user", worker.StrategyPerUser},
	} {
		doc := strings.Replace(base, "users: all", "users: "+tt.users, 1)
		if tt.strategy != "" {
			doc = strings.Replace(doc, "users: "+tt.users, "users: "+tt.users+"\n    strategy: "+tt.strategy, 1)
		}
		cfg, err := Parse([]byte(doc), lookup)
		if err != nil {
			t.Errorf("users %s, strategy %q: %v", tt.users, tt.strategy, err)
			continue
		}
		s := cfg.Services[0]
		ws := worker.Service{SID: s.SID, AllUsers: s.Users.All, Users: s.Users.List, Strategy: s.Strategy}
		if got := ws.Resolve(); got != tt.want {
			t.Errorf("users %s, strategy %q: resolved to %q, want %q", tt.users, tt.strategy, got, tt.want)
		}
	}
}

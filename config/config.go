// Package config loads and validates the bindsync configuration file: YAML
// over defaults, strict (an unknown key is an error), with ${VAR} expansion
// from the environment, and one error per problem naming its path in the
// file (services[1].sid: ...).
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"
)

// Config is the whole configuration of bindsync.
type Config struct {
	Twilio    Twilio    `yaml:"twilio"`
	Services  []Service `yaml:"services"`
	Staging   string    `yaml:"staging"`
	Warehouse Warehouse `yaml:"warehouse"`
	Export    Export    `yaml:"export"`
	Schedule  string    `yaml:"schedule"`
	HTTP      HTTP      `yaml:"http"`
	Metrics   Metrics   `yaml:"metrics"`
	Log       Log       `yaml:"log"`

	// Dir is the directory of the configuration file; relative paths in the
	// file are resolved against it. Empty for configurations built in code.
	Dir string `yaml:"-"`
}

// Twilio configures the Chat v2 client.
type Twilio struct {
	BaseURL        string        `yaml:"base_url"`
	AccountSID     string        `yaml:"account_sid"`
	AuthToken      string        `yaml:"auth_token"`
	APIKeySID      string        `yaml:"api_key_sid"`
	APIKeySecret   string        `yaml:"api_key_secret"`
	PageSize       int           `yaml:"page_size"`
	Concurrency    int           `yaml:"concurrency"`
	RequestTimeout time.Duration `yaml:"request_timeout"`
	MaxAttempts    int           `yaml:"max_attempts"`
	// RequestsPerSecond caps the request rate to Twilio; 0 means no cap
	// beyond the concurrency limit.
	RequestsPerSecond float64 `yaml:"requests_per_second"`
}

// Username and Password return the basic-auth pair: the API key when one is
// configured, else the account SID and auth token.
func (t Twilio) Username() string {
	if t.APIKeySID != "" {
		return t.APIKeySID
	}
	return t.AccountSID
}

// Password is the secret half of the basic-auth pair; see Username.
func (t Twilio) Password() string {
	if t.APIKeySID != "" {
		return t.APIKeySecret
	}
	return t.AuthToken
}

// Service is one Chat service to copy and which of its users to read.
type Service struct {
	SID          string   `yaml:"sid"`
	Users        Users    `yaml:"users"`
	BindingTypes []string `yaml:"binding_types"`
}

// Users is either every user of a service ("all", listed through the Users
// API) or an explicit list of user SIDs and identities.
type Users struct {
	All  bool
	List []string
}

// UnmarshalYAML accepts the scalar "all" or a sequence of strings.
func (u *Users) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Value == "all" {
			*u = Users{All: true}
			return nil
		}
		return fmt.Errorf("line %d: must be \"all\" or a list of user SIDs and identities (got %q)", n.Line, n.Value)
	case yaml.SequenceNode:
		var list []string
		for _, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: each user must be a SID or an identity string", item.Line)
			}
			list = append(list, item.Value)
		}
		*u = Users{List: list}
		return nil
	default:
		return fmt.Errorf("line %d: must be \"all\" or a list of user SIDs and identities", n.Line)
	}
}

// MarshalYAML writes Users back in the form UnmarshalYAML reads.
func (u Users) MarshalYAML() (any, error) {
	if u.All {
		return "all", nil
	}
	return u.List, nil
}

// Warehouse says where finished snapshots are published. At least one of
// the two is required; with both, a snapshot is published to each.
type Warehouse struct {
	Local    *Local    `yaml:"local"`
	BigQuery *BigQuery `yaml:"bigquery"`
}

// Local is a warehouse directory in Hive layout.
type Local struct {
	Path string `yaml:"path"`
}

// BigQuery is the BigQuery destination of snapshots.
type BigQuery struct {
	Project                 string `yaml:"project"`
	Dataset                 string `yaml:"dataset"`
	Table                   string `yaml:"table"`
	Location                string `yaml:"location"`
	PartitionExpirationDays int    `yaml:"partition_expiration_days"`
	Endpoint                string `yaml:"endpoint"`
	CredentialsFile         string `yaml:"credentials_file"`
}

// Export tunes the Parquet part files.
type Export struct {
	// PartRows bounds the rows of one part file.
	PartRows int `yaml:"part_rows"`
	// BatchRows is the size of one Arrow record batch.
	BatchRows int `yaml:"batch_rows"`
	// RowGroupRows bounds a Parquet row group, which the writer holds in
	// memory until it is full.
	RowGroupRows int `yaml:"row_group_rows"`
	// CommitInterval is the longest time between two checkpoints, and so
	// the most work a crash can lose.
	CommitInterval time.Duration `yaml:"commit_interval"`
}

// HTTP is the listener of `bindsync serve`.
type HTTP struct {
	Listen string `yaml:"listen"`
}

// Metrics configures the Prometheus Pushgateway of `bindsync run`.
type Metrics struct {
	Pushgateway string `yaml:"pushgateway"`
	Job         string `yaml:"job"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Default values, used where the file is silent.
const (
	DefaultBaseURL        = "https://chat.twilio.com"
	DefaultPageSize       = 50
	DefaultConcurrency    = 16
	DefaultRequestTimeout = 30 * time.Second
	DefaultMaxAttempts    = 6
	DefaultStaging        = "./staging"
	DefaultPartRows       = 500_000
	DefaultBatchRows      = 8192
	DefaultRowGroupRows   = 64 * 1024
	DefaultCommitInterval = 30 * time.Second
	DefaultTable          = "user_bindings"
	DefaultLocation       = "US"
	DefaultListen         = ":9090"
	DefaultSchedule       = "CRON_TZ=UTC 0 2 * * *"
)

// Default returns a configuration holding every default value and no
// services or warehouse.
func Default() *Config {
	return &Config{
		Twilio: Twilio{
			BaseURL:        DefaultBaseURL,
			PageSize:       DefaultPageSize,
			Concurrency:    DefaultConcurrency,
			RequestTimeout: DefaultRequestTimeout,
			MaxAttempts:    DefaultMaxAttempts,
		},
		Staging:  DefaultStaging,
		Export:   Export{PartRows: DefaultPartRows, BatchRows: DefaultBatchRows, RowGroupRows: DefaultRowGroupRows, CommitInterval: DefaultCommitInterval},
		Schedule: DefaultSchedule,
		HTTP:     HTTP{Listen: DefaultListen},
		Metrics:  Metrics{Job: "bindsync"},
		Log:      Log{Level: "info", Format: "auto"},
	}
}

// LoadFile reads, expands, decodes and validates the file at path. Relative
// paths in the file are resolved against the file's directory. The error,
// when not nil, is an *Error listing every problem found.
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Problems: []string{err.Error()}}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, &Error{File: path, Problems: []string{err.Error()}}
	}
	cfg, err := Parse(data, os.LookupEnv)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.File = path
		}
		return nil, err
	}
	cfg.Dir = filepath.Dir(abs)
	cfg.resolvePaths()
	return cfg, nil
}

// Parse decodes and validates a configuration document. lookup resolves
// ${VAR} references (os.LookupEnv in production).
func Parse(data []byte, lookup func(string) (string, bool)) (*Config, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{Problems: []string{"the file is empty"}}
		}
		return nil, &Error{Problems: []string{strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	var rest yaml.Node
	if err := dec.Decode(&rest); !errors.Is(err, io.EOF) {
		return nil, &Error{Problems: []string{"the file must hold exactly one YAML document"}}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return nil, &Error{Problems: []string{"the top level must be a mapping of keys (twilio, services, staging, warehouse, ...)"}}
	}

	var problems []string
	lines := map[int]string{}
	problems = append(problems, checkKeys(root, typeOf[Config](), "", lines)...)
	problems = append(problems, expandEnv(root, "", lookup)...)
	if len(problems) > 0 {
		return nil, &Error{Problems: problems}
	}

	cfg := Default()
	if err := root.Decode(cfg); err != nil {
		return nil, &Error{Problems: decodeProblems(err, lines)}
	}
	if problems := cfg.Validate(); len(problems) > 0 {
		return nil, &Error{Problems: problems}
	}
	return cfg, nil
}

// Error lists every problem of a configuration, one per line.
type Error struct {
	File     string
	Problems []string
}

func (e *Error) Error() string {
	head := "invalid configuration"
	if e.File != "" {
		head = fmt.Sprintf("invalid configuration %s", e.File)
	}
	if len(e.Problems) == 1 {
		return head + ": " + e.Problems[0]
	}
	return head + ":\n  " + strings.Join(e.Problems, "\n  ")
}

var (
	serviceSIDPattern = regexp.MustCompile(`^IS[0-9a-fA-F]{32}$`)
	accountSIDPattern = regexp.MustCompile(`^AC[0-9a-fA-F]{32}$`)
	apiKeySIDPattern  = regexp.MustCompile(`^SK[0-9a-fA-F]{32}$`)
	projectPattern    = regexp.MustCompile(`^[a-z][a-z0-9.:-]{4,61}[a-z0-9]$`)
	datasetPattern    = regexp.MustCompile(`^[A-Za-z0-9_]{1,1000}$`)
	tablePattern      = regexp.MustCompile(`^[A-Za-z0-9_]{1,1000}$`)
	bucketPattern     = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$`)
)

// Validate checks every field and returns one message per problem, each
// starting with the path of the field. It returns nil for a valid Config.
func (c *Config) Validate() []string {
	var p problems
	t := c.Twilio
	if u, err := url.Parse(t.BaseURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		p.add("twilio.base_url", "must be an absolute http(s) URL (got %q)", t.BaseURL)
	} else if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		p.add("twilio.base_url", "must be a scheme and host only, like https://chat.twilio.com (got %q)", t.BaseURL)
	}
	switch {
	case t.APIKeySID != "" || t.APIKeySecret != "":
		if !apiKeySIDPattern.MatchString(t.APIKeySID) {
			p.add("twilio.api_key_sid", "must match ^SK[0-9a-fA-F]{32}$ (got %q)", t.APIKeySID)
		}
		if t.APIKeySecret == "" {
			p.add("twilio.api_key_secret", "is required with twilio.api_key_sid")
		}
		if t.AuthToken != "" {
			p.add("twilio.auth_token", "give either auth_token or api_key_sid/api_key_secret, not both")
		}
		if t.AccountSID != "" && !accountSIDPattern.MatchString(t.AccountSID) {
			p.add("twilio.account_sid", "must match ^AC[0-9a-fA-F]{32}$ (got %q)", t.AccountSID)
		}
	default:
		if !accountSIDPattern.MatchString(t.AccountSID) {
			p.add("twilio.account_sid", "must match ^AC[0-9a-fA-F]{32}$ (got %q)", t.AccountSID)
		}
		if t.AuthToken == "" {
			p.add("twilio.auth_token", "is required (or give api_key_sid and api_key_secret)")
		}
	}
	if t.PageSize < 1 || t.PageSize > 1000 {
		p.add("twilio.page_size", "must be between 1 and 1000 (got %d)", t.PageSize)
	}
	if t.Concurrency < 1 || t.Concurrency > 256 {
		p.add("twilio.concurrency", "must be between 1 and 256 (got %d)", t.Concurrency)
	}
	if t.RequestTimeout <= 0 {
		p.add("twilio.request_timeout", "must be > 0 (got %s)", t.RequestTimeout)
	}
	if t.MaxAttempts < 1 || t.MaxAttempts > 20 {
		p.add("twilio.max_attempts", "must be between 1 and 20 (got %d)", t.MaxAttempts)
	}
	if t.RequestsPerSecond < 0 {
		p.add("twilio.requests_per_second", "must be >= 0 (got %g)", t.RequestsPerSecond)
	}

	if len(c.Services) == 0 {
		p.add("services", "at least one service is required")
	}
	seenService := map[string]int{}
	for i, s := range c.Services {
		path := fmt.Sprintf("services[%d]", i)
		if !serviceSIDPattern.MatchString(s.SID) {
			p.add(path+".sid", "must match ^IS[0-9a-fA-F]{32}$ (got %q)", s.SID)
		} else if j, dup := seenService[s.SID]; dup {
			p.add(path+".sid", "%s is already listed as services[%d]", s.SID, j)
		} else {
			seenService[s.SID] = i
		}
		if !s.Users.All && len(s.Users.List) == 0 {
			p.add(path+".users", `is required: "all" or a list of user SIDs and identities`)
		}
		seenUser := map[string]int{}
		for j, u := range s.Users.List {
			upath := fmt.Sprintf("%s.users[%d]", path, j)
			switch k, dup := seenUser[u]; {
			case u == "":
				p.add(upath, "must not be empty")
			case dup:
				p.add(upath, "%q is already listed as users[%d]", u, k)
			default:
				seenUser[u] = j
			}
		}
		seenType := map[string]bool{}
		for j, bt := range s.BindingTypes {
			bpath := fmt.Sprintf("%s.binding_types[%d]", path, j)
			switch {
			case bt != "apn" && bt != "fcm" && bt != "gcm":
				p.add(bpath, "must be one of apn, fcm, gcm (got %q)", bt)
			case seenType[bt]:
				p.add(bpath, "%q is listed twice", bt)
			}
			seenType[bt] = true
		}
	}

	if c.Staging == "" {
		p.add("staging", "is required: a local directory or gs://bucket/prefix")
	} else if strings.HasPrefix(c.Staging, "gs://") {
		bucket, _, _ := strings.Cut(strings.TrimPrefix(c.Staging, "gs://"), "/")
		if !bucketPattern.MatchString(bucket) {
			p.add("staging", "bucket name %q is not a valid GCS bucket name", bucket)
		}
	} else if strings.Contains(c.Staging, "://") {
		p.add("staging", "must be a local directory or gs://bucket/prefix (got %q)", c.Staging)
	}

	w := c.Warehouse
	if w.Local == nil && w.BigQuery == nil {
		p.add("warehouse", "is required: warehouse.local.path and/or warehouse.bigquery")
	}
	if w.Local != nil && w.Local.Path == "" {
		p.add("warehouse.local.path", "is required")
	}
	if bq := w.BigQuery; bq != nil {
		if !projectPattern.MatchString(bq.Project) {
			p.add("warehouse.bigquery.project", "must be a Google Cloud project ID (got %q)", bq.Project)
		}
		if !datasetPattern.MatchString(bq.Dataset) {
			p.add("warehouse.bigquery.dataset", "must be 1 to 1000 letters, digits and underscores (got %q)", bq.Dataset)
		}
		if bq.Table == "" {
			bq.Table = DefaultTable
		}
		if !tablePattern.MatchString(bq.Table) {
			p.add("warehouse.bigquery.table", "must be letters, digits and underscores (got %q)", bq.Table)
		}
		if bq.Location == "" {
			bq.Location = DefaultLocation
		}
		if bq.PartitionExpirationDays < 0 {
			p.add("warehouse.bigquery.partition_expiration_days", "must be >= 0 (got %d)", bq.PartitionExpirationDays)
		}
		if bq.Endpoint != "" {
			if u, err := url.Parse(bq.Endpoint); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
				p.add("warehouse.bigquery.endpoint", "must be an absolute http(s) URL (got %q)", bq.Endpoint)
			}
		}
	}

	if c.Export.PartRows < 1 {
		p.add("export.part_rows", "must be > 0 (got %d)", c.Export.PartRows)
	}
	if c.Export.BatchRows < 1 || c.Export.BatchRows > 1<<20 {
		p.add("export.batch_rows", "must be between 1 and 1048576 (got %d)", c.Export.BatchRows)
	}
	if c.Export.RowGroupRows < c.Export.BatchRows {
		p.add("export.row_group_rows", "must be at least export.batch_rows (%d) (got %d)", c.Export.BatchRows, c.Export.RowGroupRows)
	}
	if c.Export.CommitInterval < 100*time.Millisecond {
		p.add("export.commit_interval", "must be at least 100ms (got %s)", c.Export.CommitInterval)
	}
	if c.Schedule != "" {
		if _, err := ParseSchedule(c.Schedule); err != nil {
			p.add("schedule", "%v (got %q)", err, c.Schedule)
		}
	}
	if c.Metrics.Pushgateway != "" {
		if u, err := url.Parse(c.Metrics.Pushgateway); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			p.add("metrics.pushgateway", "must be an absolute http(s) URL (got %q)", c.Metrics.Pushgateway)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		p.add("log.level", "must be one of debug, info, warn, error (got %q)", c.Log.Level)
	}
	switch c.Log.Format {
	case "auto", "json", "console":
	default:
		p.add("log.format", "must be one of auto, json, console (got %q)", c.Log.Format)
	}
	return p
}

// ParseSchedule parses a cron schedule the way `bindsync serve` uses it:
// five fields, an optional CRON_TZ= prefix, or a descriptor like @daily.
func ParseSchedule(spec string) (cron.Schedule, error) {
	return cron.ParseStandard(spec)
}

// StagingIsGCS reports whether staging is a gs:// URL.
func (c *Config) StagingIsGCS() bool { return strings.HasPrefix(c.Staging, "gs://") }

func (c *Config) resolvePaths() {
	resolve := func(p string) string {
		if p == "" || filepath.IsAbs(p) || c.Dir == "" {
			return p
		}
		return filepath.Join(c.Dir, p)
	}
	if !c.StagingIsGCS() {
		c.Staging = resolve(c.Staging)
	}
	if c.Warehouse.Local != nil {
		c.Warehouse.Local.Path = resolve(c.Warehouse.Local.Path)
	}
	if bq := c.Warehouse.BigQuery; bq != nil {
		bq.CredentialsFile = resolve(bq.CredentialsFile)
	}
}

type problems []string

func (p *problems) add(path, format string, args ...any) {
	*p = append(*p, path+": "+fmt.Sprintf(format, args...))
}

// Package config loads and validates the bindsync configuration file: YAML
// over defaults, strict (an unknown key is an error), with ${VAR} expansion
// from the environment. Every problem of a file is reported in one pass,
// sorted by line, each naming its line and path
// (bindsync.yaml:12: services[1].sid: ...). docs/configuration.md
// documents every key with its default; a test keeps it in step.
//
// Defaults flow one way: the library packages (twilio, exporter, worker,
// staging) own their defaults and rules, so that each stays usable on its
// own, and this package starts from them (Default) and checks with them
// (the SID patterns of twilio, the GCS URI rule of staging). A file is
// decoded over Default, SetDefaults fills what an empty value means, and
// only then does Validate check, one section at a time, so that a file
// that validates is one that a run accepts.
package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"

	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/internal/safetext"
	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/worker"
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

	// pos holds the line of every key of the file it was parsed from.
	pos positions
}

// Line returns the line of the file that holds the field at path
// (twilio.page_size), or of its nearest enclosing section that the file
// holds; 0 for a Config not parsed from a file, or a path it does not
// reach. It places Warnings in the file.
func (c *Config) Line(path string) int { return c.pos.line(path) }

// Twilio configures the Chat v2 client.
type Twilio struct {
	BaseURL      string `yaml:"base_url"`
	AccountSID   string `yaml:"account_sid"`
	AuthToken    string `yaml:"auth_token"`
	APIKeySID    string `yaml:"api_key_sid"`
	APIKeySecret string `yaml:"api_key_secret"`
	// PageSize is the PageSize asked of the Bindings lists; UsersPageSize
	// that of the Users list. Twilio's current API documents at most 50 and
	// 100 (Warnings says so for more); its meta.page_size is the truth.
	PageSize       int           `yaml:"page_size"`
	UsersPageSize  int           `yaml:"users_page_size"`
	Concurrency    int           `yaml:"concurrency"`
	RequestTimeout time.Duration `yaml:"request_timeout"`
	MaxAttempts    int           `yaml:"max_attempts"`
	// RequestsPerSecond caps the request rate to Twilio; 0 means no cap
	// beyond the concurrency limit.
	RequestsPerSecond float64 `yaml:"requests_per_second"`
	// MaxResponseBytes bounds one response body after decompression; a
	// page over it fails its user with a clear message.
	MaxResponseBytes ByteSize `yaml:"max_response_bytes"`
	// UnavailableAfter is how long every request may fail before the run
	// stops early, saying Twilio is unavailable, instead of trying each
	// remaining user through all its retries.
	UnavailableAfter time.Duration `yaml:"unavailable_after"`
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
	// Strategy is how the service is read: auto (the default), per_user
	// or service; see worker.Strategy. service needs users: all.
	Strategy worker.Strategy `yaml:"strategy"`
}

// Users is either every user of a service ("all", listed through the Users
// API) or an explicit list of user SIDs and identities.
type Users struct {
	All  bool
	List []string
}

// UnmarshalYAML accepts the scalar "all" or a sequence of strings. Its
// errors are *yaml.TypeError, which lets decoding go on and report the
// other problems of the file; a list keeps its good entries.
func (u *Users) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Value == "all" {
			*u = Users{All: true}
			return nil
		}
		return typeError(n.Line, "must be \"all\" or a list of user SIDs and identities (got %q)", n.Value)
	case yaml.SequenceNode:
		var list []string
		var bad []string
		for _, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				bad = append(bad, fmt.Sprintf("line %d: each user must be a SID or an identity string", item.Line))
				continue
			}
			list = append(list, item.Value)
		}
		*u = Users{List: list}
		if len(bad) > 0 {
			return &yaml.TypeError{Errors: bad}
		}
		return nil
	default:
		return typeError(n.Line, "must be \"all\" or a list of user SIDs and identities")
	}
}

// typeError is a decoding error at line that lets decoding go on.
func typeError(line int, format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", line, fmt.Sprintf(format, args...))}}
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
	// BatchBytes bounds an Arrow record batch in bytes, and RowGroupBytes a
	// Parquet row group, whatever the size of the fields: rows alone bound
	// neither memory nor Arrow's 32-bit offsets when fields are large.
	BatchBytes    ByteSize `yaml:"batch_bytes"`
	RowGroupBytes ByteSize `yaml:"row_group_bytes"`
	// CommitInterval is the longest time between two checkpoints, and so
	// the most work a crash can lose.
	CommitInterval time.Duration `yaml:"commit_interval"`
	// Columns is the privacy policy of the columns that hold personal
	// data, applied as rows are written into the part files.
	Columns Columns `yaml:"columns"`
}

// Columns is the privacy policy of the columns that hold personal data:
// for each, keep (the default), hash or drop (see schemas.Treatment), and
// the key that hashing uses.
type Columns struct {
	// HashKey is the HMAC-SHA-256 key of hashed columns, at least
	// exporter.MinHashKeyBytes bytes, used as its bytes are (no hex or
	// base64 decoding). Give it from the environment, like the other
	// secrets: hash_key: ${BINDSYNC_HASH_KEY}. Changing it changes every
	// hash, which breaks joins with the days hashed before.
	HashKey string `yaml:"hash_key"`
	// UserBindings covers the columns of the user_bindings table.
	UserBindings BindingColumns `yaml:"user_bindings"`
	// Users covers the columns of the users table.
	Users UserColumns `yaml:"users"`
}

// BindingColumns are the treatments of the user_bindings columns.
type BindingColumns struct {
	Endpoint schemas.Treatment `yaml:"endpoint"`
	Identity schemas.Treatment `yaml:"identity"`
}

// UserColumns are the treatments of the users table's columns.
type UserColumns struct {
	User     schemas.Treatment `yaml:"user"`
	Identity schemas.Treatment `yaml:"identity"`
}

// Policy returns the policy c describes, without its key.
func (c Columns) Policy() schemas.Policy {
	return schemas.Policy{
		Endpoint:      c.UserBindings.Endpoint,
		Identity:      c.UserBindings.Identity,
		UsersUser:     c.Users.User,
		UsersIdentity: c.Users.Identity,
	}
}

// Privacy returns the exporter's Privacy of c, which part writers apply.
// It fails only for a Columns that Validate rejects.
func (c Columns) Privacy() (*exporter.Privacy, error) {
	return exporter.NewPrivacy(c.Policy(), []byte(c.HashKey))
}

// treatments lists the treatment fields of c with their paths within
// export.columns, in file order.
func (c Columns) treatments() []struct {
	path string
	t    schemas.Treatment
} {
	return []struct {
		path string
		t    schemas.Treatment
	}{
		{"user_bindings.endpoint", c.UserBindings.Endpoint},
		{"user_bindings.identity", c.UserBindings.Identity},
		{"users.user", c.Users.User},
		{"users.identity", c.Users.Identity},
	}
}

// Validate checks the export.columns section: every treatment is keep,
// hash or drop, and a hashed column has a key of at least
// exporter.MinHashKeyBytes bytes. The key is never shown.
func (c Columns) Validate() []string {
	var p problems
	var hashed []string
	for _, f := range c.treatments() {
		switch f.t {
		case schemas.Keep, schemas.Drop:
		case schemas.Hash:
			hashed = append(hashed, f.path)
		default:
			p.add(f.path, "must be one of keep, hash, drop (got %q)", string(f.t))
		}
	}
	switch {
	case len(hashed) == 0:
	case c.HashKey == "":
		p.add("hash_key", "is required when a column is hashed (%s: hash): give at least %d bytes from the environment, like hash_key: ${BINDSYNC_HASH_KEY}",
			hashed[0], exporter.MinHashKeyBytes)
	case len(c.HashKey) < exporter.MinHashKeyBytes:
		p.add("hash_key", "must be at least %d bytes (it has %d; the value is not shown): a short key lets anyone who sees the hashes find the values by guessing the key",
			exporter.MinHashKeyBytes, len(c.HashKey))
	}
	return p
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

// Default values, used where the file is silent. Those of the Twilio
// client, the part files and the run are the library packages' own
// defaults, so that a program using those packages without a file gets the
// same behaviour.
const (
	DefaultBaseURL = twilio.DefaultBaseURL
	// DefaultPageSize and DefaultUsersPageSize are the most that Twilio's
	// current API documents.
	DefaultPageSize       = twilio.MaxBindingsPageSize
	DefaultUsersPageSize  = twilio.MaxUsersPageSize
	DefaultConcurrency    = worker.DefaultConcurrency
	DefaultRequestTimeout = twilio.DefaultRequestTimeout
	DefaultMaxAttempts    = twilio.DefaultMaxAttempts
	// DefaultMaxResponseBytes is generous: a full page of 50 bindings is
	// about 50 KB.
	DefaultMaxResponseBytes = twilio.DefaultMaxBodyBytes
	DefaultUnavailableAfter = twilio.DefaultUnavailableAfter
	DefaultStaging          = "./staging"
	DefaultPartRows         = worker.DefaultPartRows
	DefaultBatchRows        = exporter.DefaultBatchRows
	DefaultRowGroupRows     = exporter.DefaultRowGroupRows
	DefaultBatchBytes       = exporter.DefaultBatchBytes
	DefaultRowGroupBytes    = exporter.DefaultRowGroupBytes
	DefaultCommitInterval   = worker.DefaultCommitInterval
	// DefaultTable and DefaultLocation apply to a warehouse.bigquery
	// section that leaves them out or empty (see SetDefaults).
	DefaultTable    = "user_bindings"
	DefaultLocation = "US" // bq.DefaultLocation; a test keeps them equal
	DefaultListen   = ":9090"
	DefaultSchedule = "CRON_TZ=UTC 0 2 * * *"
)

// Default returns a configuration holding every default value and no
// services or warehouse. A file is decoded over it.
func Default() *Config {
	return &Config{
		Twilio: Twilio{
			BaseURL:          DefaultBaseURL,
			PageSize:         DefaultPageSize,
			UsersPageSize:    DefaultUsersPageSize,
			Concurrency:      DefaultConcurrency,
			RequestTimeout:   DefaultRequestTimeout,
			MaxAttempts:      DefaultMaxAttempts,
			MaxResponseBytes: DefaultMaxResponseBytes,
			UnavailableAfter: DefaultUnavailableAfter,
		},
		Staging: DefaultStaging,
		Export: Export{
			PartRows: DefaultPartRows, BatchRows: DefaultBatchRows, RowGroupRows: DefaultRowGroupRows,
			BatchBytes: DefaultBatchBytes, RowGroupBytes: DefaultRowGroupBytes,
			CommitInterval: DefaultCommitInterval,
			Columns: Columns{
				UserBindings: BindingColumns{Endpoint: schemas.Keep, Identity: schemas.Keep},
				Users:        UserColumns{User: schemas.Keep, Identity: schemas.Keep},
			},
		},
		Schedule: DefaultSchedule,
		HTTP:     HTTP{Listen: DefaultListen},
		Metrics:  Metrics{Job: "bindsync"},
		Log:      Log{Level: "info", Format: "auto"},
	}
}

// LoadFile reads, expands, decodes and validates the file at path. Relative
// paths in the file are resolved against the file's directory. The error,
// when not nil, is an *Error listing every problem found, each with its
// line.
func LoadFile(path string) (*Config, error) {
	return LoadFileWith(path, Options{})
}

// Options narrow what LoadFileWith and ParseWith require of a file, for
// commands that use only part of a configuration.
type Options struct {
	// Reads, when not empty, lists the only fields the caller uses, by path:
	// a section ("staging") or a single field
	// ("warehouse.bigquery.credentials_file"). A variable left unset
	// elsewhere then reads as an empty value, and values elsewhere are not
	// validated, so that `bindsync status`, which reads staging alone, runs
	// where the Twilio secrets are not set. Syntax, unknown keys and values
	// that cannot be decoded are still problems anywhere in the file: a
	// misspelt key could make the caller read the wrong place. The other
	// fields of the Config returned are not to be used.
	Reads []string
}

// LoadFileWith is LoadFile with opts.
func LoadFileWith(path string, opts Options) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		e := fileProblem(err)
		e.File = path
		return nil, e
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		e := fileProblem(err)
		e.File = path
		return nil, e
	}
	cfg, err := ParseWith(data, os.LookupEnv, opts)
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
// ${VAR} references (os.LookupEnv in production). Every check runs, so
// that the *Error returned lists every problem of the document at once:
// unknown keys, unset variables, values that do not decode, and what
// Validate finds, sorted by line. A problem that only follows from one
// already reported (the empty value an unset variable leaves) is left
// out.
func Parse(data []byte, lookup func(string) (string, bool)) (*Config, error) {
	return ParseWith(data, lookup, Options{})
}

// ParseWith is Parse with opts.
func ParseWith(data []byte, lookup func(string) (string, bool), opts Options) (*Config, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{Problems: []Problem{{Message: "the file is empty"}}}
		}
		return nil, &Error{Problems: []Problem{lineProblem(err.Error(), nil)}}
	}
	var rest yaml.Node
	if err := dec.Decode(&rest); !errors.Is(err, io.EOF) {
		return nil, &Error{Problems: []Problem{{Line: rest.Line, Message: "the file must hold exactly one YAML document"}}}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return nil, &Error{Problems: []Problem{{Line: root.Line, Message: "the top level must be a mapping of keys (twilio, services, staging, warehouse, ...)"}}}
	}
	read := func(ps []Problem) []Problem {
		if len(opts.Reads) == 0 {
			return ps
		}
		return slices.DeleteFunc(ps, func(p Problem) bool { return !within(p.Path, opts.Reads) })
	}

	var c collector
	pos := newPositions(root)
	lines := map[int]string{}
	var dups []Problem
	c.add(checkKeys(root, typeOf[Config](), "", lines, &dups))
	c.note(dups)
	c.add(read(expandEnv(root, "", lookup)))
	cfg := Default()
	if err := root.Decode(cfg); err != nil {
		ps, fatal := decodeProblems(err, lines)
		c.add(ps)
		if fatal {
			return nil, c.err()
		}
	}
	cfg.SetDefaults()
	c.add(read(validationProblems(cfg.Validate(), pos)))
	if err := c.err(); err != nil {
		return nil, err
	}
	cfg.pos = pos
	return cfg, nil
}

var (
	projectPattern = regexp.MustCompile(`^[a-z][a-z0-9.:-]{4,61}[a-z0-9]$`)
	datasetPattern = regexp.MustCompile(`^[A-Za-z0-9_]{1,1000}$`)
	tablePattern   = regexp.MustCompile(`^[A-Za-z0-9_]{1,1000}$`)
)

// SetDefaults fills the values that an empty field means, in sections that
// Default cannot hold because they are absent unless the file gives them:
// warehouse.bigquery's table and location. Parse calls it before Validate;
// a Config built in code should too.
func (c *Config) SetDefaults() {
	if bq := c.Warehouse.BigQuery; bq != nil {
		bq.Table = cmp.Or(bq.Table, DefaultTable)
		bq.Location = cmp.Or(bq.Location, DefaultLocation)
	}
}

// Validate checks every field and returns one message per problem, each
// starting with the path of the field. It returns nil for a valid Config.
// It changes nothing: defaults are set before (Default, SetDefaults).
func (c *Config) Validate() []string {
	var p problems
	p.section("twilio", c.Twilio.Validate())
	if len(c.Services) == 0 {
		p.add("services", "at least one service is required")
	}
	seenService := map[string]int{}
	for i, s := range c.Services {
		path := fmt.Sprintf("services[%d]", i)
		p.section(path, s.Validate())
		if !twilio.ServiceSIDPattern.MatchString(s.SID) {
			continue
		}
		if j, dup := seenService[s.SID]; dup {
			p.add(path+".sid", "%s is already listed as services[%d]", s.SID, j)
		} else {
			seenService[s.SID] = i
		}
	}
	p = append(p, ValidateStaging(c.Staging)...)
	if c.Warehouse.Local == nil && c.Warehouse.BigQuery == nil {
		p.add("warehouse", "is required: warehouse.local.path and/or warehouse.bigquery")
	}
	p.section("warehouse", c.Warehouse.Validate())
	p.section("export", c.Export.Validate())
	// serve parses the schedule as this does, so that what validates is
	// what serve accepts; an empty one (schedule: "") is not the default.
	if _, err := ParseSchedule(c.Schedule); err != nil {
		p.add("schedule", "%v (got %q); leave the key out for the default, %q", err, c.Schedule, DefaultSchedule)
	}
	p.section("metrics", c.Metrics.Validate())
	p.section("log", c.Log.Validate())
	return p
}

// Validate checks the twilio section; each problem starts with the path
// of the field within the section (page_size: ...).
func (t Twilio) Validate() []string {
	var p problems
	// Secrets must never come back in an error, even pasted into the wrong
	// field: URLs are shown without their user info, and the SIDs not at
	// all (a token pasted into account_sid is a token).
	if u, err := url.Parse(t.BaseURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		p.add("base_url", "must be an absolute https URL %s", gotURL(t.BaseURL))
	} else if u.User != nil {
		p.add("base_url", "must not hold credentials (user info before @): give them as account_sid and auth_token (the value is not shown)")
	} else if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		p.add("base_url", "must be a scheme and host only, like https://chat.twilio.com %s", gotURL(t.BaseURL))
	} else if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		p.add("base_url", "must use https: the credentials would travel in clear; http is allowed only for a loopback host (localhost, 127.0.0.0/8, ::1) %s", gotURL(t.BaseURL))
	}
	switch {
	case t.APIKeySID != "" || t.APIKeySecret != "":
		if !twilio.APIKeySIDPattern.MatchString(t.APIKeySID) {
			p.add("api_key_sid", "%s", sidProblem(t.APIKeySID, "SK"))
		}
		if t.APIKeySecret == "" {
			p.add("api_key_secret", "is required with twilio.api_key_sid")
		}
		if t.AuthToken != "" {
			p.add("auth_token", "give either auth_token or api_key_sid/api_key_secret, not both")
		}
		if t.AccountSID != "" && !twilio.AccountSIDPattern.MatchString(t.AccountSID) {
			p.add("account_sid", "%s", sidProblem(t.AccountSID, "AC"))
		}
	default:
		if !twilio.AccountSIDPattern.MatchString(t.AccountSID) {
			p.add("account_sid", "%s", sidProblem(t.AccountSID, "AC"))
		}
		if t.AuthToken == "" {
			p.add("auth_token", "is required (or give api_key_sid and api_key_secret)")
		}
	}
	if t.PageSize < 1 || t.PageSize > 1000 {
		p.add("page_size", "must be between 1 and 1000 (got %d)", t.PageSize)
	}
	if t.UsersPageSize < 1 || t.UsersPageSize > 1000 {
		p.add("users_page_size", "must be between 1 and 1000 (got %d)", t.UsersPageSize)
	}
	if t.Concurrency < 1 || t.Concurrency > 256 {
		p.add("concurrency", "must be between 1 and 256 (got %d)", t.Concurrency)
	}
	if t.RequestTimeout <= 0 {
		p.add("request_timeout", "must be > 0 (got %s)", t.RequestTimeout)
	}
	if t.MaxAttempts < 1 || t.MaxAttempts > 20 {
		p.add("max_attempts", "must be between 1 and 20 (got %d)", t.MaxAttempts)
	}
	if t.RequestsPerSecond < 0 {
		p.add("requests_per_second", "must be >= 0 (got %g)", t.RequestsPerSecond)
	}
	if t.MaxResponseBytes < minResponseBytes || t.MaxResponseBytes > maxResponseBytes {
		p.add("max_response_bytes", "must be between %s and %s (got %s)", ByteSize(minResponseBytes), ByteSize(maxResponseBytes), t.MaxResponseBytes)
	}
	if t.UnavailableAfter < minUnavailableAfter {
		p.add("unavailable_after", "must be at least %s (got %s)", minUnavailableAfter, t.UnavailableAfter)
	}
	return p
}

// Validate checks one entry of services; each problem starts with the path
// of the field within the entry (sid: ...). That no two entries name the
// same service is checked by Config.Validate.
func (s Service) Validate() []string {
	var p problems
	if !twilio.ServiceSIDPattern.MatchString(s.SID) {
		p.add("sid", "must match %s (got %q)", twilio.ServiceSIDPattern, s.SID)
	}
	if !s.Users.All && len(s.Users.List) == 0 {
		p.add("users", `is required: "all" or a list of user SIDs and identities`)
	}
	seenUser := map[string]int{}
	for j, u := range s.Users.List {
		upath := fmt.Sprintf("users[%d]", j)
		switch k, dup := seenUser[u]; {
		case u == "":
			p.add(upath, "must not be empty")
		case dup:
			p.add(upath, "%q is already listed as users[%d]", u, k)
		default:
			seenUser[u] = j
		}
	}
	switch {
	case s.Strategy != "" && !slices.Contains(worker.Strategies, s.Strategy):
		p.add("strategy", "must be one of auto, per_user, service (got %q)", s.Strategy)
	case s.Strategy == worker.StrategyService && !s.Users.All:
		p.add("strategy", "service reads every user through the service's Bindings list and needs users: all (got a list of %d users); use per_user or auto", len(s.Users.List))
	}
	seenType := map[string]bool{}
	for j, bt := range s.BindingTypes {
		bpath := fmt.Sprintf("binding_types[%d]", j)
		switch {
		case bt != "apn" && bt != "fcm" && bt != "gcm":
			p.add(bpath, "must be one of apn, fcm, gcm (got %q)", bt)
		case seenType[bt]:
			p.add(bpath, "%q is listed twice", bt)
		}
		seenType[bt] = true
	}
	return p
}

// ValidateStaging checks the staging field: a local directory, or a
// gs://bucket/prefix URI that the GCS store (staging/gcs) accepts: both
// check it with staging.ParseGCSURI, so that what validates here is what a
// run opens. Each problem starts with "staging: ".
func ValidateStaging(s string) []string {
	var p problems
	switch {
	case s == "":
		p.add("staging", "is required: a local directory or gs://bucket/prefix")
	case strings.HasPrefix(s, "gs://"):
		bucket, _, _ := strings.Cut(strings.TrimPrefix(s, "gs://"), "/")
		if !staging.ValidBucketName(bucket) {
			if strings.Contains(bucket, "@") {
				p.add("staging", "the bucket name is not a valid GCS bucket name (the value is not shown: it may hold credentials)")
			} else {
				p.add("staging", "bucket name %q is not a valid GCS bucket name", bucket)
			}
		} else if _, _, err := staging.ParseGCSURI(s); err != nil {
			p.add("staging", "the prefix after the bucket must be a slash-separated path without empty, . or .. elements %s", gotURL(s))
		}
	case strings.Contains(s, "://"):
		p.add("staging", "must be a local directory or gs://bucket/prefix %s", gotURL(s))
	}
	return p
}

// Validate checks the warehouse sections given; each problem starts with
// the path of the field within the section (bigquery.dataset: ...). That
// at least one is given is checked by Config.Validate.
func (w Warehouse) Validate() []string {
	var p problems
	if w.Local != nil {
		p.section("local", w.Local.Validate())
	}
	if w.BigQuery != nil {
		p.section("bigquery", w.BigQuery.Validate())
	}
	return p
}

// Validate checks the warehouse.local section.
func (l Local) Validate() []string {
	var p problems
	if l.Path == "" {
		p.add("path", "is required")
	}
	return p
}

// Validate checks the warehouse.bigquery section, after SetDefaults: an
// empty table or location is a problem here.
func (bq BigQuery) Validate() []string {
	var p problems
	if !projectPattern.MatchString(bq.Project) {
		p.add("project", "must be a Google Cloud project ID (got %q)", bq.Project)
	}
	if !datasetPattern.MatchString(bq.Dataset) {
		p.add("dataset", "must be 1 to 1000 letters, digits and underscores (got %q)", bq.Dataset)
	}
	if !tablePattern.MatchString(bq.Table) {
		p.add("table", "must be letters, digits and underscores (got %q)", bq.Table)
	}
	if bq.Location == "" {
		p.add("location", "is required")
	}
	if bq.PartitionExpirationDays < 0 {
		p.add("partition_expiration_days", "must be >= 0 (got %d)", bq.PartitionExpirationDays)
	}
	if bq.Endpoint != "" {
		if u, err := url.Parse(bq.Endpoint); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			p.add("endpoint", "must be an absolute http(s) URL %s", gotURL(bq.Endpoint))
		}
	}
	return p
}

// Validate checks the export section.
func (e Export) Validate() []string {
	var p problems
	if e.PartRows < 1 {
		p.add("part_rows", "must be > 0 (got %d)", e.PartRows)
	}
	if e.BatchRows < 1 || e.BatchRows > 1<<20 {
		p.add("batch_rows", "must be between 1 and 1048576 (got %d)", e.BatchRows)
	}
	if e.RowGroupRows < e.BatchRows {
		p.add("row_group_rows", "must be at least export.batch_rows (%d) (got %d)", e.BatchRows, e.RowGroupRows)
	}
	if e.BatchBytes < minBatchBytes || e.BatchBytes > maxBatchBytes {
		p.add("batch_bytes", "must be between %s and %s (got %s)", ByteSize(minBatchBytes), ByteSize(maxBatchBytes), e.BatchBytes)
	}
	if e.RowGroupBytes < e.BatchBytes || e.RowGroupBytes > maxRowGroupBytes {
		p.add("row_group_bytes", "must be between export.batch_bytes (%s) and %s (got %s)", e.BatchBytes, ByteSize(maxRowGroupBytes), e.RowGroupBytes)
	}
	if e.CommitInterval < 100*time.Millisecond {
		p.add("commit_interval", "must be at least 100ms (got %s)", e.CommitInterval)
	}
	p.section("columns", e.Columns.Validate())
	return p
}

// Validate checks the metrics section.
func (m Metrics) Validate() []string {
	var p problems
	if m.Pushgateway != "" {
		if u, err := url.Parse(m.Pushgateway); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			p.add("pushgateway", "must be an absolute http(s) URL %s", gotURL(m.Pushgateway))
		}
	}
	return p
}

// Validate checks the log section.
func (l Log) Validate() []string {
	var p problems
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		p.add("level", "must be one of debug, info, warn, error (got %q)", l.Level)
	}
	switch l.Format {
	case "auto", "json", "console":
	default:
		p.add("format", "must be one of auto, json, console (got %q)", l.Format)
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

// section records the problems of the section at path, each of which
// starts with the path of its field within the section.
func (p *problems) section(path string, sub []string) {
	for _, s := range sub {
		*p = append(*p, path+"."+s)
	}
}

// Bounds of the byte sizes and durations Validate checks.
const (
	minResponseBytes    = 1 << 10
	maxResponseBytes    = 1 << 30
	minUnavailableAfter = 10 * time.Second
	minBatchBytes       = 64 << 10
	// maxBatchBytes keeps every column of a record batch far below the
	// 2 GiB that Arrow's 32-bit offsets can address.
	maxBatchBytes    = 1 << 30
	maxRowGroupBytes = 4 << 30
)

// Page sizes Twilio's current OpenAPI description of Chat v2 allows (it
// said 1000 before 2025-10); the worker falls back to them when Twilio
// rejects a larger one.
const (
	documentedPageSize      = twilio.MaxBindingsPageSize
	documentedUsersPageSize = twilio.MaxUsersPageSize
)

// Warnings returns what Validate accepts but is likely to cause trouble,
// one message per problem, each starting with the path of the field.
// `bindsync validate` prints them; run and serve log them at start.
func (c *Config) Warnings() []string {
	var w problems
	t := c.Twilio
	if t.PageSize > documentedPageSize {
		w.add("twilio.page_size", "%d is above the documented maximum of Twilio's current API (%d); Twilio may reject it; bindsync then falls back to %d",
			t.PageSize, documentedPageSize, documentedPageSize)
	}
	if t.UsersPageSize > documentedUsersPageSize {
		w.add("twilio.users_page_size", "%d is above the documented maximum of Twilio's current API (%d); Twilio may reject it; bindsync then falls back to %d",
			t.UsersPageSize, documentedUsersPageSize, documentedUsersPageSize)
	}
	for _, s := range []struct{ path, value string }{{"twilio.auth_token", t.AuthToken}, {"twilio.api_key_secret", t.APIKeySecret}} {
		if s.value != "" && len(s.value) < safetext.MinSecretLen {
			w.add(s.path, "is shorter than %d characters, too short to be told apart in text: bindsync cannot keep it out of logs and errors (Twilio's are 32)", safetext.MinSecretLen)
		}
	}
	w = append(w, c.Export.Columns.warnings()...)
	return w
}

// warnings says where the privacy policy leaves in clear what it hides
// elsewhere: an identity hashed or dropped in user_bindings is also in the
// users table's identity and, for users configured by identity, user.
func (c Columns) warnings() []string {
	var w problems
	if id := c.UserBindings.Identity; id == schemas.Hash || id == schemas.Drop {
		for _, f := range c.treatments()[2:] {
			if f.t == schemas.Keep {
				w.add("export.columns."+f.path, "is keep while export.columns.user_bindings.identity is %s: the users table holds identities in clear (set it to hash or drop too)", id)
			}
		}
	}
	if c.HashKey != "" && !c.Policy().Hashes() {
		w.add("export.columns.hash_key", "is set but no column is hashed; it is not used")
	}
	return w
}

// gotURL is the "(got ...)" of an error about a URL, without the URL when
// it may hold credentials (anything before an @).
func gotURL(raw string) string {
	if strings.Contains(raw, "@") {
		return "(the value is not shown: it may hold credentials)"
	}
	return fmt.Sprintf("(got %q)", raw)
}

// isLoopback reports whether host names this machine: localhost, an
// address in 127.0.0.0/8, or ::1. Another name might resolve anywhere.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sidProblem says what is wrong with v, which should be prefix followed by
// 32 hexadecimal digits, without showing v: a value in the wrong field may
// be a secret (an auth token pasted into account_sid).
func sidProblem(v, prefix string) string {
	const digits = 32
	want := fmt.Sprintf("must be %s followed by %d hexadecimal digits", prefix, digits)
	if v == "" {
		return want + " (it is empty)"
	}
	var what []string
	if n := utf8.RuneCountInString(v); n != len(prefix)+digits {
		what = append(what, fmt.Sprintf("it has %d characters, not %d", n, len(prefix)+digits))
	}
	rest := v
	if r, ok := strings.CutPrefix(v, prefix); ok {
		rest = r
	} else {
		what = append(what, "it does not start with "+prefix)
		if len(v) > len(prefix) {
			rest = v[len(prefix):]
		}
	}
	if strings.IndexFunc(rest, func(r rune) bool { return !unicode.Is(unicode.ASCII_Hex_Digit, r) }) >= 0 {
		what = append(what, fmt.Sprintf("it holds characters other than hexadecimal digits after its first %d", len(prefix)))
	}
	if hexToken.MatchString(v) {
		what = append(what, "it looks like an auth token or key secret, not a SID")
	}
	return fmt.Sprintf("%s: %s (the value is not shown, in case it is a secret)", want, strings.Join(what, "; "))
}

// hexToken is the shape of a Twilio auth token.
var hexToken = regexp.MustCompile(`^[0-9a-fA-F]{32}$`)

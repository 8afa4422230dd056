package bq

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"google.golang.org/api/googleapi"
)

func apiErr(code int, reason, msg string) error {
	return fmt.Errorf("wrapped: %w", &googleapi.Error{Code: code, Message: msg, Errors: []googleapi.ErrorItem{{Reason: reason, Message: msg}}})
}

func TestExplain(t *testing.T) {
	sc := scope{project: "p", dataset: "d", table: "t$20261126", location: "US", principal: "service account x@p.iam.gserviceaccount.com"}
	tests := []struct {
		name string
		err  error
		want string
		kind error
	}{
		{
			name: "job in another location",
			err:  apiErr(404, "notFound", "Not found: Dataset p:d was not found in location EU"),
			want: "bigquery: dataset p:d is not in location EU: set warehouse.bigquery.location to the dataset's location",
			kind: ErrLocation,
		},
		{
			name: "credentials refused",
			err:  apiErr(401, "authError", "Request had invalid authentication credentials."),
			want: "bigquery: the credentials were refused while trying to load (Request had invalid authentication credentials.): check warehouse.bigquery.credentials_file or the Application Default Credentials",
			kind: ErrPermission,
		},
		{
			name: "rate limit answered 403",
			err:  apiErr(403, "rateLimitExceeded", "Exceeded rate limits: too many table update operations for this table"),
			want: "bigquery: quota exceeded on p:d.t$20261126 while trying to load (Exceeded rate limits: too many table update operations for this table): wait for the quota to refill and run again (the checkpoint keeps the progress), or ask for a higher quota",
			kind: ErrQuota,
		},
		{
			name: "job denied",
			err:  &bigquery.Error{Reason: "accessDenied", Message: "Access Denied: Table p:d.t: Permission bigquery.tables.updateData denied"},
			want: "bigquery: permission denied on dataset p:d: grant roles/bigquery.dataEditor on the dataset and roles/bigquery.jobUser on the project to service account x@p.iam.gserviceaccount.com",
			kind: ErrPermission,
		},
		{
			name: "table gone",
			err:  &bigquery.Error{Reason: "notFound", Message: "Not found: Table p:d.t"},
			want: "bigquery: p:d.t$20261126 not found while trying to load (Not found: Table p:d.t): run again to create it",
			kind: ErrNotFound,
		},
		{
			name: "other job failure",
			err:  &bigquery.Error{Reason: "invalid", Message: "Error while reading data, error message: bad parquet"},
			want: `bigquery: load failed on p:d.t$20261126: Error while reading data, error message: bad parquet (reason "invalid")`,
			kind: ErrJobFailed,
		},
		{
			name: "other HTTP failure",
			err:  apiErr(400, "invalid", "Invalid table ID"),
			want: `bigquery: load failed on p:d.t$20261126: Invalid table ID (HTTP 400, reason "invalid")`,
			kind: ErrJobFailed,
		},
		{
			name: "not from BigQuery",
			err:  context.Canceled,
			want: "bigquery: load: context canceled",
			kind: context.Canceled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := sc.explain("load", tt.err)
			if got.Error() != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			if !errors.Is(got, tt.kind) {
				t.Errorf("%v is not %v", got, tt.kind)
			}
			if _, isBQ := got.(*Error); isBQ && sc.explain("other", got) != got {
				t.Errorf("explaining twice changed the error")
			}
		})
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		err       error
		job, call bool
	}{
		{&bigquery.Error{Reason: "backendError"}, true, true},
		{&bigquery.Error{Reason: "invalid"}, false, false},
		{&bigquery.Error{Reason: "quotaExceeded"}, false, false},
		{apiErr(503, "backendError", "unavailable"), true, true},
		{apiErr(500, "", "internal"), false, true},
		{apiErr(403, "accessDenied", "denied"), false, false},
		{errors.New("connection reset by peer"), false, true},
		{context.Canceled, false, false},
		{fmt.Errorf("post: %w", context.DeadlineExceeded), false, false},
	}
	for _, tt := range tests {
		if got := retryableJob(tt.err); got != tt.job {
			t.Errorf("retryableJob(%v) = %v", tt.err, got)
		}
		if got := retryableCall(tt.err); got != tt.call {
			t.Errorf("retryableCall(%v) = %v", tt.err, got)
		}
	}
}

func TestEndpointURL(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"http://127.0.0.1:9050", "http://127.0.0.1:9050/bigquery/v2/", ""},
		{"http://127.0.0.1:9050/", "http://127.0.0.1:9050/bigquery/v2/", ""},
		{"https://bq.example.com/bigquery/v2", "https://bq.example.com/bigquery/v2/", ""},
		{"https://bq.example.com/custom/v2/", "https://bq.example.com/custom/v2/", ""},
		{"127.0.0.1:9050", "", `bigquery: endpoint must be an absolute http(s) URL (got "127.0.0.1:9050")`},
	}
	for _, tt := range tests {
		got, err := EndpointURL(tt.in)
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && err.Error() != tt.err) {
			t.Errorf("EndpointURL(%q) = %q, %v; want %q, %q", tt.in, got, err, tt.want, tt.err)
		}
	}
	for host, want := range map[string]bool{
		"http://127.0.0.1:1": true, "http://localhost:1": true, "http://[::1]:1": true,
		"https://bigquery.googleapis.com": false, "http://10.0.0.1:1": false,
	} {
		if got := isLoopback(host); got != want {
			t.Errorf("isLoopback(%q) = %v", host, got)
		}
	}
}

func TestCredentialsFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	sa := write("sa.json", `{"type":"service_account","client_email":"bindsync@p.iam.gserviceaccount.com","private_key":"x"}`)
	ext := write("ext.json", `{"type":"external_account","service_account_impersonation_url":"https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/loader@p.iam.gserviceaccount.com:generateAccessToken"}`)
	user := write("user.json", `{"type":"authorized_user","client_id":"x"}`)
	bad := write("bad.json", `{"type":"gdch_service_account"}`)
	tests := []struct {
		path, who, err string
	}{
		{sa, "service account bindsync@p.iam.gserviceaccount.com", ""},
		{ext, "service account loader@p.iam.gserviceaccount.com", ""},
		{user, "the account in " + user, ""},
		{bad, "", `bigquery: credentials file ` + bad + ` has type "gdch_service_account", want one of service_account, authorized_user, external_account, impersonated_service_account`},
	}
	for _, tt := range tests {
		_, who, err := readCredentialsFile(tt.path)
		if who != tt.who || (err == nil) != (tt.err == "") || (err != nil && err.Error() != tt.err) {
			t.Errorf("readCredentialsFile(%s) = %q, %v; want %q, %q", tt.path, who, err, tt.who, tt.err)
		}
	}
	if _, _, err := NewClient(context.Background(), ClientConfig{Project: "p", CredentialsFile: filepath.Join(dir, "missing.json")}); err == nil {
		t.Error("NewClient accepted a missing credentials file")
	}
}

func TestJobID(t *testing.T) {
	jobID := func(table, token string) string {
		pub := &publish{p: &Publisher{opts: Options{Table: table}}, token: token}
		pub.s.Date = time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
		return pub.jobID("load_p0003", 2)
	}
	if got, want := jobID("user_bindings", "20261126T020000Z-ab12cd"), "bindsync_user_bindings_20261126_20261126T020000Z-ab12cd_load_p0003_a2"; got != want {
		t.Errorf("jobID = %s, want %s", got, want)
	}
	long := strings.Repeat("very_long_table_name_", 50)
	a, b := jobID(long+"a", "r"), jobID(long+"b", "r")
	if a == b || len(a) > 200 || !strings.HasPrefix(a, "bindsync_"+long[:80]+"_") {
		t.Errorf("job IDs of long table names: %s, %s", a, b)
	}
	if got := sanitizeID("a b/c:d-e_f"); got != "a_b_c_d-e_f" {
		t.Errorf("sanitizeID = %s", got)
	}
}

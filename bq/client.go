package bq

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"cloud.google.com/go/bigquery"
	"google.golang.org/api/option"
)

// ClientConfig says how to reach BigQuery and as whom.
type ClientConfig struct {
	// Project is the project that runs the jobs and holds the dataset.
	Project string
	// Endpoint overrides the API address, for emulators and tests. A bare
	// origin such as http://127.0.0.1:9050 gets the REST path
	// /bigquery/v2/ appended; a URL with a path is used as it is. The
	// client sends uploads to /upload/bigquery/v2/ on the same host.
	Endpoint string
	// CredentialsFile is a service account (or other) JSON key file. Empty
	// means Application Default Credentials, or no credentials at all when
	// Endpoint is on the loopback interface (an emulator).
	CredentialsFile string
}

// NewClient builds a BigQuery client for cfg. It also returns a short
// description of the identity in use, for error messages that say whom
// to grant a role to.
func NewClient(ctx context.Context, cfg ClientConfig) (client *bigquery.Client, principal string, err error) {
	var opts []option.ClientOption
	if cfg.Endpoint != "" {
		ep, err := EndpointURL(cfg.Endpoint)
		if err != nil {
			return nil, "", err
		}
		opts = append(opts, option.WithEndpoint(ep))
	}
	switch {
	case cfg.CredentialsFile != "":
		typ, who, err := readCredentialsFile(cfg.CredentialsFile)
		if err != nil {
			return nil, "", err
		}
		opts = append(opts, option.WithAuthCredentialsFile(typ, cfg.CredentialsFile))
		principal = who
	case cfg.Endpoint != "" && isLoopback(cfg.Endpoint):
		opts = append(opts, option.WithoutAuthentication())
		principal = "the credentials in use"
	default:
		principal = adcPrincipal()
	}
	client, err = bigquery.NewClient(ctx, cfg.Project, opts...)
	if err != nil {
		return nil, "", fmt.Errorf("bigquery: create client for project %s: %w", cfg.Project, err)
	}
	return client, principal, nil
}

// EndpointURL maps a configured endpoint to the client's base URL: a bare
// origin gets /bigquery/v2/ appended, a path is kept, and the result
// always ends in a slash.
func EndpointURL(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("bigquery: endpoint must be an absolute http(s) URL (got %q)", endpoint)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/bigquery/v2/"
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	return u.String(), nil
}

// isLoopback reports whether the endpoint's host is this machine, where
// an emulator needs no credentials.
func isLoopback(endpoint string) bool {
	u, err := url.Parse(endpoint)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// credentialsFile holds the fields of a Google credentials file that say
// what kind it is and whom it authenticates.
type credentialsFile struct {
	Type        string `json:"type"`
	ClientEmail string `json:"client_email"`
	// ServiceAccountImpersonationURL ends in the impersonated account's
	// e-mail followed by ":generateAccessToken".
	ServiceAccountImpersonationURL string `json:"service_account_impersonation_url"`
}

// credentialTypes are the credential file types bindsync accepts; the
// type is checked so that an unexpected kind of file is not loaded.
var credentialTypes = map[string]option.CredentialsType{
	"service_account":              option.ServiceAccount,
	"authorized_user":              option.AuthorizedUser,
	"external_account":             option.ExternalAccount,
	"impersonated_service_account": option.ImpersonatedServiceAccount,
}

// CredentialsType returns the type of a credentials file, checked as
// NewClient checks it, for other clients that use the same file.
func CredentialsType(path string) (option.CredentialsType, error) {
	typ, _, err := readCredentialsFile(path)
	return typ, err
}

// readCredentialsFile reads the type of a credentials file and names the
// identity it holds.
func readCredentialsFile(path string) (option.CredentialsType, string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("bigquery: read credentials file: %w", err)
	}
	var f credentialsFile
	if err := json.Unmarshal(data, &f); err != nil {
		return "", "", fmt.Errorf("bigquery: credentials file %s is not JSON: %w", path, err)
	}
	typ, ok := credentialTypes[f.Type]
	if !ok {
		return "", "", fmt.Errorf("bigquery: credentials file %s has type %q, want one of service_account, authorized_user, external_account, impersonated_service_account", path, f.Type)
	}
	return typ, describeCredentials(f, path), nil
}

func describeCredentials(f credentialsFile, path string) string {
	if f.ClientEmail != "" {
		return "service account " + f.ClientEmail
	}
	if u := f.ServiceAccountImpersonationURL; u != "" {
		if i := strings.LastIndex(u, "/"); i >= 0 {
			if email, _, ok := strings.Cut(u[i+1:], ":"); ok && strings.Contains(email, "@") {
				return "service account " + email
			}
		}
	}
	return "the account in " + path
}

// adcPrincipal names the Application Default Credentials as well as can be
// told without asking a server.
func adcPrincipal() string {
	if path := os.Getenv("GOOGLE_APPLICATION_CREDENTIALS"); path != "" {
		if _, who, err := readCredentialsFile(path); err == nil {
			return who
		}
	}
	return "the Application Default Credentials (on GKE with Workload Identity: the Google service account bound to the pod's Kubernetes service account)"
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/api/googleapi"

	"github.com/bindsync/bindsync/bq"
	"github.com/bindsync/bindsync/config"
	"github.com/bindsync/bindsync/internal/safetext"
	"github.com/bindsync/bindsync/twilio"
)

// `bindsync validate --check-credentials` asks each service the
// configuration names whether its credentials work, as cheaply as it can
// and without writing anything: one authenticated request per Twilio
// service, a listing of the staging prefix, a read of the BigQuery
// dataset's metadata. A run finds the same problems, but only after it has
// started; an operator setting up a machine or rotating a secret wants to
// know at once.

// credentialCheckTimeout bounds each check: the BigQuery client retries
// server errors until its context ends, and a check must not hang.
const credentialCheckTimeout = 30 * time.Second

// credentialCheck is one check: what it checks (kind and target, as
// printed) and how.
type credentialCheck struct {
	kind, target string
	// run returns a short note for an OK line, or why the check failed: a
	// usageError when the operator must change the configuration, the
	// credentials or a permission (exit 2), any other error when trying
	// later may pass (exit 1).
	run func(ctx context.Context) (string, error)
}

// credentialChecks lists the checks of cfg, read from file, in the order
// the configuration names what they check.
func credentialChecks(cfg *config.Config, file string) []credentialCheck {
	var checks []credentialCheck
	for i, s := range cfg.Services {
		checks = append(checks, credentialCheck{
			kind: "twilio", target: "service " + s.SID,
			run: func(ctx context.Context) (string, error) { return checkTwilio(ctx, cfg, file, i) },
		})
	}
	checks = append(checks, credentialCheck{
		kind: "staging", target: cfg.Staging,
		run: func(ctx context.Context) (string, error) { return checkStaging(ctx, cfg) },
	})
	if l := cfg.Warehouse.Local; l != nil {
		checks = append(checks, credentialCheck{
			kind: "warehouse", target: "local " + l.Path,
			run: func(context.Context) (string, error) { return checkLocalDir("warehouse.local.path", l.Path) },
		})
	}
	if b := cfg.Warehouse.BigQuery; b != nil {
		checks = append(checks, credentialCheck{
			kind: "bigquery", target: "dataset " + b.Project + ":" + b.Dataset,
			run: func(ctx context.Context) (string, error) { return checkBigQuery(ctx, b) },
		})
	}
	return checks
}

// checkCredentials runs every check of cfg, printing one line each to w,
// and returns nil only when all passed. Its error exits with 2 when a
// failure calls for a change of configuration, credentials or
// permissions, as a run's would; with 1 when every failure may pass by
// itself (a network or server error).
func checkCredentials(ctx context.Context, cfg *config.Config, file string, w io.Writer, red *safetext.Redactor) error {
	checks := credentialChecks(cfg, file)
	failed, mustFix := 0, false
	for _, c := range checks {
		cctx, cancel := context.WithTimeout(ctx, credentialCheckTimeout)
		note, err := c.run(cctx)
		cancel()
		verdict := "OK"
		if note != "" {
			verdict += ": " + note
		}
		if err != nil {
			failed++
			var u usageError
			mustFix = mustFix || errors.As(err, &u)
			verdict = "FAILED: " + checkReason(err, red)
		}
		fmt.Fprintf(w, "  %-9s  %s: %s\n", c.kind, clean(red, c.target), clean(red, verdict))
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if failed == 0 {
		return nil
	}
	if mustFix {
		return usagef("%d of %d credential checks failed: fix what they name, then check again", failed, len(checks))
	}
	return fmt.Errorf("%d of %d credential checks failed on errors that may pass (network, server): check again later", failed, len(checks))
}

// checkReason is the text of a failed check on one line: an error's hint,
// on a line of its own elsewhere, follows it after a semicolon.
func checkReason(err error, red *safetext.Redactor) string {
	return oneLine(strings.ReplaceAll(errorText(err, red), "\n", "; "), errorBytes)
}

// checkTwilio asks Twilio for the first user of the i-th service: one GET
// with the configured credentials, which needs the same access as a run,
// reads nothing but one user, and tells a wrong credential (401/403) from
// a service the account does not hold (404).
func checkTwilio(ctx context.Context, cfg *config.Config, file string, i int) (string, error) {
	t := cfg.Twilio
	client, err := twilio.New(twilio.Config{
		BaseURL:        t.BaseURL,
		Username:       t.Username(),
		Password:       t.Password(),
		UserAgent:      "bindsync/" + version,
		RequestTimeout: t.RequestTimeout,
		// One retry for a 429 or a server error, soon after: a check
		// reports what it sees rather than waiting Twilio out.
		MaxAttempts:  2,
		BackoffMax:   2 * time.Second,
		MaxInFlight:  1,
		MaxBodyBytes: int64(t.MaxResponseBytes),
	})
	if err != nil {
		return "", usagef("twilio: %v", err)
	}
	sid := cfg.Services[i].SID
	_, err = client.ListUsers(ctx, twilio.UsersQuery{ServiceSID: sid, PageSize: 1})
	var apiErr *twilio.APIError
	status := 0
	if errors.As(err, &apiErr) {
		status = apiErr.Status
	}
	switch {
	case err == nil:
		return "credentials accepted, service found", nil
	case errors.Is(err, twilio.ErrUnauthorized):
		keys := "twilio.account_sid and twilio.auth_token"
		if t.APIKeySID != "" {
			keys = "twilio.api_key_sid and twilio.api_key_secret"
		}
		return "", usagef("Twilio refused the credentials (HTTP %d): check %s in %s", status, keys, file)
	case errors.Is(err, twilio.ErrNotFound):
		return "", usagef("Twilio knows no such service in this account (HTTP %d): check services[%d].sid in %s, and that the credentials are those of the account that holds it", status, i, file)
	}
	return "", err
}

// checkStaging opens the staging store as a run does, which for a bucket
// lists at most one object under the prefix: the bucket exists and the
// identity may list it. It writes nothing, so a missing write permission
// shows only at the first run.
func checkStaging(ctx context.Context, cfg *config.Config) (string, error) {
	if !cfg.StagingIsGCS() {
		return checkLocalDir("staging", cfg.Staging)
	}
	store, err := openGCSStaging(ctx, cfg)
	if err != nil {
		return "", err
	}
	if c, ok := store.(io.Closer); ok {
		c.Close()
	}
	return "bucket found, objects under the prefix can be listed (nothing was written)", nil
}

// checkLocalDir checks, without creating it, that dir is a directory or
// can be made one by the first run: its nearest existing ancestor is a
// directory.
func checkLocalDir(key, dir string) (string, error) {
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		return "directory exists", nil
	case err == nil:
		return "", usagef("%s %s exists and is not a directory", key, dir)
	case !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
		return "", usagef("%s: %v", key, err)
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				return "", usagef("%s %s cannot be created: %s is not a directory", key, dir, p)
			}
			return "directory does not exist yet; the first run creates it", nil
		}
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return "", usagef("%s: %v", key, err)
		}
		if parent := filepath.Dir(p); parent == p {
			return "", usagef("%s %s cannot be created: no part of the path exists", key, dir)
		}
	}
}

// checkBigQuery reads the dataset's metadata with the configured identity
// and checks its location: what a run checks first, and nothing it
// creates.
func checkBigQuery(ctx context.Context, c *config.BigQuery) (string, error) {
	client, principal, err := bq.NewClient(ctx, bq.ClientConfig{Project: c.Project, Endpoint: c.Endpoint, CredentialsFile: c.CredentialsFile})
	if err != nil {
		return "", usagef("warehouse.bigquery: %v", err)
	}
	defer client.Close()
	name := c.Project + ":" + c.Dataset
	md, err := client.DatasetInProject(c.Project, c.Dataset).Metadata(ctx)
	if err != nil {
		var gerr *googleapi.Error
		if !errors.As(err, &gerr) {
			return "", fmt.Errorf("read dataset %s: %w", name, err)
		}
		switch gerr.Code {
		case http.StatusUnauthorized:
			return "", usagef("BigQuery refused the credentials (HTTP 401): check warehouse.bigquery.credentials_file or the Application Default Credentials")
		case http.StatusForbidden:
			return "", usagef("permission denied reading dataset %s (HTTP 403): grant roles/bigquery.dataEditor on the dataset and roles/bigquery.jobUser on the project to %s", name, principal)
		case http.StatusNotFound:
			return "", usagef("dataset %s not found (HTTP 404): create it (bq mk --location=%s --dataset %s) or fix warehouse.bigquery.project and dataset", name, c.Location, name)
		}
		return "", fmt.Errorf("read dataset %s: %w", name, err)
	}
	if !strings.EqualFold(md.Location, c.Location) {
		return "", usagef("dataset %s is in location %s, but warehouse.bigquery.location is %s: set it to %s", name, md.Location, c.Location, md.Location)
	}
	return fmt.Sprintf("dataset found in location %s, read as %s", md.Location, principal), nil
}

package bq

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"cloud.google.com/go/bigquery"
	"google.golang.org/api/googleapi"
)

// Sentinel errors. Every error the Publisher returns for a BigQuery
// problem wraps one of them, so callers can tell a problem the operator
// must fix (permissions, names, location, schema) from one that a later
// run may not meet again (quota, a failed job).
var (
	// ErrPermission: the credentials lack a role on the project, dataset
	// or staging bucket, or were refused.
	ErrPermission = errors.New("permission denied")
	// ErrNotFound: the project, dataset, table or a staging file does not
	// exist.
	ErrNotFound = errors.New("not found")
	// ErrLocation: the dataset is in another location than configured.
	ErrLocation = errors.New("wrong location")
	// ErrSchema: the table's schema or partitioning cannot take the data,
	// and bindsync will not change it (it only adds columns).
	ErrSchema = errors.New("schema mismatch")
	// ErrQuota: a BigQuery quota or rate limit was hit.
	ErrQuota = errors.New("quota exceeded")
	// ErrJobFailed: a load or copy job failed for another reason, or kept
	// failing after every attempt.
	ErrJobFailed = errors.New("job failed")
)

// Error is a BigQuery failure explained in one sentence for the operator:
// what failed, on which table or dataset, and what to change. It wraps
// its kind (one of the sentinel errors) and the client's error.
type Error struct {
	// Kind is one of the sentinel errors above.
	Kind error
	// Msg is the sentence shown to the user, without the "bigquery: " prefix.
	Msg string
	// Err is the underlying error of the client, if any.
	Err error
}

func (e *Error) Error() string { return "bigquery: " + e.Msg }

// Unwrap exposes both the kind and the client's error to errors.Is/As.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// failure is what BigQuery said about one failed call or job, taken from
// a *googleapi.Error (HTTP answer) or a *bigquery.Error (job errorResult).
type failure struct {
	code    int // HTTP status; 0 for a job's errorResult
	reason  string
	message string
}

// failureOf extracts the status, reason and message of err; ok is false
// when err did not come from BigQuery (network, context, local I/O).
func failureOf(err error) (f failure, ok bool) {
	var gerr *googleapi.Error
	if errors.As(err, &gerr) {
		f = failure{code: gerr.Code, message: gerr.Message}
		if len(gerr.Errors) > 0 {
			f.reason = gerr.Errors[0].Reason
			if f.message == "" {
				f.message = gerr.Errors[0].Message
			}
		}
		return f, true
	}
	var jerr *bigquery.Error
	if errors.As(err, &jerr) {
		return failure{reason: jerr.Reason, message: jerr.Message}, true
	}
	return failure{}, false
}

// isDuplicate reports a 409 "duplicate": the job ID (or table) exists.
func isDuplicate(err error) bool {
	f, ok := failureOf(err)
	return ok && (f.reason == "duplicate" || f.code == http.StatusConflict)
}

// isNotFound reports a 404 for the object asked for.
func isNotFound(err error) bool {
	f, ok := failureOf(err)
	return ok && (f.code == http.StatusNotFound || f.reason == "notFound")
}

// retryableJobReasons are errorResult reasons of failed jobs that another
// attempt under a new job ID may not meet.
var retryableJobReasons = []string{"backendError", "internalError", "jobBackendError", "jobInternalError", "rateLimitExceeded", "timeout"}

// retryableJob reports whether a job that failed with err is worth another
// attempt in the same run.
func retryableJob(err error) bool {
	f, ok := failureOf(err)
	if !ok {
		return false
	}
	for _, r := range retryableJobReasons {
		if f.reason == r {
			return true
		}
	}
	return false
}

// retryableCall reports whether a request that failed with err (job insert
// or poll) may succeed if sent again. The client already retries most of
// these without media; uploads are not retried by the client.
func retryableCall(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	f, ok := failureOf(err)
	if !ok {
		// Transport errors: a reset connection, an unexpected EOF.
		return true
	}
	return f.code >= 500 || f.reason == "backendError" || f.reason == "rateLimitExceeded" || f.reason == "internalError"
}

// scope names what an operation touched, for messages.
type scope struct {
	project   string
	dataset   string
	table     string // "" for dataset-level operations; may hold a $decorator
	location  string
	principal string
}

func (s scope) datasetName() string { return s.project + ":" + s.dataset }

func (s scope) tableName() string {
	if s.table == "" {
		return s.datasetName()
	}
	return s.datasetName() + "." + s.table
}

var (
	notFoundProject  = regexp.MustCompile(`Not found: Project ([^\s,;]+)`)
	notFoundLocation = regexp.MustCompile(`was not found in location ([A-Za-z0-9-]+)`)
	gcsURI           = regexp.MustCompile(`gs://[^\s,;]+`)
)

// explain turns err into one sentence naming what failed and what to fix.
// Errors that did not come from BigQuery (context cancellation, network,
// local files) are returned as they are; what names the operation.
func (s scope) explain(what string, err error) error {
	if err == nil {
		return nil
	}
	var done *Error
	if errors.As(err, &done) {
		return err
	}
	f, ok := failureOf(err)
	if !ok {
		return fmt.Errorf("bigquery: %s: %w", what, err)
	}
	detail := strings.TrimSpace(f.message)
	switch {
	case f.reason == "quotaExceeded" || f.reason == "rateLimitExceeded" || f.code == http.StatusTooManyRequests:
		return &Error{Kind: ErrQuota, Err: err, Msg: fmt.Sprintf(
			"quota exceeded on %s while trying to %s (%s): wait for the quota to refill and run again (the checkpoint keeps the progress), or ask for a higher quota",
			s.tableName(), what, detail)}

	case f.code == http.StatusUnauthorized:
		return &Error{Kind: ErrPermission, Err: err, Msg: fmt.Sprintf(
			"the credentials were refused while trying to %s (%s): check warehouse.bigquery.credentials_file or the Application Default Credentials",
			what, detail)}

	case f.reason == "accessDenied" || f.code == http.StatusForbidden:
		if uri := findGCSURI(detail); uri != "" {
			return &Error{Kind: ErrPermission, Err: err, Msg: fmt.Sprintf(
				"permission denied reading %s for %s: grant roles/storage.objectViewer on the staging bucket to %s",
				uri, s.tableName(), s.principal)}
		}
		return &Error{Kind: ErrPermission, Err: err, Msg: fmt.Sprintf(
			"permission denied on dataset %s: grant roles/bigquery.dataEditor on the dataset and roles/bigquery.jobUser on the project to %s",
			s.datasetName(), s.principal)}

	case f.reason == "notFound" || f.code == http.StatusNotFound:
		return s.explainNotFound(what, detail, err)

	case f.reason == "invalid" && isSchemaMessage(detail):
		return &Error{Kind: ErrSchema, Err: err, Msg: fmt.Sprintf(
			"the data does not fit the schema of table %s (%s): bindsync only adds columns, so drop or rename the table, or set warehouse.bigquery.table to a new one",
			s.tableName(), detail)}
	}
	kind := ErrJobFailed
	if f.code != 0 {
		return &Error{Kind: kind, Err: err, Msg: fmt.Sprintf("%s failed on %s: %s (HTTP %d, reason %q)", what, s.tableName(), detail, f.code, f.reason)}
	}
	return &Error{Kind: kind, Err: err, Msg: fmt.Sprintf("%s failed on %s: %s (reason %q)", what, s.tableName(), detail, f.reason)}
}

func (s scope) explainNotFound(what, detail string, err error) error {
	if m := notFoundLocation.FindStringSubmatch(detail); m != nil {
		return &Error{Kind: ErrLocation, Err: err, Msg: fmt.Sprintf(
			"dataset %s is not in location %s: set warehouse.bigquery.location to the dataset's location",
			s.datasetName(), m[1])}
	}
	if m := notFoundProject.FindStringSubmatch(detail); m != nil {
		return &Error{Kind: ErrNotFound, Err: err, Msg: fmt.Sprintf(
			"project %s not found: check warehouse.bigquery.project, and that the BigQuery API is enabled in it",
			m[1])}
	}
	if uri := findGCSURI(detail); uri != "" {
		return &Error{Kind: ErrNotFound, Err: err, Msg: fmt.Sprintf(
			"staging file %s not found while loading %s: run again with --force to read the snapshot again",
			uri, s.tableName())}
	}
	if strings.Contains(detail, "Dataset") || s.table == "" {
		return &Error{Kind: ErrNotFound, Err: err, Msg: fmt.Sprintf(
			"dataset %s not found: create it (bq mk --location=%s --dataset %s) or fix warehouse.bigquery.dataset",
			s.datasetName(), s.location, s.datasetName())}
	}
	return &Error{Kind: ErrNotFound, Err: err, Msg: fmt.Sprintf(
		"%s not found while trying to %s (%s): run again to create it",
		s.tableName(), what, detail)}
}

// findGCSURI returns the first gs:// URI in a message, without the
// punctuation that may follow it.
func findGCSURI(msg string) string {
	return strings.TrimRight(gcsURI.FindString(msg), ":.")
}

// isSchemaMessage recognises BigQuery's messages about data that does not
// fit a table's schema.
func isSchemaMessage(msg string) bool {
	for _, s := range []string{"Provided Schema does not match", "has changed type", "has changed mode", "Cannot add fields", "is missing in new schema", "Incompatible table partitioning"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

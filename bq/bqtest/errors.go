package bqtest

import (
	"encoding/json"
	"fmt"
	"net/http"

	bigquery "google.golang.org/api/bigquery/v2"
)

// apiError is an HTTP error answer of the REST API. It is written in the
// JSON shape of Google's front ends, which googleapi.CheckResponse turns into
// a *googleapi.Error with Code, Message and Errors[0].Reason set.
type apiError struct {
	code    int
	reason  string
	message string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.code, e.reason, e.message)
}

func newAPIError(code int, reason, format string, args ...any) *apiError {
	return &apiError{code: code, reason: reason, message: fmt.Sprintf(format, args...)}
}

func errNotFound(format string, args ...any) *apiError {
	return newAPIError(http.StatusNotFound, "notFound", format, args...)
}

func errDuplicate(format string, args ...any) *apiError {
	return newAPIError(http.StatusConflict, "duplicate", format, args...)
}

func errInvalid(format string, args ...any) *apiError {
	return newAPIError(http.StatusBadRequest, "invalid", format, args...)
}

// statusNames maps HTTP codes to the canonical status names Google puts in
// error bodies.
var statusNames = map[int]string{
	http.StatusBadRequest:          "INVALID_ARGUMENT",
	http.StatusUnauthorized:        "UNAUTHENTICATED",
	http.StatusForbidden:           "PERMISSION_DENIED",
	http.StatusNotFound:            "NOT_FOUND",
	http.StatusMethodNotAllowed:    "INVALID_ARGUMENT",
	http.StatusConflict:            "ALREADY_EXISTS",
	http.StatusPreconditionFailed:  "FAILED_PRECONDITION",
	http.StatusTooManyRequests:     "RESOURCE_EXHAUSTED",
	http.StatusInternalServerError: "INTERNAL",
	http.StatusServiceUnavailable:  "UNAVAILABLE",
}

type errorBody struct {
	Error errorBodyInner `json:"error"`
}

type errorBodyInner struct {
	Code    int           `json:"code"`
	Message string        `json:"message"`
	Errors  []errorDetail `json:"errors"`
	Status  string        `json:"status,omitempty"`
}

type errorDetail struct {
	Message string `json:"message"`
	Domain  string `json:"domain"`
	Reason  string `json:"reason"`
}

func writeError(w http.ResponseWriter, e *apiError) {
	body := errorBody{Error: errorBodyInner{
		Code:    e.code,
		Message: e.message,
		Errors:  []errorDetail{{Message: e.message, Domain: "global", Reason: e.reason}},
		Status:  statusNames[e.code],
	}}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(e.code)
	_ = json.NewEncoder(w).Encode(body)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(v)
}

// jobError builds the errorResult of a job that ended in failure.
func jobError(reason, format string, args ...any) *bigquery.ErrorProto {
	return &bigquery.ErrorProto{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// schemaMismatch is the job error BigQuery gives when data does not fit a
// table's schema; message names the offending column.
func schemaMismatch(table, format string, args ...any) *bigquery.ErrorProto {
	return jobError("invalid", "Provided Schema does not match Table %s. %s", table, fmt.Sprintf(format, args...))
}

// Package bqtest runs a fake BigQuery REST server for tests, shaped like
// net/http/httptest: NewServer starts it on a loopback port and the real
// cloud.google.com/go/bigquery client talks to it.
//
// The fake is meant to be faithful rather than permissive. It answers with
// the status codes, reasons and messages BigQuery uses (404 notFound, 409
// duplicate, 400 invalid, 403 accessDenied), keeps every job ID it ever
// accepted (a failed job keeps its ID too), applies load and copy jobs
// atomically when they complete, enforces partition decorators and the rules
// for changing a table's schema, refuses a view whose query names a table
// of its project that does not exist (views are not otherwise run: query
// jobs are refused), and decodes Parquet and newline-delimited
// JSON media the way a load job would. Only the parts of the API a nightly
// loader needs are implemented: datasets, tables (including views),
// tabledata.list and insertAll, and load and copy jobs with multipart and
// resumable uploads. Query and extract jobs are refused with 400.
//
// Connect a client with
//
//	bigquery.NewClient(ctx, project,
//		option.WithEndpoint(srv.URL()+"/bigquery/v2/"),
//		option.WithoutAuthentication())
//
// The client sends uploads to /upload/bigquery/v2/... on the same host.
package bqtest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"

	bigquery "google.golang.org/api/bigquery/v2"
)

// Options configures a Server. The zero value serves project "test-project"
// in location US, finishes jobs at once and fails loads from gs:// URIs.
type Options struct {
	// Project is the only project that exists; requests for others get 404.
	Project string
	// Location is where datasets are created when the request names none,
	// and where jobs run when neither the job nor its dataset says.
	// Default "US".
	Location string
	// GCS reads the gs:// source URIs of load jobs. It is called when the
	// job is inserted. Nil makes every load from gs:// fail with notFound.
	GCS func(ctx context.Context, bucket, object string) ([]byte, error)
	// GCSList lists the objects under a prefix, for source URIs with a '*'
	// wildcard (the wildcard matches any suffix of the prefix before it).
	// Nil makes wildcard URIs fail with notFound.
	GCSList func(ctx context.Context, bucket, prefix string) ([]string, error)
	// JobDelay keeps each job RUNNING this long after it is inserted before
	// it runs and reaches DONE, so tests can stop a client mid-job. Zero
	// finishes jobs inside the insert call.
	JobDelay time.Duration
}

// Server is a running fake BigQuery. All methods are safe for concurrent
// use.
type Server struct {
	opts Options
	http *httptest.Server

	mu       sync.Mutex
	datasets map[string]*datasetState
	jobs     map[string]*jobState
	jobOrder []*jobState
	attempts map[string]int
	accepted map[string]int
	uploads  map[string]*uploadSession
	failNext []*bigquery.ErrorProto
	denies   []denyRule
	requests []string
	seq      int64
}

type datasetState struct {
	meta   *bigquery.Dataset
	tables map[string]*tableState
}

type denyRule struct {
	method string
	prefix string
	status int
	reason string
}

const (
	apiPrefix    = "/bigquery/v2/"
	uploadPrefix = "/upload/bigquery/v2/"
)

// NewServer starts a server on 127.0.0.1 with a random port. Call Close
// when done.
func NewServer(opts Options) *Server {
	if opts.Project == "" {
		opts.Project = "test-project"
	}
	if opts.Location == "" {
		opts.Location = "US"
	}
	s := &Server{
		opts:     opts,
		datasets: make(map[string]*datasetState),
		jobs:     make(map[string]*jobState),
		attempts: make(map[string]int),
		accepted: make(map[string]int),
		uploads:  make(map[string]*uploadSession),
	}
	s.http = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	return s
}

// URL is the server's base URL, such as http://127.0.0.1:41234. The client
// endpoint is URL()+"/bigquery/v2/".
func (s *Server) URL() string { return s.http.URL }

// Close shuts the server down and waits for requests in flight.
func (s *Server) Close() { s.http.Close() }

// CreateDataset creates a dataset directly, for test setup. An empty
// location means Options.Location. Creating an existing dataset does nothing.
func (s *Server) CreateDataset(id, location string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.datasets[id]; ok {
		return
	}
	s.addDatasetLocked(&bigquery.Dataset{
		DatasetReference: &bigquery.DatasetReference{ProjectId: s.opts.Project, DatasetId: id},
		Location:         location,
	})
}

// Rows returns the rows of a table, or of one partition ("20261126",
// "__NULL__") when partition is not empty, in partition order and then in
// the order they were written. Values are string, int64, float64, bool,
// []byte, time.Time (TIMESTAMP, UTC), civil.Date, civil.DateTime,
// civil.Time, []any (REPEATED, never nil), map[string]any (RECORD) or nil.
// Every column of the table's schema is a key. A missing table gives nil.
func (s *Server) Rows(dataset, table, partition string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked(time.Now())
	t := s.tableLocked(dataset, table)
	if t == nil {
		return nil
	}
	var out []map[string]any
	for _, r := range t.rows(partition) {
		out = append(out, materialize(r, schemaFields(t.meta.Schema)))
	}
	return out
}

// Table returns a copy of a table's metadata as tables.get would, or nil.
func (s *Server) Table(dataset, table string) *bigquery.Table {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked(time.Now())
	t := s.tableLocked(dataset, table)
	if t == nil {
		return nil
	}
	return cloneJSON(t.meta)
}

// ViewQuery returns the SQL of a view, or "" when there is no such view.
func (s *Server) ViewQuery(dataset, view string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tableLocked(dataset, view)
	if t == nil || t.meta.View == nil {
		return ""
	}
	return t.meta.View.Query
}

// Jobs returns copies of all accepted jobs in the order they were inserted.
func (s *Server) Jobs() []*bigquery.Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked(time.Now())
	out := make([]*bigquery.Job, 0, len(s.jobOrder))
	for _, j := range s.jobOrder {
		out = append(out, cloneJSON(j.meta))
	}
	return out
}

// Job returns a copy of the job with this ID, or nil.
func (s *Server) Job(jobID string) *bigquery.Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked(time.Now())
	j, ok := s.jobs[jobID]
	if !ok {
		return nil
	}
	return cloneJSON(j.meta)
}

// JobCount reports how many inserts of this job ID were accepted. BigQuery
// accepts a job ID once, so anything above 1 is a bug in the fake.
func (s *Server) JobCount(jobID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted[jobID]
}

// InsertAttempts reports how many jobs.insert requests named this job ID,
// including those rejected as duplicates. A resumable upload counts once.
func (s *Server) InsertAttempts(jobID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts[jobID]
}

// FailNextJobs makes the next n accepted jobs end DONE with
// status.errorResult {reason, message} without changing any table.
func (s *Server) FailNextJobs(n int, reason, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.failNext = append(s.failNext, &bigquery.ErrorProto{Reason: reason, Message: message})
	}
}

// Deny answers every later request whose method matches (empty matches
// any) and whose path starts with pathPrefix with an error of this status
// and reason, as BigQuery does when permission is missing (403
// accessDenied). Paths look like those in Requests, for example
// "/bigquery/v2/projects/p/datasets/d/tables" or
// "/upload/bigquery/v2/projects/p/jobs". The client retries 5xx statuses
// and the reasons backendError and rateLimitExceeded until its context ends.
func (s *Server) Deny(method, pathPrefix string, status int, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denies = append(s.denies, denyRule{method: method, prefix: pathPrefix, status: status, reason: reason})
}

// Requests returns "METHOD path" for every request received, in order,
// without the query string.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r.Method+" "+r.URL.Path)
	s.settleLocked(time.Now())
	denied := s.deniedLocked(r)
	s.mu.Unlock()
	if denied != nil {
		writeError(w, denied)
		return
	}
	var (
		body any
		err  *apiError
	)
	switch {
	case strings.HasPrefix(r.URL.Path, uploadPrefix):
		s.serveUpload(w, r, strings.TrimPrefix(r.URL.Path, uploadPrefix))
		return
	case strings.HasPrefix(r.URL.Path, apiPrefix):
		body, err = s.serveAPI(r, strings.Split(strings.TrimPrefix(r.URL.Path, apiPrefix), "/"))
	default:
		err = errNotFound("bqtest: no such path %s", r.URL.Path)
	}
	switch {
	case err != nil:
		writeError(w, err)
	case body == nil:
		w.WriteHeader(http.StatusNoContent)
	default:
		writeJSON(w, body)
	}
}

func (s *Server) deniedLocked(r *http.Request) *apiError {
	for _, d := range s.denies {
		if d.method != "" && !strings.EqualFold(d.method, r.Method) {
			continue
		}
		if !strings.HasPrefix(r.URL.Path, d.prefix) {
			continue
		}
		if d.reason == "accessDenied" {
			return newAPIError(d.status, d.reason, "Access Denied: %s: The caller does not have permission", r.URL.Path)
		}
		return newAPIError(d.status, d.reason, "Request %s %s failed: %s", r.Method, r.URL.Path, d.reason)
	}
	return nil
}

// serveAPI routes a request below /bigquery/v2/. A nil body with a nil
// error means 204 No Content.
func (s *Server) serveAPI(r *http.Request, segs []string) (any, *apiError) {
	if len(segs) < 3 || segs[0] != "projects" {
		return nil, errNotFound("bqtest: no such path %s", r.URL.Path)
	}
	if segs[1] != s.opts.Project {
		return nil, errNotFound("Not found: Project %s", segs[1])
	}
	rest := segs[2:]
	route := r.Method + " " + rest[0]
	switch {
	case len(rest) == 1 && route == "GET datasets":
		return s.listDatasets()
	case len(rest) == 1 && route == "POST datasets":
		return s.insertDataset(r)
	case len(rest) == 2 && route == "GET datasets":
		return s.getDataset(rest[1])
	case len(rest) == 2 && route == "DELETE datasets":
		return s.deleteDataset(r, rest[1])
	case len(rest) == 3 && rest[0] == "datasets" && rest[2] == "tables":
		switch r.Method {
		case http.MethodGet:
			return s.listTables(r, rest[1])
		case http.MethodPost:
			return s.insertTable(r, rest[1])
		}
	case len(rest) == 4 && rest[0] == "datasets" && rest[2] == "tables":
		switch r.Method {
		case http.MethodGet:
			return s.getTable(rest[1], rest[3])
		case http.MethodPatch:
			return s.patchTable(r, rest[1], rest[3], false)
		case http.MethodPut:
			return s.patchTable(r, rest[1], rest[3], true)
		case http.MethodDelete:
			return s.deleteTable(rest[1], rest[3])
		}
	case len(rest) == 5 && rest[0] == "datasets" && rest[2] == "tables" && rest[4] == "data" && r.Method == http.MethodGet:
		return s.listTableData(r, rest[1], rest[3])
	case len(rest) == 5 && rest[0] == "datasets" && rest[2] == "tables" && rest[4] == "insertAll" && r.Method == http.MethodPost:
		return s.insertAll(r, rest[1], rest[3])
	case len(rest) == 1 && route == "POST jobs":
		return s.insertJob(r)
	case len(rest) == 2 && route == "GET jobs":
		return s.getJob(r, rest[1])
	case len(rest) == 3 && route == "POST jobs" && rest[2] == "cancel":
		return s.cancelJob(r, rest[1])
	case rest[0] == "queries":
		return nil, errInvalid("bqtest: query jobs are not supported")
	}
	return nil, errNotFound("bqtest: no handler for %s %s", r.Method, r.URL.Path)
}

func (s *Server) tableLocked(dataset, table string) *tableState {
	ds, ok := s.datasets[dataset]
	if !ok {
		return nil
	}
	return ds.tables[table]
}

// nextEtagLocked returns a new entity tag; every change of a dataset or table
// gets one.
func (s *Server) nextEtagLocked() string {
	s.seq++
	return etagOf(s.seq)
}

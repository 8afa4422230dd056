package bqtest

import (
	"context"
	"crypto/rand"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	bigquery "google.golang.org/api/bigquery/v2"
)

var jobIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Job states as the API spells them.
const (
	stateRunning = "RUNNING"
	stateDone    = "DONE"
)

// jobState is an accepted job. Its input is read when it is inserted; its
// effect on tables happens all at once when it completes.
type jobState struct {
	meta     *bigquery.Job
	doneAt   time.Time
	fail     *bigquery.ErrorProto // set by FailNextJobs
	inputs   []inputFile
	inputErr *bigquery.ErrorProto // a source that could not be read
}

// inputFile is one source of a load job: uploaded media (uri "") or a
// gs:// object.
type inputFile struct {
	uri  string
	data []byte
}

func (j *jobState) running() bool { return j.meta.Status.State != stateDone }

// insertJob serves jobs.insert without media: load jobs from gs:// URIs
// and copy jobs.
func (s *Server) insertJob(r *http.Request) (any, *apiError) {
	var in bigquery.Job
	if err := decodeBody(r, &in); err != nil {
		return nil, err
	}
	s.countAttempt(&in)
	j, err := s.prepareJob(&in, false)
	if err != nil {
		return nil, err
	}
	var inputs []inputFile
	var inputErr *bigquery.ErrorProto
	if j.Configuration.Load != nil {
		inputs, inputErr = s.fetchSources(r.Context(), j.Configuration.Load.SourceUris)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.admitLocked(j); err != nil {
		return nil, err
	}
	return s.startLocked(j, inputs, inputErr), nil
}

func (s *Server) countAttempt(in *bigquery.Job) {
	if in.JobReference == nil || in.JobReference.JobId == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts[in.JobReference.JobId]++
}

// prepareJob validates an insert request as the API front end does,
// before any state is consulted, and fills the defaults BigQuery shows in
// a job's configuration.
func (s *Server) prepareJob(in *bigquery.Job, media bool) (*bigquery.Job, *apiError) {
	j := cloneJSON(in)
	if j.JobReference == nil {
		j.JobReference = &bigquery.JobReference{}
	}
	ref := j.JobReference
	switch {
	case ref.ProjectId == "":
		ref.ProjectId = s.opts.Project
	case ref.ProjectId != s.opts.Project:
		return nil, errNotFound("Not found: Project %s", ref.ProjectId)
	}
	if ref.JobId == "" {
		ref.JobId = "job_" + rand.Text()
	}
	if !validID(jobIDPattern, ref.JobId) {
		return nil, errInvalid("Invalid job ID %q. Job IDs must be alphanumeric (plus underscores and dashes) and must be at most 1024 characters long.", ref.JobId)
	}
	c := j.Configuration
	if c == nil {
		return nil, errInvalid("Required parameter is missing: configuration")
	}
	kinds := 0
	for _, set := range []bool{c.Load != nil, c.Copy != nil, c.Query != nil, c.Extract != nil} {
		if set {
			kinds++
		}
	}
	if kinds != 1 {
		return nil, errInvalid("A job configuration must have exactly one of load, copy, query or extract")
	}
	j.Kind = "bigquery#job"
	j.Status = nil
	j.Statistics = nil
	switch {
	case c.Query != nil:
		return nil, errInvalid("bqtest: query jobs are not supported")
	case c.Extract != nil:
		return nil, errInvalid("bqtest: extract jobs are not supported")
	case media && c.Load == nil:
		return nil, errInvalid("Media uploads are only allowed for load jobs")
	case c.Load != nil:
		c.JobType = "LOAD"
		return j, s.prepareLoad(c.Load, media)
	default:
		c.JobType = "COPY"
		return j, s.prepareCopy(c.Copy)
	}
}

func oneOf(value, field string, allowed ...string) *apiError {
	if slices.Contains(allowed, value) {
		return nil
	}
	return errInvalid("Invalid value for %s: %s is not a valid value", field, value)
}

func (s *Server) checkTableRef(ref *bigquery.TableReference, field string) *apiError {
	if ref == nil || ref.DatasetId == "" || ref.TableId == "" {
		return errInvalid("Required parameter is missing: %s", field)
	}
	if ref.ProjectId == "" {
		ref.ProjectId = s.opts.Project
	}
	if ref.ProjectId != s.opts.Project {
		return errNotFound("Not found: Project %s", ref.ProjectId)
	}
	table, _ := splitDecorator(ref.TableId)
	if !validID(tableIDPattern, table) {
		return errInvalid("Invalid table ID %q.", ref.TableId)
	}
	return nil
}

func (s *Server) prepareLoad(l *bigquery.JobConfigurationLoad, media bool) *apiError {
	if err := s.checkTableRef(l.DestinationTable, "configuration.load.destinationTable"); err != nil {
		return err
	}
	if !media && len(l.SourceUris) == 0 {
		return errInvalid("Load configuration must specify at least one source URI")
	}
	if l.CreateDisposition == "" {
		l.CreateDisposition = "CREATE_IF_NEEDED"
	}
	if l.WriteDisposition == "" {
		l.WriteDisposition = "WRITE_APPEND"
	}
	if l.SourceFormat == "" {
		l.SourceFormat = "CSV"
	}
	checks := []*apiError{
		oneOf(l.CreateDisposition, "createDisposition", "CREATE_IF_NEEDED", "CREATE_NEVER"),
		oneOf(l.WriteDisposition, "writeDisposition", "WRITE_APPEND", "WRITE_TRUNCATE", "WRITE_TRUNCATE_DATA", "WRITE_EMPTY"),
		oneOf(l.SourceFormat, "sourceFormat", "CSV", "NEWLINE_DELIMITED_JSON", "AVRO", "PARQUET", "ORC", "DATASTORE_BACKUP"),
	}
	for _, o := range l.SchemaUpdateOptions {
		checks = append(checks, oneOf(o, "schemaUpdateOptions", "ALLOW_FIELD_ADDITION", "ALLOW_FIELD_RELAXATION"))
	}
	for _, err := range checks {
		if err != nil {
			return err
		}
	}
	schema, err := normalizeSchema(l.Schema)
	if err != nil {
		return errInvalid("%v", err)
	}
	l.Schema = schema
	if l.TimePartitioning != nil {
		l.TimePartitioning.Type = strings.ToUpper(l.TimePartitioning.Type)
	}
	return nil
}

func (s *Server) prepareCopy(c *bigquery.JobConfigurationTableCopy) *apiError {
	if c.SourceTable != nil && len(c.SourceTables) == 0 {
		c.SourceTables = []*bigquery.TableReference{c.SourceTable}
		c.SourceTable = nil
	}
	if len(c.SourceTables) == 0 {
		return errInvalid("Required parameter is missing: configuration.copy.sourceTables")
	}
	for _, ref := range c.SourceTables {
		if err := s.checkTableRef(ref, "configuration.copy.sourceTables"); err != nil {
			return err
		}
	}
	if err := s.checkTableRef(c.DestinationTable, "configuration.copy.destinationTable"); err != nil {
		return err
	}
	if c.CreateDisposition == "" {
		c.CreateDisposition = "CREATE_IF_NEEDED"
	}
	if c.WriteDisposition == "" {
		c.WriteDisposition = "WRITE_EMPTY"
	}
	if c.OperationType != "" && c.OperationType != "COPY" {
		return errInvalid("bqtest: copy operation type %s is not supported", c.OperationType)
	}
	if err := oneOf(c.CreateDisposition, "createDisposition", "CREATE_IF_NEEDED", "CREATE_NEVER"); err != nil {
		return err
	}
	return oneOf(c.WriteDisposition, "writeDisposition", "WRITE_APPEND", "WRITE_TRUNCATE", "WRITE_EMPTY")
}

// admitLocked checks what jobs.insert checks against stored state: the
// job ID must be new (even a failed job keeps its ID) and the datasets
// must exist in the job's location. A job without a location runs where
// its destination dataset is.
func (s *Server) admitLocked(j *bigquery.Job) *apiError {
	ref := j.JobReference
	if old, ok := s.jobs[ref.JobId]; ok {
		return errDuplicate("Already Exists: Job %s:%s.%s", s.opts.Project, old.meta.JobReference.Location, ref.JobId)
	}
	var datasets []string
	if l := j.Configuration.Load; l != nil {
		datasets = append(datasets, l.DestinationTable.DatasetId)
	}
	if c := j.Configuration.Copy; c != nil {
		datasets = append(datasets, c.DestinationTable.DatasetId)
		for _, src := range c.SourceTables {
			datasets = append(datasets, src.DatasetId)
		}
	}
	loc := ref.Location
	for _, id := range datasets {
		ds, ok := s.datasets[id]
		if !ok {
			return errNotFound("Not found: Dataset %s:%s", s.opts.Project, id)
		}
		if loc == "" {
			loc = ds.meta.Location
		}
		if !strings.EqualFold(loc, ds.meta.Location) {
			return errNotFound("Not found: Dataset %s:%s was not found in location %s", s.opts.Project, id, loc)
		}
	}
	if loc == "" {
		loc = s.opts.Location
	}
	ref.Location = loc
	return nil
}

// startLocked records an admitted job. It stays RUNNING for
// Options.JobDelay and then completes; with no delay it completes here.
func (s *Server) startLocked(j *bigquery.Job, inputs []inputFile, inputErr *bigquery.ErrorProto) *bigquery.Job {
	now := time.Now()
	ref := j.JobReference
	j.Id = s.opts.Project + ":" + ref.Location + "." + ref.JobId
	j.SelfLink = s.URL() + apiPrefix + "projects/" + s.opts.Project + "/jobs/" + ref.JobId + "?location=" + ref.Location
	j.Status = &bigquery.JobStatus{State: stateRunning}
	j.Statistics = &bigquery.JobStatistics{CreationTime: now.UnixMilli(), StartTime: now.UnixMilli()}
	js := &jobState{meta: j, doneAt: now.Add(s.opts.JobDelay), inputs: inputs, inputErr: inputErr}
	if len(s.failNext) > 0 {
		js.fail, s.failNext = s.failNext[0], s.failNext[1:]
	}
	s.jobs[ref.JobId] = js
	s.jobOrder = append(s.jobOrder, js)
	s.accepted[ref.JobId]++
	if s.opts.JobDelay <= 0 {
		s.completeLocked(js, now, nil)
	}
	return cloneJSON(j)
}

// settleLocked completes, in insertion order, every job whose delay has
// passed. It runs before every request and accessor, so jobs finish even
// when nobody polls them.
func (s *Server) settleLocked(now time.Time) {
	for _, js := range s.jobOrder {
		if js.running() && !now.Before(js.doneAt) {
			s.completeLocked(js, now, nil)
		}
	}
}

// completeLocked runs a job and sets it DONE. A non-nil stop ends it with
// that error instead (cancellation).
func (s *Server) completeLocked(js *jobState, now time.Time, stop *bigquery.ErrorProto) {
	errp := stop
	switch {
	case errp != nil:
	case js.fail != nil:
		errp = js.fail
	case js.inputErr != nil:
		errp = js.inputErr
	case js.meta.Configuration.Load != nil:
		errp = s.runLoadLocked(js, now)
	case js.meta.Configuration.Copy != nil:
		errp = s.runCopyLocked(js, now)
	}
	st := &bigquery.JobStatus{State: stateDone}
	if errp != nil {
		st.ErrorResult = errp
		st.Errors = []*bigquery.ErrorProto{errp}
	}
	js.meta.Status = st
	js.meta.Statistics.EndTime = now.UnixMilli()
	js.inputs = nil
}

// lookupJobLocked finds a job the way jobs.get does: a job outside the
// US and EU multi-regions is found only when the request names its
// location.
func (s *Server) lookupJobLocked(r *http.Request, id string) (*jobState, *apiError) {
	loc := r.URL.Query().Get("location")
	notFound := errNotFound("Not found: Job %s:%s", s.opts.Project, id)
	if loc != "" {
		notFound = errNotFound("Not found: Job %s:%s.%s", s.opts.Project, loc, id)
	}
	js, ok := s.jobs[id]
	if !ok {
		return nil, notFound
	}
	jl := js.meta.JobReference.Location
	if loc != "" && !strings.EqualFold(loc, jl) {
		return nil, notFound
	}
	if loc == "" && !strings.EqualFold(jl, "US") && !strings.EqualFold(jl, "EU") {
		return nil, notFound
	}
	return js, nil
}

func (s *Server) getJob(r *http.Request, id string) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	js, err := s.lookupJobLocked(r, id)
	if err != nil {
		return nil, err
	}
	return cloneJSON(js.meta), nil
}

// cancelJob stops a running job before it changes anything; a finished
// job is left as it is.
func (s *Server) cancelJob(r *http.Request, id string) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	js, err := s.lookupJobLocked(r, id)
	if err != nil {
		return nil, err
	}
	if js.running() {
		s.completeLocked(js, time.Now(), jobError("stopped", "Job execution was cancelled: User requested cancellation"))
	}
	return &bigquery.JobCancelResponse{Kind: "bigquery#jobCancelResponse", Job: cloneJSON(js.meta)}, nil
}

// fetchSources reads the gs:// sources of a load job through
// Options.GCS. A source that cannot be read fails the job with notFound,
// as BigQuery does at run time.
func (s *Server) fetchSources(ctx context.Context, uris []string) ([]inputFile, *bigquery.ErrorProto) {
	var out []inputFile
	for _, uri := range uris {
		bucket, object, ok := strings.Cut(strings.TrimPrefix(uri, "gs://"), "/")
		if !strings.HasPrefix(uri, "gs://") || !ok || bucket == "" || object == "" {
			return nil, jobError("invalid", "Source URI must be a Google Cloud Storage location: %s", uri)
		}
		objects := []string{object}
		if strings.Contains(object, "*") {
			matched, errp := s.expandWildcard(ctx, uri, bucket, object)
			if errp != nil {
				return nil, errp
			}
			objects = matched
		}
		for _, obj := range objects {
			name := "gs://" + bucket + "/" + obj
			if s.opts.GCS == nil {
				return nil, jobError("notFound", "Not found: URI %s", name)
			}
			data, err := s.opts.GCS(ctx, bucket, obj)
			if err != nil {
				e := jobError("notFound", "Not found: URI %s", name)
				e.DebugInfo = err.Error()
				return nil, e
			}
			out = append(out, inputFile{uri: name, data: data})
		}
	}
	return out, nil
}

// expandWildcard lists the objects a URI with one '*' matches.
func (s *Server) expandWildcard(ctx context.Context, uri, bucket, object string) ([]string, *bigquery.ErrorProto) {
	prefix, suffix, _ := strings.Cut(object, "*")
	if strings.Contains(suffix, "*") {
		return nil, jobError("invalid", "Source URI %s has more than one wildcard", uri)
	}
	if s.opts.GCSList == nil {
		return nil, jobError("notFound", "Not found: Uris List(%s)", uri)
	}
	names, err := s.opts.GCSList(ctx, bucket, prefix)
	if err != nil {
		e := jobError("notFound", "Not found: Uris List(%s)", uri)
		e.DebugInfo = err.Error()
		return nil, e
	}
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, prefix) && strings.HasSuffix(n, suffix) && len(n) >= len(prefix)+len(suffix) {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil, jobError("notFound", "Not found: Uris List(%s)", uri)
	}
	slices.Sort(out)
	return out, nil
}

package bqtest

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"

	bigquery "google.golang.org/api/bigquery/v2"
)

// uploadSession is a resumable upload in progress: the admitted job and
// the bytes received so far.
type uploadSession struct {
	job  *bigquery.Job
	data []byte
}

// serveUpload handles /upload/bigquery/v2/projects/{p}/jobs: multipart
// uploads (job JSON and media in one request) and resumable ones (a POST
// that opens a session, then chunks sent to the session URL).
func (s *Server) serveUpload(w http.ResponseWriter, r *http.Request, path string) {
	segs := strings.Split(path, "/")
	if len(segs) != 3 || segs[0] != "projects" || segs[2] != "jobs" {
		writeError(w, errNotFound("bqtest: no such path %s", r.URL.Path))
		return
	}
	if segs[1] != s.opts.Project {
		writeError(w, errNotFound("Not found: Project %s", segs[1]))
		return
	}
	q := r.URL.Query()
	if id := q.Get("upload_id"); id != "" {
		s.uploadChunk(w, r, id)
		return
	}
	if r.Method != http.MethodPost {
		writeError(w, errNotFound("bqtest: no handler for %s %s", r.Method, r.URL.Path))
		return
	}
	var (
		body any
		err  *apiError
	)
	switch q.Get("uploadType") {
	case "multipart":
		body, err = s.uploadMultipart(r)
	case "resumable":
		err = s.startResumable(w, r)
		if err == nil {
			return
		}
	default:
		err = errInvalid("bqtest: uploadType %q is not supported", q.Get("uploadType"))
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, body)
}

func (s *Server) uploadMultipart(r *http.Request) (any, *apiError) {
	mt, params, perr := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if perr != nil || !strings.HasPrefix(mt, "multipart/") {
		return nil, errInvalid("Invalid multipart request: Content-Type %q", r.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	meta, perr := mr.NextPart()
	if perr != nil {
		return nil, errInvalid("Invalid multipart request: %v", perr)
	}
	var in bigquery.Job
	dec := json.NewDecoder(meta)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return nil, errInvalid("Invalid JSON payload received. %v", err)
	}
	media, perr := mr.NextPart()
	if perr != nil {
		return nil, errInvalid("Invalid multipart request: missing media part: %v", perr)
	}
	data, perr := io.ReadAll(media)
	if perr != nil {
		return nil, errInvalid("Invalid multipart request: %v", perr)
	}
	s.countAttempt(&in)
	j, err := s.prepareJob(&in, true)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.admitLocked(j); err != nil {
		return nil, err
	}
	return s.startLocked(j, []inputFile{{data: data}}, nil), nil
}

// startResumable opens an upload session and answers with its URL in
// the Location header. The job ID is checked now and again when the last
// chunk arrives.
func (s *Server) startResumable(w http.ResponseWriter, r *http.Request) *apiError {
	var in bigquery.Job
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	s.countAttempt(&in)
	j, err := s.prepareJob(&in, true)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if err := s.admitLocked(j); err != nil {
		s.mu.Unlock()
		return err
	}
	id := rand.Text()
	s.uploads[id] = &uploadSession{job: j}
	s.mu.Unlock()
	w.Header().Set("Location", fmt.Sprintf("http://%s%sprojects/%s/jobs?uploadType=resumable&upload_id=%s", r.Host, uploadPrefix, s.opts.Project, id))
	w.WriteHeader(http.StatusOK)
	return nil
}

// uploadChunk takes one chunk of a resumable upload. Chunks must continue
// where the data received so far ends; a resent chunk that overlaps is
// accepted. Until the total size is known and reached the answer is
// "resume incomplete" (308, or 200 with X-Http-Status-Code-Override: 308
// when the client asks with X-GUploader-No-308, as the Go client does).
func (s *Server) uploadChunk(w http.ResponseWriter, r *http.Request, id string) {
	if r.Method != http.MethodPut && r.Method != http.MethodPost {
		writeError(w, errInvalid("bqtest: %s is not allowed on an upload session", r.Method))
		return
	}
	chunk, rerr := io.ReadAll(r.Body)
	if rerr != nil {
		writeError(w, errInvalid("read chunk: %v", rerr))
		return
	}
	start, total, perr := parseContentRange(r.Header.Get("Content-Range"))
	if perr != nil {
		writeError(w, errInvalid("%v", perr))
		return
	}
	s.mu.Lock()
	sess, ok := s.uploads[id]
	if !ok {
		s.mu.Unlock()
		writeError(w, errNotFound("bqtest: no upload session %s", id))
		return
	}
	if start < 0 {
		start = int64(len(sess.data))
	}
	if start > int64(len(sess.data)) {
		have := len(sess.data)
		s.mu.Unlock()
		writeError(w, errInvalid("Content-Range starts at byte %d but only %d bytes were received", start, have))
		return
	}
	if overlap := int64(len(sess.data)) - start; overlap < int64(len(chunk)) {
		sess.data = append(sess.data, chunk[overlap:]...)
	}
	received := int64(len(sess.data))
	if total < 0 || received < total {
		s.mu.Unlock()
		if received > 0 {
			w.Header().Set("Range", fmt.Sprintf("bytes=0-%d", received-1))
		}
		if r.Header.Get("X-GUploader-No-308") == "yes" {
			w.Header().Set("X-Http-Status-Code-Override", "308")
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusPermanentRedirect)
		return
	}
	delete(s.uploads, id)
	if received != total {
		s.mu.Unlock()
		writeError(w, errInvalid("Upload declared %d bytes but %d were received", total, received))
		return
	}
	if err := s.admitLocked(sess.job); err != nil {
		s.mu.Unlock()
		writeError(w, err)
		return
	}
	job := s.startLocked(sess.job, []inputFile{{data: sess.data}}, nil)
	s.mu.Unlock()
	writeJSON(w, job)
}

// parseContentRange reads "bytes a-b/total", "bytes a-b/*" or
// "bytes */total". start is -1 when the request carries no data; total is
// -1 while unknown.
func parseContentRange(h string) (start, total int64, err error) {
	rest, ok := strings.CutPrefix(h, "bytes ")
	rng, tot, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 {
		return 0, 0, fmt.Errorf("bad Content-Range %q", h)
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil {
			return 0, 0, fmt.Errorf("bad Content-Range %q: %w", h, err)
		}
	}
	if rng == "*" {
		return -1, total, nil
	}
	first, _, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, fmt.Errorf("bad Content-Range %q", h)
	}
	if start, err = strconv.ParseInt(first, 10, 64); err != nil {
		return 0, 0, fmt.Errorf("bad Content-Range %q: %w", h, err)
	}
	return start, total, nil
}

package bqtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"time"

	bigquery "google.golang.org/api/bigquery/v2"
)

var datasetIDPattern = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// decodeBody reads a JSON request body into v, refusing unknown fields as
// the API does.
func decodeBody(r *http.Request, v any) *apiError {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errInvalid("Invalid JSON payload received. %v", err)
	}
	return nil
}

func (s *Server) insertDataset(r *http.Request) (any, *apiError) {
	var in bigquery.Dataset
	if err := decodeBody(r, &in); err != nil {
		return nil, err
	}
	ref := in.DatasetReference
	if ref == nil || ref.DatasetId == "" {
		return nil, errInvalid("Required parameter is missing: datasetReference.datasetId")
	}
	if ref.ProjectId != "" && ref.ProjectId != s.opts.Project {
		return nil, errInvalid("Dataset project %s does not match the project %s of the request", ref.ProjectId, s.opts.Project)
	}
	if !validID(datasetIDPattern, ref.DatasetId) {
		return nil, errInvalid("Invalid dataset ID %q. Dataset IDs must be alphanumeric (plus underscores) and must be at most 1024 characters long.", ref.DatasetId)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.datasets[ref.DatasetId]; ok {
		return nil, errDuplicate("Already Exists: Dataset %s:%s", s.opts.Project, ref.DatasetId)
	}
	return cloneJSON(s.addDatasetLocked(&in).meta), nil
}

// addDatasetLocked stores a new dataset, filling the fields the server owns.
func (s *Server) addDatasetLocked(in *bigquery.Dataset) *datasetState {
	meta := cloneJSON(in)
	id := in.DatasetReference.DatasetId
	now := time.Now().UnixMilli()
	meta.Kind = "bigquery#dataset"
	meta.DatasetReference = &bigquery.DatasetReference{ProjectId: s.opts.Project, DatasetId: id}
	meta.Id = s.opts.Project + ":" + id
	meta.SelfLink = s.URL() + apiPrefix + "projects/" + s.opts.Project + "/datasets/" + id
	if meta.Location == "" {
		meta.Location = s.opts.Location
	}
	meta.CreationTime = now
	meta.LastModifiedTime = now
	meta.Etag = s.nextEtagLocked()
	ds := &datasetState{meta: meta, tables: make(map[string]*tableState)}
	s.datasets[id] = ds
	return ds
}

func (s *Server) getDataset(id string) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ds, err := s.datasetLocked(id)
	if err != nil {
		return nil, err
	}
	return cloneJSON(ds.meta), nil
}

func (s *Server) datasetLocked(id string) (*datasetState, *apiError) {
	ds, ok := s.datasets[id]
	if !ok {
		return nil, errNotFound("Not found: Dataset %s:%s", s.opts.Project, id)
	}
	return ds, nil
}

func (s *Server) deleteDataset(r *http.Request, id string) (any, *apiError) {
	deleteContents, _ := strconv.ParseBool(r.URL.Query().Get("deleteContents"))
	s.mu.Lock()
	defer s.mu.Unlock()
	ds, err := s.datasetLocked(id)
	if err != nil {
		return nil, err
	}
	if len(ds.tables) > 0 && !deleteContents {
		return nil, newAPIError(http.StatusBadRequest, "resourceInUse", "Dataset %s:%s is still in use", s.opts.Project, id)
	}
	delete(s.datasets, id)
	return nil, nil
}

func (s *Server) listDatasets() (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &bigquery.DatasetList{Kind: "bigquery#datasetList", Etag: etagOf(s.seq)}
	for _, ds := range s.datasets {
		out.Datasets = append(out.Datasets, &bigquery.DatasetListDatasets{
			Kind:             "bigquery#dataset",
			Id:               ds.meta.Id,
			DatasetReference: ds.meta.DatasetReference,
			Location:         ds.meta.Location,
			FriendlyName:     ds.meta.FriendlyName,
			Labels:           ds.meta.Labels,
		})
	}
	sort.Slice(out.Datasets, func(i, k int) bool { return out.Datasets[i].Id < out.Datasets[k].Id })
	return out, nil
}

// validID checks an ID against its pattern and BigQuery's 1024-character
// limit.
func validID(pattern *regexp.Regexp, id string) bool {
	return len(id) <= 1024 && pattern.MatchString(id)
}

// etagOf turns a change counter into an opaque entity tag.
func etagOf(n int64) string {
	return fmt.Sprintf("bqtest-%d", n)
}

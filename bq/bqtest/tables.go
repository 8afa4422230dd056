package bqtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	bigquery "google.golang.org/api/bigquery/v2"
)

var tableIDPattern = regexp.MustCompile(`^[\p{L}\p{M}\p{N}\p{Pc}\p{Pd}\p{Zs}]+$`)

// tableState is a table or view with its data, kept per partition ("" for
// an unpartitioned table).
type tableState struct {
	meta      *bigquery.Table
	parts     map[string][]row
	insertIDs map[string]bool
}

func (t *tableState) isView() bool { return t.meta.View != nil }

// rows returns the rows of one partition, or of all partitions in
// partition order when partition is "".
func (t *tableState) rows(partition string) []row {
	var out []row
	for _, p := range partitionIDs(t, partition) {
		out = append(out, t.parts[p]...)
	}
	return out
}

// touchLocked records a change of data or metadata.
func (s *Server) touchLocked(t *tableState) {
	var n, size int64
	for _, rows := range t.parts {
		n += int64(len(rows))
		size += rowsSize(rows)
	}
	if !t.isView() {
		t.meta.NumRows = uint64(n)
		t.meta.NumBytes = size
	}
	t.meta.LastModifiedTime = uint64(time.Now().UnixMilli())
	t.meta.Etag = s.nextEtagLocked()
}

func (s *Server) tableName(dataset, table string) string {
	return s.opts.Project + ":" + dataset + "." + table
}

// checkTableSpec validates a table resource as tables.insert does and
// returns it with a normalized schema and partitioning that names columns
// as the schema spells them.
func checkTableSpec(in *bigquery.Table) (*bigquery.Table, error) {
	t := cloneJSON(in)
	schema, err := normalizeSchema(in.Schema)
	if err != nil {
		return nil, err
	}
	t.Schema = schema
	if t.View != nil {
		if strings.TrimSpace(t.View.Query) == "" {
			return nil, fmt.Errorf("View query must not be empty")
		}
		if t.TimePartitioning != nil || t.Clustering != nil {
			return nil, fmt.Errorf("Views cannot be partitioned or clustered")
		}
		t.Type = "VIEW"
		return t, nil
	}
	t.Type = "TABLE"
	fields := schemaFields(schema)
	if t.RangePartitioning != nil {
		return nil, fmt.Errorf("bqtest: range partitioning is not supported")
	}
	if tp := t.TimePartitioning; tp != nil {
		tp.Type = strings.ToUpper(tp.Type)
		if _, ok := partitionLayouts[tp.Type]; !ok {
			return nil, fmt.Errorf("Invalid value for type: %q is not a valid value for time partitioning", tp.Type)
		}
		if tp.Field != "" {
			f := findField(fields, tp.Field)
			if f == nil {
				return nil, fmt.Errorf("The field specified for partitioning cannot be found in the schema: %s", tp.Field)
			}
			okType := f.Type == "TIMESTAMP" || f.Type == "DATETIME" || (f.Type == "DATE" && tp.Type != "HOUR")
			if !okType || f.Mode == modeRepeated {
				return nil, fmt.Errorf("The field specified for time partitioning can only be of type TIMESTAMP, DATE or DATETIME. The type found is: %s.", f.Type)
			}
			tp.Field = f.Name
		}
	}
	if c := t.Clustering; c != nil {
		if len(c.Fields) > 4 {
			return nil, fmt.Errorf("Too many clustering fields: %d, only 4 are allowed", len(c.Fields))
		}
		for i, name := range c.Fields {
			f := findField(fields, name)
			if f == nil || f.Mode == modeRepeated || f.Type == "RECORD" || f.Type == "FLOAT" || f.Type == "JSON" {
				return nil, fmt.Errorf("The field specified for clustering cannot be found in the schema.  Invalid field: %s.", name)
			}
			c.Fields[i] = f.Name
		}
	}
	return t, nil
}

// addTableLocked stores a checked table spec, filling the fields the server
// owns.
func (s *Server) addTableLocked(ds *datasetState, spec *bigquery.Table) *tableState {
	id := spec.TableReference.TableId
	dsID := ds.meta.DatasetReference.DatasetId
	now := time.Now().UnixMilli()
	spec.Kind = "bigquery#table"
	spec.TableReference = &bigquery.TableReference{ProjectId: s.opts.Project, DatasetId: dsID, TableId: id}
	spec.Id = s.tableName(dsID, id)
	spec.SelfLink = s.URL() + apiPrefix + "projects/" + s.opts.Project + "/datasets/" + dsID + "/tables/" + id
	spec.Location = ds.meta.Location
	spec.CreationTime = now
	t := &tableState{meta: spec, parts: make(map[string][]row), insertIDs: make(map[string]bool)}
	ds.tables[id] = t
	s.touchLocked(t)
	return t
}

func (s *Server) insertTable(r *http.Request, dataset string) (any, *apiError) {
	var in bigquery.Table
	if err := decodeBody(r, &in); err != nil {
		return nil, err
	}
	ref := in.TableReference
	if ref == nil || ref.TableId == "" {
		return nil, errInvalid("Required parameter is missing: tableReference.tableId")
	}
	if (ref.ProjectId != "" && ref.ProjectId != s.opts.Project) || (ref.DatasetId != "" && ref.DatasetId != dataset) {
		return nil, errInvalid("Table reference %s:%s.%s does not match the request path", ref.ProjectId, ref.DatasetId, ref.TableId)
	}
	if !validID(tableIDPattern, ref.TableId) {
		return nil, errInvalid("Invalid table ID %q. Table IDs must be alphanumeric (plus underscores) and must be at most 1024 characters long. Also, Table decorators cannot be used.", ref.TableId)
	}
	spec, err := checkTableSpec(&in)
	if err != nil {
		return nil, errInvalid("%v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ds, aerr := s.datasetLocked(dataset)
	if aerr != nil {
		return nil, aerr
	}
	if _, ok := ds.tables[ref.TableId]; ok {
		return nil, errDuplicate("Already Exists: Table %s", s.tableName(dataset, ref.TableId))
	}
	if spec.View != nil {
		if aerr := s.checkViewRefsLocked(spec.View.Query); aerr != nil {
			return nil, aerr
		}
	}
	return cloneJSON(s.addTableLocked(ds, spec).meta), nil
}

// viewRef matches a quoted table reference in a view's SQL:
// `project.dataset.table` or `dataset.table`.
var viewRef = regexp.MustCompile("`([^`]+)`")

// checkViewRefsLocked fails, as BigQuery does when it validates a view's
// query, if a table the query names in this project is missing: a view
// must be created after the tables it reads. References to other projects
// are not checked.
func (s *Server) checkViewRefsLocked(query string) *apiError {
	for _, m := range viewRef.FindAllStringSubmatch(query, -1) {
		parts := strings.Split(m[1], ".")
		switch len(parts) {
		case 2:
			parts = append([]string{s.opts.Project}, parts...)
		case 3:
		default:
			continue
		}
		if parts[0] != s.opts.Project {
			continue
		}
		ds, ok := s.datasets[parts[1]]
		if !ok {
			return errNotFound("Not found: Dataset %s:%s", parts[0], parts[1])
		}
		if _, ok := ds.tables[parts[2]]; !ok {
			return errNotFound("Not found: Table %s:%s.%s was not found in location %s", parts[0], parts[1], parts[2], ds.meta.Location)
		}
	}
	return nil
}

// lookupTableLocked finds a table for a request, with BigQuery's 404
// messages for a missing dataset or table.
func (s *Server) lookupTableLocked(dataset, table string) (*datasetState, *tableState, *apiError) {
	ds, err := s.datasetLocked(dataset)
	if err != nil {
		return nil, nil, err
	}
	t, ok := ds.tables[table]
	if !ok {
		return nil, nil, errNotFound("Not found: Table %s", s.tableName(dataset, table))
	}
	return ds, t, nil
}

func (s *Server) getTable(dataset, table string) (any, *apiError) {
	if strings.Contains(table, "$") {
		return nil, errInvalid("bqtest: tables.get of a partition (%s) is not supported", table)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, t, err := s.lookupTableLocked(dataset, table)
	if err != nil {
		return nil, err
	}
	return cloneJSON(t.meta), nil
}

// deleteTable drops a table, or one partition when the ID has a decorator.
func (s *Server) deleteTable(dataset, tableID string) (any, *apiError) {
	table, part := splitDecorator(tableID)
	s.mu.Lock()
	defer s.mu.Unlock()
	ds, t, err := s.lookupTableLocked(dataset, table)
	if err != nil {
		return nil, err
	}
	if part == "" {
		delete(ds.tables, table)
		return nil, nil
	}
	if t.meta.TimePartitioning == nil || !validDecorator(part, t.meta.TimePartitioning) {
		return nil, errInvalid("Invalid partition decorator %s for table %s", part, s.tableName(dataset, table))
	}
	delete(t.parts, part)
	s.touchLocked(t)
	return nil, nil
}

func (s *Server) listTables(r *http.Request, dataset string) (any, *apiError) {
	q := r.URL.Query()
	start, _ := strconv.Atoi(q.Get("pageToken"))
	max, _ := strconv.Atoi(q.Get("maxResults"))
	s.mu.Lock()
	defer s.mu.Unlock()
	ds, err := s.datasetLocked(dataset)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(ds.tables))
	for id := range ds.tables {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := &bigquery.TableList{Kind: "bigquery#tableList", Etag: etagOf(s.seq), TotalItems: int64(len(ids))}
	end := len(ids)
	if max > 0 && start+max < end {
		end = start + max
		out.NextPageToken = strconv.Itoa(end)
	}
	for _, id := range ids[min(start, len(ids)):end] {
		m := ds.tables[id].meta
		item := &bigquery.TableListTables{
			Kind:             "bigquery#table",
			Id:               m.Id,
			TableReference:   m.TableReference,
			Type:             m.Type,
			FriendlyName:     m.FriendlyName,
			Labels:           m.Labels,
			TimePartitioning: m.TimePartitioning,
			Clustering:       m.Clustering,
			CreationTime:     m.CreationTime,
			ExpirationTime:   m.ExpirationTime,
		}
		if m.View != nil {
			item.View = &bigquery.TableListTablesView{UseLegacySql: m.View.UseLegacySql}
		}
		out.Tables = append(out.Tables, item)
	}
	return cloneJSON(out), nil
}

// tablePatch records which top-level fields a patch or update request
// carries; a present field holding null clears the value.
type tablePatch struct {
	Description            json.RawMessage `json:"description"`
	FriendlyName           json.RawMessage `json:"friendlyName"`
	Schema                 json.RawMessage `json:"schema"`
	TimePartitioning       json.RawMessage `json:"timePartitioning"`
	Clustering             json.RawMessage `json:"clustering"`
	ExpirationTime         json.RawMessage `json:"expirationTime"`
	Labels                 json.RawMessage `json:"labels"`
	View                   json.RawMessage `json:"view"`
	RequirePartitionFilter json.RawMessage `json:"requirePartitionFilter"`
}

var jsonNull = json.RawMessage("null")

func isNull(m json.RawMessage) bool { return string(m) == "null" }

// patchTable serves tables.patch and, with replace set, tables.update
// (PUT), where fields left out are cleared. Schema changes follow
// BigQuery's rules: columns may be added (NULLABLE or REPEATED) and
// relaxed from REQUIRED to NULLABLE, never dropped, retyped or tightened.
func (s *Server) patchTable(r *http.Request, dataset, table string, replace bool) (any, *apiError) {
	body, rerr := readAll(r)
	if rerr != nil {
		return nil, rerr
	}
	var in bigquery.Table
	var present tablePatch
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return nil, errInvalid("Invalid JSON payload received. %v", err)
	}
	if err := json.Unmarshal(body, &present); err != nil {
		return nil, errInvalid("Invalid JSON payload received. %v", err)
	}
	if replace {
		for _, f := range []*json.RawMessage{&present.Description, &present.FriendlyName, &present.Clustering, &present.ExpirationTime, &present.Labels, &present.RequirePartitionFilter} {
			if *f == nil {
				*f = jsonNull
			}
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	_, t, err := s.lookupTableLocked(dataset, table)
	if err != nil {
		return nil, err
	}
	if m := r.Header.Get("If-Match"); m != "" && m != t.meta.Etag {
		return nil, newAPIError(http.StatusPreconditionFailed, "conditionNotMet", "Precondition check failed.")
	}
	next := cloneJSON(t.meta)
	name := s.tableName(dataset, table)
	if present.Description != nil {
		next.Description = in.Description
	}
	if present.FriendlyName != nil {
		next.FriendlyName = in.FriendlyName
	}
	if present.ExpirationTime != nil {
		next.ExpirationTime = in.ExpirationTime
	}
	if present.RequirePartitionFilter != nil {
		next.RequirePartitionFilter = in.RequirePartitionFilter
	}
	if present.Labels != nil {
		if aerr := patchLabels(next, present.Labels, replace); aerr != nil {
			return nil, aerr
		}
	}
	if present.View != nil {
		if t.meta.View == nil || in.View == nil {
			return nil, errInvalid("Cannot change the type of table %s between table and view", name)
		}
		if aerr := s.checkViewRefsLocked(in.View.Query); aerr != nil {
			return nil, aerr
		}
		next.View = in.View
	}
	if present.Schema != nil && !isNull(present.Schema) && !t.isView() {
		schema, serr := normalizeSchema(in.Schema)
		if serr != nil {
			return nil, errInvalid("%v", serr)
		}
		fields, serr := evolveFields("", schemaFields(t.meta.Schema), schemaFields(schema), evolveRules{requireAll: true, allowAdd: true, allowRelax: true})
		if serr != nil {
			return nil, errInvalid("Provided Schema does not match Table %s. %v", name, serr)
		}
		next.Schema = &bigquery.TableSchema{Fields: fields}
	}
	if present.TimePartitioning != nil {
		if aerr := patchPartitioning(next, t.meta.TimePartitioning, in.TimePartitioning, name); aerr != nil {
			return nil, aerr
		}
	}
	if present.Clustering != nil {
		next.Clustering = in.Clustering
		if isNull(present.Clustering) || (in.Clustering != nil && len(in.Clustering.Fields) == 0) {
			next.Clustering = nil
		}
	}
	checked, cerr := checkTableSpec(next)
	if cerr != nil {
		return nil, errInvalid("%v", cerr)
	}
	t.meta = checked
	s.touchLocked(t)
	return cloneJSON(t.meta), nil
}

func patchLabels(next *bigquery.Table, raw json.RawMessage, replace bool) *apiError {
	if isNull(raw) {
		next.Labels = nil
		return nil
	}
	var labels map[string]*string
	if err := json.Unmarshal(raw, &labels); err != nil {
		return errInvalid("Invalid JSON payload received. labels: %v", err)
	}
	if replace || next.Labels == nil {
		next.Labels = make(map[string]string)
	}
	for k, v := range labels {
		if v == nil {
			delete(next.Labels, k)
			continue
		}
		next.Labels[k] = *v
	}
	return nil
}

// patchPartitioning applies a timePartitioning change: only the expiration
// and the partition filter requirement may change on an existing table.
func patchPartitioning(next *bigquery.Table, cur, in *bigquery.TimePartitioning, name string) *apiError {
	switch {
	case cur == nil && in == nil:
		return nil
	case cur == nil:
		return errInvalid("Cannot convert non-partitioned table to partitioned table.")
	case in == nil:
		return errInvalid("Cannot convert partitioned table %s to non-partitioned table.", name)
	}
	typ := strings.ToUpper(in.Type)
	if typ == "" {
		typ = cur.Type
	}
	if typ != cur.Type || !strings.EqualFold(in.Field, cur.Field) {
		return errInvalid("Cannot change partitioning spec of table %s from %s to %s.", name, partitionSpec(cur), partitionSpec(&bigquery.TimePartitioning{Type: typ, Field: in.Field}))
	}
	tp := cloneJSON(cur)
	tp.ExpirationMs = in.ExpirationMs
	tp.RequirePartitionFilter = in.RequirePartitionFilter
	next.TimePartitioning = tp
	return nil
}

func readAll(r *http.Request) ([]byte, *apiError) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, errInvalid("read request body: %v", err)
	}
	return b, nil
}

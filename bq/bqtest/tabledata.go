package bqtest

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	bigquery "google.golang.org/api/bigquery/v2"
)

// listTableData serves tabledata.list: rows in partition order, paged by
// maxResults with the next start index as page token.
func (s *Server) listTableData(r *http.Request, dataset, tableID string) (any, *apiError) {
	q := r.URL.Query()
	start, _ := strconv.Atoi(q.Get("pageToken"))
	if q.Get("pageToken") == "" {
		start, _ = strconv.Atoi(q.Get("startIndex"))
	}
	max, _ := strconv.Atoi(q.Get("maxResults"))
	int64Timestamps, _ := strconv.ParseBool(q.Get("formatOptions.useInt64Timestamp"))
	table, part := splitDecorator(tableID)

	s.mu.Lock()
	defer s.mu.Unlock()
	_, t, err := s.lookupTableLocked(dataset, table)
	if err != nil {
		return nil, err
	}
	if t.isView() {
		return nil, errInvalid("Cannot list a table of type VIEW.")
	}
	rows := t.rows(part)
	out := &bigquery.TableDataList{Kind: "bigquery#tableDataList", Etag: t.meta.Etag, TotalRows: int64(len(rows))}
	start = min(max0(start), len(rows))
	end := len(rows)
	if max > 0 && start+max < end {
		end = start + max
		out.PageToken = strconv.Itoa(end)
	}
	fields := schemaFields(t.meta.Schema)
	for _, rw := range rows[start:end] {
		out.Rows = append(out.Rows, encodeRow(rw, fields, int64Timestamps))
	}
	return out, nil
}

func max0(n int) int { return max(n, 0) }

// insertAllRequest is tabledata.insertAll's body; row values stay raw so
// they are decoded by the column's type, without float64 rounding of
// integers.
type insertAllRequest struct {
	Kind                string          `json:"kind"`
	IgnoreUnknownValues bool            `json:"ignoreUnknownValues"`
	SkipInvalidRows     bool            `json:"skipInvalidRows"`
	TemplateSuffix      string          `json:"templateSuffix"`
	TraceID             string          `json:"traceId"`
	Rows                []insertAllItem `json:"rows"`
}

type insertAllItem struct {
	InsertID string                     `json:"insertId"`
	JSON     map[string]json.RawMessage `json:"json"`
}

// insertAll serves streaming inserts. Invalid rows are reported in
// insertErrors; unless skipInvalidRows is set, the other rows of the
// request are then not inserted and are reported as "stopped". Rows whose
// insertId was seen before are dropped, as BigQuery's best-effort
// de-duplication does.
func (s *Server) insertAll(r *http.Request, dataset, tableID string) (any, *apiError) {
	var req insertAllRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	if req.TemplateSuffix != "" {
		return nil, errInvalid("bqtest: templateSuffix is not supported")
	}
	if len(req.Rows) == 0 {
		return nil, errInvalid("No rows present in the request.")
	}
	table, part := splitDecorator(tableID)

	s.mu.Lock()
	defer s.mu.Unlock()
	_, t, err := s.lookupTableLocked(dataset, table)
	if err != nil {
		return nil, err
	}
	name := s.tableName(dataset, tableID)
	if t.isView() {
		return nil, errInvalid("Cannot insert into a view: %s", name)
	}
	tp := t.meta.TimePartitioning
	if part != "" {
		switch {
		case tp == nil || !validDecorator(part, tp):
			return nil, errInvalid("Invalid partition decorator for table %s", name)
		case tp.Field != "":
			return nil, errInvalid("Streaming to metadata partition of column based partitioning table %s is disallowed.", name)
		}
	}
	if t.meta.Schema == nil {
		return nil, errInvalid("The destination table has no schema.")
	}

	fields := schemaFields(t.meta.Schema)
	now := time.Now()
	type placed struct {
		r    row
		part string
		id   string
	}
	var ok []placed
	var failed []*bigquery.TableDataInsertAllResponseInsertErrors
	for i, item := range req.Rows {
		rw, rerr := decodeJSONRow("", fields, item.JSON, req.IgnoreUnknownValues)
		if rerr != nil {
			failed = append(failed, &bigquery.TableDataInsertAllResponseInsertErrors{Index: int64(i), Errors: []*bigquery.ErrorProto{rerr}})
			continue
		}
		p := part
		if p == "" {
			p = partitionOf(rw, tp, now)
		}
		ok = append(ok, placed{r: rw, part: p, id: item.InsertID})
	}
	resp := &bigquery.TableDataInsertAllResponse{Kind: "bigquery#tableDataInsertAllResponse", InsertErrors: failed}
	if len(failed) > 0 && !req.SkipInvalidRows {
		bad := make(map[int64]bool)
		for _, f := range failed {
			bad[f.Index] = true
		}
		for i := range req.Rows {
			if !bad[int64(i)] {
				resp.InsertErrors = append(resp.InsertErrors, &bigquery.TableDataInsertAllResponseInsertErrors{Index: int64(i), Errors: []*bigquery.ErrorProto{{Reason: "stopped"}}})
			}
		}
		return resp, nil
	}
	for _, p := range ok {
		if p.id != "" {
			if t.insertIDs[p.id] {
				continue
			}
			t.insertIDs[p.id] = true
		}
		t.parts[p.part] = append(t.parts[p.part], p.r)
	}
	s.touchLocked(t)
	return resp, nil
}

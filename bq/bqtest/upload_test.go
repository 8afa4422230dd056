package bqtest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"cloud.google.com/go/bigquery"

	"github.com/bindsync/bindsync/bq/bqtest"
)

// TestResumableUploadProtocol drives the upload session by hand, the way
// a client retrying a chunk after a lost answer does: a resent chunk is
// taken once, a gap is refused, and the last chunk answers with the job.
func TestResumableUploadProtocol(t *testing.T) {
	e := newEnv(t, bqtest.Options{})
	ctx := testContext(t)
	if err := e.ds.Table("sync_runs").Create(ctx, &bigquery.TableMetadata{Schema: syncRunsSchema()}); err != nil {
		t.Fatalf("create: %v", err)
	}
	const jobJSON = `{"jobReference":{"jobId":%q},"configuration":{"load":{` +
		`"destinationTable":{"projectId":"proj","datasetId":"ds","tableId":"sync_runs"},"sourceFormat":"NEWLINE_DELIMITED_JSON"}}}`
	data := `{"run_id":"r1","snapshot_date":"2026-11-26"}` + "\n" + `{"run_id":"r2","snapshot_date":"2026-11-27"}` + "\n"

	open := func(jobID string) string {
		body := fmt.Sprintf(jobJSON, jobID)
		resp, err := http.Post(e.srv.URL()+"/upload/bigquery/v2/projects/proj/jobs?uploadType=resumable", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("open session: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Location") == "" {
			t.Fatalf("open session: %s, Location %q", resp.Status, resp.Header.Get("Location"))
		}
		return resp.Header.Get("Location")
	}
	send := func(url string, start, end int, total string) (*http.Response, string) {
		req, err := http.NewRequest(http.MethodPut, url, strings.NewReader(data[start:end+1]))
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		req.Header.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%s", start, end, total))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("send chunk: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}

	url := open("raw-upload")
	// The first chunk twice, then one that overlaps it.
	for _, c := range []struct{ start, end int }{{0, 19}, {0, 19}, {10, 29}} {
		resp, _ := send(url, c.start, c.end, "*")
		want := fmt.Sprintf("bytes=0-%d", c.end)
		if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Range") != want {
			t.Fatalf("chunk %d-%d answer = %s, Range %q; want 308, %s", c.start, c.end, resp.Status, resp.Header.Get("Range"), want)
		}
	}
	resp, body := send(url, 30, len(data)-1, fmt.Sprint(len(data)))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("last chunk: %s %s", resp.Status, body)
	}
	var job struct {
		JobReference struct{ JobID, Location string } `json:"jobReference"`
		Status       struct{ State string }           `json:"status"`
	}
	if err := json.Unmarshal([]byte(body), &job); err != nil {
		t.Fatalf("decode job: %v", err)
	}
	if job.JobReference.JobID != "raw-upload" || job.JobReference.Location != "US" || job.Status.State != "DONE" {
		t.Errorf("job = %+v", job)
	}
	rows := e.srv.Rows("ds", "sync_runs", "")
	if len(rows) != 2 || rows[0]["run_id"] != "r1" || rows[1]["run_id"] != "r2" {
		t.Errorf("rows = %v", rows)
	}

	// A finished session is gone; a fresh one refuses a gap.
	if resp, _ := send(url, 0, 19, "*"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("chunk to a finished session: %s", resp.Status)
	}
	if resp, _ := send(open("raw-upload-2"), 20, 30, "*"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("chunk after a gap: %s", resp.Status)
	}
}

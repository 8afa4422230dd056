package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/bindsync/bindsync/twilio/twiliotest"
)

func TestRunServesWorld(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-seed", "9", "-services", "2", "-users", "12", "-auth-token", "tok"}, w, io.Discard)
		w.Close()
	}()
	lines := bufio.NewScanner(out)
	if !lines.Scan() {
		t.Fatalf("no address printed: %v", <-done)
	}
	base := lines.Text()
	if !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("address line %q", base)
	}

	// The world is the one NewWorld builds from the same spec.
	world := twiliotest.NewWorld(twiliotest.WorldSpec{Seed: 9, Services: 2, UsersPerService: 12, MaxBindingsPerUser: 150})
	svc := world.Services[1]
	req, err := http.NewRequest(http.MethodGet, base+"/v2/Services/"+svc.SID+"/Users?PageSize=100", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(world.AccountSID, "tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var page struct {
		Users []struct {
			SID string `json:"sid"`
		} `json:"users"`
	}
	err = json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(page.Users) != 12 || page.Users[0].SID != svc.Users[0].SID {
		t.Fatalf("users page: status %d, %d users, err %v", resp.StatusCode, len(page.Users), err)
	}

	cancel()
	if !lines.Scan() {
		t.Fatalf("no stats printed: %v", <-done)
	}
	var st twiliotest.Stats
	if err := json.Unmarshal(lines.Bytes(), &st); err != nil || st.UsersRequests != 1 || st.ByStatus[200] != 1 {
		t.Errorf("stats line %s: %+v, %v", lines.Text(), st, err)
	}
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
}

func TestRunRejects(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"public address", []string{"-addr", "0.0.0.0:0"}, "loopback"},
		{"host name", []string{"-addr", "example.com:80"}, "loopback"},
		{"no port", []string{"-addr", "127.0.0.1"}, "missing port"},
		{"stray argument", []string{"serve"}, "unexpected arguments"},
		{"unknown flag", []string{"-nope"}, "not defined"},
		{"unknown paging fault", []string{"-bindings-paging", "sideways"}, "must be one of repeat-token, backwards, empty-forever"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, tt.want)
			}
		})
	}
}

func TestRunFaultFlags(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-seed", "4", "-users", "12", "-strict-page-size", "-hostile-errors", "-users-paging", "empty-forever",
			"-service-bindings-paging", "empty-forever", "-no-load-headers"}, w, io.Discard)
		w.Close()
	}()
	lines := bufio.NewScanner(out)
	if !lines.Scan() {
		t.Fatalf("no address printed: %v", <-done)
	}
	base := lines.Text()
	world := twiliotest.NewWorld(twiliotest.WorldSpec{Seed: 4, Services: 1, UsersPerService: 12, MaxBindingsPerUser: 150})
	get := func(target string) (int, string) {
		req, err := http.NewRequest(http.MethodGet, base+target, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(world.AccountSID, twiliotest.DefaultAuthToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if v := resp.Header.Get(twiliotest.ConcurrentRequestsHeader); v != "" {
			t.Errorf("GET %s: %s %q despite -no-load-headers", target, twiliotest.ConcurrentRequestsHeader, v)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(body)
	}
	svc := world.Services[0]
	if status, body := get("/v2/Services/" + svc.SID + "/Users/" + svc.Users[0].SID + "/Bindings?PageSize=51"); status != 400 || !strings.Contains(body, `\u001b[2J`) {
		t.Errorf("PageSize 51: %d %.80s, want 400 with a hostile message", status, body)
	}
	var page struct {
		Users []json.RawMessage `json:"users"`
		Meta  struct {
			NextPageURL *string `json:"next_page_url"`
		} `json:"meta"`
	}
	status, body := get("/v2/Services/" + svc.SID + "/Users")
	if err := json.Unmarshal([]byte(body), &page); err != nil || status != 200 || len(page.Users) != 0 || page.Meta.NextPageURL == nil {
		t.Errorf("Users page: %d, %d users, next %v, err %v; want an empty page with a next page", status, len(page.Users), page.Meta.NextPageURL, err)
	}
	var bindings struct {
		Bindings []json.RawMessage `json:"bindings"`
		Meta     struct {
			NextPageURL *string `json:"next_page_url"`
		} `json:"meta"`
	}
	status, body = get("/v2/Services/" + svc.SID + "/Bindings")
	if err := json.Unmarshal([]byte(body), &bindings); err != nil || status != 200 || len(bindings.Bindings) != 0 || bindings.Meta.NextPageURL == nil {
		t.Errorf("service Bindings page: %d, %d bindings, err %v; want an empty page with a next page", status, len(bindings.Bindings), err)
	}
	cancel()
	for lines.Scan() {
	}
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
}

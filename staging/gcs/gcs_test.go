package gcs

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/staging/stagingtest"
)

const testBucket = "bindsync-test"

// fakeGCS is an in-process fake GCS server with a client whose requests
// never leave the process and can be answered with a lost response.
type fakeGCS struct {
	server *fakestorage.Server
	client *storage.Client
	faults *faultTransport
}

func newFakeGCS(t *testing.T) *fakeGCS {
	t.Helper()
	// NoListener: the server opens no socket; its transport calls the
	// handler directly.
	server, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", NoListener: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(server.Stop)
	server.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: testBucket})
	faults := &faultTransport{next: server.HTTPClient().Transport}
	client, err := storage.NewClient(context.Background(),
		option.WithHTTPClient(&http.Client{Transport: faults}),
		option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	client.SetRetry(storage.WithBackoff(gax.Backoff{Initial: time.Millisecond, Max: 10 * time.Millisecond}))
	t.Cleanup(func() { client.Close() })
	return &fakeGCS{server: server, client: client, faults: faults}
}

// faultTransport passes requests to the fake server, unless their context
// is done. While loseUploads is
// positive, successful uploads are applied but answered 503, as when a
// response is lost on the way back.
type faultTransport struct {
	next        http.RoundTripper
	mu          sync.Mutex
	loseUploads int
	uploads     int
	// failUploads, while positive, refuses uploads with 403 before they
	// reach the server, as a bucket whose permissions were taken away.
	failUploads int
}

func (f *faultTransport) failNextUploads(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failUploads = n
}

func (f *faultTransport) loseNextUploads(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loseUploads = n
}

func (f *faultTransport) uploadCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.uploads
}

func (f *faultTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	// The fake's own transport calls the handler without looking at the
	// request's context; a network would not get that far.
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	if strings.HasPrefix(req.URL.Path, "/upload/") {
		f.mu.Lock()
		fail := f.failUploads > 0
		if fail {
			f.failUploads--
		}
		f.mu.Unlock()
		if fail {
			return &http.Response{
				StatusCode: http.StatusForbidden,
				Status:     "403 Forbidden",
				Header:     http.Header{"Content-Type": {"application/json"}},
				Body:       io.NopCloser(strings.NewReader(`{"error":{"code":403,"message":"permission denied"}}`)),
				Request:    req,
			}, nil
		}
	}
	resp, err := f.next.RoundTrip(req)
	if !strings.HasPrefix(req.URL.Path, "/upload/") {
		return resp, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.uploads++
	if err != nil || resp.StatusCode != http.StatusOK || f.loseUploads == 0 {
		return resp, err
	}
	f.loseUploads--
	resp.Body.Close()
	return &http.Response{
		StatusCode: http.StatusServiceUnavailable,
		Status:     "503 Service Unavailable",
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       io.NopCloser(strings.NewReader(`{"error":{"code":503,"message":"backend error"}}`)),
		Request:    req,
	}, nil
}

// testClock is a settable clock for lease expiry.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock {
	return &testClock{now: time.Date(2025, 1, 2, 3, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (f *fakeGCS) store(t *testing.T, uri string, opts Options) *Store {
	t.Helper()
	g, err := New(t.Context(), f.client, uri, opts)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// objectNames lists every object of the test bucket, as GCS names them.
func (f *fakeGCS) objectNames(t *testing.T) []string {
	t.Helper()
	var names []string
	it := f.client.Bucket(testBucket).Objects(t.Context(), nil)
	for {
		attrs, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, attrs.Name)
	}
	sort.Strings(names)
	return names
}

func (f *fakeGCS) put(t *testing.T, name, content string) {
	t.Helper()
	w := f.client.Bucket(testBucket).Object(name).NewWriter(t.Context())
	if _, err := io.WriteString(w, content); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func (f *fakeGCS) lease(t *testing.T, name string) leaseRecord {
	t.Helper()
	r, err := f.client.Bucket(testBucket).Object(name).NewReader(t.Context())
	if err != nil {
		t.Fatalf("read lock object %s: %v", name, err)
	}
	defer r.Close()
	var rec leaseRecord
	if err := json.NewDecoder(r).Decode(&rec); err != nil {
		t.Fatalf("decode lock object %s: %v", name, err)
	}
	return rec
}

func TestGCSStore(t *testing.T) {
	stagingtest.Run(t, func(t *testing.T) stagingtest.Store {
		return newFakeGCS(t).store(t, "gs://"+testBucket+"/staging/bindsync", Options{})
	})
}

func TestGCSStoreWholeBucket(t *testing.T) {
	stagingtest.Run(t, func(t *testing.T) stagingtest.Store {
		return newFakeGCS(t).store(t, "gs://"+testBucket, Options{})
	})
}

func TestNewGCSErrors(t *testing.T) {
	f := newFakeGCS(t)
	tests := []struct {
		name    string
		client  *storage.Client
		uri     string
		opts    Options
		wantErr string
	}{
		{"no client", nil, "gs://" + testBucket + "/x", Options{}, "no storage client"},
		{"bad uri", f.client, "gs://Bad/x", Options{}, "not a valid bucket name"},
		{"negative ttl", f.client, "gs://" + testBucket + "/x", Options{LockTTL: -time.Second}, "lock TTL must be at least 1s (got -1s)"},
		{"tiny ttl", f.client, "gs://" + testBucket + "/x", Options{LockTTL: time.Millisecond}, "lock TTL must be at least 1s (got 1ms)"},
		{"missing bucket", f.client, "gs://missing-bucket/x", Options{}, "gs://missing-bucket/x"},
	}
	for _, tt := range tests {
		_, err := New(t.Context(), tt.client, tt.uri, tt.opts)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: err = %v, want one containing %q", tt.name, err, tt.wantErr)
		}
	}
}

func TestGCSURI(t *testing.T) {
	f := newFakeGCS(t)
	tests := []struct {
		store, name, want string
	}{
		{"gs://" + testBucket + "/staging", "snap/part-00001.parquet", "gs://" + testBucket + "/staging/snap/part-00001.parquet"},
		{"gs://" + testBucket + "/a/b/", "x", "gs://" + testBucket + "/a/b/x"},
		{"gs://" + testBucket, "x", "gs://" + testBucket + "/x"},
	}
	for _, tt := range tests {
		if got := f.store(t, tt.store, Options{}).URI(tt.name); got != tt.want {
			t.Errorf("store %s: URI(%q) = %q, want %q", tt.store, tt.name, got, tt.want)
		}
	}
}

// TestGCSObjectLayout checks the object names and types in the bucket and
// that a store sees only its own prefix.
func TestGCSObjectLayout(t *testing.T) {
	ctx := t.Context()
	f := newFakeGCS(t)
	// Neighbours and names no Store method accepts.
	for _, name := range []string{"stage", "stage-2/x", "stage/", "stage/a//b", "stage/.tmp-x", "other/y"} {
		f.put(t, name, "foreign")
	}
	s := f.store(t, "gs://"+testBucket+"/stage", Options{})
	stagingtest.WriteObject(t, s, "snap/part-00001.parquet", "PAR1")
	if err := s.PutIfAbsent(ctx, "snap/_log/000001.json", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	lease, err := s.Lock(ctx, "snap/LOCK")
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()

	want := []string{"other/y", "stage", "stage-2/x", "stage/", "stage/.locks/snap/LOCK", "stage/.tmp-x",
		"stage/a//b", "stage/snap/_log/000001.json", "stage/snap/part-00001.parquet"}
	if got := f.objectNames(t); !reflect.DeepEqual(got, want) {
		t.Errorf("objects in the bucket =\n%q\nwant\n%q", got, want)
	}
	wantList := []string{"snap/_log/000001.json", "snap/part-00001.parquet"}
	if got := stagingtest.ListAll(t, s); !reflect.DeepEqual(got, wantList) {
		t.Errorf("List = %q, want %q", got, wantList)
	}
	types := map[string]string{
		"stage/snap/part-00001.parquet": "application/vnd.apache.parquet",
		"stage/snap/_log/000001.json":   "application/json",
		"stage/.locks/snap/LOCK":        "application/json",
	}
	for name, want := range types {
		attrs, err := f.client.Bucket(testBucket).Object(name).Attrs(ctx)
		if err != nil || attrs.ContentType != want {
			t.Errorf("%s: content type %v, %v; want %q", name, attrs.ContentType, err, want)
		}
	}
}

func TestGCSOpenKeepsGeneration(t *testing.T) {
	f := newFakeGCS(t)
	s := f.store(t, "gs://"+testBucket+"/stage", Options{})
	stagingtest.WriteObject(t, s, "part", "first version")
	obj, err := s.Open(t.Context(), "part")
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	stagingtest.WriteObject(t, s, "part", "second version")
	// The opened generation is gone: reading it must fail, not return
	// bytes of the new version.
	buf := make([]byte, 5)
	if n, err := obj.ReadAt(buf, 0); !errors.Is(err, staging.ErrNotExist) {
		t.Errorf("ReadAt after replace = %q, %v; want ErrNotExist", buf[:n], err)
	}
	if err := obj.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := obj.ReadAt(buf, 0); err == nil {
		t.Error("ReadAt after Close succeeded")
	}
}

// TestGCSPutIfAbsentLostResponse checks that a write retried after its
// answer was lost is not mistaken for another writer's.
func TestGCSPutIfAbsentLostResponse(t *testing.T) {
	ctx := t.Context()
	f := newFakeGCS(t)
	s := f.store(t, "gs://"+testBucket+"/stage", Options{})
	f.faults.loseNextUploads(1)
	if err := s.PutIfAbsent(ctx, "log/000001.json", []byte("mine")); err != nil {
		t.Fatalf("PutIfAbsent with a lost response: %v", err)
	}
	if got := f.faults.uploadCount(); got != 2 {
		t.Fatalf("uploads = %d, want 2 (the lost one and its retry)", got)
	}
	if got, err := s.ReadAll(ctx, "log/000001.json"); err != nil || string(got) != "mine" {
		t.Errorf("content = %q, %v; want %q", got, err, "mine")
	}
	// A real conflict is still one.
	if err := s.PutIfAbsent(ctx, "log/000001.json", []byte("other")); !errors.Is(err, staging.ErrExists) {
		t.Errorf("PutIfAbsent over an existing object: err = %v, want ErrExists", err)
	}
}

// TestGCSLockLease walks a lease through its life: held, refreshed,
// expired, taken over, lost and released.
func TestGCSLockLease(t *testing.T) {
	ctx := t.Context()
	f := newFakeGCS(t)
	clock := newTestClock()
	const ttl = 9 * time.Minute
	const lockObject = "stage/.locks/snap/LOCK"
	uri := "gs://" + testBucket + "/stage"
	a := f.store(t, uri, Options{LockTTL: ttl, Owner: "host-a pid 1 run r1", Now: clock.Now})
	b := f.store(t, uri, Options{LockTTL: ttl, Owner: "host-b pid 2 run r2", Now: clock.Now})
	ticks := make(chan time.Time)
	refreshed := make(chan error)
	a.newTicker = func(d time.Duration) (<-chan time.Time, func()) {
		if d != ttl/3 {
			t.Errorf("refresh interval %s, want %s", d, ttl/3)
		}
		return ticks, func() {}
	}
	a.afterRefresh = func(err error) { refreshed <- err }
	refresh := func() error {
		ticks <- clock.Now()
		return <-refreshed
	}

	leaseA, err := a.Lock(ctx, "snap/LOCK")
	if err != nil {
		t.Fatal(err)
	}
	start := clock.Now()
	if got, want := f.lease(t, lockObject), (leaseRecord{"host-a pid 1 run r1", start.Add(ttl)}); !got.Expires.Equal(want.Expires) || got.Owner != want.Owner {
		t.Errorf("lease = %+v, want %+v", got, want)
	}

	_, err = b.Lock(ctx, "snap/LOCK")
	if !errors.Is(err, staging.ErrLocked) {
		t.Fatalf("Lock by b: err = %v, want ErrLocked", err)
	}
	for _, want := range []string{"host-a pid 1 run r1", "2025-01-02T03:09:00Z"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ErrLocked message %q does not name %q", err, want)
		}
	}
	if got, want := b.LockURI("snap/LOCK"), "gs://"+testBucket+"/"+lockObject; got != want {
		t.Errorf("LockURI = %q, want %q (the object the lease is in)", got, want)
	}

	// a renews at two thirds of the TTL; b still cannot lock after the
	// first expiry.
	clock.Advance(6 * time.Minute)
	if err := refresh(); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if got := f.lease(t, lockObject).Expires; !got.Equal(start.Add(6*time.Minute + ttl)) {
		t.Errorf("lease expires %s after refresh, want %s", got, start.Add(6*time.Minute+ttl))
	}
	clock.Advance(4 * time.Minute)
	if _, err := b.Lock(ctx, "snap/LOCK"); !errors.Is(err, staging.ErrLocked) {
		t.Fatalf("Lock by b after the first expiry: err = %v, want ErrLocked", err)
	}

	// a stops renewing (say it hangs); once the lease expires b takes over.
	clock.Advance(6 * time.Minute)
	leaseB, err := b.Lock(ctx, "snap/LOCK")
	if err != nil {
		t.Fatalf("Lock by b after expiry: %v", err)
	}
	if got := f.lease(t, lockObject).Owner; got != "host-b pid 2 run r2" {
		t.Errorf("lease owner after takeover = %q", got)
	}

	// a's next refresh finds the lease lost; its unlock says so and leaves
	// b's lease alone.
	if err := refresh(); !errors.Is(err, staging.ErrLeaseLost) {
		t.Errorf("refresh after takeover: err = %v, want ErrLeaseLost", err)
	}
	if err := leaseA.Release(); !errors.Is(err, staging.ErrLeaseLost) {
		t.Errorf("Release by a: err = %v, want ErrLeaseLost", err)
	}
	if got := f.lease(t, lockObject).Owner; got != "host-b pid 2 run r2" {
		t.Errorf("lease owner after a's unlock = %q, want b", got)
	}
	if _, err := a.Lock(ctx, "snap/LOCK"); !errors.Is(err, staging.ErrLocked) {
		t.Errorf("Lock by a while b holds it: err = %v, want ErrLocked", err)
	}

	if err := leaseB.Release(); err != nil {
		t.Fatalf("Release by b: %v", err)
	}
	if got := f.objectNames(t); len(got) != 0 {
		t.Errorf("objects after unlock = %v, want none", got)
	}
}

// TestGCSUnlockAfterTakeover checks that a holder whose lease was taken
// over before any refresh noticed it does not delete the new holder's lock.
func TestGCSUnlockAfterTakeover(t *testing.T) {
	ctx := t.Context()
	f := newFakeGCS(t)
	clock := newTestClock()
	uri := "gs://" + testBucket + "/stage"
	a := f.store(t, uri, Options{LockTTL: time.Minute, Owner: "a", Now: clock.Now})
	b := f.store(t, uri, Options{LockTTL: time.Minute, Owner: "b", Now: clock.Now})
	a.newTicker = func(time.Duration) (<-chan time.Time, func()) { return nil, func() {} }
	leaseA, err := a.Lock(ctx, "run")
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	leaseB, err := b.Lock(ctx, "run")
	if err != nil {
		t.Fatalf("takeover of an expired lease: %v", err)
	}
	if err := leaseA.Release(); !errors.Is(err, staging.ErrLeaseLost) {
		t.Errorf("Release by a: err = %v, want ErrLeaseLost", err)
	}
	if got := f.lease(t, "stage/.locks/run").Owner; got != "b" {
		t.Errorf("lease owner after a's unlock = %q, want b", got)
	}
	if err := leaseB.Release(); err != nil {
		t.Errorf("Release by b: %v", err)
	}
}

// TestGCSLockTakeoverRace has many processes find the same expired lease:
// exactly one may take it over.
func TestGCSLockTakeoverRace(t *testing.T) {
	ctx := t.Context()
	f := newFakeGCS(t)
	clock := newTestClock()
	f.put(t, "stage/.locks/run", `{"owner":"crashed","expires":"2025-01-02T02:59:00Z"}`)
	const n = 8
	stores := make([]*Store, n)
	for i := range stores {
		stores[i] = f.store(t, "gs://"+testBucket+"/stage", Options{Owner: string(rune('a' + i)), Now: clock.Now})
	}
	leases := make([]staging.Lease, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { leases[i], errs[i] = stores[i].Lock(ctx, "run") })
	}
	wg.Wait()
	winner := stagingtest.OneWinner(t, errs, staging.ErrLocked, "store taking over the expired lock")
	if got, want := f.lease(t, "stage/.locks/run").Owner, string(rune('a'+winner)); got != want {
		t.Errorf("lease owner = %q, want the winner %q", got, want)
	}
	if err := leases[winner].Release(); err != nil {
		t.Fatal(err)
	}
}

func TestGCSLockUnreadableLease(t *testing.T) {
	f := newFakeGCS(t)
	f.put(t, "stage/.locks/run", "not json")
	s := f.store(t, "gs://"+testBucket+"/stage", Options{})
	_, err := s.Lock(t.Context(), "run")
	if err == nil || errors.Is(err, staging.ErrLocked) || !strings.Contains(err.Error(), "unreadable lease in gs://"+testBucket+"/stage/.locks/run") {
		t.Errorf("Lock over garbage: err = %v, want an unreadable lease error", err)
	}
}

// TestGCSLockLostResponse checks that a lock whose creation was applied
// but answered with an error is still taken, not reported as held.
func TestGCSLockLostResponse(t *testing.T) {
	f := newFakeGCS(t)
	s := f.store(t, "gs://"+testBucket+"/stage", Options{Owner: "me"})
	f.faults.loseNextUploads(1)
	lease, err := s.Lock(t.Context(), "run")
	if err != nil {
		t.Fatalf("Lock with a lost response: %v", err)
	}
	if err := lease.Release(); err != nil {
		t.Fatal(err)
	}
	if got := f.objectNames(t); len(got) != 0 {
		t.Errorf("objects after unlock = %v, want none", got)
	}
}

// TestGCSUnlockAfterCancel checks that a lock taken in a context that was
// cancelled since, as on SIGTERM, is still released.
func TestGCSUnlockAfterCancel(t *testing.T) {
	f := newFakeGCS(t)
	s := f.store(t, "gs://"+testBucket+"/stage", Options{})
	ctx, cancel := context.WithCancel(t.Context())
	lease, err := s.Lock(ctx, "run")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := lease.Release(); err != nil {
		t.Fatalf("unlock after cancel: %v", err)
	}
	if got := f.objectNames(t); len(got) != 0 {
		t.Errorf("objects after unlock = %v, want none", got)
	}
}

// manualRefresh makes s renew its leases only when the returned function
// is called; the function returns the outcome of that renewal.
func manualRefresh(t *testing.T, s *Store) func() error {
	t.Helper()
	ticks := make(chan time.Time)
	refreshed := make(chan error)
	s.newTicker = func(time.Duration) (<-chan time.Time, func()) { return ticks, func() {} }
	s.afterRefresh = func(err error) { refreshed <- err }
	return func() error {
		ticks <- time.Time{}
		return <-refreshed
	}
}

// isLost reports whether the lease's Lost channel is closed.
func isLost(l staging.Lease) bool {
	select {
	case <-l.Lost():
		return true
	default:
		return false
	}
}

// TestGCSLeaseLostSignalled checks that a lease whose renewal finds the
// lock object changed by another writer, or removed, closes its Lost
// channel with a reason naming the object, and that Release then reports
// the loss and leaves the other writer's object alone.
func TestGCSLeaseLostSignalled(t *testing.T) {
	const lockObject = "stage/.locks/snap/LOCK"
	tests := []struct {
		name   string
		change func(t *testing.T, f *fakeGCS)
		want   []string // objects left after Release
	}{
		{"object removed", func(t *testing.T, f *fakeGCS) {
			if err := f.client.Bucket(testBucket).Object(lockObject).Delete(t.Context()); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"generation changed", func(t *testing.T, f *fakeGCS) {
			f.put(t, lockObject, `{"owner":"someone else","expires":"2099-01-01T00:00:00Z"}`)
		}, []string{lockObject}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeGCS(t)
			s := f.store(t, "gs://"+testBucket+"/stage", Options{Owner: "me"})
			refresh := manualRefresh(t, s)
			lease, err := s.Lock(t.Context(), "snap/LOCK")
			if err != nil {
				t.Fatal(err)
			}
			if err := refresh(); err != nil || isLost(lease) {
				t.Fatalf("refresh of a held lease: %v, lost %v", err, isLost(lease))
			}
			tt.change(t, f)
			if err := refresh(); !errors.Is(err, staging.ErrLeaseLost) {
				t.Errorf("refresh after the change: err = %v, want ErrLeaseLost", err)
			}
			if !isLost(lease) {
				t.Fatal("Lost not closed after the lease was lost")
			}
			err = lease.Err()
			if !errors.Is(err, staging.ErrLeaseLost) || !strings.Contains(err.Error(), "gs://"+testBucket+"/"+lockObject) {
				t.Errorf("Err = %v, want ErrLeaseLost naming the lock object", err)
			}
			if err := lease.Release(); !errors.Is(err, staging.ErrLeaseLost) {
				t.Errorf("Release of a lost lease: err = %v, want ErrLeaseLost", err)
			}
			if got := f.objectNames(t); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("objects after Release = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestGCSLeaseLostWhenRenewalsFail checks that renewals failing for
// another reason than a changed object are retried at the next tick while
// the lease lasts, and count as a loss once the lease would expire before
// the tick after: another process may take it over then.
func TestGCSLeaseLostWhenRenewalsFail(t *testing.T) {
	f := newFakeGCS(t)
	clock := newTestClock()
	const ttl = 9 * time.Minute
	s := f.store(t, "gs://"+testBucket+"/stage", Options{LockTTL: ttl, Owner: "me", Now: clock.Now})
	refresh := manualRefresh(t, s)
	lease, err := s.Lock(t.Context(), "snap/LOCK")
	if err != nil {
		t.Fatal(err)
	}

	// Lease until 9m. A failed renewal at 3m leaves time for the one at
	// 6m, which succeeds: the lease now runs to 15m.
	clock.Advance(ttl / 3)
	f.faults.failNextUploads(1)
	if err := refresh(); err == nil || errors.Is(err, staging.ErrLeaseLost) || isLost(lease) {
		t.Fatalf("first failed renewal: err = %v, lost %v; want a plain error", err, isLost(lease))
	}
	clock.Advance(ttl / 3)
	if err := refresh(); err != nil {
		t.Fatalf("renewal: %v", err)
	}

	// Failures at 9m and 12m: after the second the next tick (15m) is no
	// earlier than the expiry.
	f.faults.failNextUploads(2)
	clock.Advance(ttl / 3)
	if err := refresh(); err == nil || isLost(lease) {
		t.Fatalf("renewal at 9m: err = %v, lost %v; want a plain error", err, isLost(lease))
	}
	clock.Advance(ttl / 3)
	if err := refresh(); !errors.Is(err, staging.ErrLeaseLost) {
		t.Fatalf("renewal at 12m: err = %v, want ErrLeaseLost", err)
	}
	if !isLost(lease) {
		t.Fatal("Lost not closed")
	}
	if err := lease.Err(); !errors.Is(err, staging.ErrLeaseLost) || !strings.Contains(err.Error(), "could not renew it before it expires at 2025-01-02T03:15:00Z") {
		t.Errorf("Err = %v, want a loss naming the expiry", err)
	}
	if err := lease.Release(); !errors.Is(err, staging.ErrLeaseLost) {
		t.Errorf("Release: err = %v, want ErrLeaseLost", err)
	}
}

// TestUploadChunkSize checks that the store's upload chunk is the one
// the shared suite writes past, so that it exercises multi-request
// uploads and reads across a chunk boundary.
func TestUploadChunkSize(t *testing.T) {
	if chunkSize != stagingtest.UploadChunkSize {
		t.Errorf("chunkSize = %d, stagingtest.UploadChunkSize = %d; want them equal", chunkSize, stagingtest.UploadChunkSize)
	}
}

// TestLockTTL checks what a run waits for a held lock: the lease of a GCS
// lock, nothing for a local one.
func TestLockTTL(t *testing.T) {
	f := newFakeGCS(t)
	if got := staging.LockTTL(f.store(t, "gs://"+testBucket+"/stage", Options{LockTTL: 2 * time.Minute})); got != 2*time.Minute {
		t.Errorf("LockTTL(GCS with a 2m lease) = %s", got)
	}
	if got := staging.LockTTL(f.store(t, "gs://"+testBucket+"/stage", Options{})); got != DefaultLockTTL {
		t.Errorf("LockTTL(GCS by default) = %s, want %s", got, DefaultLockTTL)
	}
	if got := staging.LockTTL(stagingtest.NewDir(t)); got != 0 {
		t.Errorf("LockTTL(Dir) = %s, want 0", got)
	}
}

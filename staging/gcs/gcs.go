// Package gcs is the staging store on a Google Cloud Storage bucket prefix:
// Store implements staging.Store, staging.Locker (locks are leases kept in
// hidden lock objects) and staging.InPlace (BigQuery loads its objects
// where they lie). It is apart from package staging so that only the
// programs that open a gs:// staging link the Google Cloud client; the
// gs:// URI rules it applies are staging.ParseGCSURI and
// staging.ValidBucketName.
package gcs

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bindsync/bindsync/staging"
)

// errConditionNotMet means a conditional write found the object in
// another state than it required; callers only print it, so it stays
// unexported.
var errConditionNotMet = errors.New("precondition not met")

const (
	// DefaultLockTTL is how long a GCS lock outlives its holder's last
	// refresh when Options.LockTTL is zero.
	DefaultLockTTL = 10 * time.Minute

	// minLockTTL leaves a lease refresh, every TTL/3, time for a request.
	minLockTTL = time.Second

	// chunkSize bounds the memory of one upload: the client buffers one
	// chunk so that it can resend it.
	chunkSize = 8 << 20
	// writeIDKey is the object metadata key holding a random ID per
	// conditional write, to recognise our own write after a retry.
	writeIDKey = "bindsync-write-id"
	// maxLeaseBytes bounds what Lock reads from a lock object.
	maxLeaseBytes = 64 << 10
	// lockAttempts bounds how often Lock retries when the lock object
	// changes under it.
	lockAttempts = 3
	// maxRefreshTimeout bounds one lease refresh, so unlock never waits long
	// for a hung request.
	maxRefreshTimeout = 30 * time.Second
	// unlockTimeout bounds the delete of a lock object on unlock.
	unlockTimeout = 30 * time.Second
	// lockDir holds the lock objects under the store prefix. Its leading
	// "." keeps it out of every name staging.CheckName accepts, as the
	// lock directory of a staging.Dir is, so locks never collide with
	// objects and List skips them.
	lockDir = ".locks"
)

// Store is a staging.Store on a bucket prefix: the object name is stored as
// gs://bucket/prefix/<name>. Objects appear only when their upload is
// finalized, so readers never see part of one. Locks are leases kept in
// hidden objects under prefix/.locks/, because no server notices that a
// process died: a crashed holder's lock frees itself LockTTL after its last
// refresh.
type Store struct {
	bucket     *storage.BucketHandle
	bucketName string
	prefix     string // "" or ending in "/"
	ttl        time.Duration
	owner      string
	now        func() time.Time

	// newTicker paces lease refreshes; tests replace it to refresh on demand.
	newTicker func(d time.Duration) (<-chan time.Time, func())
	// afterRefresh, when set by tests, receives the outcome of each refresh.
	afterRefresh func(error)
}

var (
	_ staging.Store   = (*Store)(nil)
	_ staging.Locker  = (*Store)(nil)
	_ staging.InPlace = (*Store)(nil)
)

// Options tunes a Store. The zero value is ready to use.
type Options struct {
	// LockTTL is how long a lock stays held after its holder's last refresh
	// (every LockTTL/3). After a crash, the next Lock of the same name waits
	// out the rest of it. Zero means DefaultLockTTL; otherwise at least 1s.
	LockTTL time.Duration
	// Owner names the lock holder in lock objects and in staging.ErrLocked
	// messages, e.g. host, pid and run ID. Empty means "host pid N".
	Owner string
	// Now is the clock of lease expiry times; time.Now if nil. Hosts
	// sharing a bucket need clocks that agree to well within LockTTL.
	Now func() time.Time
}

// New returns the store at uri (gs://bucket/prefix, checked by
// staging.ParseGCSURI) using client. It lists at most one object to fail
// early on a missing bucket or missing permissions; that needs only
// storage.objects.list, which the object roles grant, unlike reading the
// bucket's own metadata.
func New(ctx context.Context, client *storage.Client, uri string, opts Options) (*Store, error) {
	if client == nil {
		return nil, fmt.Errorf("staging %s: no storage client", uri)
	}
	bucket, prefix, err := staging.ParseGCSURI(uri)
	if err != nil {
		return nil, err
	}
	if opts.LockTTL != 0 && opts.LockTTL < minLockTTL {
		return nil, fmt.Errorf("staging %s: lock TTL must be at least %s (got %s)", uri, minLockTTL, opts.LockTTL)
	}
	if opts.LockTTL == 0 {
		opts.LockTTL = DefaultLockTTL
	}
	if opts.Owner == "" {
		host, _ := os.Hostname()
		opts.Owner = fmt.Sprintf("%s pid %d", host, os.Getpid())
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if prefix != "" {
		prefix += "/"
	}
	g := &Store{
		bucket:     client.Bucket(bucket),
		bucketName: bucket,
		prefix:     prefix,
		ttl:        opts.LockTTL,
		owner:      opts.Owner,
		now:        opts.Now,
		newTicker: func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		},
	}
	it := g.bucket.Objects(ctx, &storage.Query{Prefix: prefix})
	it.PageInfo().MaxSize = 1
	if _, err := it.Next(); err != nil && !errors.Is(err, iterator.Done) {
		return nil, fmt.Errorf("staging %s: %w", uri, err)
	}
	return g, nil
}

// handle returns the handle of a checked name.
func (g *Store) handle(name string) *storage.ObjectHandle {
	return g.bucket.Object(g.prefix + name)
}

// contentType labels objects for people browsing the bucket.
func contentType(name string) string {
	switch path.Ext(name) {
	case ".parquet":
		return "application/vnd.apache.parquet"
	case ".json":
		return "application/json"
	}
	return "application/octet-stream"
}

// notExist turns the client's "no such object" into staging.ErrNotExist,
// keeping other errors.
func notExist(err error) error {
	if errors.Is(err, storage.ErrObjectNotExist) {
		return staging.ErrNotExist
	}
	return err
}

// preconditionFailed reports whether err is GCS refusing a conditional
// request: HTTP 412 on the JSON API, FAILED_PRECONDITION on gRPC.
func preconditionFailed(err error) bool {
	var gerr *googleapi.Error
	if errors.As(err, &gerr) {
		return gerr.Code == http.StatusPreconditionFailed
	}
	return status.Code(err) == codes.FailedPrecondition
}

// Create starts an upload of name. The object appears, replacing any
// previous one, only when Close finalizes the upload; Abort cancels it.
// The writer lives in ctx: cancelling ctx aborts the upload.
func (g *Store) Create(ctx context.Context, name string) (staging.Writer, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("create %q: %w", name, err)
	}
	if err := staging.CheckName(name); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	// Sending the same bytes twice leaves the same object, so even this
	// unconditional upload may be retried.
	obj := g.handle(name).Retryer(storage.WithPolicy(storage.RetryAlways))
	w := obj.NewWriter(wctx)
	w.ChunkSize = chunkSize
	w.ContentType = contentType(name)
	return &writer{w: w, cancel: cancel, name: name}, nil
}

// writer is the staging.Writer of Store.Create.
type writer struct {
	w      *storage.Writer
	cancel context.CancelFunc
	name   string
	done   bool
}

func (w *writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, fmt.Errorf("write %q: writer already closed", w.name)
	}
	n, err := w.w.Write(p)
	if err != nil {
		return n, fmt.Errorf("write %q: %w", w.name, err)
	}
	return n, nil
}

// Close finalizes the upload; once it returns nil the object is durable.
func (w *writer) Close() error {
	if w.done {
		return fmt.Errorf("close %q: writer already closed", w.name)
	}
	w.done = true
	defer w.cancel()
	if err := w.w.Close(); err != nil {
		return fmt.Errorf("commit %q: %w", w.name, err)
	}
	return nil
}

// Abort cancels the upload before it is finalized, so no object appears;
// it does nothing after Close.
func (w *writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.cancel()
	// With its context cancelled the upload cannot finalize; Close waits
	// for the client's upload goroutine to stop.
	w.w.Close()
}

// newWriteID returns a random ID for writeIDKey.
func newWriteID() string {
	return rand.Text()
}

// putIf writes data to obj under conds and returns the new generation, or
// errConditionNotMet. The client retries conditional writes, so a write
// whose answer was lost can be sent again and fail its own precondition;
// the random write ID in the object's metadata tells that apart from
// another writer's object.
func putIf(ctx context.Context, obj *storage.ObjectHandle, conds storage.Conditions, data []byte, ctype string) (int64, error) {
	id := newWriteID()
	w := obj.If(conds).NewWriter(ctx)
	// One request, with a buffer just large enough to resend it.
	w.ChunkSize = len(data) + 1
	w.ContentType = ctype
	w.Metadata = map[string]string{writeIDKey: id}
	_, err := w.Write(data)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		return w.Attrs().Generation, nil
	}
	if !preconditionFailed(err) {
		return 0, err
	}
	attrs, aerr := obj.Attrs(ctx)
	if aerr == nil && attrs.Metadata[writeIDKey] == id {
		return attrs.Generation, nil
	}
	return 0, fmt.Errorf("%w: %w", errConditionNotMet, err)
}

// PutIfAbsent writes data under name with a does-not-exist precondition,
// which GCS checks and applies atomically.
func (g *Store) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %q: %w", name, err)
	}
	if err := staging.CheckName(name); err != nil {
		return err
	}
	_, err := putIf(ctx, g.handle(name), storage.Conditions{DoesNotExist: true}, data, contentType(name))
	if errors.Is(err, errConditionNotMet) {
		return fmt.Errorf("put %q: %w", name, staging.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("put %q: %w", name, err)
	}
	return nil
}

// Open reads the attributes of name and returns an Object whose reads are
// ranged requests of that generation, made in ctx. If name is replaced
// meanwhile, reads fail rather than mix two versions.
func (g *Store) Open(ctx context.Context, name string) (staging.Object, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open %q: %w", name, err)
	}
	if err := staging.CheckName(name); err != nil {
		return nil, err
	}
	obj := g.handle(name)
	attrs, err := obj.Attrs(ctx)
	if err != nil {
		return nil, fmt.Errorf("open %q: %w", name, notExist(err))
	}
	return &object{ctx: ctx, obj: obj.Generation(attrs.Generation), name: name, size: attrs.Size}, nil
}

// object is an object opened for reading.
type object struct {
	ctx    context.Context
	obj    *storage.ObjectHandle
	name   string
	size   int64
	closed atomic.Bool
}

func (o *object) Size() int64 { return o.size }

// Close makes later reads fail; there is nothing to release.
func (o *object) Close() error {
	if o.closed.Swap(true) {
		return fmt.Errorf("close %q: already closed", o.name)
	}
	return nil
}

// ReadAt fetches p's range of the object in one request, following the
// io.ReaderAt contract: io.EOF when the object ends before p is full.
func (o *object) ReadAt(p []byte, off int64) (int, error) {
	if o.closed.Load() {
		return 0, fmt.Errorf("read %q: object closed", o.name)
	}
	if off < 0 {
		return 0, fmt.Errorf("read %q at %d: negative offset", o.name, off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= o.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), o.size-off)
	r, err := o.obj.NewRangeReader(o.ctx, off, n)
	if err != nil {
		return 0, fmt.Errorf("read %q at %d: %w", o.name, off, notExist(err))
	}
	defer r.Close()
	got, err := io.ReadFull(r, p[:n])
	if err != nil {
		return got, fmt.Errorf("read %q at %d: %w", o.name, off, err)
	}
	if n < int64(len(p)) {
		return got, io.EOF
	}
	return got, nil
}

// ReadAll downloads the whole object name.
func (g *Store) ReadAll(ctx context.Context, name string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read %q: %w", name, err)
	}
	if err := staging.CheckName(name); err != nil {
		return nil, err
	}
	r, err := g.handle(name).NewReader(ctx)
	if err != nil {
		return nil, fmt.Errorf("read %q: %w", name, notExist(err))
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %q: %w", name, err)
	}
	return data, nil
}

// List pages through the objects under the store prefix + prefix. It skips
// lock objects and any object whose name no Store method accepts, such as
// the "folder/" placeholders of the Cloud Console.
func (g *Store) List(ctx context.Context, prefix string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	// As in Dir, the directory part of the prefix must be a valid name.
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		if err := staging.CheckName(prefix[:i]); err != nil {
			return nil, fmt.Errorf("list %q: %w", prefix, err)
		}
	}
	q := &storage.Query{Prefix: g.prefix + prefix}
	if err := q.SetAttrSelection([]string{"Name"}); err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	var names []string
	it := g.bucket.Objects(ctx, q)
	for {
		attrs, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("list %q: %w", prefix, err)
		}
		name, ok := strings.CutPrefix(attrs.Name, g.prefix)
		if ok && staging.CheckName(name) == nil {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names, nil
}

// Delete removes name.
func (g *Store) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete %q: %w", name, err)
	}
	if err := staging.CheckName(name); err != nil {
		return err
	}
	if err := g.handle(name).Delete(ctx); err != nil {
		return fmt.Errorf("delete %q: %w", name, notExist(err))
	}
	return nil
}

// Checksum returns the CRC32C that GCS computed for the object and keeps in
// its metadata: one metadata request, no download. The client sends its own
// CRC32C of every upload, which GCS checks before finalizing, so the value
// describes the bytes bindsync wrote.
func (g *Store) Checksum(ctx context.Context, name string) (uint32, int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, fmt.Errorf("checksum %q: %w", name, err)
	}
	if err := staging.CheckName(name); err != nil {
		return 0, 0, err
	}
	attrs, err := g.handle(name).Attrs(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("checksum %q: %w", name, notExist(err))
	}
	return attrs.CRC32C, attrs.Size, nil
}

// URI returns gs://bucket/prefix/name.
func (g *Store) URI(name string) string {
	return "gs://" + g.bucketName + "/" + g.prefix + name
}

// GCSURI returns the gs:// URI of the object name (staging.InPlace): GCS
// objects are always loadable in place.
func (g *Store) GCSURI(name string) (string, bool) { return g.URI(name), true }

// LockURI returns gs://bucket/prefix/.locks/name, the lock object of name.
func (g *Store) LockURI(name string) string {
	return "gs://" + g.bucketName + "/" + g.prefix + lockDir + "/" + name
}

// LockTTL is how long a lock of this store outlives its holder's last
// refresh (Options.LockTTL); see staging.LockTTL.
func (g *Store) LockTTL() time.Duration { return g.ttl }

// leaseRecord is the content of a lock object.
type leaseRecord struct {
	Owner   string    `json:"owner"`
	Expires time.Time `json:"expires"`
}

// leaseData returns a fresh lease of this store's owner. Its expiry is
// at least LockTTL after any time read before the call.
func (g *Store) leaseData() []byte {
	data, err := json.Marshal(leaseRecord{Owner: g.owner, Expires: g.now().Add(g.ttl).UTC()})
	if err != nil {
		panic(err) // a string and a time always marshal
	}
	return data
}

// Lock takes a lease on the object prefix/.locks/<name>: it creates the
// object if absent, or replaces it if the lease it holds has expired, each
// with a precondition so that of two processes only one wins. While held,
// the lease is renewed every LockTTL/3. The lease is lost, and its Lost
// channel closed, when a renewal finds that another process replaced or
// removed the object, or when renewals keep failing until the lease would
// expire before the next one. A second Lock of a held name, even in the
// same process, returns staging.ErrLocked, naming the holder and the lease's
// expiry.
func (g *Store) Lock(ctx context.Context, name string) (staging.Lease, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("lock %q: %w", name, err)
	}
	if err := staging.CheckName(name); err != nil {
		return nil, err
	}
	obj := g.bucket.Object(g.prefix + lockDir + "/" + name)
	// The lease written expires at least ttl after this moment.
	taken := g.now()
	gen, err := g.acquire(ctx, obj)
	if err != nil {
		return nil, fmt.Errorf("lock %q: %w", name, err)
	}
	l := &lease{
		g:        g,
		obj:      obj,
		name:     name,
		gen:      gen,
		expires:  taken.Add(g.ttl),
		ctx:      context.WithoutCancel(ctx),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		lostCh:   make(chan struct{}),
		interval: g.ttl / 3,
	}
	tick, stopTicker := g.newTicker(l.interval)
	go l.keep(tick, stopTicker)
	return l, nil
}

// acquire creates or takes over the lock object and returns its generation.
func (g *Store) acquire(ctx context.Context, obj *storage.ObjectHandle) (int64, error) {
	for range lockAttempts {
		gen, err := putIf(ctx, obj, storage.Conditions{DoesNotExist: true}, g.leaseData(), "application/json")
		if !errors.Is(err, errConditionNotMet) {
			return gen, err
		}
		held, gen, err := readLease(ctx, obj)
		if errors.Is(err, storage.ErrObjectNotExist) {
			continue // released meanwhile
		}
		if err != nil {
			return 0, err
		}
		if g.now().Before(held.Expires) {
			return 0, fmt.Errorf("%w: %s holds it until %s", staging.ErrLocked, held.Owner, held.Expires.Format(time.RFC3339))
		}
		// The holder stopped renewing: take over, unless another process
		// changes the object first.
		gen, err = putIf(ctx, obj, storage.Conditions{GenerationMatch: gen}, g.leaseData(), "application/json")
		if !errors.Is(err, errConditionNotMet) {
			return gen, err
		}
	}
	return 0, fmt.Errorf("%w: the lock object kept changing", staging.ErrLocked)
}

// readLease returns the lease in the lock object and its generation.
func readLease(ctx context.Context, obj *storage.ObjectHandle) (leaseRecord, int64, error) {
	r, err := obj.NewReader(ctx)
	if err != nil {
		return leaseRecord{}, 0, fmt.Errorf("read lease: %w", err)
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxLeaseBytes))
	if err != nil {
		return leaseRecord{}, 0, fmt.Errorf("read lease: %w", err)
	}
	var rec leaseRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return leaseRecord{}, 0, fmt.Errorf("unreadable lease in gs://%s/%s (delete it if no run holds the lock): %w", obj.BucketName(), obj.ObjectName(), err)
	}
	return rec, r.Attrs.Generation, nil
}

// lease is a held lock. gen, expires and lost belong to the keep
// goroutine until it has stopped; Release reads them after that, and Err
// reads lost after lostCh is closed, which keep does after setting it.
type lease struct {
	g        *Store
	obj      *storage.ObjectHandle
	name     string
	ctx      context.Context
	interval time.Duration
	stop     chan struct{}
	done     chan struct{}
	lostCh   chan struct{}
	once     sync.Once

	gen     int64
	expires time.Time // a lower bound of the stored lease's expiry
	lost    error
}

func (l *lease) Lost() <-chan struct{} { return l.lostCh }

func (l *lease) Err() error {
	select {
	case <-l.lostCh:
		return l.lost
	default:
		return nil
	}
}

// keep renews the lease at every tick until Release or until it is lost.
func (l *lease) keep(tick <-chan time.Time, stopTicker func()) {
	defer close(l.done)
	defer stopTicker()
	for l.lost == nil {
		select {
		case <-l.stop:
			return
		case <-tick:
			err := l.refresh()
			if l.lost != nil {
				close(l.lostCh)
			}
			if l.g.afterRefresh != nil {
				l.g.afterRefresh(err)
			}
		}
	}
}

// refresh rewrites the lease with a later expiry if the object still holds
// this lease. A failure other than a lost lease is left to the next tick,
// unless the lease would expire before that tick: another process may then
// take it over, so it counts as lost.
func (l *lease) refresh() error {
	ctx, cancel := context.WithTimeout(l.ctx, min(l.interval, maxRefreshTimeout))
	defer cancel()
	at := l.g.now()
	gen, err := putIf(ctx, l.obj, storage.Conditions{GenerationMatch: l.gen}, l.g.leaseData(), "application/json")
	switch {
	case err == nil:
		l.gen = gen
		l.expires = at.Add(l.g.ttl)
		return nil
	case errors.Is(err, errConditionNotMet):
		l.lost = fmt.Errorf("lock %q: %w: another process replaced or removed gs://%s/%s", l.name, staging.ErrLeaseLost, l.obj.BucketName(), l.obj.ObjectName())
		return l.lost
	case !l.g.now().Add(l.interval).Before(l.expires):
		l.lost = fmt.Errorf("lock %q: %w: could not renew it before it expires at %s: %w", l.name, staging.ErrLeaseLost, l.expires.Format(time.RFC3339), err)
		return l.lost
	}
	return fmt.Errorf("refresh lease of lock %q: %w", l.name, err)
}

// Release stops the renewals and deletes the lock object if it is still
// this lease's generation. Later calls return nil.
func (l *lease) Release() error {
	var err error
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		if l.lost != nil {
			err = fmt.Errorf("unlock: %w", l.lost)
			return
		}
		ctx, cancel := context.WithTimeout(l.ctx, unlockTimeout)
		defer cancel()
		// Naming the generation as well as requiring it to be live means
		// that even a server ignoring the precondition deletes only this
		// lease.
		derr := l.obj.Generation(l.gen).If(storage.Conditions{GenerationMatch: l.gen}).Delete(ctx)
		switch {
		case derr == nil:
		case preconditionFailed(derr) || errors.Is(derr, storage.ErrObjectNotExist):
			err = fmt.Errorf("unlock %q: %w: another process replaced or removed gs://%s/%s", l.name, staging.ErrLeaseLost, l.obj.BucketName(), l.obj.ObjectName())
		default:
			err = fmt.Errorf("unlock %q: %w", l.name, derr)
		}
	})
	return err
}

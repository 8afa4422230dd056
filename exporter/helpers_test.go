package exporter

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bindsync/bindsync/schemas"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/twilio"
)

var testMeta = schemas.RowMeta{
	SnapshotDate: time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC),
	SyncedAt:     time.Date(2025, 6, 1, 2, 30, 15, 123456000, time.UTC),
}

func ptr[T any](v T) *T { return &v }

// testBinding returns a distinct binding for each i, cycling through the
// shapes that must survive a round trip: all fields set, nulls, an empty
// list, a null list, unicode.
func testBinding(i int) twilio.Binding {
	created := time.Unix(1_500_000_000+int64(i), int64(i%1000)*1000).UTC()
	updated := created.Add(time.Duration(i) * time.Minute)
	b := twilio.Binding{
		SID:           ptr(fmt.Sprintf("BS%032x", i)),
		AccountSID:    ptr("AC" + strings.Repeat("a", 32)),
		ServiceSID:    ptr("IS" + strings.Repeat("b", 32)),
		DateCreated:   &created,
		DateUpdated:   &updated,
		Endpoint:      ptr(fmt.Sprintf("endpoint-%d", i)),
		Identity:      ptr(fmt.Sprintf("user-%d", i/3)),
		UserSID:       ptr(fmt.Sprintf("US%032x", i/3)),
		CredentialSID: ptr("CR" + strings.Repeat("c", 32)),
		BindingType:   ptr(twilio.BindingTypes[i%len(twilio.BindingTypes)]),
		MessageTypes:  []string{"new_message", "added_to_channel"},
		URL:           ptr(fmt.Sprintf("https://chat.twilio.com/v2/Services/IS/Users/US/Bindings/BS%d", i)),
	}
	switch i % 5 {
	case 1:
		b = twilio.Binding{BindingType: b.BindingType}
		if i%10 == 6 {
			// Against the API's contract, but seen: stored as null.
			b.BindingType = nil
		}
	case 2:
		b.MessageTypes = []string{}
	case 3:
		b.Identity = ptr(fmt.Sprintf("zoë %d/用户 ? %% # 🚀", i))
		b.MessageTypes = []string{"新消息"}
	case 4:
		b.CredentialSID = nil
		b.DateUpdated = nil
	}
	return b
}

func testBindings(from, n int) []twilio.Binding {
	out := make([]twilio.Binding, n)
	for i := range out {
		out[i] = testBinding(from + i)
	}
	return out
}

func wantRows(bs []twilio.Binding, meta schemas.RowMeta) []schemas.Row {
	out := make([]schemas.Row, len(bs))
	for i, b := range bs {
		out[i] = schemas.Row{Binding: b, SnapshotDate: meta.SnapshotDate, SyncedAt: meta.SyncedAt}
	}
	return out
}

func readAll(t testing.TB, store staging.Store, name string) []schemas.Row {
	t.Helper()
	var rows []schemas.Row
	err := ReadPart(context.Background(), store, name, func(r schemas.Row) error {
		rows = append(rows, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// writePart writes bs as the part name, appending in uneven slices the way
// pages of a user arrive.
func writePart(t testing.TB, store staging.Store, name string, bs []twilio.Binding, opts PartOptions) PartInfo {
	t.Helper()
	w, err := NewPartWriter(context.Background(), store, name, testMeta, opts)
	if err != nil {
		t.Fatal(err)
	}
	for len(bs) > 0 {
		n := min(37, len(bs))
		if err := w.Append(bs[:n]); err != nil {
			t.Fatal(err)
		}
		bs = bs[n:]
	}
	info, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// memStore is a staging.Store in memory. It is not a *staging.Dir, so it
// exercises the code paths for stores other than a local directory.
type memStore struct {
	mu      sync.Mutex
	objects map[string][]byte
}

var _ staging.Store = (*memStore)(nil)

func newMemStore() *memStore { return &memStore{objects: map[string][]byte{}} }

type memWriter struct {
	s    *memStore
	name string
	buf  bytes.Buffer
}

func (w *memWriter) Write(p []byte) (int, error) { return w.buf.Write(p) }
func (w *memWriter) Close() error {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	w.s.objects[w.name] = w.buf.Bytes()
	return nil
}
func (w *memWriter) Abort() {}

type memObject struct{ *bytes.Reader }

func (memObject) Close() error { return nil }

func (s *memStore) Create(ctx context.Context, name string) (staging.Writer, error) {
	return &memWriter{s: s, name: name}, nil
}

func (s *memStore) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.objects[name]; ok {
		return staging.ErrExists
	}
	s.objects[name] = append([]byte(nil), data...)
	return nil
}

func (s *memStore) Open(ctx context.Context, name string) (staging.Object, error) {
	data, err := s.ReadAll(ctx, name)
	if err != nil {
		return nil, err
	}
	return memObject{bytes.NewReader(data)}, nil
}

func (s *memStore) ReadAll(ctx context.Context, name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, ok := s.objects[name]
	if !ok {
		return nil, fmt.Errorf("%q: %w", name, staging.ErrNotExist)
	}
	return data, nil
}

func (s *memStore) List(ctx context.Context, prefix string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for name := range s.objects {
		if strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names, nil
}

func (s *memStore) Delete(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.objects[name]; !ok {
		return staging.ErrNotExist
	}
	delete(s.objects, name)
	return nil
}

func (s *memStore) Lock(ctx context.Context, name string) (func() error, error) {
	return func() error { return nil }, nil
}

func (s *memStore) Checksum(ctx context.Context, name string) (uint32, int64, error) {
	data, err := s.ReadAll(ctx, name)
	if err != nil {
		return 0, 0, err
	}
	return crc32.Checksum(data, staging.CRC32CTable), int64(len(data)), nil
}

func (s *memStore) URI(name string) string { return "mem://" + name }

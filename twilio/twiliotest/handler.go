package twiliotest

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bindsync/bindsync/twilio"
)

var serviceSIDPattern = regexp.MustCompile(`^IS[0-9a-fA-F]{32}$`)

// apiError is a Twilio error response.
type apiError struct {
	Code       int    `json:"code"`
	Message    string `json:"message"`
	MoreInfo   string `json:"more_info"`
	Status     int    `json:"status"`
	retryAfter int    // seconds; 0 sends no Retry-After header
}

func newError(status int, format string, args ...any) *apiError {
	code := 20000 + status%1000
	switch status {
	case http.StatusBadRequest:
		code = 20001
	case http.StatusUnauthorized:
		code = 20003
	case http.StatusMethodNotAllowed:
		code = 20004
	}
	return &apiError{
		Code:     code,
		Message:  fmt.Sprintf(format, args...),
		MoreInfo: fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code),
		Status:   status,
	}
}

// route is what the escaped request path names.
type route struct {
	kind    routeKind
	service string // path-unescaped once
	user    string // path-unescaped once
}

type routeKind int

const (
	routeUnknown routeKind = iota
	routeUsers
	routeBindings
	routeUser            // one user, by SID or identity
	routeServiceBindings // the service-wide Bindings list
)

// parseRoute routes on the escaped path, so "a%2Fb" stays one segment, and
// unescapes each segment exactly once.
func parseRoute(escapedPath string) route {
	segs := strings.Split(escapedPath, "/")
	var rt route
	switch {
	case len(segs) == 5 && segs[0] == "" && segs[1] == "v2" && segs[2] == "Services" && segs[4] == "Users":
		rt.kind = routeUsers
	case len(segs) == 5 && segs[0] == "" && segs[1] == "v2" && segs[2] == "Services" && segs[4] == "Bindings":
		rt.kind = routeServiceBindings
	case len(segs) == 7 && segs[0] == "" && segs[1] == "v2" && segs[2] == "Services" && segs[4] == "Users" && segs[6] == "Bindings",
		len(segs) == 6 && segs[0] == "" && segs[1] == "v2" && segs[2] == "Services" && segs[4] == "Users":
		rt.kind = routeBindings
		if len(segs) == 6 {
			rt.kind = routeUser
		}
		user, err := url.PathUnescape(segs[5])
		if err != nil || user == "" {
			return route{}
		}
		rt.user = user
	default:
		return route{}
	}
	service, err := url.PathUnescape(segs[3])
	if err != nil {
		return route{}
	}
	rt.service = service
	return rt
}

// outcome is how one request is answered.
type outcome struct {
	err   *apiError
	data  []byte // the 200 body when err is nil and stream is nil
	page  string // served-page key of a bindings page, "" otherwise
	fault fault  // faultDrop or faultTruncate, else faultNone
	gone  bool   // the client left; nothing to write
	// stream, when set, writes the 200 body instead of data, gzipped (with
	// Content-Encoding gzip) when gzip is set.
	stream func(w io.Writer) error
	gzip   bool
}

// serve answers one request. The request leaves the in-flight count as soon
// as its answer is ready and before it is written, so a client that waits
// for each response never overlaps with itself in MaxConcurrent or
// MaxInFlight.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	rt := parseRoute(r.URL.EscapedPath())
	n := s.inflight.Add(1)
	f := s.faults.Load()
	concurrent, admitted := s.admit(f)
	left := false
	leave := func() {
		if !left {
			left = true
			s.inflight.Add(-1)
			if admitted {
				s.admitted.Add(-1)
			}
		}
	}
	defer leave()
	s.countRequest(rt.kind, n, concurrent, admitted)
	var out outcome
	if admitted {
		out = s.handle(r, rt, f)
	} else {
		e := newError(http.StatusTooManyRequests, "Too many concurrent requests")
		e.retryAfter = f.retryAfter()
		out = outcome{err: e}
	}
	leave()
	if !s.opts.NoLoadHeaders {
		h := w.Header()
		h.Set(ConcurrentRequestsHeader, strconv.FormatInt(concurrent, 10))
		h.Set(RequestDurationHeader, strconv.FormatFloat(time.Since(arrived).Seconds(), 'f', 3, 64))
	}
	if out.err != nil {
		hostileError(out.err, r, f)
	}

	switch {
	case out.gone:
	case out.fault == faultDrop:
		s.drop(w)
	case out.err != nil:
		s.writeError(w, out.err)
	case out.fault == faultTruncate:
		s.truncate(w, out.data)
	case out.stream != nil:
		s.countResponse(http.StatusOK, out.page)
		w.Header().Set("Content-Type", "application/json")
		if out.gzip {
			w.Header().Set("Content-Encoding", "gzip")
		}
		w.WriteHeader(http.StatusOK)
		_ = out.stream(w) // a client that hung up ends the stream
	default:
		// Counted before writing, so a client that has read the response
		// sees it in Stats.
		s.countResponse(http.StatusOK, out.page)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(out.data)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(out.data) // a client that hung up gets nothing either way
	}
}

// admit takes a place among the admitted requests, unless f.MaxConcurrent
// places are taken. It returns the number of admitted requests, this one
// included when admitted, and whether it was. Refused requests never take a
// place, so that a burst of them cannot push out a request that fits.
func (s *Server) admit(f *faultState) (concurrent int64, admitted bool) {
	if f.MaxConcurrent <= 0 {
		return s.admitted.Add(1), true
	}
	limit := int64(f.MaxConcurrent)
	for {
		cur := s.admitted.Load()
		if cur >= limit {
			return cur, false
		}
		if s.admitted.CompareAndSwap(cur, cur+1) {
			return cur + 1, true
		}
	}
}

// handle decides the answer to an admitted request: injected faults,
// authentication, routing, then one list or one user.
func (s *Server) handle(r *http.Request, rt route, f *faultState) outcome {
	if s.onAdmit != nil {
		s.onAdmit()
	}
	if f.Latency > 0 && !sleep(r.Context(), f.Latency) {
		return outcome{gone: true}
	}

	fault := f.draw()
	switch fault {
	case faultDrop:
		return outcome{fault: faultDrop}
	case fault429:
		e := newError(http.StatusTooManyRequests, "Too many requests")
		e.retryAfter = f.retryAfter()
		return outcome{err: e}
	case fault500:
		return outcome{err: newError(http.StatusInternalServerError, "Internal server error")}
	case fault503:
		return outcome{err: newError(http.StatusServiceUnavailable, "Service unavailable")}
	}

	if !s.authorized(r) {
		return outcome{err: newError(http.StatusUnauthorized, "Authenticate")}
	}
	if rt.kind == routeUnknown {
		return outcome{err: newError(http.StatusNotFound, "The requested resource %s was not found", r.URL.EscapedPath())}
	}
	if r.Method != http.MethodGet {
		return outcome{err: newError(http.StatusMethodNotAllowed, "Method %s not allowed", r.Method)}
	}

	var (
		body any
		out  = outcome{fault: fault}
	)
	switch rt.kind {
	case routeUsers:
		body, out.err = s.listUsers(rt, r.URL.Query(), f)
	case routeUser:
		body, out.err = s.fetchUser(rt, f)
	case routeServiceBindings:
		var stream streamedPage
		body, out.page, stream, out.err = s.listServiceBindings(rt, r.URL.Query(), f)
		if out.err == nil && stream.size > 0 && out.fault == faultNone {
			out.stream, out.gzip = stream.writer(body), stream.gzip
			return out
		}
	default:
		var stream streamedPage
		body, out.page, stream, out.err = s.listBindings(rt, r.URL.Query(), f)
		if out.err == nil && stream.size > 0 && out.fault == faultNone {
			out.stream, out.gzip = stream.writer(body), stream.gzip
			return out
		}
	}
	if out.err != nil {
		out.fault = faultNone // truncation spares error answers
		return out
	}
	data, err := json.Marshal(body)
	if err != nil {
		return outcome{err: newError(http.StatusInternalServerError, "encode page: %v", err)}
	}
	out.data = data
	return out
}

// sleep waits for d and reports whether ctx was still live throughout.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *Server) writeError(w http.ResponseWriter, e *apiError) {
	data, err := json.Marshal(e)
	if err != nil {
		panic(fmt.Sprintf("twiliotest: encode error body: %v", err)) // a struct of ints and strings
	}
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	switch e.Status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Basic realm="Twilio API"`)
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", http.MethodGet)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	s.countResponse(e.Status, "")
	w.WriteHeader(e.Status)
	_, _ = w.Write(data)
}

// drop closes the connection without a response. Where the connection
// cannot be taken over (HTTP/2), the stream is aborted instead.
func (s *Server) drop(w http.ResponseWriter) {
	s.count(func(st *Stats) { st.Dropped++ })
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// truncate announces data in full but sends only its first half, then
// closes the connection.
func (s *Server) truncate(w http.ResponseWriter, data []byte) {
	s.count(func(st *Stats) { st.Truncated++ })
	part := data[:len(data)/2]
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(part)
		_ = http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	}
	defer conn.Close()
	fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(data))
	_, _ = buf.Write(part)
	_ = buf.Flush()
}

func (s *Server) count(update func(*Stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	update(&s.stats)
}

func (s *Server) countRequest(kind routeKind, inflight, concurrent int64, admitted bool) {
	s.count(func(st *Stats) {
		st.Requests++
		switch kind {
		case routeUsers:
			st.UsersRequests++
		case routeBindings:
			st.BindingsRequests++
		case routeUser:
			st.UserFetches++
		case routeServiceBindings:
			st.ServiceBindingsRequests++
		}
		st.MaxInFlight = max(st.MaxInFlight, inflight)
		if admitted {
			st.MaxAdmitted = max(st.MaxAdmitted, concurrent)
		}
	})
}

// countResponse records a complete response; page is the served-page key of
// a bindings page ("serviceSID/userSID" + "|" + filter + "|" + token), or
// of a page of the service-wide list ("service:" + serviceSID + "|" +
// filter + "|" + token).
func (s *Server) countResponse(status int, page string) {
	s.count(func(st *Stats) {
		st.ByStatus[status]++
		if page == "" {
			return
		}
		if user, _, _ := strings.Cut(page, "|"); !strings.HasPrefix(user, "service:") {
			st.BindingsPagesByUser[user]++
		}
		if s.served[page] {
			st.PagesServedTwice++
		}
		s.served[page] = true
	})
}

// paging is the validated paging part of a query.
type paging struct {
	size  int // effective page size
	page  int
	token *pageToken // nil for the first page
	raw   string     // the token as received
}

// parsePaging validates PageSize, Page and PageToken and authenticates the
// token; the caller checks the token's scope.
func (s *Server) parsePaging(q url.Values, kind listKind, scope [8]byte) (paging, *apiError) {
	p := paging{size: defaultPageSize}
	maxSize := s.maxPageSize
	if s.opts.StrictPageSize {
		maxSize = min(maxSize, twilio.MaxBindingsPageSize)
		if kind == kindServiceBindings {
			maxSize = min(s.maxPageSize, twilio.MaxServiceBindingsPageSize)
		}
		if kind == kindUsers {
			maxSize = min(s.maxPageSize, twilio.MaxUsersPageSize)
		}
	}
	if q.Has("PageSize") {
		n, err := strconv.Atoi(q.Get("PageSize"))
		if err != nil || n < 1 || n > maxSize {
			return p, newError(http.StatusBadRequest, "PageSize must be an integer between 1 and %d (got %q)", maxSize, q.Get("PageSize"))
		}
		p.size = n
	}
	if s.opts.PageSizeCap > 0 {
		p.size = min(p.size, s.opts.PageSizeCap)
	}
	hasPage := q.Has("Page")
	if hasPage {
		n, err := strconv.Atoi(q.Get("Page"))
		if err != nil || n < 0 {
			return p, newError(http.StatusBadRequest, "Page must be a non-negative integer (got %q)", q.Get("Page"))
		}
		p.page = n
	}
	p.raw = q.Get("PageToken")
	if p.raw == "" {
		if p.page != 0 {
			return p, newError(http.StatusBadRequest, "Page %d requires a PageToken", p.page)
		}
		return p, nil
	}
	t, err := decodeToken(p.raw, s.secret)
	switch {
	case err != nil:
		return p, newError(http.StatusBadRequest, "Invalid PageToken: %v", err)
	case t.kind != kind || t.scope != scope:
		return p, newError(http.StatusBadRequest, "Invalid PageToken: issued for another list")
	case t.epoch != s.epoch.Load():
		return p, newError(http.StatusBadRequest, "Invalid PageToken: expired")
	case !hasPage:
		return p, newError(http.StatusBadRequest, "Page is required with a PageToken (the token is for page %d)", t.page)
	case t.page != p.page:
		return p, newError(http.StatusBadRequest, "Page %d does not match the PageToken (page %d)", p.page, t.page)
	}
	p.token = &t
	return p, nil
}

// list names one paged list for window.
type list struct {
	kind   listKind
	scope  [8]byte
	url    string // absolute URL of the list, without query
	filter string // query suffix carrying the filter, "&BindingType=..."
	key    string // meta.key
	// zeroCursor is a SID of the list's kind that sorts first, the cursor
	// of a page that has no item to point at.
	zeroCursor string
}

// window selects the page p names from items sorted by SID, and returns it
// with the meta of the page. pf, when set, makes the list page without end.
func window[T any](s *Server, l list, items []T, sidOf func(T) string, p paging, pf PagingFault) ([]T, twilio.Meta) {
	start, end := 0, min(p.size, len(items))
	if t := p.token; t != nil {
		if t.dir == forward {
			start = sort.Search(len(items), func(i int) bool { return sidOf(items[i]) > t.cursor })
			end = min(start+p.size, len(items))
		} else {
			end = sort.Search(len(items), func(i int) bool { return sidOf(items[i]) >= t.cursor })
			start = max(end-p.size, 0)
		}
	}
	m := twilio.Meta{
		Key:          l.key,
		URL:          l.pageURL(p.size, p.page, p.raw),
		Page:         p.page,
		PageSize:     p.size,
		FirstPageURL: l.pageURL(p.size, 0, ""),
	}
	epoch := s.epoch.Load()
	token := func(dir direction, page int, cursor string, offset int) string {
		t := pageToken{kind: l.kind, dir: dir, page: page, cursor: cursor, offset: offset, scope: l.scope, epoch: epoch}
		return encodeToken(t, s.secret)
	}
	if end < len(items) {
		m.NextPageURL = ptr(l.pageURL(p.size, p.page+1, token(forward, p.page+1, sidOf(items[end-1]), end)))
	}
	if p.page > 0 && start > 0 && start < len(items) {
		m.PreviousPageURL = ptr(l.pageURL(p.size, p.page-1, token(backward, p.page-1, sidOf(items[start]), start)))
	}
	switch {
	case pf == PagingEmptyForever:
		cursor := l.zeroCursor
		if p.token != nil {
			cursor = p.token.cursor
		}
		m.NextPageURL = ptr(l.pageURL(p.size, p.page+1, token(forward, p.page+1, cursor, 0)))
		return items[:0], m
	case pf == PagingRepeatToken && p.token != nil:
		m.NextPageURL = ptr(m.URL)
	case pf == PagingBackwards && p.token != nil && m.PreviousPageURL != nil:
		m.NextPageURL = m.PreviousPageURL
	}
	return items[start:end], m
}

// pageURL is the absolute URL of a page of l.
func (l list) pageURL(size, page int, token string) string {
	q := "PageSize=" + strconv.Itoa(size) + "&Page=" + strconv.Itoa(page)
	if token != "" {
		q += "&PageToken=" + url.QueryEscape(token)
	}
	return l.url + "?" + q + l.filter
}

// service validates the ServiceSid segment and finds the service.
func (s *Server) service(sid string) (*Service, *apiError) {
	if !serviceSIDPattern.MatchString(sid) {
		return nil, newError(http.StatusBadRequest, "Invalid ServiceSid %q: must match ^IS[0-9a-fA-F]{32}$", sid)
	}
	svc := s.world.Service(sid)
	if svc == nil {
		return nil, newError(http.StatusNotFound, "The requested resource /Services/%s was not found", sid)
	}
	return svc, nil
}

// userResource is a User as the Users list serves it.
type userResource struct {
	twilio.User
	AccountSID          string     `json:"account_sid"`
	Attributes          string     `json:"attributes"`
	FriendlyName        *string    `json:"friendly_name"`
	RoleSID             string     `json:"role_sid"`
	IsOnline            *bool      `json:"is_online"`
	IsNotifiable        *bool      `json:"is_notifiable"`
	DateUpdated         *time.Time `json:"date_updated"`
	JoinedChannelsCount int        `json:"joined_channels_count"`
	Links               userLinks  `json:"links"`
	URL                 string     `json:"url"`
}

type userLinks struct {
	UserChannels string `json:"user_channels"`
	UserBindings string `json:"user_bindings"`
}

type usersPage struct {
	Users []userResource `json:"users"`
	Meta  twilio.Meta    `json:"meta"`
}

type bindingsPage struct {
	Bindings []twilio.Binding `json:"bindings"`
	Meta     twilio.Meta      `json:"meta"`
}

// zeroUser and zeroBinding sort before every user and binding SID.
var (
	zeroUser    = "US" + strings.Repeat("0", 32)
	zeroBinding = "BS" + strings.Repeat("0", 32)
)

func (s *Server) listUsers(rt route, q url.Values, f *faultState) (any, *apiError) {
	svc, e := s.service(rt.service)
	if e != nil {
		return nil, e
	}
	scope := scopeOf(kindUsers, svc.SID, "", "")
	p, e := s.parsePaging(q, kindUsers, scope)
	if e != nil {
		return nil, e
	}
	users := svc.Users
	if s.anyDeleted() {
		users = slices.DeleteFunc(slices.Clone(users), func(u User) bool { return s.isDeleted(svc.SID, u.SID) })
	}
	l := list{kind: kindUsers, scope: scope, url: s.baseURL + "/v2/Services/" + url.PathEscape(svc.SID) + "/Users", key: "users", zeroCursor: zeroUser}
	items, meta := window(s, l, users, func(u User) string { return u.SID }, p, f.UsersPaging)
	if f.DuplicateUsers && len(items) > 0 {
		served := slices.Clip(items)
		if first := sort.Search(len(users), func(i int) bool { return users[i].SID >= served[0].SID }); p.token != nil && first > 0 {
			served = append([]User{users[first-1]}, served...)
		}
		items = append(served, items[0])
	}
	out := usersPage{Users: make([]userResource, len(items)), Meta: meta}
	for i := range items {
		out.Users[i] = s.userResource(svc, &items[i])
	}
	return out, nil
}

// userResource is u as the API serves it.
func (s *Server) userResource(svc *Service, u *User) userResource {
	userURL := s.baseURL + "/v2/Services/" + svc.SID + "/Users/" + u.SID
	return userResource{
		User: twilio.User{
			SID:         u.SID,
			Identity:    ptr(u.Identity),
			ServiceSID:  ptr(svc.SID),
			DateCreated: ptr(u.DateCreated),
		},
		AccountSID:  s.world.AccountSID,
		Attributes:  "{}",
		RoleSID:     svc.ctx.roleSID,
		DateUpdated: ptr(u.DateCreated),
		Links:       userLinks{UserChannels: userURL + "/Channels", UserBindings: userURL + "/Bindings"},
		URL:         userURL,
	}
}

// user finds the user a request names, applying FailUsers and deletions.
func (s *Server) user(svc *Service, name string, f *faultState) (*User, *apiError) {
	if status, ok := f.FailUsers[name]; ok {
		return nil, newError(status, "Failing user %q (injected fault)", name)
	}
	u := svc.User(name)
	if u == nil || s.isDeleted(svc.SID, u.SID) {
		return nil, newError(http.StatusNotFound, "The requested resource /Services/%s/Users/%s was not found", svc.SID, name)
	}
	for _, k := range []string{u.SID, u.Identity} {
		if status, ok := f.FailUsers[k]; ok {
			return nil, newError(status, "Failing user %q (injected fault)", name)
		}
	}
	return u, nil
}

// fetchUser serves GET /v2/Services/{ServiceSid}/Users/{Sid}, where Sid is
// the user's SID or identity.
func (s *Server) fetchUser(rt route, f *faultState) (any, *apiError) {
	svc, e := s.service(rt.service)
	if e != nil {
		return nil, e
	}
	u, e := s.user(svc, rt.user, f)
	if e != nil {
		return nil, e
	}
	return s.userResource(svc, u), nil
}

func (s *Server) listBindings(rt route, q url.Values, f *faultState) (any, string, streamedPage, *apiError) {
	svc, e := s.service(rt.service)
	if e != nil {
		return nil, "", streamedPage{}, e
	}
	u, e := s.user(svc, rt.user, f)
	if e != nil {
		return nil, "", streamedPage{}, e
	}
	types, e := bindingTypes(q)
	if e != nil {
		return nil, "", streamedPage{}, e
	}
	filter := strings.Join(types, ",")
	scope := scopeOf(kindBindings, svc.SID, u.SID, filter)
	p, e := s.parsePaging(q, kindBindings, scope)
	if e != nil {
		return nil, "", streamedPage{}, e
	}
	l := list{
		kind:       kindBindings,
		scope:      scope,
		url:        s.baseURL + "/v2/Services/" + url.PathEscape(svc.SID) + "/Users/" + url.PathEscape(rt.user) + "/Bindings",
		key:        "bindings",
		zeroCursor: zeroBinding,
	}
	for _, t := range types {
		l.filter += "&BindingType=" + url.QueryEscape(t)
	}
	all := filterBindings(u.served(), types)
	sidOf := func(b twilio.Binding) string { return *b.SID }
	items, meta := window(s, l, all, sidOf, p, f.BindingsPaging)
	if f.NextPageOtherUser && meta.NextPageURL != nil && len(svc.Users) > 1 {
		meta.NextPageURL = ptr(s.otherUserNext(svc, u, filter, l.filter, p, items, sidOf))
	}
	key := UserKey(svc.SID, u.SID) + "|" + filter + "|" + p.raw
	if p.token == nil && matches(f.DeleteAfterFirstPage, u) {
		s.DeleteUser(svc.SID, u.SID)
	}
	var page any = bindingsPage{Bindings: items, Meta: meta}
	if matches(f.NullBindingTypeUsers, u) {
		page = nullTypePage(items, meta, all)
	}
	var stream streamedPage
	if len(f.BodyFaultUsers) == 0 || matches(f.BodyFaultUsers, u) {
		switch {
		case f.GzipBomb > 0:
			stream = streamedPage{size: f.GzipBomb, gzip: true}
		case f.HugeField > 0:
			stream = streamedPage{size: f.HugeField}
		}
	}
	return page, key, stream, nil
}

// otherUserNext is a next_page_url for the page after p that names the
// user after u in the service, with a token valid for that user's list.
func (s *Server) otherUserNext(svc *Service, u *User, filter, filterQuery string, p paging, items []twilio.Binding, sidOf func(twilio.Binding) string) string {
	i := sort.Search(len(svc.Users), func(i int) bool { return svc.Users[i].SID >= u.SID })
	other := &svc.Users[(i+1)%len(svc.Users)]
	cursor := zeroBinding
	if len(items) > 0 {
		cursor = sidOf(items[len(items)-1])
	}
	t := pageToken{kind: kindBindings, dir: forward, page: p.page + 1, cursor: cursor, scope: scopeOf(kindBindings, svc.SID, other.SID, filter), epoch: s.epoch.Load()}
	l := list{url: s.baseURL + "/v2/Services/" + url.PathEscape(svc.SID) + "/Users/" + other.SID + "/Bindings", filter: filterQuery}
	return l.pageURL(p.size, t.page, encodeToken(t, s.secret))
}

// wireBinding is a binding whose binding_type is written as given: a nil
// BindingType leaves the field out, "null" makes it null. It hides the
// embedded field of the same JSON name.
type wireBinding struct {
	twilio.Binding
	BindingType json.RawMessage `json:"binding_type,omitempty"`
}

type wireBindingsPage struct {
	Bindings []wireBinding `json:"bindings"`
	Meta     twilio.Meta   `json:"meta"`
}

// nullTypePage is the page of items with binding_type null at even
// positions of the user's list all and missing at odd ones.
func nullTypePage(items []twilio.Binding, meta twilio.Meta, all []twilio.Binding) wireBindingsPage {
	out := wireBindingsPage{Bindings: make([]wireBinding, len(items)), Meta: meta}
	for i, b := range items {
		out.Bindings[i].Binding = b
		pos := sort.Search(len(all), func(j int) bool { return *all[j].SID >= *b.SID })
		if pos%2 == 0 {
			out.Bindings[i].BindingType = json.RawMessage("null")
		}
	}
	return out
}

// streamedPage says how to send a page with one huge string field: size
// bytes, gzipped or not.
type streamedPage struct {
	size int64
	gzip bool
}

// hugeValue stands for the huge string in a page; hugeMark is how it
// reads once JSON-encoded, where the page is cut to stream the huge string
// in its place.
const (
	hugeValue = "\x00twiliotest-huge\x00"
	hugeMark  = `\u0000twiliotest-huge\u0000`
)

// writer returns the function that streams page with its huge field.
func (sp streamedPage) writer(page any) func(io.Writer) error {
	return func(w io.Writer) error {
		head, tail, err := splitAtHugeField(page)
		if err != nil {
			return err
		}
		if sp.gzip {
			return writeGzipBomb(w, head, sp.size, tail)
		}
		if _, err := w.Write(head); err != nil {
			return err
		}
		if err := writeRepeated(w, 'x', sp.size); err != nil {
			return err
		}
		_, err = w.Write(tail)
		return err
	}
}

// splitAtHugeField encodes page with a mark in the first binding's
// endpoint (or meta.key on an empty page) and cuts the JSON at the mark.
func splitAtHugeField(page any) (head, tail []byte, err error) {
	mark := hugeValue
	switch p := page.(type) {
	case bindingsPage:
		if len(p.Bindings) > 0 {
			p.Bindings = slices.Clone(p.Bindings)
			p.Bindings[0].Endpoint = &mark
		} else {
			p.Meta.Key = mark
		}
		page = p
	case wireBindingsPage:
		if len(p.Bindings) > 0 {
			p.Bindings = slices.Clone(p.Bindings)
			p.Bindings[0].Endpoint = &mark
		} else {
			p.Meta.Key = mark
		}
		page = p
	case serviceBindingsPage:
		if len(p.Bindings) > 0 {
			p.Bindings = slices.Clone(p.Bindings)
			p.Bindings[0].Endpoint = &mark
		} else {
			p.Meta.Key = mark
		}
		page = p
	}
	data, err := json.Marshal(page)
	if err != nil {
		return nil, nil, err
	}
	head, tail, ok := bytes.Cut(data, []byte(hugeMark))
	if !ok {
		return nil, nil, fmt.Errorf("twiliotest: huge field mark not found in %T", page)
	}
	return head, tail, nil
}

// writeRepeated writes n bytes b in blocks of at most 64 KB.
func writeRepeated(w io.Writer, b byte, n int64) error {
	block := bytes.Repeat([]byte{b}, int(min(n, 64<<10)))
	for n > 0 {
		k, err := w.Write(block[:min(n, int64(len(block)))])
		if err != nil {
			return err
		}
		n -= int64(k)
	}
	return nil
}

// bombBlockSize is the inflated size of the precomputed gzip member that
// a bomb repeats.
const bombBlockSize = 1 << 20

// bombBlock is one gzip member inflating to bombBlockSize bytes 'x',
// about a kilobyte, computed once.
var bombBlock = sync.OnceValue(func() []byte { return gzipMember(bytes.Repeat([]byte("x"), bombBlockSize)) })

func gzipMember(data []byte) []byte {
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression) // the level is valid
	_, _ = zw.Write(data)                                  // writes to a bytes.Buffer do not fail
	_ = zw.Close()
	return b.Bytes()
}

// writeGzipBomb writes head, n bytes 'x' and tail as one gzip stream made
// of concatenated members, most of them the precomputed bombBlock, so that
// neither memory nor CPU grows with n.
func writeGzipBomb(w io.Writer, head []byte, n int64, tail []byte) error {
	if _, err := w.Write(gzipMember(head)); err != nil {
		return err
	}
	for ; n >= bombBlockSize; n -= bombBlockSize {
		if _, err := w.Write(bombBlock()); err != nil {
			return err
		}
	}
	if _, err := w.Write(gzipMember(bytes.Repeat([]byte("x"), int(n)))); err != nil {
		return err
	}
	_, err := w.Write(gzipMember(tail))
	return err
}

// Texts of HostileErrors: terminal escapes that clear the screen and print
// a forged success line, and the size a message is padded to.
const (
	hostilePrefix  = "\x1b[2J\x1b[H\x1b[1;32msnapshot published\x1b[0m\n"
	hostileSize    = 64 << 10
	hostileNewline = "\r\nlevel=info msg=\"run succeeded\"\n"
)

// hostileError rewrites e as the faults ask: echoing the request's
// credentials, and full of control characters and padding.
func hostileError(e *apiError, r *http.Request, f *faultState) {
	if f.EchoCredentials {
		auth := r.Header.Get("Authorization")
		_, pass, _ := r.BasicAuth()
		e.Message += fmt.Sprintf(" (request had Authorization: %s, password %s)", auth, pass)
		e.MoreInfo += "?authorization=" + url.QueryEscape(auth) + "&password=" + pass
	}
	if f.HostileErrors {
		msg := hostilePrefix + e.Message + hostileNewline
		e.Message = msg + strings.Repeat("A", max(cmp.Or(f.HostileErrorBytes, hostileSize)-len(msg), 0))
	}
}

// bindingTypes validates the repeated BindingType filter and returns it
// sorted and without duplicates.
func bindingTypes(q url.Values) ([]string, *apiError) {
	var types []string
	for _, t := range q["BindingType"] {
		if !slices.Contains(twilio.BindingTypes, t) {
			return nil, newError(http.StatusBadRequest, "BindingType must be one of %s (got %q)", strings.Join(twilio.BindingTypes, ", "), t)
		}
		types = append(types, t)
	}
	slices.Sort(types)
	return slices.Compact(types), nil
}

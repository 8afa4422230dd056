package twiliotest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
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
)

// parseRoute routes on the escaped path, so "a%2Fb" stays one segment, and
// unescapes each segment exactly once.
func parseRoute(escapedPath string) route {
	segs := strings.Split(escapedPath, "/")
	var rt route
	switch {
	case len(segs) == 5 && segs[0] == "" && segs[1] == "v2" && segs[2] == "Services" && segs[4] == "Users":
		rt.kind = routeUsers
	case len(segs) == 7 && segs[0] == "" && segs[1] == "v2" && segs[2] == "Services" && segs[4] == "Users" && segs[6] == "Bindings":
		rt.kind = routeBindings
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
	data  []byte // the 200 body when err is nil
	page  string // served-page key of a bindings page, "" otherwise
	fault fault  // faultDrop or faultTruncate, else faultNone
	gone  bool   // the client left; nothing to write
}

// serve answers one request. The request leaves the in-flight count as soon
// as its answer is ready and before it is written, so a client that waits
// for each response never overlaps with itself in MaxConcurrent or
// MaxInFlight.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	rt := parseRoute(r.URL.EscapedPath())
	n := s.inflight.Add(1)
	left := false
	leave := func() {
		if !left {
			left = true
			s.inflight.Add(-1)
		}
	}
	defer leave()
	s.countRequest(rt.kind, n)
	out := s.handle(r, rt, n)
	leave()

	switch {
	case out.gone:
	case out.fault == faultDrop:
		s.drop(w)
	case out.err != nil:
		s.writeError(w, out.err)
	case out.fault == faultTruncate:
		s.truncate(w, out.data)
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

// handle decides the answer to a request that is the n-th in flight:
// admission, injected faults, authentication, routing, then one list.
func (s *Server) handle(r *http.Request, rt route, n int64) outcome {
	f := s.faults.Load()
	if f.MaxConcurrent > 0 && n > int64(f.MaxConcurrent) {
		e := newError(http.StatusTooManyRequests, "Too many concurrent requests")
		e.retryAfter = f.retryAfter()
		return outcome{err: e}
	}
	if s.admitted != nil {
		s.admitted()
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
	if rt.kind == routeUsers {
		body, out.err = s.listUsers(rt, r.URL.Query())
	} else {
		body, out.page, out.err = s.listBindings(rt, r.URL.Query(), f)
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

func (s *Server) countRequest(kind routeKind, inflight int64) {
	s.count(func(st *Stats) {
		st.Requests++
		switch kind {
		case routeUsers:
			st.UsersRequests++
		case routeBindings:
			st.BindingsRequests++
		}
		st.MaxInFlight = max(st.MaxInFlight, inflight)
	})
}

// countResponse records a complete response; page is the served-page key of
// a bindings page ("serviceSID/userSID" + "|" + filter + "|" + token).
func (s *Server) countResponse(status int, page string) {
	s.count(func(st *Stats) {
		st.ByStatus[status]++
		if page == "" {
			return
		}
		user, _, _ := strings.Cut(page, "|")
		st.BindingsPagesByUser[user]++
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
	if q.Has("PageSize") {
		n, err := strconv.Atoi(q.Get("PageSize"))
		if err != nil || n < 1 || n > s.maxPageSize {
			return p, newError(http.StatusBadRequest, "PageSize must be an integer between 1 and %d (got %q)", s.maxPageSize, q.Get("PageSize"))
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
}

// window selects the page p names from items sorted by SID, and returns it
// with the meta of the page.
func window[T any](s *Server, l list, items []T, sidOf func(T) string, p paging) ([]T, twilio.Meta) {
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
	pageURL := func(page int, token string) string {
		q := "PageSize=" + strconv.Itoa(p.size) + "&Page=" + strconv.Itoa(page)
		if token != "" {
			q += "&PageToken=" + url.QueryEscape(token)
		}
		return l.url + "?" + q + l.filter
	}
	m := twilio.Meta{
		Key:          l.key,
		URL:          pageURL(p.page, p.raw),
		Page:         p.page,
		PageSize:     p.size,
		FirstPageURL: pageURL(0, ""),
	}
	epoch := s.epoch.Load()
	if end < len(items) {
		next := pageToken{kind: l.kind, dir: forward, page: p.page + 1, cursor: sidOf(items[end-1]), offset: end, scope: l.scope, epoch: epoch}
		m.NextPageURL = ptr(pageURL(next.page, encodeToken(next, s.secret)))
	}
	if p.page > 0 && start > 0 && start < len(items) {
		prev := pageToken{kind: l.kind, dir: backward, page: p.page - 1, cursor: sidOf(items[start]), offset: start, scope: l.scope, epoch: epoch}
		m.PreviousPageURL = ptr(pageURL(prev.page, encodeToken(prev, s.secret)))
	}
	return items[start:end], m
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

func (s *Server) listUsers(rt route, q url.Values) (any, *apiError) {
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
	l := list{kind: kindUsers, scope: scope, url: s.baseURL + "/v2/Services/" + url.PathEscape(svc.SID) + "/Users", key: "users"}
	items, meta := window(s, l, users, func(u User) string { return u.SID }, p)
	out := usersPage{Users: make([]userResource, len(items)), Meta: meta}
	for i, u := range items {
		userURL := s.baseURL + "/v2/Services/" + svc.SID + "/Users/" + u.SID
		out.Users[i] = userResource{
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
	return out, nil
}

func (s *Server) listBindings(rt route, q url.Values, f *faultState) (any, string, *apiError) {
	svc, e := s.service(rt.service)
	if e != nil {
		return nil, "", e
	}
	if status, ok := f.FailUsers[rt.user]; ok {
		return nil, "", newError(status, "Failing user %q (injected fault)", rt.user)
	}
	u := svc.User(rt.user)
	if u == nil || s.isDeleted(svc.SID, u.SID) {
		return nil, "", newError(http.StatusNotFound, "The requested resource /Services/%s/Users/%s was not found", svc.SID, rt.user)
	}
	for _, k := range []string{u.SID, u.Identity} {
		if status, ok := f.FailUsers[k]; ok {
			return nil, "", newError(status, "Failing user %q (injected fault)", rt.user)
		}
	}
	types, e := bindingTypes(q)
	if e != nil {
		return nil, "", e
	}
	filter := strings.Join(types, ",")
	scope := scopeOf(kindBindings, svc.SID, u.SID, filter)
	p, e := s.parsePaging(q, kindBindings, scope)
	if e != nil {
		return nil, "", e
	}
	l := list{
		kind:  kindBindings,
		scope: scope,
		url:   s.baseURL + "/v2/Services/" + url.PathEscape(svc.SID) + "/Users/" + url.PathEscape(rt.user) + "/Bindings",
		key:   "bindings",
	}
	for _, t := range types {
		l.filter += "&BindingType=" + url.QueryEscape(t)
	}
	all := filterBindings(u.Bindings(), types)
	items, meta := window(s, l, all, func(b twilio.Binding) string { return *b.SID }, p)
	key := UserKey(svc.SID, u.SID) + "|" + filter + "|" + p.raw
	return bindingsPage{Bindings: items, Meta: meta}, key, nil
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

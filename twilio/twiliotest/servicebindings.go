package twiliotest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bindsync/bindsync/twilio"
)

// The service-wide Bindings list, GET /v2/Services/{ServiceSid}/Bindings,
// serves every binding of a service ordered by user (in the Users list's
// order, by SID) and then by binding SID, so that a page is built from the
// few users it spans and the world never holds a service's bindings at
// once. Its page tokens name both the cursor binding and its user.

// serviceBindingResource is a binding as the service-wide list serves it:
// the fields of a User Binding without user_sid, a url under
// /Services/{ServiceSid}/Bindings, and links naming the user by identity.
// BindingType is raw so that NullBindingTypeUsers can make it null or
// leave it out.
type serviceBindingResource struct {
	SID           *string             `json:"sid"`
	AccountSID    *string             `json:"account_sid"`
	ServiceSID    *string             `json:"service_sid"`
	DateCreated   *time.Time          `json:"date_created"`
	DateUpdated   *time.Time          `json:"date_updated"`
	Endpoint      *string             `json:"endpoint"`
	Identity      *string             `json:"identity"`
	BindingType   json.RawMessage     `json:"binding_type,omitempty"`
	CredentialSID *string             `json:"credential_sid"`
	MessageTypes  []string            `json:"message_types"`
	URL           *string             `json:"url"`
	Links         serviceBindingLinks `json:"links"`
}

type serviceBindingLinks struct {
	User string `json:"user"`
}

type serviceBindingsPage struct {
	Bindings []serviceBindingResource `json:"bindings"`
	Meta     twilio.Meta              `json:"meta"`
}

// ServiceBindingURL is the url of a binding in the service-wide list:
// https://chat.twilio.com/v2/Services/{service}/Bindings/{sid}.
func ServiceBindingURL(service, sid string) string {
	return DefaultPublicBaseURL + "/v2/Services/" + url.PathEscape(service) + "/Bindings/" + url.PathEscape(sid)
}

// UserLinkURL is the links.user of a binding in the service-wide list: the
// user's URL by identity, as Twilio names it there.
func UserLinkURL(service, identity string) string {
	return DefaultPublicBaseURL + "/v2/Services/" + url.PathEscape(service) + "/Users/" + url.PathEscape(identity)
}

// ServiceBindings returns what a correct client must collect from the
// service-wide Bindings list of a service under the filters (empty: all),
// in serving order, as twilio.ServiceBinding values: UserSID nil, URL and
// Links as the list serves them. It returns nil for an unknown service.
func (w *World) ServiceBindings(serviceSID string, types, identities []string) []twilio.ServiceBinding {
	svc := w.Service(serviceSID)
	if svc == nil {
		return nil
	}
	out := []twilio.ServiceBinding{}
	for i := range svc.Users {
		u := &svc.Users[i]
		if len(identities) > 0 && !slices.Contains(identities, u.Identity) {
			continue
		}
		for _, b := range filterBindings(u.Bindings(), types) {
			out = append(out, asServiceBinding(svc.SID, u, b))
		}
	}
	return out
}

// asServiceBinding is b, a binding of u, as the service-wide list serves
// it, in the client's type.
func asServiceBinding(service string, u *User, b twilio.Binding) twilio.ServiceBinding {
	b.UserSID = nil
	b.URL = ptr(ServiceBindingURL(service, *b.SID))
	return twilio.ServiceBinding{Binding: b, Links: &twilio.BindingLinks{User: ptr(UserLinkURL(service, u.Identity))}}
}

// serviceItem is one binding of the service-wide list and its user.
type serviceItem struct {
	user    *User
	binding twilio.Binding
	pos     int // position of the binding in its user's list, filtered
}

// before reports whether it sorts before the position (user, binding).
func (it serviceItem) before(user, binding string) bool {
	return it.user.SID < user || (it.user.SID == user && *it.binding.SID < binding)
}

// serviceItems yields the bindings of users under types in serving order,
// from user index from on, until yield returns false.
func serviceItems(users []*User, types []string, from int, yield func(serviceItem) bool) {
	for _, u := range users[from:] {
		for pos, b := range filterBindings(u.served(), types) {
			if !yield(serviceItem{user: u, binding: b, pos: pos}) {
				return
			}
		}
	}
}

// serviceItemsBackward yields the same, from the last binding of user index
// from down to the first binding of the first user.
func serviceItemsBackward(users []*User, types []string, from int, yield func(serviceItem) bool) {
	for i := from; i >= 0; i-- {
		bs := filterBindings(users[i].served(), types)
		for pos := len(bs) - 1; pos >= 0; pos-- {
			if !yield(serviceItem{user: users[i], binding: bs[pos], pos: pos}) {
				return
			}
		}
	}
}

// listServiceBindings serves GET /v2/Services/{ServiceSid}/Bindings.
func (s *Server) listServiceBindings(rt route, q url.Values, f *faultState) (any, string, streamedPage, *apiError) {
	svc, e := s.service(rt.service)
	if e != nil {
		return nil, "", streamedPage{}, e
	}
	types, e := bindingTypes(q)
	if e != nil {
		return nil, "", streamedPage{}, e
	}
	identities := slices.Clone(q["Identity"])
	for _, id := range identities {
		if id == "" {
			return nil, "", streamedPage{}, newError(http.StatusBadRequest, "Identity must not be empty")
		}
	}
	slices.Sort(identities)
	identities = slices.Compact(identities)
	filter := strings.Join(types, ",") + "\x00" + strings.Join(identities, "\x00")
	scope := scopeOf(kindServiceBindings, svc.SID, "", filter)
	p, e := s.parsePaging(q, kindServiceBindings, scope)
	if e != nil {
		return nil, "", streamedPage{}, e
	}
	l := list{kind: kindServiceBindings, scope: scope, url: s.baseURL + "/v2/Services/" + url.PathEscape(svc.SID) + "/Bindings", key: "bindings", zeroCursor: zeroBinding}
	for _, t := range types {
		l.filter += "&BindingType=" + url.QueryEscape(t)
	}
	for _, id := range identities {
		l.filter += "&Identity=" + url.QueryEscape(id)
	}
	users := make([]*User, 0, len(svc.Users))
	for i := range svc.Users {
		u := &svc.Users[i]
		if (len(identities) == 0 || slices.Contains(identities, u.Identity)) && !s.isDeleted(svc.SID, u.SID) {
			users = append(users, u)
		}
	}
	items, meta := s.serviceWindow(l, svc, users, types, p, f.ServiceBindingsPaging)

	out := serviceBindingsPage{Bindings: make([]serviceBindingResource, len(items)), Meta: meta}
	bodyFault := len(f.BodyFaultUsers) == 0
	for i, it := range items {
		out.Bindings[i] = serviceBindingRecord(svc.SID, it, matches(f.NullBindingTypeUsers, it.user))
		bodyFault = bodyFault || matches(f.BodyFaultUsers, it.user)
	}
	var stream streamedPage
	if bodyFault {
		switch {
		case f.GzipBomb > 0:
			stream = streamedPage{size: f.GzipBomb, gzip: true}
		case f.HugeField > 0:
			stream = streamedPage{size: f.HugeField}
		}
	}
	key := "service:" + svc.SID + "|" + filter + "|" + p.raw
	return out, key, stream, nil
}

// serviceBindingRecord is the record of it. nullType breaks binding_type as
// NullBindingTypeUsers asks: null at even positions of the user's list,
// missing at odd ones.
func serviceBindingRecord(service string, it serviceItem, nullType bool) serviceBindingResource {
	b := it.binding
	r := serviceBindingResource{
		SID:           b.SID,
		AccountSID:    b.AccountSID,
		ServiceSID:    b.ServiceSID,
		DateCreated:   b.DateCreated,
		DateUpdated:   b.DateUpdated,
		Endpoint:      b.Endpoint,
		Identity:      b.Identity,
		BindingType:   bindingTypeJSON(b.BindingType),
		CredentialSID: b.CredentialSID,
		MessageTypes:  b.MessageTypes,
		URL:           ptr(ServiceBindingURL(service, *b.SID)),
		Links:         serviceBindingLinks{User: UserLinkURL(service, it.user.Identity)},
	}
	switch {
	case nullType && it.pos%2 == 0:
		r.BindingType = json.RawMessage("null")
	case nullType:
		r.BindingType = nil
	}
	return r
}

// serviceWindow selects the page p names from the bindings of users, as
// window does for a list held in memory: it generates only the users the
// page spans, plus one binding on either side to know whether there is a
// next and a previous page.
func (s *Server) serviceWindow(l list, svc *Service, users []*User, types []string, p paging, pf PagingFault) ([]serviceItem, twilio.Meta) {
	var items []serviceItem
	more, earlier := false, false
	startAt := func(user string) int {
		return sort.Search(len(users), func(i int) bool { return users[i].SID >= user })
	}
	t := p.token
	switch {
	case t == nil || t.dir == forward:
		from := 0
		if t != nil {
			from = startAt(t.user)
		}
		serviceItems(users, types, from, func(it serviceItem) bool {
			if t != nil && !t.dirAfter(it) {
				return true
			}
			if len(items) == p.size {
				more = true
				return false
			}
			items = append(items, it)
			return true
		})
		earlier = t != nil
	default:
		from := min(startAt(t.user), len(users)-1)
		serviceItemsBackward(users, types, from, func(it serviceItem) bool {
			if !it.before(t.user, t.cursor) {
				return true
			}
			if len(items) == p.size {
				earlier = true
				return false
			}
			items = append(items, it)
			return true
		})
		slices.Reverse(items)
		more = true
	}

	m := twilio.Meta{
		Key:          l.key,
		URL:          l.pageURL(p.size, p.page, p.raw),
		Page:         p.page,
		PageSize:     p.size,
		FirstPageURL: l.pageURL(p.size, 0, ""),
	}
	epoch := s.epoch.Load()
	token := func(dir direction, page int, at serviceItem) string {
		pt := pageToken{kind: l.kind, dir: dir, page: page, cursor: *at.binding.SID, user: at.user.SID, offset: page * p.size, scope: l.scope, epoch: epoch}
		return encodeToken(pt, s.secret)
	}
	if more && len(items) > 0 {
		m.NextPageURL = ptr(l.pageURL(p.size, p.page+1, token(forward, p.page+1, items[len(items)-1])))
	}
	if p.page > 0 && earlier && len(items) > 0 {
		m.PreviousPageURL = ptr(l.pageURL(p.size, p.page-1, token(backward, p.page-1, items[0])))
	}
	switch {
	case pf == PagingEmptyForever:
		at := serviceItem{user: &User{SID: zeroUser}, binding: twilio.Binding{SID: ptr(zeroBinding)}}
		if t != nil {
			at = serviceItem{user: &User{SID: t.user}, binding: twilio.Binding{SID: ptr(t.cursor)}}
		}
		m.NextPageURL = ptr(l.pageURL(p.size, p.page+1, token(forward, p.page+1, at)))
		return nil, m
	case pf == PagingRepeatToken && t != nil:
		m.NextPageURL = ptr(m.URL)
	case pf == PagingBackwards && t != nil && m.PreviousPageURL != nil:
		m.NextPageURL = m.PreviousPageURL
	}
	return items, m
}

// dirAfter reports whether it comes after the forward cursor of t.
func (t *pageToken) dirAfter(it serviceItem) bool {
	return it.user.SID > t.user || (it.user.SID == t.user && *it.binding.SID > t.cursor)
}

// bindingTypeJSON renders a binding type as JSON: null when the world has
// none.
func bindingTypeJSON(t *string) json.RawMessage {
	if t == nil {
		return json.RawMessage("null")
	}
	return json.RawMessage(strconv.Quote(*t))
}

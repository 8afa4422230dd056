package twilio

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// MaxServiceBindingsPageSize is the largest page of the service-wide
// Bindings list in Twilio's OpenAPI file. A first page asking for more that
// Twilio rejects is asked again with it, as for the other lists.
const MaxServiceBindingsPageSize = 50

// ServiceBinding is one record of the service-wide Bindings list
// (GET /v2/Services/{ServiceSid}/Bindings). It carries the fields of a User
// Binding except user_sid, which the API leaves out, so UserSID is nil
// (unless a server sends one, which nothing should trust); its URL names
// /v2/Services/{ServiceSid}/Bindings/{Sid}; and Links names its user. The
// user is named by Identity, so a caller that wants the rows of the per-user
// walk maps the identity to the user's SID (from the Users list, or
// GetUser) and calls UserBinding.
type ServiceBinding struct {
	Binding
	// Links is the binding's "links" object; nil when the API sent null or
	// none.
	Links *BindingLinks `json:"links"`
}

// BindingLinks is the "links" object of a service-wide Binding.
type BindingLinks struct {
	// User is the absolute URL of the binding's User, which Twilio names by
	// identity: https://chat.twilio.com/v2/Services/{ServiceSid}/Users/{Identity}.
	User *string `json:"user"`
}

// UserBinding returns the binding as the per-user list of user userSID
// serves it: UserSID set to userSID and URL rebuilt with UserBindingURL
// (nil when the binding has no SID). Every other field is b's own; the
// result shares b's pointers and slices.
func (b *ServiceBinding) UserBinding(serviceSID, userSID string) Binding {
	out := b.Binding
	out.UserSID = &userSID
	out.URL = nil
	if b.SID != nil {
		u := UserBindingURL(serviceSID, userSID, *b.SID)
		out.URL = &u
	}
	return out
}

// LinkedUser is the user that Links.User names, unescaped: the identity in
// Twilio's answers, though a SID would be accepted too. It returns "" when
// there is no link, or when the link is not the URL of a User of the
// binding's service on the Twilio host, so that a caller never resolves a
// user a hostile answer made up.
func (b *ServiceBinding) LinkedUser() string {
	if b.Links == nil || b.Links.User == nil {
		return ""
	}
	u, err := url.Parse(*b.Links.User)
	if err != nil || u.Scheme != "https" || !strings.EqualFold(u.Host, twilioHost) || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return ""
	}
	segs := strings.Split(u.EscapedPath(), "/")
	if len(segs) != 6 || segs[0] != "" || segs[1] != "v2" || segs[2] != "Services" || segs[4] != "Users" {
		return ""
	}
	service, err1 := url.PathUnescape(segs[3])
	user, err2 := url.PathUnescape(segs[5])
	if err1 != nil || err2 != nil || (b.ServiceSID != nil && service != *b.ServiceSID) {
		return ""
	}
	return user
}

// UserBindingURL is the url field of a User Binding as Twilio serves it in
// a user's Bindings list:
// https://chat.twilio.com/v2/Services/{service}/Users/{user}/Bindings/{sid},
// each part escaped as one path segment (SIDs need no escaping). It names
// Twilio's public host whatever Config.BaseURL is, as the records do.
func UserBindingURL(service, user, sid string) string {
	return DefaultBaseURL + resource{segs: []string{"v2", "Services", service, "Users", user, "Bindings", sid}}.escapedPath()
}

// ServiceBindingsQuery selects one page of the service-wide Bindings list.
type ServiceBindingsQuery struct {
	ServiceSID string
	// BindingTypes filters by push technology (see BindingTypes); empty
	// means all.
	BindingTypes []string
	// Identities filters by user identity; empty means every user. An
	// identity that no user has matches nothing.
	Identities []string
	// PageSize asks for this many bindings per page; 0 leaves it to Twilio.
	// Above MaxServiceBindingsPageSize it falls back as BindingsQuery.PageSize
	// does, with kind "service_bindings" in Hooks.OnPageSizeFallback.
	PageSize int
	// Next is "" for the first page, else a ServiceBindingsPage.Next of the
	// same service. Next already holds the filters and the page size, so
	// BindingTypes, Identities and PageSize are ignored when it is set.
	Next string
}

// ServiceBindingsPage is one page of the service-wide Bindings list.
type ServiceBindingsPage struct {
	Bindings []ServiceBinding
	// Meta is the page's paging block; its URLs pass through Redact.
	Meta Meta
	// Next is the reference of the following page, "" after the last one;
	// see BindingsPage.Next.
	Next string
}

// ListServiceBindings fetches one page of every binding of a service, with
// GET /v2/Services/{ServiceSid}/Bindings: about users/100 + bindings/50
// requests read a whole service with the Users list, where the per-user
// lists need one request or more per user.
//
// The page comes with the guarantees of ListBindings: a next page must name
// the same service's list with the same BindingType and Identity filters
// (ErrForeignNextPage otherwise), page tokens are kept byte for byte, the
// body is bounded by MaxBodyBytes, credentials are redacted, and the errors
// are those of ListBindings. ErrNotFound means the service does not exist.
func (c *Client) ListServiceBindings(ctx context.Context, q ServiceBindingsQuery) (*ServiceBindingsPage, error) {
	page, err := c.listServiceBindings(ctx, q)
	if err != nil {
		return nil, c.redactError(err)
	}
	return page, nil
}

func (c *Client) listServiceBindings(ctx context.Context, q ServiceBindingsQuery) (*ServiceBindingsPage, error) {
	if q.ServiceSID == "" {
		return nil, errors.New("twilio: list service bindings: ServiceSID must not be empty")
	}
	if q.PageSize < 0 {
		return nil, fmt.Errorf("twilio: list service bindings: PageSize must not be negative (got %d)", q.PageSize)
	}
	for i, id := range q.Identities {
		if id == "" {
			return nil, fmt.Errorf("twilio: list service bindings: Identities[%d] is empty", i)
		}
	}
	query := url.Values{}
	if len(q.BindingTypes) > 0 {
		query["BindingType"] = q.BindingTypes
	}
	if len(q.Identities) > 0 {
		query["Identity"] = q.Identities
	}
	res := serviceBindingsResource(q.ServiceSID)
	body, next, err := page[serviceBindingsBody](ctx, c, "service_bindings", res, query, q.PageSize, q.Next)
	if err != nil {
		return nil, fmt.Errorf("list bindings of service %s: %w", q.ServiceSID, err)
	}
	return &ServiceBindingsPage{Bindings: body.Bindings, Meta: *body.Meta, Next: next}, nil
}

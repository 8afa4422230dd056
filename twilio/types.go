// Package twilio is a small client for the parts of the Twilio Programmable
// Chat v2 REST API that bindsync reads: the Users list, one User, the User
// Bindings list of a user and the service-wide Bindings list of a service.
// It speaks HTTP and Twilio's paging, retry and error conventions, keeps
// the requests in flight within what the account allows, and knows nothing
// of Arrow, Parquet or checkpoints.
package twilio

import "time"

// Binding is one User Binding resource as the API returns it. A nil pointer
// is a JSON null or a missing field. Every field but binding_type is
// nullable in the API reference; BindingType is a pointer all the same, so
// that a null sent against the contract stays null instead of becoming "".
// A nil MessageTypes is a JSON null, an empty non-nil slice is an empty
// JSON list.
type Binding struct {
	SID           *string    `json:"sid"`
	AccountSID    *string    `json:"account_sid"`
	ServiceSID    *string    `json:"service_sid"`
	DateCreated   *time.Time `json:"date_created"`
	DateUpdated   *time.Time `json:"date_updated"`
	Endpoint      *string    `json:"endpoint"`
	Identity      *string    `json:"identity"`
	UserSID       *string    `json:"user_sid"`
	CredentialSID *string    `json:"credential_sid"`
	BindingType   *string    `json:"binding_type"`
	MessageTypes  []string   `json:"message_types"`
	URL           *string    `json:"url"`
}

// User is the part of a User resource that bindsync needs to walk a service.
type User struct {
	SID         string     `json:"sid"`
	Identity    *string    `json:"identity"`
	ServiceSID  *string    `json:"service_sid"`
	DateCreated *time.Time `json:"date_created"`
}

// Meta is the paging block of every Twilio list response.
type Meta struct {
	Key             string  `json:"key"`
	URL             string  `json:"url"`
	Page            int     `json:"page"`
	PageSize        int     `json:"page_size"`
	FirstPageURL    string  `json:"first_page_url"`
	PreviousPageURL *string `json:"previous_page_url"`
	NextPageURL     *string `json:"next_page_url"`
}

// BindingTypes lists the values the API accepts for BindingType.
var BindingTypes = []string{"apn", "fcm", "gcm"}

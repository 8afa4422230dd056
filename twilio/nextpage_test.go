package twilio

import (
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestResourceMatches(t *testing.T) {
	r := bindingsResource(testService, "a/b")
	tests := []struct {
		path string
		want bool
	}{
		{"/v2/Services/" + testService + "/Users/a%2Fb/Bindings", true},
		{"/v2/Services/" + testService + "/Users/a%2fb/Bindings", true},
		{"/v2/Services/" + testService + "/Users/%61%2F%62/Bindings", true},
		{"/v2/Services/" + testService + "/Users/a/b/Bindings", false},
		{"/v2/Services/" + testService + "/Users/a%2Fb/Bindings/", false},
		{"v2/Services/" + testService + "/Users/a%2Fb/Bindings", false},
		{"/v2/Services/" + testService + "/Users/a%2Fb/bindings", false},
		{"/v2/Services/" + testService + "/Users/a%zzb/Bindings", false},
		// Without the user's SID, a SID in the user segment is another user.
		{"/v2/Services/" + testService + "/Users/US0123456789abcdef0123456789abcdef/Bindings", false},
		{"/v2/Services/" + testService + "/Users/US0123/Bindings", false},
		{"/v2/Services/ISffffffffffffffffffffffffffffffff/Users/a%2Fb/Bindings", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := r.matches(tt.path); got != tt.want {
			t.Errorf("matches(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
	if usersResource(testService).matches("/v2/Services/" + testService + "/US0123456789abcdef0123456789abcdef") {
		t.Error("users list matched a path with a user SID")
	}
	if got, want := r.escapedPath(), "/v2/Services/"+testService+"/Users/a%2Fb/Bindings"; got != want {
		t.Errorf("escapedPath = %q, want %q", got, want)
	}
}

func TestResourceMatchesUserSID(t *testing.T) {
	const (
		sid   = "US0123456789abcdef0123456789abcdef"
		other = "USffffffffffffffffffffffffffffffff"
	)
	r := bindingsResource(testService, "a/b")
	r.userSID = sid
	base := "/v2/Services/" + testService + "/Users/"
	tests := []struct {
		path string
		want string // "" when it matches, else a part of the mismatch
	}{
		{base + "a%2Fb/Bindings", ""},
		{base + sid + "/Bindings", ""},
		{base + "US0123456789ABCDEF0123456789ABCDEF/Bindings", `names user "US0123456789ABCDEF0123456789ABCDEF", not "a/b" (` + sid + `)`},
		{base + other + "/Bindings", `names user "` + other + `", not "a/b" (` + sid + `)`},
		{base + "bob/Bindings", `names user "bob", not "a/b"`},
		{"/v2/Services/ISffffffffffffffffffffffffffffffff/Users/a%2Fb/Bindings", `names service "ISffffffffffffffffffffffffffffffff", not "` + testService + `"`},
		{"/v2/Services/" + testService + "/Users", "is not a page of " + base + "a%2Fb/Bindings"},
		{base + sid + "/Channels", "is not a page of"},
	}
	for _, tt := range tests {
		got := r.mismatch(tt.path)
		if (got == "") != (tt.want == "") || !strings.Contains(got, tt.want) {
			t.Errorf("mismatch(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
	// Named by SID, the user may not be named by anything else.
	bySID := bindingsResource(testService, sid)
	if bySID.matches(base+"a%2Fb/Bindings") || bySID.matches(base+other+"/Bindings") || !bySID.matches(base+sid+"/Bindings") {
		t.Error("a list of a user named by SID matched another user segment")
	}
	if got := usersResource(testService).mismatch("/v2/Services/ISffffffffffffffffffffffffffffffff/Users"); !strings.Contains(got, "names service") {
		t.Errorf("users list of another service: mismatch = %q", got)
	}
}

// FuzzNextPage feeds nextPage arbitrary next_page_url values and user
// identities. Whatever it accepts must be a verbatim tail of the URL on a
// trusted host, name the requested list, survive a JSON checkpoint, and be
// sent by Go's HTTP client to the configured host exactly as written.
func FuzzNextPage(f *testing.F) {
	path := "/v2/Services/" + testService + "/Users/"
	seeds := []struct{ raw, user string }{
		{"https://chat.twilio.com" + path + "alice/Bindings?PageSize=50&Page=1&PageToken=abc+/=.5", "alice"},
		{"https://chat.twilio.com" + path + "a%2Fb/Bindings?BindingType=apn&BindingType=fcm&PageToken=x.123", "a/b"},
		{"http://127.0.0.1:8080" + path + "pct%2541/Bindings?PageToken=%2B", "pct%41"},
		{"https://chat.twilio.com" + path + "%C3%BCn%C3%AF/Bindings?PageToken=PT%2F%3D", "ünï"},
		{"https://chat.twilio.com" + path + "%2E%2E/Bindings?PageToken=1", ".."},
		{"https://chat.twilio.com" + path + "alice/Bindings", "alice"},
		{"https://chat.twilio.com" + path + "alice/Bindings?", "alice"},
		{"https://evil.example.com" + path + "alice/Bindings?PageToken=1", "alice"},
		{"https://user:pw@chat.twilio.com" + path + "alice/Bindings?PageToken=1", "alice"},
		{"https://chat.twilio.com" + path + "a/b/Bindings?PageToken=1", "a/b"},
		{"https://chat.twilio.com" + path + "alice/Bindings?PageToken=a#frag", "alice"},
		{"https://chat.twilio.com" + path + "alice/Bindings?PageToken=a b", "alice"},
		{"https://chat.twilio.com" + path + "al%zzice/Bindings", "alice"},
		{"https://chat.twilio.com" + path + "ünï/Bindings", "ünï"},
		{"//chat.twilio.com" + path + "alice/Bindings", "alice"},
		{"https:chat.twilio.com" + path + "alice/Bindings", "alice"},
		{"", "alice"},
	}
	for _, s := range seeds {
		f.Add(s.raw, s.user)
	}
	base := &url.URL{Scheme: "http", Host: "127.0.0.1:8080"}
	f.Fuzz(func(t *testing.T, raw, user string) {
		res := bindingsResource(testService, user)
		ref, err := nextPage(raw, base, res)
		if err != nil {
			if !errors.Is(err, ErrForeignNextPage) && !errors.Is(err, ErrBadResponse) {
				t.Fatalf("nextPage(%q) error %v wraps neither ErrForeignNextPage nor ErrBadResponse", raw, err)
			}
			return
		}
		u, err := url.Parse(raw)
		if err != nil || u.User != nil || !(u.Scheme == "https" && strings.EqualFold(u.Host, twilioHost) || u.Scheme == "http" && u.Host == base.Host) {
			t.Fatalf("nextPage accepted %q, not a URL on a trusted host", raw)
		}
		if !strings.HasSuffix(raw, ref) || !printableASCII(ref) {
			t.Fatalf("Next %q is not a printable verbatim tail of %q", ref, raw)
		}
		if err := checkPage(ref, res); err != nil {
			t.Fatalf("Next %q from %q cannot be passed back: %v", ref, raw, err)
		}
		var back string
		if data, err := json.Marshal(ref); err != nil || json.Unmarshal(data, &back) != nil || back != ref {
			t.Fatalf("Next %q does not survive JSON", ref)
		}
		sent, err := url.Parse(base.String() + ref)
		if err != nil || sent.Host != base.Host || sent.RequestURI() != ref {
			t.Fatalf("Next %q would be sent as %v", ref, sent)
		}
		if !res.matches(sent.EscapedPath()) {
			t.Fatalf("Next %q does not name the bindings of %q", ref, user)
		}
	})
}

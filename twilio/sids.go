package twilio

import "regexp"

// Shapes of the Twilio SIDs bindsync reads or is configured with: two
// letters naming the kind of resource, then 32 hexadecimal digits. They
// live here, once, so that the configuration, the client and the worker
// agree on what a SID is.
var (
	// UserSIDPattern matches a Chat user SID (US...).
	UserSIDPattern = regexp.MustCompile(`^US[0-9a-fA-F]{32}$`)
	// ServiceSIDPattern matches a Chat service SID (IS...).
	ServiceSIDPattern = regexp.MustCompile(`^IS[0-9a-fA-F]{32}$`)
	// AccountSIDPattern matches an account SID (AC...).
	AccountSIDPattern = regexp.MustCompile(`^AC[0-9a-fA-F]{32}$`)
	// APIKeySIDPattern matches an API key SID (SK...).
	APIKeySIDPattern = regexp.MustCompile(`^SK[0-9a-fA-F]{32}$`)
)

// userSIDPattern is the name the package's own code uses for
// UserSIDPattern.
var userSIDPattern = UserSIDPattern

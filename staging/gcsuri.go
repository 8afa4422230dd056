package staging

import (
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"strings"
)

// The gs:// URI rules of the GCS store (staging/gcs) live here, apart from
// the store, so that the configuration can check a staging URI without
// linking the Google Cloud client.

// errBadURI is returned (wrapped) by ParseGCSURI, hence by gcs.New; callers
// only print it, so it stays unexported.
var errBadURI = errors.New("invalid GCS staging URI")

// bucketPattern is the shape of a GCS bucket name; lengths are checked apart.
var bucketPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*[a-z0-9]$`)

// ParseGCSURI splits gs://bucket/prefix into the bucket and the prefix
// without its trailing slash ("" for a whole bucket). The prefix must be a
// clean slash path: no empty, "." or ".." elements.
func ParseGCSURI(uri string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(uri, "gs://")
	if !ok {
		return "", "", fmt.Errorf("%w %q: must start with gs://", errBadURI, uri)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if !ValidBucketName(bucket) {
		return "", "", fmt.Errorf("%w %q: %q is not a valid bucket name", errBadURI, uri, bucket)
	}
	if prefix == "" {
		return bucket, "", nil
	}
	clean := strings.TrimSuffix(prefix, "/")
	if !fs.ValidPath(clean) || clean == "." {
		return "", "", fmt.Errorf("%w %q: prefix %q must be a slash-separated path without empty, . or .. elements", errBadURI, uri, prefix)
	}
	return bucket, clean, nil
}

// ValidBucketName reports whether name follows the GCS bucket naming rules
// that ParseGCSURI checks: lower-case letters, digits, '-', '_' and '.',
// starting and ending with a letter or digit, 3 to 63 characters, or up to
// 222 with dots where each dot-separated part has at most 63.
func ValidBucketName(name string) bool {
	if len(name) < 3 || len(name) > 222 || !bucketPattern.MatchString(name) {
		return false
	}
	if !strings.Contains(name, ".") {
		return len(name) <= 63
	}
	for _, part := range strings.Split(name, ".") {
		if part == "" || len(part) > 63 {
			return false
		}
	}
	return true
}

package staging

import (
	"errors"
	"strings"
	"testing"
)

func TestParseGCSURI(t *testing.T) {
	tests := []struct {
		uri, bucket, prefix string
		wantErr             string
	}{
		{"gs://my-bucket/bindsync", "my-bucket", "bindsync", ""},
		{"gs://my-bucket/a/b/", "my-bucket", "a/b", ""},
		{"gs://my-bucket", "my-bucket", "", ""},
		{"gs://my-bucket/", "my-bucket", "", ""},
		{"gs://data.example.com/x", "data.example.com", "x", ""},
		{"gs://b_1/x", "b_1", "x", ""},
		{"s3://bucket/x", "", "", "must start with gs://"},
		{"/var/lib/staging", "", "", "must start with gs://"},
		{"gs://", "", "", `"" is not a valid bucket name`},
		{"gs:///x", "", "", `"" is not a valid bucket name`},
		{"gs://B/x", "", "", `"B" is not a valid bucket name`},
		{"gs://ab/x", "", "", `"ab" is not a valid bucket name`},
		{"gs://-bucket/x", "", "", "not a valid bucket name"},
		{"gs://" + strings.Repeat("a", 64) + "/x", "", "", "not a valid bucket name"},
		{"gs://a..b/x", "", "", "not a valid bucket name"},
		{"gs://my-bucket/a//b", "", "", `prefix "a//b"`},
		{"gs://my-bucket/../x", "", "", `prefix "../x"`},
		{"gs://my-bucket/a/./b", "", "", `prefix "a/./b"`},
		{"gs://my-bucket//", "", "", `prefix "/"`},
		{"gs://my-bucket/.", "", "", `prefix "."`},
	}
	for _, tt := range tests {
		bucket, prefix, err := ParseGCSURI(tt.uri)
		if tt.wantErr != "" {
			if !errors.Is(err, errBadURI) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseGCSURI(%q): err = %v, want errBadURI containing %q", tt.uri, err, tt.wantErr)
			}
			continue
		}
		if err != nil || bucket != tt.bucket || prefix != tt.prefix {
			t.Errorf("ParseGCSURI(%q) = %q, %q, %v; want %q, %q", tt.uri, bucket, prefix, err, tt.bucket, tt.prefix)
		}
	}
}

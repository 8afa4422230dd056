package safetext

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

type hostileStringer struct{ s string }

func (h hostileStringer) String() string { return h.s }

type hostileObject struct{ name string }

func (o hostileObject) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("name", o.name)
	return enc.AddArray("list", zapcore.ArrayMarshalerFunc(func(a zapcore.ArrayEncoder) error {
		a.AppendString(o.name)
		return nil
	}))
}

// TestWrapCore logs hostile text through every kind of field, with both of
// zap's encoders, and checks that no line is forged, no terminal control
// is written and no secret shows.
func TestWrapCore(t *testing.T) {
	const user, token = "AC0123456789abcdef0123456789abcdef", "s3cr3t-auth-token"
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + token))
	hostile := "oops\n2026-11-26T02:00:00Z\tINFO\tsnapshot published \x1b[2K\u009b31m\u202e " + token + " Basic " + basic
	r := NewRedactor(token)
	r.AddBasicAuth(user, token)

	for _, format := range []string{"json", "console"} {
		t.Run(format, func(t *testing.T) {
			cfg := zap.NewProductionEncoderConfig()
			enc := zapcore.NewJSONEncoder(cfg)
			if format == "console" {
				enc = zapcore.NewConsoleEncoder(cfg)
			}
			var buf bytes.Buffer
			log := zap.New(WrapCore(zapcore.NewCore(enc, zapcore.AddSync(&buf), zapcore.DebugLevel), r))
			log = log.With(zap.String("with", hostile))
			log.Error(hostile,
				zap.String("string", hostile),
				zap.ByteString("bytes", []byte(hostile)),
				zap.Error(errors.New(hostile)),
				zap.Stringer("stringer", hostileStringer{hostile}),
				zap.Any("reflected", map[string]any{"k": hostile, "list": []string{hostile}}),
				zap.Strings("strings", []string{hostile}),
				zap.Object("object", hostileObject{hostile}),
				zap.Inline(hostileObject{hostile}),
			)
			log.Sugar().Errorw("sugar", "error", errors.New(hostile))

			out := buf.String()
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != 2 {
				t.Fatalf("%d lines logged, want 2:\n%s", len(lines), out)
			}
			for _, bad := range []string{token, basic, "\x1b", "\u009b", "\u202e"} {
				if strings.Contains(out, bad) {
					t.Errorf("the log holds %q:\n%s", bad, out)
				}
			}
			if n := strings.Count(lines[0], Redacted); n < 20 {
				t.Errorf("%d redactions in the first line, want one per secret of every field:\n%s", n, lines[0])
			}
			if format == "json" {
				var m map[string]any
				if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
					t.Fatalf("not JSON: %v\n%s", err, lines[0])
				}
				// JSON keeps the newline as data (the encoder escapes it).
				if s, _ := m["string"].(string); !strings.Contains(s, "oops\n2026") {
					t.Errorf("string field = %q, want the newline kept for the JSON encoder to escape", s)
				}
				if _, ok := m["errorVerbose"]; ok {
					t.Error("errorVerbose written: it would repeat the error unredacted")
				}
			}
		})
	}
}

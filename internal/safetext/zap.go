package safetext

import (
	"encoding/json"
	"fmt"

	"go.uber.org/zap/zapcore"
)

// WrapCore returns a zapcore.Core that writes through c after making every
// entry safe: the message, every string, byte string, error and Stringer
// field, and the strings inside arrays, objects and reflected values, are
// redacted with r (which may be nil). The message is then escaped with
// Escape, since a console encoder writes it raw; field values are escaped
// with EscapeForJSON, since both of zap's encoders write fields as JSON,
// which escapes the C0 controls itself.
//
// An error field becomes a string field of the same key holding the
// error's text: zap's errorVerbose and errorCauses extras, which would
// repeat the text unredacted, are dropped.
func WrapCore(c zapcore.Core, r *Redactor) zapcore.Core {
	return &safeCore{Core: c, r: r}
}

type safeCore struct {
	zapcore.Core
	r *Redactor
}

func (c *safeCore) With(fields []zapcore.Field) zapcore.Core {
	return &safeCore{Core: c.Core.With(c.fields(fields)), r: c.r}
}

func (c *safeCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *safeCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	ent.Message = Escape(c.r.Redact(ent.Message))
	return c.Core.Write(ent, c.fields(fields))
}

// str makes one field value safe.
func (c *safeCore) str(s string) string { return EscapeForJSON(c.r.Redact(s)) }

func (c *safeCore) fields(in []zapcore.Field) []zapcore.Field {
	out := make([]zapcore.Field, len(in))
	for i, f := range in {
		out[i] = c.field(f)
	}
	return out
}

func (c *safeCore) field(f zapcore.Field) zapcore.Field {
	switch f.Type {
	case zapcore.StringType:
		f.String = c.str(f.String)
	case zapcore.ByteStringType:
		b, _ := f.Interface.([]byte)
		f = zapcore.Field{Key: f.Key, Type: zapcore.StringType, String: c.str(string(b))}
	case zapcore.ErrorType:
		err, _ := f.Interface.(error)
		f = zapcore.Field{Key: f.Key, Type: zapcore.StringType, String: c.str(errorText(err))}
	case zapcore.StringerType:
		s, _ := f.Interface.(fmt.Stringer)
		f = zapcore.Field{Key: f.Key, Type: zapcore.StringType, String: c.str(stringerText(s))}
	case zapcore.ReflectType:
		f.Interface = c.reflected(f.Interface)
	case zapcore.ObjectMarshalerType, zapcore.InlineMarshalerType:
		if m, ok := f.Interface.(zapcore.ObjectMarshaler); ok {
			f.Interface = safeObject{m, c}
		}
	case zapcore.ArrayMarshalerType:
		if m, ok := f.Interface.(zapcore.ArrayMarshaler); ok {
			f.Interface = safeArray{m, c}
		}
	}
	return f
}

// errorText is err.Error(), guarded as zap guards it: a nil pointer inside
// a non-nil error interface panics in Error.
func errorText(err error) (s string) {
	if err == nil {
		return "<nil>"
	}
	defer func() {
		if v := recover(); v != nil {
			s = fmt.Sprintf("PANIC=%v", v)
		}
	}()
	return err.Error()
}

func stringerText(v fmt.Stringer) (s string) {
	if v == nil {
		return "<nil>"
	}
	defer func() {
		if r := recover(); r != nil {
			s = fmt.Sprintf("PANIC=%v", r)
		}
	}()
	return v.String()
}

// reflected returns v as the JSON encoder would write it, with every string
// (and map key) in it made safe. A value that does not marshal to JSON is
// logged as its %+v text.
func (c *safeCore) reflected(v any) any {
	data, err := json.Marshal(v)
	if err != nil {
		return c.str(fmt.Sprintf("%+v", v))
	}
	var generic any
	if err := json.Unmarshal(data, &generic); err != nil {
		return c.str(string(data))
	}
	return c.walk(generic)
}

func (c *safeCore) walk(v any) any {
	switch v := v.(type) {
	case string:
		return c.str(v)
	case []any:
		for i := range v {
			v[i] = c.walk(v[i])
		}
		return v
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[c.str(k)] = c.walk(x)
		}
		return out
	default:
		return v
	}
}

// safeObject and safeArray marshal through encoders that make every string
// safe on its way in.
type safeObject struct {
	m zapcore.ObjectMarshaler
	c *safeCore
}

func (o safeObject) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	return o.m.MarshalLogObject(safeObjectEncoder{enc, o.c})
}

type safeArray struct {
	m zapcore.ArrayMarshaler
	c *safeCore
}

func (a safeArray) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	return a.m.MarshalLogArray(safeArrayEncoder{enc, a.c})
}

type safeObjectEncoder struct {
	zapcore.ObjectEncoder
	c *safeCore
}

func (e safeObjectEncoder) AddString(k, v string) { e.ObjectEncoder.AddString(k, e.c.str(v)) }

func (e safeObjectEncoder) AddByteString(k string, v []byte) {
	e.ObjectEncoder.AddString(k, e.c.str(string(v)))
}

func (e safeObjectEncoder) AddReflected(k string, v any) error {
	return e.ObjectEncoder.AddReflected(k, e.c.reflected(v))
}

func (e safeObjectEncoder) AddObject(k string, m zapcore.ObjectMarshaler) error {
	return e.ObjectEncoder.AddObject(k, safeObject{m, e.c})
}

func (e safeObjectEncoder) AddArray(k string, m zapcore.ArrayMarshaler) error {
	return e.ObjectEncoder.AddArray(k, safeArray{m, e.c})
}

type safeArrayEncoder struct {
	zapcore.ArrayEncoder
	c *safeCore
}

func (e safeArrayEncoder) AppendString(v string) { e.ArrayEncoder.AppendString(e.c.str(v)) }

func (e safeArrayEncoder) AppendByteString(v []byte) {
	e.ArrayEncoder.AppendString(e.c.str(string(v)))
}

func (e safeArrayEncoder) AppendReflected(v any) error {
	return e.ArrayEncoder.AppendReflected(e.c.reflected(v))
}

func (e safeArrayEncoder) AppendObject(m zapcore.ObjectMarshaler) error {
	return e.ArrayEncoder.AppendObject(safeObject{m, e.c})
}

func (e safeArrayEncoder) AppendArray(m zapcore.ArrayMarshaler) error {
	return e.ArrayEncoder.AppendArray(safeArray{m, e.c})
}

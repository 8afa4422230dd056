package twilio

import (
	"bytes"
	"sync"

	"github.com/bindsync/bindsync/twilio/bindjson"
)

// wholeBody is a list body that decodes itself from the whole of a 200
// body at once, with bindjson instead of encoding/json: the Bindings
// lists, which are most of what a run reads. bindjson gives what
// encoding/json gives for any input (its fuzz test holds it to that), so
// the result, and whether a body is refused, do not depend on the path.
type wholeBody interface {
	decodeWhole(data []byte) error
}

// bodyBuffers holds the buffers whole bodies are read into; one larger
// than maxPooledBody is dropped after use, so that a huge page does not
// pin its memory.
var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const maxPooledBody = 4 << 20

func (b *bindingsBody) decodeWhole(data []byte) error {
	bs, _, page, err := bindjson.DecodeBindings(data)
	if err != nil {
		return err
	}
	*b = bindingsBody{}
	if page.HasMeta {
		m := Meta(page.Meta)
		b.Meta = &m
	}
	if page.HasBindings {
		b.Bindings = make([]Binding, len(bs))
		for i := range bs {
			b.Bindings[i] = Binding(bs[i])
		}
	}
	return nil
}

func (b *serviceBindingsBody) decodeWhole(data []byte) error {
	bs, links, page, err := bindjson.DecodeBindings(data)
	if err != nil {
		return err
	}
	*b = serviceBindingsBody{}
	if page.HasMeta {
		m := Meta(page.Meta)
		b.Meta = &m
	}
	if page.HasBindings {
		b.Bindings = make([]ServiceBinding, len(bs))
		for i := range bs {
			b.Bindings[i].Binding = Binding(bs[i])
			if links[i] != nil {
				b.Bindings[i].Links = &BindingLinks{User: links[i]}
			}
		}
	}
	return nil
}

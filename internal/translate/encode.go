package translate

import (
	"bytes"
	"encoding/json"
)

// encoder produces apisix.Encode's canonical JSON (struct fields in order, map keys
// sorted, no HTML escaping, no trailing newline) into a buffer it reuses: the result
// is only valid until the next call.
type encoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

func (e *encoder) encode(v any) ([]byte, error) {
	if e.enc == nil {
		e.enc = json.NewEncoder(&e.buf)
		e.enc.SetEscapeHTML(false)
	}
	e.buf.Reset()
	if err := e.enc.Encode(v); err != nil {
		return nil, err
	}
	b := e.buf.Bytes()
	return b[:len(b)-1], nil
}

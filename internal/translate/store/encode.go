package store

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/amesh-dev/amesh/internal/apisix"
)

// Encoder produces apisix.Encode's canonical JSON (struct fields in order, map keys
// sorted, no HTML escaping, no trailing newline) into a buffer it reuses. The zero
// value is ready to use; one Encoder serves one goroutine.
//
// A first translation encodes tens of thousands of upstreams and routes, too many for
// encoding/json's reflection: upstreams, their nodes and the fixed fields of routes
// are appended by hand. Whatever is unusual (maps, plugin configurations, strings
// that need escaping, floats in exponent form) goes through encoding/json, so the
// bytes stay identical (TestEncoderMatchesApisixEncode and FuzzEncoder compare them
// with apisix.Encode).
type Encoder struct {
	buf []byte
	err error // the first error of the current call

	// sub encodes the values the hand-written part hands over to encoding/json.
	sub    bytes.Buffer
	subEnc *json.Encoder
}

// Encode returns the JSON of v, valid until the next call.
func (e *Encoder) Encode(v any) ([]byte, error) {
	e.buf, e.err = e.buf[:0], nil
	switch o := v.(type) {
	case *apisix.Upstream:
		if o == nil {
			e.buf = e.appendJSON(e.buf, v)
			break
		}
		e.buf = e.upstream(e.buf, o)
	case *apisix.Route:
		if o == nil {
			e.buf = e.appendJSON(e.buf, v)
			break
		}
		e.buf = e.route(e.buf, o)
	default:
		e.buf = e.appendJSON(e.buf, v)
	}
	if e.err != nil {
		return nil, e.err
	}
	return e.buf, nil
}

// appendJSON appends encoding/json's encoding of v.
func (e *Encoder) appendJSON(b []byte, v any) []byte {
	if e.subEnc == nil {
		e.subEnc = json.NewEncoder(&e.sub)
		e.subEnc.SetEscapeHTML(false)
	}
	e.sub.Reset()
	if err := e.subEnc.Encode(v); err != nil {
		if e.err == nil {
			e.err = err
		}
		return b
	}
	out := e.sub.Bytes()
	return append(b, out[:len(out)-1]...) // without Encode's newline
}

func (e *Encoder) upstream(b []byte, u *apisix.Upstream) []byte {
	b = append(b, `{"id":`...)
	b = e.str(b, u.ID)
	b = e.optStr(b, `,"name":`, u.Name)
	b = e.optStr(b, `,"desc":`, u.Desc)
	b = e.optStr(b, `,"type":`, u.Type)
	b = append(b, `,"nodes":`...)
	if u.Nodes == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range u.Nodes {
			if i > 0 {
				b = append(b, ',')
			}
			b = e.node(b, &u.Nodes[i])
		}
		b = append(b, ']')
	}
	b = e.optStr(b, `,"hash_on":`, u.HashOn)
	b = e.optStr(b, `,"key":`, u.Key)
	if u.Retries != nil {
		b = append(b, `,"retries":`...)
		b = strconv.AppendInt(b, int64(*u.Retries), 10)
	}
	if u.RetryTimeout != nil {
		b = append(b, `,"retry_timeout":`...)
		b = e.float(b, *u.RetryTimeout)
	}
	if u.Timeout != nil {
		b = append(b, `,"timeout":`...)
		b = e.timeout(b, u.Timeout)
	}
	b = e.optStr(b, `,"scheme":`, u.Scheme)
	b = e.optStr(b, `,"pass_host":`, u.PassHost)
	b = e.optStr(b, `,"upstream_host":`, u.UpstreamHost)
	if kp := u.KeepalivePool; kp != nil {
		b = append(b, `,"keepalive_pool":{`...)
		if kp.Size != 0 {
			b = append(b, `"size":`...)
			b = strconv.AppendInt(b, int64(kp.Size), 10)
			b = append(b, ',')
		}
		b = append(b, `"idle_timeout":`...)
		b = e.float(b, kp.IdleTimeout)
		if kp.Requests != 0 {
			b = append(b, `,"requests":`...)
			b = strconv.AppendInt(b, int64(kp.Requests), 10)
		}
		b = append(b, '}')
	}
	if u.Checks != nil {
		b = append(b, `,"checks":`...)
		b = e.appendJSON(b, u.Checks)
	}
	if len(u.Labels) > 0 {
		b = append(b, `,"labels":`...)
		b = e.appendJSON(b, u.Labels)
	}
	return append(b, '}')
}

func (e *Encoder) node(b []byte, n *apisix.Node) []byte {
	b = append(b, `{"host":`...)
	b = e.str(b, n.Host)
	if n.Port != 0 {
		b = append(b, `,"port":`...)
		b = strconv.AppendInt(b, int64(n.Port), 10)
	}
	b = append(b, `,"weight":`...)
	b = strconv.AppendInt(b, int64(n.Weight), 10)
	if n.Priority != 0 {
		b = append(b, `,"priority":`...)
		b = strconv.AppendInt(b, int64(n.Priority), 10)
	}
	if len(n.Metadata) > 0 {
		b = append(b, `,"metadata":`...)
		b = e.appendJSON(b, n.Metadata)
	}
	return append(b, '}')
}

func (e *Encoder) route(b []byte, r *apisix.Route) []byte {
	b = append(b, `{"id":`...)
	b = e.str(b, r.ID)
	b = e.optStr(b, `,"name":`, r.Name)
	b = e.optStr(b, `,"desc":`, r.Desc)
	b = e.optStr(b, `,"uri":`, r.URI)
	b = e.optStrs(b, `,"uris":`, r.URIs)
	b = e.optStrs(b, `,"hosts":`, r.Hosts)
	b = e.optStrs(b, `,"methods":`, r.Methods)
	if len(r.Vars) > 0 {
		b = append(b, `,"vars":[`...)
		for i, x := range r.Vars {
			if i > 0 {
				b = append(b, ',')
			}
			b = e.expr(b, x)
		}
		b = append(b, ']')
	}
	if r.Priority != 0 {
		b = append(b, `,"priority":`...)
		b = strconv.AppendInt(b, int64(r.Priority), 10)
	}
	b = e.optStr(b, `,"upstream_id":`, r.UpstreamID)
	if len(r.Plugins) > 0 {
		b = append(b, `,"plugins":`...)
		b = e.appendJSON(b, r.Plugins)
	}
	if r.Timeout != nil {
		b = append(b, `,"timeout":`...)
		b = e.timeout(b, r.Timeout)
	}
	if len(r.Labels) > 0 {
		b = append(b, `,"labels":`...)
		b = e.appendJSON(b, r.Labels)
	}
	if r.EnableWebsocket {
		b = append(b, `,"enable_websocket":true`...)
	}
	return append(b, '}')
}

// expr appends a lua-resty-expr term; its elements are strings and nested terms or
// string lists in practice, anything else goes through encoding/json.
func (e *Encoder) expr(b []byte, x apisix.Expr) []byte {
	if x == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, v := range x {
		if i > 0 {
			b = append(b, ',')
		}
		switch v := v.(type) {
		case string:
			b = e.str(b, v)
		case apisix.Expr:
			b = e.expr(b, v)
		case []string:
			if v == nil {
				b = append(b, "null"...)
			} else {
				b = e.strs(b, v)
			}
		default:
			b = e.appendJSON(b, v)
		}
	}
	return append(b, ']')
}

func (e *Encoder) timeout(b []byte, t *apisix.Timeout) []byte {
	b = append(b, `{"connect":`...)
	b = e.float(b, t.Connect)
	b = append(b, `,"send":`...)
	b = e.float(b, t.Send)
	b = append(b, `,"read":`...)
	b = e.float(b, t.Read)
	return append(b, '}')
}

// optStr appends key and s unless s is empty (omitempty).
func (e *Encoder) optStr(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return e.str(append(b, key...), s)
}

// optStrs appends key and ss unless ss is empty (omitempty).
func (e *Encoder) optStrs(b []byte, key string, ss []string) []byte {
	if len(ss) == 0 {
		return b
	}
	return e.strs(append(b, key...), ss)
}

func (e *Encoder) strs(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = e.str(b, s)
	}
	return append(b, ']')
}

// str appends s as a JSON string. Printable ASCII without quotes or backslashes, which
// is nearly every id, host and path, is copied as is; anything else is escaped by
// encoding/json (control characters, invalid UTF-8, U+2028/U+2029).
func (e *Encoder) str(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' {
			return e.appendJSON(b, s)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// float appends f as encoding/json does for values in its plain ('f') range; the
// exponent forms, NaN and infinities go through encoding/json.
func (e *Encoder) float(b []byte, f float64) []byte {
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) || math.IsNaN(f) {
		return e.appendJSON(b, f)
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64)
}

package resource

// Transport socket match metadata of endpoints and localities.
//
// A cluster's transport_socket_matches pick the transport socket of each endpoint
// by the endpoint's metadata under filter_metadata["envoy.transport_socket_match"]
// (then its locality's): istiod marks the endpoints of pods with a sidecar with
// {tlsMode: istio}, and its auto-mTLS clusters speak Istio mTLS to exactly those.
// That Struct is the one piece of endpoint metadata amesh keeps. It is kept in a
// canonical wire form (the deterministic serialization of the Struct, fields
// sorted by key), as a string: equal metadata gives equal strings whatever order
// the control plane sent the fields in, and an assignment keeps each distinct form
// once (LoadAssignment.socketMatches), each endpoint and locality a byte indexing it.

import (
	"bytes"
	"slices"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// SocketMatchKey is the filter_metadata key transport socket matches read.
const SocketMatchKey = "envoy.transport_socket_match"

// istioSocketMatch is the canonical form of {tlsMode: istio}, the metadata of nearly
// every endpoint that has any: kept as a constant so that it costs no allocation.
const istioSocketMatch = "\x0a\x12\x0a\x07tlsMode\x12\x07\x1a\x05istio"

// SocketMatchNone is the index of "no metadata"; SocketMatchUnknown that of metadata
// that was not kept (more distinct forms in one assignment than an index holds).
const (
	SocketMatchNone    uint8 = 0
	SocketMatchUnknown uint8 = 255
)

// socketMatchOf returns the canonical form of the socket match metadata in md ("" when
// there is none or it is empty).
func socketMatchOf(md *corev3.Metadata) string {
	s := md.GetFilterMetadata()[SocketMatchKey]
	if len(s.GetFields()) == 0 {
		return ""
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	if err != nil {
		return "" // a Struct always marshals; unreachable
	}
	if string(b) == istioSocketMatch {
		return istioSocketMatch
	}
	return string(b)
}

// SocketMatchStruct decodes a canonical form back into the Struct.
func SocketMatchStruct(form string) (*structpb.Struct, error) {
	s := &structpb.Struct{}
	if err := proto.Unmarshal([]byte(form), s); err != nil {
		return nil, err
	}
	return s, nil
}

// socketMatches collects the distinct forms of one assignment.
type socketMatches struct {
	forms []string
}

// index returns the index of form, adding it when new; SocketMatchUnknown when the
// index is full.
func (m *socketMatches) index(form string) uint8 {
	if form == "" {
		return SocketMatchNone
	}
	if i := slices.Index(m.forms, form); i >= 0 {
		return uint8(i + 1)
	}
	if len(m.forms) >= int(SocketMatchUnknown)-1 {
		return SocketMatchUnknown
	}
	m.forms = append(m.forms, form)
	return uint8(len(m.forms))
}

// finish stores the forms in la in sorted order, renumbering the localities'
// indexes: both decoders then give equal assignments, whatever order they met the
// forms in.
func (m *socketMatches) finish(la *LoadAssignment) {
	la.socketMatches = m.forms
	if len(m.forms) < 2 {
		return
	}
	sorted := slices.Clone(m.forms)
	slices.Sort(sorted)
	var to [256]uint8
	for i := range to {
		to[i] = uint8(i)
	}
	for i, f := range m.forms {
		to[i+1] = uint8(slices.Index(sorted, f) + 1)
	}
	for i := range la.Localities {
		l := &la.Localities[i]
		l.socketMatch, l.epMatch0 = to[l.socketMatch], to[l.epMatch0]
		for j, x := range l.epMatch {
			l.epMatch[j] = to[x]
		}
	}
	la.socketMatches = sorted
}

// indexBytes is index for a form in b, allocating a string only for a new form.
func (m *socketMatches) indexBytes(b []byte) uint8 {
	if len(b) == 0 {
		return SocketMatchNone
	}
	for i, f := range m.forms {
		if f == string(b) {
			return uint8(i + 1)
		}
	}
	if string(b) == istioSocketMatch {
		return m.index(istioSocketMatch)
	}
	return m.index(string(b))
}

// socketMatchScratch is the wire decoder's reusable scratch for canonical forms.
type socketMatchScratch struct {
	entries []smEntry
	buf     []byte
}

type smEntry struct {
	key   []byte
	tag   protowire.Number // the Value member
	str   []byte           // string_value
	small uint64           // null_value, bool_value (canonical: 0 or 1)
}

// metadataMatch reads a core.v3.Metadata on the wire and returns the canonical form of
// its socket match Struct in s.buf (empty when there is none). ok is false when the
// metadata is not what the wire decoder handles with certainty: a malformed field, the
// key twice, or a Struct the canonical form is not simply re-encoded for (numbers,
// nested structs and lists, a key twice, more than one member of a Value). The rest of
// the metadata is skipped unvalidated (see eds_decode.go).
func (s *socketMatchScratch) metadataMatch(b []byte) (form []byte, ok bool) {
	s.buf = s.buf[:0]
	seen := false
	var f field
	for len(b) > 0 {
		if !next(&b, &f) {
			return nil, false
		}
		if !f.is(1, protowire.BytesType) { // filter_metadata; the rest is skipped
			continue
		}
		key, val, ok := mapEntry(f.s)
		if !ok {
			return nil, false
		}
		if string(key) != SocketMatchKey {
			continue
		}
		if seen {
			return nil, false
		}
		seen = true
		if !s.canonical(val) {
			return nil, false
		}
	}
	return s.buf, true
}

// mapEntry reads a map entry message: key (1) and value (2), each at most once.
func mapEntry(b []byte) (key, val []byte, ok bool) {
	var (
		f          field
		hasK, hasV bool
	)
	for len(b) > 0 {
		if !next(&b, &f) || f.typ != protowire.BytesType {
			return nil, nil, false
		}
		switch {
		case f.num == 1 && !hasK:
			key, hasK = f.s, true
		case f.num == 2 && !hasV:
			val, hasV = f.s, true
		default:
			return nil, nil, false
		}
	}
	return key, val, true
}

// canonical writes the canonical form of the google.protobuf.Struct in b to s.buf.
func (s *socketMatchScratch) canonical(b []byte) bool {
	s.entries = s.entries[:0]
	var f field
	for len(b) > 0 {
		if !next(&b, &f) || !f.is(1, protowire.BytesType) {
			return false
		}
		key, val, ok := mapEntry(f.s)
		if !ok || !utf8.Valid(key) {
			return false
		}
		e := smEntry{key: key}
		if !value(val, &e) {
			return false
		}
		s.entries = append(s.entries, e)
	}
	slices.SortFunc(s.entries, func(a, b smEntry) int { return bytes.Compare(a.key, b.key) })
	for i := 1; i < len(s.entries); i++ {
		if bytes.Equal(s.entries[i-1].key, s.entries[i].key) {
			return false // a key twice: the last one counts; left to the general path
		}
	}
	for _, e := range s.entries {
		// One entry: key (1) and value (2), the Value holding its one member.
		vlen := 1 + protowire.SizeVarint(e.small)
		if e.tag == 3 {
			vlen = 1 + protowire.SizeVarint(uint64(len(e.str))) + len(e.str)
		}
		klen := len(e.key)
		entry := 1 + protowire.SizeVarint(uint64(klen)) + klen + 1 + protowire.SizeVarint(uint64(vlen)) + vlen
		s.buf = protowire.AppendTag(s.buf, 1, protowire.BytesType)
		s.buf = protowire.AppendVarint(s.buf, uint64(entry))
		s.buf = protowire.AppendTag(s.buf, 1, protowire.BytesType)
		s.buf = protowire.AppendBytes(s.buf, e.key)
		s.buf = protowire.AppendTag(s.buf, 2, protowire.BytesType)
		s.buf = protowire.AppendVarint(s.buf, uint64(vlen))
		if e.tag == 3 {
			s.buf = protowire.AppendTag(s.buf, 3, protowire.BytesType)
			s.buf = protowire.AppendBytes(s.buf, e.str)
		} else {
			s.buf = protowire.AppendTag(s.buf, e.tag, protowire.VarintType)
			s.buf = protowire.AppendVarint(s.buf, e.small)
		}
	}
	return true
}

// value reads a google.protobuf.Value that holds one scalar: null_value (1), a
// string_value (3) or bool_value (4).
func value(b []byte, e *smEntry) bool {
	var f field
	members := 0
	for len(b) > 0 {
		if !next(&b, &f) {
			return false
		}
		members++
		switch {
		case f.is(1, protowire.VarintType) && int32(f.v) == 0:
			e.tag, e.small = 1, 0
		case f.is(4, protowire.VarintType):
			e.tag, e.small = 4, 0
			if f.v != 0 {
				e.small = 1
			}
		case f.str(3):
			e.tag, e.str = 3, f.s
		default:
			return false
		}
	}
	return members == 1
}

package file

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"

	"github.com/amesh-dev/amesh/internal/apisix"
)

// Format is the standalone file format APISIX reads.
type Format string

const (
	// YAML is conf/apisix.yaml, for deployment.role_data_plane.config_provider: yaml.
	YAML Format = "yaml"
	// JSON is conf/apisix.json, for config_provider: json.
	JSON Format = "json"
)

// ParseFormat accepts "yaml" or "json".
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(s)); f {
	case YAML, JSON:
		return f, nil
	}
	return "", fmt.Errorf("unknown format %q (want yaml or json)", s)
}

// EndMarker is the line APISIX requires at the end of apisix.yaml: it ignores a file
// without it, which is how it avoids loading a half-written file.
const EndMarker = "#END"

// Render returns the standalone configuration holding objects (keyed "/<kind>/<id>", values
// canonical JSON): one top-level list per kind, objects sorted by key. Every kind amesh
// writes is always present, empty when it has no objects, so that APISIX clears a kind
// whose last object was removed. Identical input gives identical bytes.
func Render(objects map[string][]byte, f Format) ([]byte, error) {
	r := renderer{format: f, frags: map[string]fragment{}}
	content, _, err := r.stage(apisix.ChangeSet{Put: objects})
	return content, err
}

// renderer holds the objects of the file and each one's rendered fragment, so that a
// change set re-renders only the objects it changed: a large mesh's file has tens of
// thousands of objects, and rendering all of them for every change would dominate the
// cost of an update. The objects' JSON is kept because it is the state of the file (the
// pipeline keeps only digests); it is shared with the change sets, not copied.
type renderer struct {
	format Format
	// frags maps keys to their JSON and the fragment it gave.
	frags map[string]fragment
	// size is the length of the last output, to size the next buffer at once.
	size int
}

type fragment struct{ src, out []byte }

// stage renders the state that cs makes of the current one. The renderer changes
// only when commit is called (after the file was written), so a failed write leaves
// it as it was and the retried batch renders against the same state.
func (r *renderer) stage(cs apisix.ChangeSet) (content []byte, commit func(), err error) {
	if r.format != YAML && r.format != JSON {
		return nil, nil, fmt.Errorf("unknown format %q", r.format)
	}
	// updates holds the new fragment of every put key, nil for deleted keys.
	updates := make(map[string]*fragment, len(cs.Put)+len(cs.Delete))
	for _, key := range cs.Delete {
		if _, ok := r.frags[key]; ok {
			updates[key] = nil
		}
	}
	for key, obj := range cs.Put {
		if _, id, ok := splitKey(key); !ok || id == "" {
			return nil, nil, fmt.Errorf("object key %q is not /<kind>/<id>", key)
		}
		if f, ok := r.frags[key]; ok && bytes.Equal(f.src, obj) {
			continue
		}
		out, err := r.fragment(obj)
		if err != nil {
			return nil, nil, fmt.Errorf("object %s: %w", key, err)
		}
		updates[key] = &fragment{src: obj, out: out}
	}
	// frag returns the fragment of a key in the staged state.
	frag := func(key string) (fragment, bool) {
		if u, ok := updates[key]; ok {
			if u == nil {
				return fragment{}, false
			}
			return *u, true
		}
		f, ok := r.frags[key]
		return f, ok
	}

	byKind := map[string][]string{}
	add := func(key string) {
		kind, _, _ := splitKey(key)
		byKind[kind] = append(byKind[kind], key)
	}
	for key := range r.frags {
		if u, ok := updates[key]; !ok || u != nil {
			add(key)
		}
	}
	for key, u := range updates {
		if _, old := r.frags[key]; u != nil && !old {
			add(key)
		}
	}
	kinds := make([]string, 0, len(apisix.KindOrder)+len(byKind))
	for _, k := range apisix.KindOrder {
		kinds = append(kinds, string(k))
	}
	var extra []string
	for k := range byKind {
		if apisix.KindOf("/"+k+"/x") == "" {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	kinds = append(kinds, extra...)

	var buf bytes.Buffer
	buf.Grow(r.size + r.size/8)
	if r.format == YAML {
		buf.WriteString("# Written by amesh from xDS; do not edit (it is rewritten on every change).\n")
	} else {
		buf.WriteString("{")
	}
	for i, kind := range kinds {
		keys := byKind[kind]
		sort.Strings(keys)
		if r.format == JSON {
			if i > 0 {
				buf.WriteString(",")
			}
			fmt.Fprintf(&buf, "\n  %q: [", kind)
		} else if len(keys) == 0 {
			buf.WriteString(kind + ": []\n")
			continue
		} else {
			buf.WriteString(kind + ":\n")
		}
		for j, key := range keys {
			if r.format == JSON && j > 0 {
				buf.WriteString(",")
			}
			f, _ := frag(key)
			buf.Write(f.out)
		}
		if r.format == JSON {
			if len(keys) > 0 {
				buf.WriteString("\n  ")
			}
			buf.WriteString("]")
		}
	}
	if r.format == YAML {
		buf.WriteString(EndMarker + "\n")
	} else {
		buf.WriteString("\n}\n")
	}
	size := buf.Len()
	commit = func() {
		for key, u := range updates {
			if u == nil {
				delete(r.frags, key)
			} else {
				r.frags[key] = *u
			}
		}
		r.size = size
	}
	return buf.Bytes(), commit, nil
}

// objects returns the JSON of every object (shared, not copied).
func (r *renderer) objects() map[string][]byte {
	out := make(map[string][]byte, len(r.frags))
	for k, f := range r.frags {
		out[k] = f.src
	}
	return out
}

// fragment renders one object.
func (r *renderer) fragment(obj []byte) ([]byte, error) {
	var buf bytes.Buffer
	if r.format == JSON {
		buf.WriteString("\n    ")
		if err := json.Indent(&buf, obj, "    ", "  "); err != nil {
			return nil, err
		}
	} else if err := yamlListItem(&buf, obj); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func splitKey(key string) (kind, id string, ok bool) {
	if !strings.HasPrefix(key, "/") {
		return "", "", false
	}
	kind, id, ok = strings.Cut(key[1:], "/")
	return kind, id, ok && kind != ""
}

// yamlListItem writes one JSON object as a block-style YAML list item at indentation 0
// ("- id: x\n  uri: /"). Keys keep their JSON order (apisix.Encode writes struct fields
// in declaration order, so "id" comes first), strings are always double-quoted (JSON's
// string escapes are a subset of YAML's double-quoted ones), so no value can be
// misread as a number, boolean or null.
func yamlListItem(buf *bytes.Buffer, obj []byte) error {
	dec := json.NewDecoder(bytes.NewReader(obj))
	dec.UseNumber()
	v, err := decodeOrdered(dec)
	if err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("trailing data after JSON value")
	}
	e := yamlEmitter{buf: buf}
	e.listItem(v, 0)
	return nil
}

// orderedMap is a JSON object with its key order kept.
type orderedMap struct {
	keys   []string
	values []any
}

func decodeOrdered(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			m := &orderedMap{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				v, err := decodeOrdered(dec)
				if err != nil {
					return nil, err
				}
				m.keys = append(m.keys, kt.(string))
				m.values = append(m.values, v)
			}
			_, err := dec.Token() // '}'
			return m, err
		case '[':
			l := []any{}
			for dec.More() {
				v, err := decodeOrdered(dec)
				if err != nil {
					return nil, err
				}
				l = append(l, v)
			}
			_, err := dec.Token() // ']'
			return l, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	default:
		return tok, nil // string, json.Number, bool or nil
	}
}

type yamlEmitter struct{ buf *bytes.Buffer }

func (e yamlEmitter) indent(n int) { e.buf.WriteString(strings.Repeat(" ", n)) }

// scalar writes a value that fits on the current line and reports whether it did.
func (e yamlEmitter) scalar(v any) bool {
	switch t := v.(type) {
	case nil:
		e.buf.WriteString("null")
	case bool:
		if t {
			e.buf.WriteString("true")
		} else {
			e.buf.WriteString("false")
		}
	case json.Number:
		e.buf.WriteString(yamlNumber(t.String()))
	case string:
		e.quoted(t)
	case []any:
		// Short lists of scalars (hosts, lua-resty-expr terms) read best in flow style.
		if !flowList(t) {
			return false
		}
		e.buf.WriteString("[")
		for i, item := range t {
			if i > 0 {
				e.buf.WriteString(", ")
			}
			e.scalar(item)
		}
		e.buf.WriteString("]")
	case *orderedMap:
		if len(t.keys) > 0 {
			return false
		}
		e.buf.WriteString("{}")
	}
	return true
}

// yamlNumber makes a JSON number one that YAML 1.1 (libyaml, used by APISIX) also reads as
// a number: its float syntax needs a '.' in the mantissa, so Go's "1e-06" becomes "1.0e-06".
func yamlNumber(n string) string {
	if i := strings.IndexAny(n, "eE"); i >= 0 && !strings.Contains(n[:i], ".") {
		return n[:i] + ".0" + n[i:]
	}
	return n
}

// flowList reports whether l is written in flow style: only scalars (or empty).
func flowList(l []any) bool {
	for _, item := range l {
		switch item.(type) {
		case []any, *orderedMap:
			return false
		}
	}
	return true
}

func (e yamlEmitter) quoted(s string) {
	enc := json.NewEncoder(e.buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)               // cannot fail for a string
	e.buf.Truncate(e.buf.Len() - 1) // Encode's newline
}

// plainKey matches keys that YAML reads back as the same string when unquoted.
var plainKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)

func (e yamlEmitter) key(k string) {
	switch strings.ToLower(k) {
	case "y", "n", "yes", "no", "on", "off", "true", "false", "null":
		e.quoted(k)
		return
	}
	if plainKey.MatchString(k) {
		e.buf.WriteString(k)
		return
	}
	e.quoted(k)
}

// listItem writes "- value" with the dash at column ind.
func (e yamlEmitter) listItem(v any, ind int) {
	e.indent(ind)
	switch t := v.(type) {
	case *orderedMap:
		if len(t.keys) > 0 {
			// The first key shares the dash's line; the rest align with it.
			e.buf.WriteString("- ")
			e.mapBody(t, ind+2, true)
			return
		}
	case []any:
		if !flowList(t) {
			e.buf.WriteString("-\n")
			for _, item := range t {
				e.listItem(item, ind+2)
			}
			return
		}
	}
	e.buf.WriteString("- ")
	e.scalar(v)
	e.buf.WriteString("\n")
}

// mapBody writes the entries of m at indentation ind; if firstInline, the first entry
// continues the current line.
func (e yamlEmitter) mapBody(m *orderedMap, ind int, firstInline bool) {
	for i, k := range m.keys {
		if i > 0 || !firstInline {
			e.indent(ind)
		}
		e.key(k)
		e.buf.WriteString(":")
		v := m.values[i]
		switch t := v.(type) {
		case *orderedMap:
			if len(t.keys) > 0 {
				e.buf.WriteString("\n")
				e.mapBody(t, ind+2, false)
				continue
			}
		case []any:
			if !flowList(t) {
				e.buf.WriteString("\n")
				for _, item := range t {
					e.listItem(item, ind+2)
				}
				continue
			}
		}
		e.buf.WriteString(" ")
		e.scalar(v)
		e.buf.WriteString("\n")
	}
}

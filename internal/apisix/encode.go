package apisix

import (
	"bytes"
	"encoding/json"
	"sort"
	"strings"
)

// Encode returns the canonical JSON of an APISIX object: struct fields in declaration
// order, map keys sorted, no HTML escaping, no trailing newline. Identical objects always
// encode to identical bytes, which is what lets the sinks skip unchanged keys.
func Encode(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return b[:len(b)-1], nil
}

// KindOf returns the kind of a key such as "/routes/abc", or "" if it has no known kind.
func KindOf(key string) Kind {
	if len(key) < 2 || key[0] != '/' {
		return ""
	}
	rest := key[1:]
	i := strings.IndexByte(rest, '/')
	if i <= 0 {
		return ""
	}
	k := Kind(rest[:i])
	for _, known := range KindOrder {
		if k == known {
			return k
		}
	}
	return ""
}

func kindRank(key string) int {
	k := KindOf(key)
	for i, known := range KindOrder {
		if k == known {
			return i
		}
	}
	return len(KindOrder)
}

// ChangeSet is the difference between two APISIX configurations, keyed by shared-dict key.
type ChangeSet struct {
	// Put maps keys to the new JSON of added or changed objects.
	Put map[string][]byte
	// Delete lists keys of removed objects.
	Delete []string
}

// Empty reports whether the change set changes nothing.
func (c *ChangeSet) Empty() bool { return len(c.Put) == 0 && len(c.Delete) == 0 }

// Ordered returns the puts and deletes in the order a reader can always resolve:
// puts by KindOrder (upstreams before the routes that name them), then by key;
// deletes in reverse KindOrder (routes before their upstreams), then by key.
func (c *ChangeSet) Ordered() (puts []string, deletes []string) {
	puts = make([]string, 0, len(c.Put))
	for k := range c.Put {
		puts = append(puts, k)
	}
	sort.Slice(puts, func(i, j int) bool {
		ri, rj := kindRank(puts[i]), kindRank(puts[j])
		if ri != rj {
			return ri < rj
		}
		return puts[i] < puts[j]
	})
	deletes = append([]string(nil), c.Delete...)
	sort.Slice(deletes, func(i, j int) bool {
		ri, rj := kindRank(deletes[i]), kindRank(deletes[j])
		if ri != rj {
			return ri > rj
		}
		return deletes[i] < deletes[j]
	})
	return puts, deletes
}

// Diff computes the change set that turns old into new. Values are compared as bytes.
func Diff(old, new map[string][]byte) ChangeSet {
	cs := ChangeSet{Put: map[string][]byte{}}
	for k, v := range new {
		if ov, ok := old[k]; !ok || !bytes.Equal(ov, v) {
			cs.Put[k] = v
		}
	}
	for k := range old {
		if _, ok := new[k]; !ok {
			cs.Delete = append(cs.Delete, k)
		}
	}
	sort.Strings(cs.Delete)
	return cs
}

package index

import (
	"iter"
	"slices"
)

// multi maps a name to a small set of values. Reverse indexes have one entry per
// cluster (tens of thousands), and almost every cluster has a single value: a map of
// single values keeps those without a slice per name and in smaller map entries, and
// the few names with more values keep a slice in a second map. Removal is linear in
// the values of one name, which stays cheap unless one cluster fans in to very many
// virtual hosts. The zero value is empty, ready to use.
type multi[V comparable] struct {
	one  map[string]V   // names with exactly one value
	more map[string][]V // names with two or more values
}

// add adds v; the caller guarantees that v is not already present.
func (m *multi[V]) add(name string, v V) {
	if s, ok := m.more[name]; ok {
		m.more[name] = append(s, v)
		return
	}
	if old, ok := m.one[name]; ok {
		delete(m.one, name)
		if m.more == nil {
			m.more = map[string][]V{}
		}
		m.more[name] = []V{old, v}
		return
	}
	if m.one == nil {
		m.one = map[string]V{}
	}
	m.one[name] = v
}

// addOnce adds v unless it is present.
func (m *multi[V]) addOnce(name string, v V) {
	if old, ok := m.one[name]; (ok && old == v) || slices.Contains(m.more[name], v) {
		return
	}
	m.add(name, v)
}

// remove deletes v (order is not kept) and the name once it has no values.
func (m *multi[V]) remove(name string, v V) {
	if old, ok := m.one[name]; ok {
		if old == v {
			delete(m.one, name)
		}
		return
	}
	s := m.more[name]
	i := slices.Index(s, v)
	if i < 0 {
		return
	}
	last := len(s) - 1
	s[i] = s[last]
	if last == 1 {
		delete(m.more, name)
		m.one[name] = s[0]
		return
	}
	var zero V
	s[last] = zero
	m.more[name] = s[:last]
}

// all yields the values of name.
func (m *multi[V]) all(name string) iter.Seq[V] {
	return func(yield func(V) bool) {
		if v, ok := m.one[name]; ok {
			yield(v)
			return
		}
		for _, v := range m.more[name] {
			if !yield(v) {
				return
			}
		}
	}
}

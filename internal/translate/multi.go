package translate

import "slices"

// multi maps a name to a small set of values kept in a slice. Reverse indexes have one
// entry per cluster (tens of thousands) and almost always one to three values each; a
// map per entry would cost several times the memory. Removal is linear in the values
// of one name, which stays cheap unless one cluster fans in to very many virtual hosts.
type multi[V comparable] map[string][]V

// add appends v; the caller guarantees that v is not already present.
func (m multi[V]) add(name string, v V) { m[name] = append(m[name], v) }

// addOnce adds v unless it is present.
func (m multi[V]) addOnce(name string, v V) {
	if !slices.Contains(m[name], v) {
		m.add(name, v)
	}
}

// remove deletes v (order is not kept) and the name once it has no values.
func (m multi[V]) remove(name string, v V) {
	s := m[name]
	i := slices.Index(s, v)
	if i < 0 {
		return
	}
	last := len(s) - 1
	s[i] = s[last]
	var zero V
	s[last] = zero
	if last == 0 {
		delete(m, name)
		return
	}
	m[name] = s[:last]
}

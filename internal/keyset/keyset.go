// Package keyset is a set of strings kept as one sorted slice, for the sinks that must
// be able to list the keys they wrote. A sink holds a key per object of the mesh; a Go
// map of them costs slots, control bytes and growth headroom, the slice one string
// header a key. The key strings themselves are the ones the caller passes in (the
// translator's), not copies.
//
// Lookups are binary searches and a batch that adds or removes keys costs one pass
// over the set: fine for a sink, whose batches are rare next to the lookups a
// translator would need.
package keyset

import (
	"cmp"
	"iter"
	"slices"
)

// Set is a sorted set of strings with a value of type V each. The zero value is an
// empty set. Not safe for concurrent use.
type Set[V any] struct {
	keys []string
	vals []V
}

// Len returns the number of keys.
func (s *Set[V]) Len() int { return len(s.keys) }

// Get returns the value of key and whether the set holds it.
func (s *Set[V]) Get(key string) (V, bool) {
	if i, ok := slices.BinarySearch(s.keys, key); ok {
		return s.vals[i], true
	}
	var zero V
	return zero, false
}

// All yields every key and its value, in key order.
func (s *Set[V]) All() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		for i, k := range s.keys {
			if !yield(k, s.vals[i]) {
				return
			}
		}
	}
}

// Reset empties the set.
func (s *Set[V]) Reset() { *s = Set[V]{} }

// Keys yields the keys of m with the zero value of V: a map of some other value type
// put as keys only.
func Keys[V any, M ~map[string]W, W any](m M) iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		var zero V
		for k := range m {
			if !yield(k, zero) {
				return
			}
		}
	}
}

// Apply removes the keys in del, then sets the keys put yields to their values (keys
// the set has get the new value; put yields each key once, as a map's All does;
// nil puts nothing). It costs one pass over the set when
// keys are added or removed, and a binary search per key otherwise.
func (s *Set[V]) Apply(put iter.Seq2[string, V], del []string) {
	var gone map[int]bool // indexes of removed keys
	for _, k := range del {
		if i, ok := slices.BinarySearch(s.keys, k); ok {
			if gone == nil {
				gone = map[int]bool{}
			}
			gone[i] = true
		}
	}
	var added []entry[V]
	if put == nil {
		put = func(func(string, V) bool) {}
	}
	for k, v := range put {
		if i, ok := slices.BinarySearch(s.keys, k); ok {
			delete(gone, i) // removed and put again: it stays
			s.vals[i] = v
		} else {
			added = append(added, entry[V]{k, v})
		}
	}
	if len(gone) == 0 && len(added) == 0 {
		return
	}
	if len(gone)+len(added) <= inPlaceMax {
		s.inPlace(gone, added)
		return
	}
	slices.SortFunc(added, func(a, b entry[V]) int { return cmp.Compare(a.key, b.key) })
	n := len(s.keys) - len(gone) + len(added)
	keys, vals := make([]string, 0, n), make([]V, 0, n)
	i, j := 0, 0
	for i < len(s.keys) || j < len(added) {
		switch {
		case i < len(s.keys) && gone[i]:
			i++
		case j == len(added) || i < len(s.keys) && s.keys[i] < added[j].key:
			keys, vals = append(keys, s.keys[i]), append(vals, s.vals[i])
			i++
		default:
			keys, vals = append(keys, added[j].key), append(vals, added[j].v)
			j++
		}
	}
	s.keys, s.vals = keys, vals
}

// inPlaceMax is the most keys Apply adds or removes by moving the others in place
// (each a memmove of the tail) rather than rebuilding the slices (one pass, but two
// new arrays the size of the set, for a route added to a large mesh).
const inPlaceMax = 8

type entry[V any] struct {
	key string
	v   V
}

func (s *Set[V]) inPlace(gone map[int]bool, added []entry[V]) {
	idx := make([]int, 0, len(gone))
	for i := range gone {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	for n := len(idx) - 1; n >= 0; n-- { // from the end: earlier indexes stay valid
		i := idx[n]
		s.keys = slices.Delete(s.keys, i, i+1)
		s.vals = slices.Delete(s.vals, i, i+1)
	}
	for _, e := range added {
		i, _ := slices.BinarySearch(s.keys, e.key)
		s.keys = slices.Insert(s.keys, i, e.key)
		s.vals = slices.Insert(s.vals, i, e.v)
	}
}

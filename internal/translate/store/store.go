// Package store keeps a translator's output as one digest per object key, and turns
// the writes of one translation into what the sink needs: the JSON of the objects
// whose digest changed, the keys that went, and the digests the changed keys had
// before. The complete JSON lives in the sink, not here.
package store

import (
	"bytes"
	"sort"

	"github.com/amesh-dev/amesh/internal/apisix"
)

// Object is one encoded object: its key, the digest (apisix.Hash) of its JSON, and
// an owned copy of the JSON, nil when the digest equals the stored one.
type Object struct {
	Key  string
	Hash uint64
	JSON []byte
}

// Store is the output of a translator. A translation writes between Begin and
// Changes; Digest and Encode only read, so goroutines may call them concurrently
// while nothing writes. It is not safe for concurrent use otherwise.
type Store struct {
	digests map[string]uint64 // key -> apisix.Hash of the object's JSON

	// Of the translation in progress. fromEmpty: it started from an empty output, so
	// every old value is "absent": touched stays empty and pending, which then holds
	// exactly the current keys, is the change set.
	fromEmpty bool
	touched   map[string]touch  // key -> its digest before the translation
	pending   map[string][]byte // JSON of keys whose digest changed
}

type touch struct {
	old     uint64
	existed bool
}

// New returns an empty Store.
func New() *Store { return &Store{digests: map[string]uint64{}} }

// Len returns the number of objects.
func (s *Store) Len() int { return len(s.digests) }

// Digest returns the digest of key's object.
func (s *Store) Digest(key string) (uint64, bool) {
	h, ok := s.digests[key]
	return h, ok
}

// Begin starts a translation. hint is the number of objects it is expected to write
// when the store is empty: a first translation writes tens of thousands, and growing
// the maps that hold them shows in its time. The store's own map is not sized by it:
// it is kept, and an estimate too high would cost heap for good.
func (s *Store) Begin(hint int) {
	s.fromEmpty = len(s.digests) == 0
	s.touched = map[string]touch{}
	if !s.fromEmpty {
		hint = 0
	}
	s.pending = make(map[string][]byte, hint)
}

// Encode encodes obj with e and returns it as the Object to Put under key: an
// unchanged object costs no allocation, which is what makes small changes and
// resends cheap. It only reads the store.
func (s *Store) Encode(e *Encoder, key string, obj any) Object {
	b, err := e.Encode(obj)
	if err != nil {
		// The model only holds JSON-encodable values.
		panic("store: encode " + key + ": " + err.Error())
	}
	o := Object{Key: key, Hash: apisix.Hash(b)}
	if old, ok := s.digests[key]; !ok || old != o.Hash {
		o.JSON = bytes.Clone(b)
	}
	return o
}

// Set is Put of Encode.
func (s *Store) Set(e *Encoder, key string, obj any) { s.Put(s.Encode(e, key, obj)) }

// Put stores o, made by Encode against the current digest of its key.
func (s *Store) Put(o Object) {
	old, ok := s.digests[o.Key]
	if !s.fromEmpty {
		if _, seen := s.touched[o.Key]; !seen {
			s.touched[o.Key] = touch{old: old, existed: ok}
		}
	}
	if ok && old == o.Hash {
		return
	}
	s.digests[o.Key] = o.Hash
	s.pending[o.Key] = o.JSON
}

// Delete removes key's object.
func (s *Store) Delete(key string) {
	old, ok := s.digests[key]
	if !ok {
		return
	}
	if s.fromEmpty {
		delete(s.pending, key) // keep pending == the current keys
	} else if _, seen := s.touched[key]; !seen {
		s.touched[key] = touch{old: old, existed: true}
	}
	delete(s.digests, key)
}

// Changes ends the translation: it returns what turns the output before Begin into
// the current one, and the digests before Begin of the changed keys that existed then
// (nil when none did). A key changed and changed back is not in the change set.
func (s *Store) Changes() (apisix.ChangeSet, map[string]uint64) {
	defer func() { s.touched, s.pending = nil, nil }()
	if s.fromEmpty {
		return apisix.ChangeSet{Put: s.pending}, nil
	}
	cs := apisix.ChangeSet{Put: make(map[string][]byte, len(s.pending))}
	var prior map[string]uint64
	for key, tc := range s.touched {
		cur, ok := s.digests[key]
		switch {
		case ok && tc.existed && cur == tc.old:
			// Changed and changed back, or put again identically.
			continue
		case ok:
			cs.Put[key] = s.pending[key]
		case tc.existed:
			cs.Delete = append(cs.Delete, key)
		default:
			continue // added and deleted again
		}
		if tc.existed {
			if prior == nil {
				prior = map[string]uint64{}
			}
			prior[key] = tc.old
		}
	}
	sort.Strings(cs.Delete)
	return cs, prior
}

// Package shdict is the sink that writes APISIX objects into the nginx shared dicts
// APISIX's config_xds.lua reads ("xds-config" and "xds-config-version"), with a
// journal of the keys each version changed for amesh's own config provider (see
// journal.go). It runs inside nginx (libxds.so) and calls lua-nginx-module's FFI
// shared-dict functions, found with dlsym at run time, so it links against no nginx
// symbol.
package shdict

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/keyset"
)

// VersionKey is the key in the version dict that APISIX polls.
const VersionKey = "version"

// StoreError is a failed write; Msg is the module's message ("no memory" when the
// dict is full).
type StoreError struct {
	Op, Key, Msg string
}

func (e *StoreError) Error() string { return fmt.Sprintf("shdict %s %q: %s", e.Op, e.Key, e.Msg) }

// ErrNoMemory reports whether err is a store that failed because the dict is full.
func ErrNoMemory(err error) bool {
	var se *StoreError
	return errors.As(err, &se) && se.Msg == "no memory"
}

// dict is what the sink needs of a shared dict; zone implements it with the FFI,
// tests with a map.
type dict interface {
	set(key string, value []byte, evict bool) (evicted bool, err error)
	delete(key string) error
	getString(key string) (string, bool, error)
	flushAll()
	// capacity is the dict's size in bytes, 0 if unknown.
	capacity() int
	shuttingDown() bool
}

// ErrExiting is returned by Apply once nginx has told this process to exit.
var ErrExiting = errors.New("shdict: nginx process is exiting; its replacement writes the configuration")

// Sink writes to a pair of shared dicts. Apply must not be called concurrently.
type Sink struct {
	config, version dict
	now             func() time.Time

	mu      sync.Mutex // serializes Apply and Objects
	started bool       // the first Apply (which replaces the dict's contents) succeeded
	ver     atomic.Uint64
	// keys are the keys of the last successful Apply; their values live in the dict
	// (nginx's shared memory), and Objects reads them back from there.
	keys    keyset.Set[struct{}]
	journal journal
}

// Open returns a Sink for the zones APISIX passes to initial() (the results of
// ngx_http_lua_ffi_shdict_udata_to_zone for "xds-config" and "xds-config-version").
func Open(configZone, versionZone unsafe.Pointer) (*Sink, error) {
	if configZone == nil || versionZone == nil {
		return nil, errors.New("shdict: nil zone")
	}
	f, err := resolve()
	if err != nil {
		return nil, err
	}
	return newSink(zone{f: f, ptr: configZone}, zone{f: f, ptr: versionZone}, time.Now), nil
}

func newSink(config, version dict, now func() time.Time) *Sink {
	return &Sink{config: config, version: version, now: now, journal: newJournal(version.capacity())}
}

// Apply writes cs, the journal entry that lists its keys, and then bumps the version
// once.
//
// The first Apply of a Sink is the complete state (the agent starts from nothing):
// it first flushes the config dict, so that keys a previous instance of the library
// wrote (before a reload or a second initial()) and that no longer exist disappear.
// Deletes are written before puts, so that a nearly full dict has room, each in
// apisix.ChangeSet.Ordered order (routes deleted before the upstreams they name,
// upstreams written before the routes that name them). APISIX reads nothing until
// the version changes, so a failed batch is invisible; the agent retries it.
func (s *Sink) Apply(_ context.Context, cs apisix.ChangeSet) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.config.shuttingDown() {
		return ErrExiting
	}
	full := !s.started
	puts, deletes := cs.Ordered()
	s.journal.touch(puts, deletes)
	if full {
		s.journal.full = true
		s.config.flushAll()
	}
	for _, k := range deletes {
		if err := s.config.delete(k); err != nil {
			return err
		}
	}
	evicted := false
	for _, k := range puts {
		_, err := s.config.set(k, cs.Put[k], false)
		if full && ErrNoMemory(err) {
			// flush_all only marks entries expired; the module frees at most two
			// per store, and the slab allocator may not reuse their memory for a
			// different size. Let it evict: the least recently used entries are
			// the expired ones, older than everything this batch wrote.
			var ev bool
			ev, err = s.config.set(k, cs.Put[k], true)
			evicted = evicted || ev
		}
		if err != nil {
			return err
		}
	}
	if evicted {
		// Had the dict run out of expired entries, eviction took some of this
		// batch's: then the batch does not fit.
		if err := s.verify(puts); err != nil {
			return err
		}
	}
	next, prev, err := s.nextVersion()
	if err != nil {
		return err
	}
	s.journal.write(s.version, next, prev)
	if _, err := s.version.set(VersionKey, []byte(strconv.FormatUint(next, 10)), false); err != nil {
		return err
	}
	s.journal.committed()
	s.ver.Store(next)
	if full {
		s.keys.Reset()
	}
	s.keys.Apply(keyset.Keys[struct{}](cs.Put), deletes)
	s.started = true
	return nil
}

// Objects reads the objects of the last successful Apply back from the dict
// (agent.Reader). A key the dict no longer holds (evicted, or removed by someone
// else) has a nil value; so has every key if the dict cannot be read.
func (s *Sink) Objects() map[string][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]byte, s.keys.Len())
	for k := range s.keys.All() {
		v, ok, err := s.config.getString(k)
		if ok && err == nil {
			out[k] = []byte(v)
		} else {
			out[k] = nil
		}
	}
	return out
}

// verify checks that every key of a full batch is present.
func (s *Sink) verify(keys []string) error {
	for _, k := range keys {
		_, ok, err := s.config.getString(k)
		if err != nil {
			return err
		}
		if !ok {
			return &StoreError{Op: "set", Key: k, Msg: "no memory"}
		}
	}
	return nil
}

// nextVersion returns the version for the next batch: one more than the last, and on
// the first batch of this Sink more than both the wall clock in nanoseconds and the
// value already in the dict, so that versions increase across reloads and restarts
// of the library (APISIX only compares for inequality; operators and the journal's
// readers compare order). prev is the version already in the dict on the first batch
// (0 if none or later).
func (s *Sink) nextVersion() (next, prev uint64, err error) {
	if cur := s.ver.Load(); cur != 0 {
		return cur + 1, 0, nil
	}
	next = uint64(s.now().UnixNano())
	old, ok, err := s.version.getString(VersionKey)
	if err != nil {
		return 0, 0, err
	}
	if ok {
		if v, err := strconv.ParseUint(old, 10, 64); err == nil {
			prev = v
			if v >= next {
				next = v + 1
			}
		}
	}
	return next, prev, nil
}

// Version returns the version last written (0 before the first batch).
func (s *Sink) Version() uint64 { return s.ver.Load() }

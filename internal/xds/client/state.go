package client

import (
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// entry is one accepted resource.
type entry struct {
	name    string
	msg     proto.Message
	hash    uint64   // resource.Hash of the bytes msg was decoded from
	size    int      // length of those bytes, a second guard against hash collisions
	version string   // Delta: the resource version; SotW: the response version_info
	deps    []string // resource.Decoded.Deps
}

// typeState is the protocol-independent state of one resource type. All fields are
// guarded by Client.mu; they are written only by the goroutine running Client.Run.
type typeState struct {
	url string
	// wildcard types (listeners, clusters) are subscribed to everything; the others
	// to exactly the names in subscribed.
	wildcard   bool
	subscribed map[string]struct{}
	// absent is the subscribed names with no accepted resource, kept up to date by
	// put, remove and resubscribeLocked so that publishing need not scan the whole
	// subscription (it is O(changed), see publish.go).
	absent map[string]struct{}

	res    map[string]*entry
	byHash map[uint64]*entry // same entries as res, for SotW where names come only after decoding

	version  string // last accepted version_info (SotW) or system_version_info (Delta)
	nonce    string // last nonce received on the current stream
	received bool   // a response was accepted on some stream

	responses, acks, nacks, ignored uint64
	lastNACK                        string
}

func newTypeState(url string, wildcard bool) *typeState {
	return &typeState{
		url:        url,
		wildcard:   wildcard,
		subscribed: map[string]struct{}{},
		absent:     map[string]struct{}{},
		res:        map[string]*entry{},
		byHash:     map[uint64]*entry{},
	}
}

// wants reports whether a resource of this type named name is subscribed.
func (t *typeState) wants(name string) bool {
	if t.wildcard {
		return true
	}
	_, ok := t.subscribed[name]
	return ok
}

// reuse returns the accepted entry whose serialized form is exactly b's hash and
// length, so an identical resend keeps the decoded message (and its pointer).
func (t *typeState) reuse(h uint64, size int) *entry {
	if e := t.byHash[h]; e != nil && e.size == size {
		return e
	}
	return nil
}

func (t *typeState) put(e *entry) {
	if old := t.res[e.name]; old != nil && t.byHash[old.hash] == old {
		delete(t.byHash, old.hash)
	}
	t.res[e.name] = e
	t.byHash[e.hash] = e
	delete(t.absent, e.name)
}

func (t *typeState) remove(name string) bool {
	old := t.res[name]
	if old == nil {
		return false
	}
	if t.byHash[old.hash] == old {
		delete(t.byHash, old.hash)
	}
	delete(t.res, name)
	if _, ok := t.subscribed[name]; ok && !t.wildcard {
		t.absent[name] = struct{}{}
	}
	return true
}

func (t *typeState) sortedSubscribed() []string {
	return sortedKeys(t.subscribed)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Indexes into Client.types, in the order Envoy subscribes (clusters before
// listeners, so routes never point at clusters the client has not asked for).
const (
	cdsIdx = iota
	edsIdx
	ldsIdx
	rdsIdx
	numTypes
)

var typeURLs = [numTypes]string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteConfigType}

// depIdx is the dependent type of a wildcard type: clusters need endpoints, listeners
// need route configurations.
func depIdx(i int) (int, bool) {
	switch i {
	case cdsIdx:
		return edsIdx, true
	case ldsIdx:
		return rdsIdx, true
	}
	return 0, false
}

func typeIndex(url string) (int, bool) {
	for i, u := range typeURLs {
		if u == url {
			return i, true
		}
	}
	return 0, false
}

// accepted is a validated response, ready to apply.
type accepted struct {
	idx     int
	upserts []upsert
	removed []string
	// full: every accepted resource of the type is in upserts; the rest are removed
	// (SotW listeners and clusters).
	full    bool
	version string
}

// upsert is an accepted resource: a new entry, or an accepted one (same pointer) that
// was resent unchanged, with the version it came with this time.
type upsert struct {
	e       *entry
	version string
}

// subChange is how the subscription of a dependent type changed.
type subChange struct {
	idx            int
	added, removed []string
}

func (s subChange) empty() bool { return len(s.added) == 0 && len(s.removed) == 0 }

// applyLocked installs an accepted response and returns the change of the dependent
// subscription it causes (empty for dependent types).
func (c *Client) applyLocked(a accepted) subChange {
	t := c.types[a.idx]
	changed := c.dirtySet(a.idx)
	var seen map[string]struct{}
	if a.full {
		seen = make(map[string]struct{}, len(a.upserts))
	}
	for _, u := range a.upserts {
		e := u.e
		if seen != nil {
			seen[e.name] = struct{}{}
		}
		if old := t.res[e.name]; old != nil && old.hash == e.hash && old.size == e.size {
			old.version = u.version
			continue
		}
		e.version = u.version
		t.put(e)
		changed[e.name] = struct{}{}
	}
	for _, n := range a.removed {
		if t.remove(n) {
			changed[n] = struct{}{}
		}
	}
	if a.full {
		for n := range t.res {
			if _, ok := seen[n]; !ok {
				t.remove(n)
				changed[n] = struct{}{}
			}
		}
	}
	t.version = a.version
	t.received = true

	d, ok := depIdx(a.idx)
	if !ok {
		return subChange{}
	}
	return c.resubscribeLocked(a.idx, d)
}

// resubscribeLocked recomputes the names dependent type d needs from the resources of
// type from, updates its subscription and drops resources no longer subscribed (a
// consumer must not see a route configuration no listener uses).
func (c *Client) resubscribeLocked(from, d int) subChange {
	want := map[string]struct{}{}
	for _, e := range c.types[from].res {
		for _, n := range e.deps {
			want[n] = struct{}{}
		}
	}
	dt := c.types[d]
	sc := subChange{idx: d}
	for n := range want {
		if _, ok := dt.subscribed[n]; !ok {
			sc.added = append(sc.added, n)
		}
	}
	for n := range dt.subscribed {
		if _, ok := want[n]; !ok {
			sc.removed = append(sc.removed, n)
		}
	}
	sort.Strings(sc.added)
	sort.Strings(sc.removed)
	if sc.empty() {
		return sc
	}
	dt.subscribed = want
	for _, n := range sc.added {
		if _, ok := dt.res[n]; !ok {
			dt.absent[n] = struct{}{}
		}
	}
	for _, n := range sc.removed {
		delete(dt.absent, n)
	}
	changed := c.dirtySet(d)
	for _, n := range sc.removed {
		if dt.remove(n) {
			changed[n] = struct{}{}
		}
	}
	return sc
}

// dirtySet is the set of names of type i changed since the last published snapshot.
func (c *Client) dirtySet(i int) map[string]struct{} {
	p := &c.dirty[i]
	if *p == nil {
		*p = map[string]struct{}{}
	}
	return *p
}

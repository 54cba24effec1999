package client

import (
	"sort"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// entry is one accepted resource.
type entry struct {
	name    string
	msg     any      // resource.Decoded.Msg
	hash    uint64   // resource.Hash of the bytes msg was decoded from
	size    int      // length of those bytes, a second guard against hash collisions
	version string   // Delta: the resource version; SotW: the response version_info
	deps    []string // resource.Decoded.Deps
	// alts are other serialized forms of the same content (istiod does not marshal
	// protobuf maps in a stable order, so an unchanged resource can arrive with other
	// bytes). They are indexed in typeState.byHash like hash, so that a resend of a
	// form seen before is recognised without decoding. At most maxAlts, oldest first.
	alts []form
}

// form identifies one serialization: its hash and, as a second guard against hash
// collisions, its length.
type form struct {
	hash uint64
	size int
}

// maxAlts bounds the alternative forms remembered per resource: a resource with k
// map entries has up to k! orders, so remembering them all could grow without bound.
const maxAlts = 4

// hasForm reports whether bytes with hash h and length size are a known form of e.
func (e *entry) hasForm(h uint64, size int) bool {
	if e.hash == h && e.size == size {
		return true
	}
	for _, f := range e.alts {
		if f.hash == h && f.size == size {
			return true
		}
	}
	return false
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

// reuse returns the accepted entry with a known serialized form of exactly this hash
// and length, so an identical resend keeps the decoded message (and its pointer).
func (t *typeState) reuse(h uint64, size int) *entry {
	if e := t.byHash[h]; e != nil && e.hasForm(h, size) {
		return e
	}
	return nil
}

// addForm remembers another serialization of the accepted entry e (same content,
// other bytes), evicting the oldest alternative beyond maxAlts.
func (t *typeState) addForm(e *entry, f form) {
	if t.res[e.name] != e || e.hasForm(f.hash, f.size) {
		return
	}
	if len(e.alts) == maxAlts {
		if t.byHash[e.alts[0].hash] == e {
			delete(t.byHash, e.alts[0].hash)
		}
		e.alts = append(e.alts[:0], e.alts[1:]...)
	}
	e.alts = append(e.alts, f)
	t.byHash[f.hash] = e
}

// unindex drops every form of e from byHash.
func (t *typeState) unindex(e *entry) {
	if t.byHash[e.hash] == e {
		delete(t.byHash, e.hash)
	}
	for _, f := range e.alts {
		if t.byHash[f.hash] == e {
			delete(t.byHash, f.hash)
		}
	}
}

func (t *typeState) put(e *entry) {
	if old := t.res[e.name]; old != nil {
		t.unindex(old)
	}
	t.res[e.name] = e
	t.byHash[e.hash] = e
	t.settle(e.name)
}

// settle drops name from absent (it arrived, or is no longer subscribed). The map is
// replaced once emptied: a Go map keeps its buckets, and after an initial sync that
// waited for every endpoint set they held megabytes for good.
func (t *typeState) settle(name string) {
	if _, ok := t.absent[name]; !ok {
		return
	}
	delete(t.absent, name)
	if len(t.absent) == 0 {
		t.absent = map[string]struct{}{}
	}
}

func (t *typeState) remove(name string) bool {
	old := t.res[name]
	if old == nil {
		return false
	}
	t.unindex(old)
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
// was resent unchanged, with the version it came with this time. An unchanged resource
// that arrived with other bytes is a new entry holding the accepted message (same
// pointer) and the new form's hash; applying it keeps the accepted entry.
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
		if old := t.res[e.name]; old != nil && (old == e || old.msg == e.msg || old.hash == e.hash && old.size == e.size) {
			old.version = u.version
			if old != e && old.msg == e.msg {
				t.addForm(old, form{hash: e.hash, size: e.size})
			}
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
		dt.settle(n) // no longer awaited
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

package client

import (
	"maps"
	"slices"
	"sort"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// entry is one accepted resource. The client holds one per resource of the mesh, so
// the struct is kept small: its name is its message's (msgName, also the key in
// typeState.res), its dependencies are derived from the message where they can be
// (clusters), its version shares its bytes with the other resources of its response
// that came with the same one, and what only few entries need is behind more.
type entry struct {
	msg  any    // resource.Decoded.Msg
	hash uint64 // resource.Hash of the bytes msg was decoded from
	size uint32 // length of those bytes, a second guard against hash collisions
	// version is the Delta resource version or the SotW response version_info, as
	// the server sent it.
	version string
	more    *entryMore
}

// entryMore holds what few entries have.
type entryMore struct {
	// deps are resource.Decoded.Deps when they cannot be derived from the message
	// (listeners; see derivedDeps), which ownDeps says.
	deps    []string
	ownDeps bool
	// alts are other serialized forms of the same content (istiod does not marshal
	// protobuf maps in a stable order, so an unchanged resource can arrive with other
	// bytes): a resend of a form seen before is recognised without decoding. At most
	// maxAlts, oldest first.
	alts []form
}

// form identifies one serialization: its hash and, as a second guard against hash
// collisions, its length.
type form struct {
	hash uint64
	size uint32
}

// maxAlts bounds the alternative forms remembered per resource: a resource with k
// map entries has up to k! orders, so remembering them all could grow without bound.
const maxAlts = 4

// newEntry returns the entry for a decoded message; deps are its dependencies.
func newEntry(msg any, h uint64, size uint32, deps []string) *entry {
	e := &entry{msg: msg, hash: h, size: size}
	if !derivedDeps(msg, deps) {
		e.more = &entryMore{deps: deps, ownDeps: true}
	}
	return e
}

// derivedDeps reports whether deps are what eachDep derives from msg alone: the EDS
// name of a cluster, nothing for the other kinds.
func derivedDeps(msg any, deps []string) bool {
	if c, ok := msg.(*resource.Cluster); ok && c.EDS != "" {
		return len(deps) == 1 && deps[0] == c.EDS
	}
	return len(deps) == 0
}

// eachDep calls f with every name of a dependent resource e needs.
func (e *entry) eachDep(f func(string)) {
	if e.more != nil && e.more.ownDeps {
		for _, n := range e.more.deps {
			f(n)
		}
		return
	}
	if c, ok := e.msg.(*resource.Cluster); ok && c.EDS != "" {
		f(c.EDS)
	}
}

// eachSecret calls f with the name of every SDS secret served over ADS that e (a
// cluster) names: the other dependent type of clusters, derived from the message.
func (e *entry) eachSecret(f func(string)) {
	if c, ok := e.msg.(*resource.Cluster); ok {
		for _, n := range c.Secrets() {
			f(n)
		}
	}
}

// deps returns e's dependencies as newEntry got them.
func (e *entry) deps() []string {
	var out []string
	e.eachDep(func(n string) { out = append(out, n) })
	return out
}

// msgName is the name of a decoded resource (resource.Decoded.Name).
func msgName(msg any) string { return resource.NameOf(msg) }

// hasForm reports whether bytes with hash h and length size are a known form of e.
func (e *entry) hasForm(h uint64, size uint32) bool {
	if e.hash == h && e.size == size {
		return true
	}
	if e.more != nil {
		for _, f := range e.more.alts {
			if f.hash == h && f.size == size {
				return true
			}
		}
	}
	return false
}

// versionString is the version exactly as the server sent it.
func (e *entry) versionString() string { return e.version }

// typeState is the protocol-independent state of one resource type, owned by the
// goroutine running Client.Run (see Client).
type typeState struct {
	url string
	// wildcard types (listeners, clusters) are subscribed to everything; the others
	// to exactly the names in subscribed.
	wildcard   bool
	subscribed map[string]struct{}
	// absent is the subscribed names with no accepted resource, kept up to date by
	// put, remove and resubscribe so that publishing need not scan the whole
	// subscription (it is O(changed), see publish.go).
	absent map[string]struct{}

	// res is the accepted resources by name. A resend is matched to its entry by
	// name: Delta responses name their resources, and in SotW the name is read from
	// the serialized resource (wireName) without decoding it.
	res map[string]*entry

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

// addForm remembers another serialization of the accepted entry e named name (same
// content, other bytes), evicting the oldest alternative beyond maxAlts.
func (t *typeState) addForm(name string, e *entry, f form) {
	if t.res[name] != e || e.hasForm(f.hash, f.size) {
		return
	}
	if e.more == nil {
		e.more = &entryMore{}
	}
	m := e.more
	if len(m.alts) == maxAlts {
		m.alts = append(m.alts[:0], m.alts[1:]...)
	}
	m.alts = append(m.alts, f)
}

func (t *typeState) put(name string, e *entry) {
	t.res[name] = e
	t.settle(name)
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
	if t.res[name] == nil {
		return false
	}
	delete(t.res, name)
	if _, ok := t.subscribed[name]; ok && !t.wildcard {
		t.absent[name] = struct{}{}
	}
	return true
}

func (t *typeState) sortedSubscribed() []string {
	return slices.Sorted(maps.Keys(t.subscribed))
}

// Indexes into Client.types, in the order Envoy subscribes (clusters before
// listeners, so routes never point at clusters the client has not asked for).
const (
	cdsIdx = iota
	edsIdx
	ldsIdx
	rdsIdx
	// sdsIdx: the SDS secrets clusters' TLS contexts name with an ADS config source
	// (a DestinationRule's credentialName), which Envoy asks for on the same stream.
	sdsIdx
	numTypes
)

var typeURLs = [numTypes]string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteConfigType, resource.SecretType}

// depIdxs are the dependent types of a wildcard type: clusters need endpoints and
// secrets, listeners need route configurations.
func depIdxs(i int) []int {
	switch i {
	case cdsIdx:
		return []int{edsIdx, sdsIdx}
	case ldsIdx:
		return []int{rdsIdx}
	}
	return nil
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
	route   *routev3.RouteConfiguration // the decoded route configuration, if new
}

// subChange is how the subscription of a dependent type changed.
type subChange struct {
	idx            int
	added, removed []string
}

func (s subChange) empty() bool { return len(s.added) == 0 && len(s.removed) == 0 }

// apply installs an accepted response and returns the changes of the dependent
// subscriptions it causes, the empty ones left out (none for dependent types).
func (c *Client) apply(a accepted) []subChange {
	t := c.types[a.idx]
	changed := c.dirtySet(a.idx)
	var seen map[string]struct{}
	if a.full {
		seen = make(map[string]struct{}, len(a.upserts))
	}
	for _, u := range a.upserts {
		e := u.e
		name := msgName(e.msg)
		if seen != nil {
			seen[name] = struct{}{}
		}
		if old := t.res[name]; old != nil && (old == e || old.msg == e.msg || old.hash == e.hash && old.size == e.size) {
			old.version = u.version
			if old != e && old.msg == e.msg {
				t.addForm(name, old, form{hash: e.hash, size: e.size})
			}
			continue
		}
		e.version = u.version
		t.put(name, e)
		changed[name] = struct{}{}
		if u.route != nil {
			c.decoded[name] = u.route
		}
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

	var out []subChange
	for _, d := range depIdxs(a.idx) {
		if sc := c.resubscribe(a.idx, d); !sc.empty() {
			out = append(out, sc)
		}
	}
	return out
}

// resubscribe recomputes the names dependent type d needs from the resources of
// type from, updates its subscription and drops resources no longer subscribed (a
// consumer must not see a route configuration no listener uses).
func (c *Client) resubscribe(from, d int) subChange {
	want := map[string]struct{}{}
	add := func(n string) { want[n] = struct{}{} }
	for _, e := range c.types[from].res {
		if d == sdsIdx {
			e.eachSecret(add)
		} else {
			e.eachDep(add)
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

// Package translate turns a consistent xDS snapshot into APISIX objects. It is pure:
// no I/O, no clock, no randomness; the same input gives byte-identical output.
//
// Work is cached per resource and redone only when the snapshot's Changes (or pointer
// identity) say so: listeners are cheap and redone when any changes; route
// configurations are translated per virtual host, and a virtual host whose wire form
// is unchanged (resource.RouteConfig keeps one per virtual host) keeps its routes; clusters
// and endpoints rebuild only the upstreams that name them. Reverse indexes (cluster →
// virtual hosts that depend on it, EDS name → clusters) find the affected work. Every
// object is encoded and only its digest (apisix.Hash) kept: the change set compares
// digests and carries the bytes of the objects that changed, while the complete JSON
// lives in the sink (nginx's shared memory or the file), not here.
//
// Known approximations, reported per resource where they apply: nginx's $uri is the
// decoded, normalised path while Envoy matches the (normalised) :path; $http_<name>
// joins repeated headers with "," like Envoy; a route timeout becomes nginx's
// per-operation connect/send/read timeouts; $host has no port, so domains are matched
// without port as with ignore_port_in_host_matching (istiod's default).
package translate

import (
	"maps"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/translate/index"
	"github.com/amesh-dev/amesh/internal/translate/store"
	"github.com/amesh-dev/amesh/internal/translate/upstream"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// Options configure the translation.
type Options struct {
	// OriginalDstVar is the nginx variable holding the original destination port of a
	// connection redirected by iptables; routes of an outbound listener on port P carry
	// the condition [OriginalDstVar, "==", P]. Default "connection_original_dst";
	// "server_port" fits APISIX listening on each port directly.
	OriginalDstVar string
}

// Result is the outcome of one Translate call.
type Result struct {
	// Changes turns the previous output into the new one.
	Changes apisix.ChangeSet
	// Report is the complete, sorted list of findings for the current output.
	Report []report.Entry
	// Prior holds, for each key of Changes that the previous output had, the digest
	// (apisix.Hash) of its previous value; a key of Changes without an entry is new.
	// The pipeline uses it to drop a change undone by a later one before it is written
	// without keeping a digest of its own for every object. Nil when nothing of
	// Changes existed before (a first translation).
	Prior map[string]uint64
}

// Translator keeps what its output was built from, so that each call only redoes the
// work the snapshot's Changes require. It is not safe for concurrent use.
//
// Translate drives the builders (listener.go, vhost.go, package upstream), which are
// pure, over the pieces an update changed or made stale (package index), and writes
// what they build to the output (package store).
type Translator struct {
	opts Options
	out  *store.Store              // the output: a digest per object
	idx  *index.Index[*vhostState] // what each piece read

	// The translated pieces, kept from one call to the next.
	started   bool
	seq       uint64 // of the snapshot translated last
	listeners map[string]*listenerState
	ctxs      map[string]*rcState // by httpCtx.key
	clusters  clusters
	refs      upRefs
	findings  findings

	call call    // the call in progress; zero between calls
	sc   scratch // buffers of this goroutine (see parallel)
}

// call is what one Translate call works on.
type call struct {
	snap     *resource.Snapshot
	full     bool            // translate all of snap, not only its Changes
	dirtyUp  map[string]bool // upstream ids referenced or released
	rebuilds map[string]bool // clusters whose upstreams must be rebuilt
	// first: the output was empty. syncRC then queues new virtual hosts in vhostJobs
	// instead of building them one by one (see buildVhosts).
	first     bool
	vhostJobs []vhostJob
	// allClustersNew: a full translation by a translator that had no clusters, so
	// every cluster is synced and rebuilt in this call.
	allClustersNew bool
	// read: the route configurations whose decoded message this call used; released
	// when it returns (see resource.RouteConfig).
	read []*resource.RouteConfig
}

type listenerState struct {
	l   *listenerv3.Listener
	in  inboundInfo
	out listenerOut
	sr  []string // stream route keys
	ups []string // upstream ids acquired by stream routes
}

type rcState struct {
	rcInput
	fp string
	// src is the route configuration translated last; inline is the wire form of an
	// inline one (ctx.inline), made once.
	src    *resource.RouteConfig
	inline *resource.RouteConfig
	vhosts map[string]*vhostState
	report []report.Entry
}

// rcInput is what building a virtual host reads of its context and route
// configuration. hdr is the route configuration decoded without its virtual hosts:
// what routes read from the configuration itself (plugins.Input).
type rcInput struct {
	ctx  httpCtx
	hdr  *routev3.RouteConfiguration
	info rcInfo
}

// vhostState is a translated virtual host. It keeps the virtual host's wire form (a
// slice of its route configuration's, see resource.RouteConfig), not the message: that
// is what a resend is compared with, and what a rebuild for a cluster change decodes.
//
// There is one per virtual host (tens of thousands), so the four lists of names it
// keeps share one exactly sized slice, refs (see the accessors), filled once the
// virtual host is built (vhostBuilder.finish).
type vhostState struct {
	owner *rcState // its name is the key of the vhostState in owner.vhosts
	wire  []byte
	vhostRefs
	// dropped: no longer current (see dropVhost).
	dropped bool
	report  []report.Entry
}

// vhostRefs are the names a built virtual host keeps, in one slice: keys, then ups,
// then deps, then mirror.
type vhostRefs struct {
	refs               []string
	nKeys, nUps, nDeps int32
}

// keys returns the object keys of the virtual host's routes.
func (r *vhostRefs) keys() []string { return r.refs[:r.nKeys] }

// ups returns the upstream ids the virtual host references, each once.
func (r *vhostRefs) ups() []string { return r.refs[r.nKeys : r.nKeys+r.nUps] }

// deps returns the clusters whose existence and kind its routes depend on: sorted,
// each once.
func (r *vhostRefs) deps() []string { return r.refs[r.nKeys+r.nUps : r.nKeys+r.nUps+r.nDeps] }

// mirror returns the clusters whose shape and endpoints its routes depend on too:
// sorted, each once.
func (r *vhostRefs) mirror() []string { return r.refs[r.nKeys+r.nUps+r.nDeps:] }

// clusterState is a translated cluster: the snapshot's resource.Cluster (its names and
// shared shape; upstreams are built from those). There is one per cluster (tens of
// thousands), so it keeps only what cannot be derived.
type clusterState struct {
	src *resource.Cluster
	cla *resource.LoadAssignment
	// name is the snapshot's copy of the cluster's name (src.Name), next to info: routes
	// look both up (clusterRef), and src is a cache miss away.
	name string
	info clusterInfo
	// ups are the ids of the cluster's referenced upstreams (upRef.id), in no order.
	// Here rather than in an index by name: only existing clusters have upstreams,
	// and a removed cluster's are all released in the call that removes it (its
	// routes and stream routes depend on it, see index.ClusterChanged).
	ups    []string
	report clusterFindings
}

// eds returns the EDS name the cluster's endpoints are read from, "" when they do not
// come from EDS.
func (cs *clusterState) eds() string { return edsName(cs.src) }

func edsName(src *resource.Cluster) string {
	if c := src.Shape(); c.GetType() == clusterv3.Cluster_EDS || c.GetEdsClusterConfig() != nil {
		return src.EDSName()
	}
	return ""
}

// clusterInfo is what routes need to know about a cluster.
type clusterInfo struct {
	exists  bool
	special upstream.SpecialKind
	hashLB  bool
}

// upRef is a referenced upstream. Its id is a suffix of its object key, the key of
// the upRef in Translator.ups: one string for both (see acquireID).
type upRef struct {
	key     string // apisix.Key(apisix.KindUpstreams, id)
	cluster string
	v       *upstream.Variant // shared (see internVariant): not to be modified
	n       int
	// split, for the upstream of clusters merged by a weighted split (cluster is
	// then ""), lists them; its id is in each of their clusterState.ups, so that a
	// change to any of them rebuilds it. rep are its findings.
	split *upstream.Split
	rep   []report.Entry
}

// upKeyPrefix is what apisix.Key puts before an upstream's id.
var upKeyPrefix = apisix.Key(apisix.KindUpstreams, "")

// id returns the upstream's id: the end of its key, not a copy.
func (r *upRef) id() string { return r.key[len(upKeyPrefix):] }

// New returns a Translator.
func New(opts Options) *Translator {
	if opts.OriginalDstVar == "" {
		opts.OriginalDstVar = "connection_original_dst"
	}
	return &Translator{
		opts:      opts,
		out:       store.New(),
		listeners: map[string]*listenerState{},
		ctxs:      map[string]*rcState{},
		clusters:  clusters{},
		idx:       index.New[*vhostState](),
		refs:      upRefs{byID: map[string]*upRef{}, splits: map[string]*upRef{}},
	}
}

// Len returns the number of objects in the current output.
func (t *Translator) Len() int { return t.out.Len() }

// Translate brings the output up to date with snap and returns what changed: the
// Changes of successive calls, applied in order to an empty map, give the complete
// output (a fresh Translator's first Changes.Put is the complete output of its snapshot).
//
// A Translate that panicked leaves the Translator unusable: its state may be
// half-updated. The caller drops it and starts over with a new one.
func (t *Translator) Translate(snap *resource.Snapshot) Result {
	ch := &snap.Changes
	full := !t.started || ch.Full || ch.Since != t.seq
	t.begin(snap, full)
	defer t.end()

	// 1. Clusters first: routes need their kind and existence.
	t.syncClusters(full, ch)
	// 2. Listeners decide the set of route-config contexts.
	dirtyCtx := t.syncListeners(full || len(ch.Listeners) > 0 || t.idx.AnyListenerStale())
	// 3. Route configurations whose resource changed.
	changedRDS := maps.Keys(ch.RouteConfigs)
	if full {
		changedRDS = t.idx.RouteConfigs()
	}
	for name := range changedRDS {
		for key := range t.idx.Contexts(name) {
			dirtyCtx[key] = true
		}
	}
	for _, key := range slices.Sorted(maps.Keys(dirtyCtx)) {
		if st := t.ctxs[key]; st != nil {
			t.syncRC(st)
		}
	}
	t.buildVhosts()
	// 4. Virtual hosts affected by cluster changes.
	for vhs := t.idx.TakeStale(); len(vhs) > 0; vhs = t.idx.TakeStale() {
		for _, vs := range vhs {
			if !vs.dropped {
				t.rebuildFromWire(vs)
			}
		}
	}
	// 5. Upstreams: rebuild what changed, add what is newly referenced, drop the rest.
	t.syncUpstreams()

	t.started, t.seq = true, snap.Seq
	cs, prior := t.out.Changes()
	return Result{Changes: cs, Prior: prior, Report: t.fullReport()}
}

// begin starts a call. A first translation sizes the maps that will hold one entry
// per cluster or per object up front: growing maps of tens of thousands of entries
// shows in its time.
func (t *Translator) begin(snap *resource.Snapshot, full bool) {
	t.call = call{snap: snap, full: full, dirtyUp: map[string]bool{}, first: t.out.Len() == 0}
	hintClusters, hint := 0, 0
	if len(t.clusters) == 0 {
		hintClusters = len(snap.Clusters)
		t.clusters = make(clusters, hintClusters)
	}
	if t.call.first {
		hint = sizeHint(snap)
	}
	t.call.rebuilds = make(map[string]bool, hintClusters)
	t.call.allClustersNew = full && hintClusters > 0
	t.out.Begin(hint)
	t.idx.Begin()
}

// end ends a call, also one that panicked: it releases the decoded messages of the
// route configurations the call read (see resource.RouteConfig), and of those of
// the snapshot no listener uses (yet), which nothing else would release.
func (t *Translator) end() {
	for _, rc := range t.call.read {
		rc.Release()
	}
	snap := t.call.snap
	if t.call.full {
		for _, rc := range snap.RouteConfigs {
			rc.Release()
		}
	} else {
		for name := range snap.Changes.RouteConfigs {
			if rc := snap.RouteConfigs[name]; rc != nil {
				rc.Release()
			}
		}
	}
	t.idx.End()
	t.call = call{}
}

// sizeHint estimates the number of objects snap translates into: about one upstream
// per cluster and one route per xDS route.
func sizeHint(snap *resource.Snapshot) int {
	n := len(snap.Clusters)
	for _, rc := range snap.RouteConfigs {
		n += rc.Routes
	}
	return n
}

// acquire references upstream (cluster, v) and returns its id.
func (t *Translator) acquire(cluster string, v upstream.Variant) string {
	return t.acquireID(cluster, v, upstream.VariantID(cluster, v))
}

// acquireID is acquire with the id already computed. It returns the id string the
// translator holds for that upstream, for the caller to keep instead of its own copy:
// every route of a service references the same upstream, and each computed its id
// anew (a string per route otherwise, ~1 MiB at 10,000 services). That string is the
// end of the upstream's object key, so the key (which the output needs anyway) and
// the id cost one allocation.
func (t *Translator) acquireID(cluster string, v upstream.Variant, id string) string {
	return t.acquireRef(acquired{cluster: cluster, v: v, id: id})
}

// acquireRef is acquireID for the upstream of a cluster or of a merged weighted
// split (see upstream.Split), which each of its clusters lists.
func (t *Translator) acquireRef(a acquired) string {
	id := a.id
	r := t.refs.byID[id]
	if r == nil {
		r = &upRef{key: apisix.Key(apisix.KindUpstreams, id), cluster: a.cluster, split: a.split, v: t.refs.intern(a.v)}
		id = r.id()
		t.refs.byID[id] = r
	}
	r.n++
	if r.n == 1 {
		t.call.dirtyUp[id] = true
		if r.split == nil {
			if cs := t.clusters[r.cluster]; cs != nil { // always: only existing clusters are acquired
				cs.ups = append(cs.ups, id)
			}
		} else {
			t.refs.splits[id] = r
			for _, c := range r.split.Clusters {
				if cs := t.clusters[c]; cs != nil && !slices.Contains(cs.ups, id) {
					cs.ups = append(cs.ups, id)
				}
			}
		}
	}
	return r.id()
}

func (t *Translator) release(id string) {
	r := t.refs.byID[id]
	if r == nil {
		return
	}
	r.n--
	if r.n <= 0 {
		delete(t.refs.byID, id)
		t.call.dirtyUp[id] = true
		if r.split != nil {
			delete(t.refs.splits, id)
			if len(r.rep) > 0 {
				t.findings.dirty = true
			}
			for _, c := range r.split.Clusters {
				if cs := t.clusters[c]; cs != nil {
					cs.unlist(id)
				}
			}
			return
		}
		if cs := t.clusters[r.cluster]; cs != nil {
			if !cs.unlist(id) {
				panic("translate: upstream " + id + " is not listed by its cluster")
			}
		}
	}
}

// unlist removes id from the cluster's upstreams, reporting whether it was there.
func (cs *clusterState) unlist(id string) bool {
	i := slices.Index(cs.ups, id)
	if i < 0 {
		return false
	}
	last := len(cs.ups) - 1
	cs.ups[i], cs.ups[last] = cs.ups[last], ""
	cs.ups = cs.ups[:last]
	return true
}

// syncClusters updates cluster state for changed clusters and endpoints.
func (t *Translator) syncClusters(full bool, ch *resource.Changes) {
	if full {
		for n := range t.call.snap.Clusters {
			t.syncCluster(n)
		}
		for n := range t.clusters {
			if t.call.snap.Clusters[n] == nil {
				t.syncCluster(n) // removed
			}
		}
		return
	}
	names := map[string]bool{}
	for n := range ch.Clusters {
		names[n] = true
	}
	for e := range ch.Endpoints {
		if cs := t.clusters[e]; cs != nil && cs.eds() == e {
			names[e] = true // not in the index, see index.MoveEDS
		}
		for n := range t.idx.ClustersOfEDS(e) {
			names[n] = true
		}
	}
	for n := range names {
		t.syncCluster(n)
	}
}

func (t *Translator) syncCluster(name string) {
	src := t.call.snap.Clusters[name]
	cs := t.clusters[name]
	if src == nil {
		if cs == nil {
			return
		}
		t.idx.MoveEDS(name, cs.eds(), "")
		delete(t.clusters, name)
		t.findings.dirty = true
		t.call.rebuilds[name] = true
		t.idx.ClusterChanged(name, cs.info != clusterInfo{}, false)
		return
	}
	c := src.Shape()
	eds := edsName(src)
	var cla *resource.LoadAssignment
	if eds != "" {
		cla = t.call.snap.Endpoints[eds]
	}
	if cs == nil {
		cs = &clusterState{}
		t.clusters[name] = cs
	}
	if cs.src == src && cs.cla == cla {
		return
	}
	oldEDS := ""
	if cs.src != nil {
		oldEDS = cs.eds()
	}
	t.idx.MoveEDS(name, oldEDS, eds)
	old := cs.info
	contentChanged := cs.cla != cla || cs.src != src
	cs.src, cs.cla = src, cla
	if cs.name = name; src.Name == name {
		cs.name = src.Name
	}
	cs.info = clusterInfo{exists: true, special: upstream.Special(name, c), hashLB: isHashLB(c)}
	t.call.rebuilds[name] = true
	t.idx.ClusterChanged(name, old != cs.info, contentChanged)
}

func isHashLB(c *clusterv3.Cluster) bool {
	p := c.GetLbPolicy()
	return p == clusterv3.Cluster_RING_HASH || p == clusterv3.Cluster_MAGLEV
}

// clusters are the translated clusters of the current snapshot, by name.
type clusters map[string]*clusterState

// ref returns what routes need to know about a cluster and the name to keep: the
// snapshot's copy when the cluster exists. Routes name their cluster with strings of
// their own decoded configuration; keeping those in the index and references would
// hold a second copy of every referenced cluster's name.
func (c clusters) ref(name string) (string, clusterInfo) {
	if cs := c[name]; cs != nil {
		return cs.name, cs.info
	}
	return name, clusterInfo{}
}

// syncListeners re-derives contexts and stream routes when listeners may have changed;
// it returns the context keys that must be retranslated.
func (t *Translator) syncListeners(check bool) map[string]bool {
	dirty := map[string]bool{}
	if !check {
		return dirty
	}
	in := inboundInfo{}
	if vi := t.call.snap.Listeners[virtualInbound]; vi != nil && t.opts.OriginalDstVar != "server_port" {
		in.port = int(vi.GetAddress().GetSocketAddress().GetPortValue())
	}
	// Listeners removed or changed.
	for name, ls := range t.listeners {
		if l := t.call.snap.Listeners[name]; l == nil || l != ls.l || ls.in != in || t.idx.ListenerStale(name) {
			t.dropListener(name, ls)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(t.call.snap.Listeners)) {
		if _, ok := t.listeners[name]; ok {
			continue
		}
		l := t.call.snap.Listeners[name]
		ls := &listenerState{l: l, in: in, out: buildListener(l, in, t.opts)}
		t.listeners[name] = ls
		t.findings.dirty = true
		for _, s := range ls.out.streams {
			t.addStream(ls, s)
		}
	}
	// Contexts: compare the wanted set with the current one.
	want := map[string]httpCtx{}
	for _, name := range slices.Sorted(maps.Keys(t.listeners)) {
		for _, c := range t.listeners[name].out.ctxs {
			if _, dup := want[c.key]; !dup {
				want[c.key] = c
			}
		}
	}
	for key, st := range t.ctxs {
		if c, ok := want[key]; !ok || c.fingerprint() != st.fp {
			t.dropRC(st)
			delete(t.ctxs, key)
			if st.ctx.rds != "" {
				t.idx.RemoveContext(st.ctx.rds, key)
			}
		}
	}
	for key, c := range want {
		if _, ok := t.ctxs[key]; ok {
			continue
		}
		st := &rcState{rcInput: rcInput{ctx: c}, fp: c.fingerprint(), vhosts: map[string]*vhostState{}}
		t.ctxs[key] = st
		if c.rds != "" {
			t.idx.AddContext(c.rds, key)
		}
		dirty[key] = true
	}
	return dirty
}

func (t *Translator) dropListener(name string, ls *listenerState) {
	for _, k := range ls.sr {
		t.out.Delete(k)
	}
	for _, s := range ls.out.streams {
		t.idx.RemoveStream(s.cluster, name)
	}
	for _, id := range ls.ups {
		t.release(id)
	}
	delete(t.listeners, name)
	t.findings.dirty = true
}

func (t *Translator) addStream(ls *listenerState, s streamOut) {
	t.idx.AddStream(s.cluster, ls.l.GetName())
	_, info := t.clusters.ref(s.cluster)
	rep := func(sev report.Severity, msg string) {
		ls.out.report = append(ls.out.report, report.Entry{Kind: "listener", Resource: ls.l.GetName(),
			Field: "filter_chains.filters.tcp_proxy.cluster", Severity: sev, Message: msg})
	}
	switch {
	case !info.exists:
		rep(report.Invalid, "cluster "+s.cluster+" does not exist; no stream route is emitted (Envoy closes such connections)")
		return
	case info.special != upstream.None:
		rep(report.Unsupported, "TCP to special cluster "+s.cluster+" is not translated; no stream route is emitted")
		return
	}
	id := t.acquire(s.cluster, upstream.Variant{})
	ls.ups = append(ls.ups, id)
	r := s.route
	r.UpstreamID = id
	key := apisix.Key(apisix.KindStreamRoutes, r.ID)
	ls.sr = append(ls.sr, key)
	t.out.Set(&t.sc.enc, key, r)
}

// syncUpstreams writes the upstream objects that changed: a plan of the clusters to
// build (serial), the builds (pure, see buildUpstreams), then their results stored
// (serial).
func (t *Translator) syncUpstreams() {
	// Group dirty ids and rebuilt clusters by cluster so each base is built once.
	// Merged splits are built apart, once each, when dirty or one of their clusters
	// is rebuilt.
	byCluster := map[string][]string{}
	splits := map[string]bool{}
	for id := range t.call.dirtyUp {
		if t.call.allClustersNew {
			// Every cluster is rebuilt (below) with all its ids, and no id existed
			// before: nothing to group or delete.
			break
		}
		if r := t.refs.byID[id]; r != nil && r.split != nil {
			splits[id] = true
		} else if r != nil {
			if !t.call.rebuilds[r.cluster] { // a rebuilt cluster builds all its ids anyway
				byCluster[r.cluster] = append(byCluster[r.cluster], id)
			}
		} else {
			t.out.Delete(apisix.Key(apisix.KindUpstreams, id))
		}
	}
	for name := range t.call.rebuilds {
		if _, ok := byCluster[name]; !ok {
			byCluster[name] = nil
		}
		if len(t.refs.splits) > 0 {
			if cs := t.clusters[name]; cs != nil {
				for _, id := range cs.ups {
					if t.refs.splits[id] != nil {
						splits[id] = true
					}
				}
			}
		}
	}
	t.buildSplits(splits)
	jobs := make([]upJob, 0, len(byCluster))
	for name, ids := range byCluster {
		cs := t.clusters[name]
		if cs == nil {
			for _, id := range ids {
				t.out.Delete(apisix.Key(apisix.KindUpstreams, id))
			}
			continue
		}
		// A rebuilt cluster's ids are listed by the build (idsOf, off this goroutine).
		jobs = append(jobs, upJob{name: name, cs: cs, rebuild: t.call.rebuilds[name], ids: ids})
	}
	t.buildUpstreams(jobs)
	for i := range jobs {
		j := &jobs[i]
		// Clusters no route uses (about a third of Istio's) only have findings; their
		// nodes are built when a route acquires one.
		if len(j.ids) == 0 || j.rebuild {
			if rep := t.findings.share(j.name, j.rep); !rep.equal(j.cs.report) {
				j.cs.report = rep
				t.findings.dirty = true
			}
		}
		for _, o := range j.out {
			t.out.Put(o)
		}
	}
}

// idsOf returns the referenced upstream ids of a cluster, sorted, but for those of
// merged splits (see buildSplits).
func (t *Translator) idsOf(cluster string) []string {
	cs := t.clusters[cluster]
	if cs == nil {
		return nil
	}
	ids := slices.Sorted(slices.Values(cs.ups))
	if len(t.refs.splits) > 0 {
		ids = slices.DeleteFunc(ids, func(id string) bool { return t.refs.splits[id] != nil })
	}
	return ids
}

// buildSplits builds the upstreams of merged weighted splits (few: serially).
func (t *Translator) buildSplits(ids map[string]bool) {
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		r := t.refs.splits[id]
		if r == nil {
			continue
		}
		members := make([]upstream.Member, 0, len(r.split.Clusters))
		for i, c := range r.split.Clusters {
			cs := t.clusters[c]
			if cs == nil {
				// Removed: the routes that use the split are rebuilt in this call and
				// release it (they depend on every cluster of it).
				continue
			}
			members = append(members, upstream.Member{Name: c, Shape: cs.src.Shape(), CLA: cs.cla, Weight: r.split.Weights[i]})
		}
		if len(members) == 0 {
			continue
		}
		u, rep := upstream.BuildSplit(id, members, *r.v)
		if !slices.Equal(rep, r.rep) {
			r.rep = rep
			t.findings.dirty = true
		}
		t.out.Set(&t.sc.enc, r.key, u)
	}
}

// fullReport returns the complete sorted report, rebuilt only when a part changed.
func (t *Translator) fullReport() []report.Entry {
	if !t.findings.dirty && t.findings.sorted != nil {
		return t.findings.sorted
	}
	n := 0
	for _, cs := range t.clusters {
		n += len(cs.report.es) // most of the entries in Istio's output (auto-mTLS)
	}
	all := make([]report.Entry, 0, n+64)
	for _, ls := range t.listeners {
		all = append(all, ls.out.report...)
	}
	for _, st := range t.ctxs {
		all = append(all, st.report...)
		for _, vs := range st.vhosts {
			all = append(all, vs.report...)
		}
	}
	for name, cs := range t.clusters {
		all = cs.report.appendTo(all, name)
	}
	for _, r := range t.refs.splits {
		all = append(all, r.rep...)
	}
	sortReport(all)
	t.findings.sorted, t.findings.dirty = all, false
	return all
}

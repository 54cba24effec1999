package translate

// Route configurations. A context whose route configuration changed is synced virtual
// host by virtual host: one whose wire form is unchanged keeps its routes; the others
// are built (buildVhost, on every core for a first translation) and adopted. A virtual
// host the index marks stale is rebuilt from its wire form.

import (
	"bytes"
	"slices"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/amesh-dev/amesh/internal/overlay"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/translate/store"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// rcState is a translated route-configuration context: its virtual hosts and the
// findings of the configuration itself.
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

// vhostState is a translated virtual host. It keeps the virtual host's wire form (a
// slice of its route configuration's, see resource.RouteConfig), not the message: that
// is what a resend is compared with, and what a rebuild for a cluster change decodes.
//
// There is one per virtual host (tens of thousands), so the four lists of names it
// keeps share one exactly sized slice (vhostRefs), filled once the virtual host is
// built (vhostBuilder.finish).
type vhostState struct {
	// owner holds it in owner.vhosts under its name; nil once the virtual host is no
	// longer current (see dropVhost).
	owner *rcState
	wire  []byte
	vhostRefs
	report []report.Entry
	// hosts summarises its routes' hosts: which controller plugin configs may select
	// them (syncPlugins).
	hosts overlay.Hosts
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

// syncRC brings one context's routes up to date with its route configuration.
func (t *Translator) syncRC(st *rcState) {
	src, err := t.source(st)
	if src == st.src && src != nil {
		return
	}
	var rc, hdr *routev3.RouteConfiguration
	if src != nil {
		if rc, err = t.message(st, src); err == nil {
			hdr, err = src.HeaderMessage()
		}
	}
	if src == nil || err != nil {
		t.dropRC(st)
		msg := "route configuration is missing from the snapshot; listener " + st.ctx.listener + " serves no routes"
		if err != nil {
			// Only a message that cannot be encoded or decoded again gets here; the
			// client never publishes one.
			msg = "route configuration cannot be read (" + err.Error() + "); listener " + st.ctx.listener + " serves no routes"
		}
		st.report = []report.Entry{{Kind: "route_config", Resource: st.ctx.rds, Field: "name", Severity: report.Invalid, Message: msg}}
		t.findings.dirty = true
		return
	}
	info := infoOf(rc)
	// Settings of the configuration itself (headers to add, per-filter configs, mirror
	// policies...) reach every route: when they change, every virtual host is rebuilt.
	force := st.src == nil || info != st.info || !bytes.Equal(st.src.Header, src.Header)
	st.src, st.hdr, st.info = src, hdr, info
	if len(st.report) > 0 {
		st.report = nil
		t.findings.dirty = true
	}
	vhs := rc.GetVirtualHosts()
	seen := make(map[string]bool, len(vhs))
	for i, vh := range vhs {
		name := vh.GetName()
		if seen[name] {
			continue // duplicate names are invalid in Envoy; the first one wins here
		}
		seen[name] = true
		wire := src.VirtualHosts[i]
		old := st.vhosts[name]
		if old != nil && !force && bytes.Equal(old.wire, wire) {
			// Unchanged. Point at the new wire form, so that the old configuration's
			// can be freed.
			old.wire = wire
			continue
		}
		if old == nil && t.call.first {
			// A first translation: built later with the others, see buildVhosts.
			t.call.vhostJobs = append(t.call.vhostJobs, vhostJob{st: st, vh: vh, wire: wire})
			continue
		}
		t.rebuildVhost(st, vh, wire)
	}
	for name, vs := range st.vhosts {
		if !seen[name] {
			t.dropVhost(vs)
			delete(st.vhosts, name)
		}
	}
}

// dropRC removes every route of a context.
func (t *Translator) dropRC(st *rcState) {
	for _, vs := range st.vhosts {
		t.dropVhost(vs)
	}
	st.vhosts = map[string]*vhostState{}
	st.src, st.hdr = nil, nil
	if len(st.report) > 0 {
		st.report = nil
		t.findings.dirty = true
	}
}

// dropVhost removes a virtual host's routes and references. Every virtual host that
// stops being current (removed, replaced by a rebuild, or its context dropped) goes
// through here or, when replaced, through unlinkVhost.
func (t *Translator) dropVhost(vs *vhostState) {
	t.unlinkVhost(vs, nil)
	for _, id := range vs.ups() {
		t.release(id)
	}
}

// unlinkVhost is dropVhost but for the upstream references, which the caller
// releases, and for the routes of keep (the keys of the virtual host that replaces
// it, which the caller puts).
func (t *Translator) unlinkVhost(vs *vhostState, keep []string) {
	vs.owner = nil
	for i, k := range vs.keys() {
		// Route ids follow the routes' positions: a kept key is mostly at the same one.
		if i < len(keep) && keep[i] == k || slices.Contains(keep, k) {
			continue
		}
		t.out.Delete(k)
	}
	t.idx.RemoveVirtualHost(vs, vs.deps(), vs.mirror())
	t.setShadows(vs, nil)
	if len(vs.report) > 0 {
		t.findings.dirty = true
	}
}

// source returns the route configuration of a context: the RDS resource, or the
// inline configuration (encoded once per context).
func (t *Translator) source(st *rcState) (*resource.RouteConfig, error) {
	if st.ctx.inline == nil {
		return t.call.snap.RouteConfigs[st.ctx.rds], nil
	}
	if st.inline == nil {
		rc, err := resource.NewRouteConfig(st.ctx.inline)
		if err != nil {
			return nil, err
		}
		st.inline = rc
	}
	return st.inline, nil
}

// message returns the decoded route configuration of a context's source: the inline
// message, or the one the update brought (decoded anew when it brought none).
func (t *Translator) message(st *rcState, src *resource.RouteConfig) (*routev3.RouteConfiguration, error) {
	if st.ctx.inline != nil {
		return st.ctx.inline, nil
	}
	return t.call.snap.Changes.RouteMessage(src)
}

// rebuildStale retranslates current virtual hosts from their wire forms, after a
// change of the clusters they read or of the controller plugins that may select their
// routes. They are decoded and built on every core when they are many (see
// parallel), a batch at a time so that only one batch's decoded messages are alive,
// and replace the old ones one by one.
func (t *Translator) rebuildStale(vhs []*vhostState) {
	const batch = 1024
	jobs := make([]vhostJob, 0, min(len(vhs), batch))
	for len(vhs) > 0 {
		n := min(len(vhs), batch)
		jobs = jobs[:0]
		for _, vs := range vhs[:n] {
			if vs.owner != nil {
				jobs = append(jobs, vhostJob{st: vs.owner, wire: vs.wire})
			}
		}
		vhs = vhs[n:]
		t.parallel(len(jobs), func(sc *scratch, i int) {
			j := &jobs[i]
			vh, err := resource.DecodeVirtualHost(j.wire)
			if err != nil {
				// The wire form was encoded by resource.NewRouteConfig from a valid
				// message; failing to decode it is a bug, not bad input.
				panic("translate: decode a virtual host of " + j.st.ctx.key + ": " + err.Error())
			}
			j.vh = vh
			t.buildVhost(sc, j)
		})
		for i := range jobs {
			t.replaceVhost(&jobs[i])
			jobs[i] = vhostJob{}
		}
	}
}

// rebuildVhost retranslates one virtual host; wire is its wire form.
func (t *Translator) rebuildVhost(st *rcState, vh *routev3.VirtualHost, wire []byte) {
	j := vhostJob{st: st, vh: vh, wire: wire}
	t.buildVhost(&t.sc, &j)
	t.replaceVhost(&j)
}

// replaceVhost makes a built virtual host current in place of the one of its name, if
// any. It was built while the old one was current, and references its upstreams
// before the old one releases them: a route that came out unchanged was not copied
// (its digest is the stored one), and an upstream both reference is kept rather than
// dropped and built again. A rebuild for a cluster or plugin change mostly changes
// neither.
func (t *Translator) replaceVhost(j *vhostJob) {
	old := j.st.vhosts[j.vh.GetName()]
	if old != nil {
		t.unlinkVhost(old, j.vs.keys())
	}
	t.adoptVhost(j)
	if old != nil {
		for _, id := range old.ups() {
			t.release(id)
		}
	}
}

// buildVhost builds a job's virtual host and encodes its routes. It only reads the
// translator's state (clusters, the output's digests), so that jobs can be built on
// several goroutines, each with its own scratch.
func (t *Translator) buildVhost(sc *scratch, j *vhostJob) {
	b := vhostBuilder{rc: &j.st.rcInput, vh: j.vh, clusters: t.clusters, plugins: t.plugins, up: t.up, refs: &sc.refs, routes: sc.routes}
	b.build()
	j.vs = &vhostState{owner: j.st, wire: j.wire, vhostRefs: b.finish(), report: b.rep, hosts: b.hosts}
	j.acquires, j.shadows = b.acquires, b.shadows
	j.routes = make([]store.Object, len(b.routes))
	for i, k := range j.vs.keys() {
		j.routes[i] = t.out.Encode(&sc.enc, k, &b.routes[i])
	}
	clear(b.routes)
	sc.routes = b.routes[:0]
}

// adoptVhost makes a built virtual host current: it references the upstreams its
// routes use, stores the routes and indexes what the virtual host read.
func (t *Translator) adoptVhost(j *vhostJob) {
	vs := j.vs
	ups := vs.ups()
	if len(j.acquires) != len(ups) {
		panic("translate: a virtual host build listed acquires and ids out of step")
	}
	for k, a := range j.acquires {
		// Keep the id string the translator holds, not the build's copy.
		ups[k] = t.acquireRef(a)
	}
	for _, r := range j.routes {
		t.out.Put(r)
	}
	j.st.vhosts[j.vh.GetName()] = vs
	t.idx.AddVirtualHost(vs, vs.deps(), vs.mirror())
	t.setShadows(vs, j.shadows)
	if len(vs.report) > 0 {
		t.findings.dirty = true
	}
}

// vhostJob is one virtual host to build: its route configuration's context, the
// virtual host and its wire form in; the built virtual host, the upstreams it
// references, its encoded routes and the controller plugins they shadow out.
type vhostJob struct {
	st   *rcState
	vh   *routev3.VirtualHost
	wire []byte

	vs       *vhostState
	acquires []acquired
	routes   []store.Object
	shadows  []routeShadow
}

// buildVhosts builds the virtual hosts syncRC queued, then adopts them in queue
// order, as rebuildVhost would have one by one. Builds only read translator state
// (clusters, the output's digests), which nothing writes while they run.
func (t *Translator) buildVhosts() {
	jobs := t.call.vhostJobs
	t.call.vhostJobs = nil
	t.parallel(len(jobs), func(sc *scratch, i int) { t.buildVhost(sc, &jobs[i]) })
	for i := range jobs {
		t.adoptVhost(&jobs[i])
	}
}

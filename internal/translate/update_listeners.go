package translate

// Listeners. Any listener change rebuilds the changed listeners (buildListener) and
// compares the route-configuration contexts they want with the current ones: a new
// or changed context is translated in full, a gone one dropped. Stream routes are
// written here (syncStreams), with the upstreams they reference.

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/translate/upstream"
)

// listenerState is a translated listener.
type listenerState struct {
	l   *listenerv3.Listener
	in  peers
	out listenerOut
}

// streamState is a stream route of the output.
type streamState struct {
	sig string // what it was built from (streamWant.sig)
	up  string // the upstream id it acquired, "" for none
}

// syncListeners re-derives contexts and stream routes when listeners may have changed;
// it returns the context keys that must be retranslated.
func (t *Translator) syncListeners(check bool) map[string]bool {
	dirty := map[string]bool{}
	if !check {
		return dirty
	}
	in, out := t.peers()
	peersOf := func(l *listenerv3.Listener) peers {
		if l.GetName() == virtualOutbound || l.GetUseOriginalDst().GetValue() {
			return out
		}
		return in
	}
	// Listeners removed or changed.
	changed := false
	for name, ls := range t.listeners {
		if l := t.call.snap.Listeners[name]; l == nil || l != ls.l || ls.in != peersOf(l) || t.idx.ListenerStale(name) {
			t.dropListener(name, ls)
			changed = true
		}
	}
	for _, name := range slices.Sorted(maps.Keys(t.call.snap.Listeners)) {
		if _, ok := t.listeners[name]; ok {
			continue
		}
		l := t.call.snap.Listeners[name]
		ls := &listenerState{l: l, in: peersOf(l), out: buildListener(l, peersOf(l), t.opts, t.fetched)}
		t.listeners[name] = ls
		t.useRemote(name, ls.out.remote)
		t.findings.dirty = true
		changed = true
		for _, c := range ls.out.streams {
			if c.cluster != "" {
				_, info := t.clusters.ref(c.cluster)
				t.idx.AddStream(c.cluster, name, readsShape(info))
			}
		}
	}
	if changed {
		t.syncStreams()
		t.syncPeerHandshake()
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

// peers returns what every listener's translation needs to know about the others,
// and what the catch-all outbound listener needs (see peers).
func (t *Translator) peers() (in, out peers) {
	if !t.opts.capture() {
		return in, in
	}
	if vi := t.call.snap.Listeners[virtualInbound]; vi != nil {
		in.inPort = int(vi.GetAddress().GetSocketAddress().GetPortValue())
	}
	in.outListen = defaultOutboundListen
	if vo := t.call.snap.Listeners[virtualOutbound]; vo != nil {
		in.outListen = int(vo.GetAddress().GetSocketAddress().GetPortValue())
	}
	all := map[int]bool{}
	for name, l := range t.call.snap.Listeners {
		if name == virtualInbound || name == virtualOutbound || l.GetUseOriginalDst().GetValue() {
			continue
		}
		if p := int(l.GetAddress().GetSocketAddress().GetPortValue()); p != 0 {
			all[p] = true
		}
	}
	out = in
	out.outPorts = joinPorts(all)
	return in, out
}

// joinPorts returns the ports in ascending order, comma-separated.
func joinPorts(ports map[int]bool) string {
	s := make([]string, 0, len(ports))
	for _, p := range slices.Sorted(maps.Keys(ports)) {
		s = append(s, strconv.Itoa(p))
	}
	return strings.Join(s, ",")
}

func (t *Translator) dropListener(name string, ls *listenerState) {
	for _, c := range ls.out.streams {
		if c.cluster != "" {
			t.idx.RemoveStream(c.cluster, name)
		}
	}
	t.unuseRemote(name, ls.out.remote)
	delete(t.listeners, name)
	t.findings.dirty = true
}

// readsShape reports whether a stream route to a cluster of this kind reads the
// cluster's shape (an original-destination cluster's source addresses), so that a
// change to it rebuilds the route.
func readsShape(info clusterInfo) bool {
	return info.special != upstream.None && info.special != upstream.BlackHole
}

// streamWant is a stream route as syncStreams wants it.
type streamWant struct {
	route apisix.StreamRoute
	// cluster is whose base upstream it references (route.UpstreamID is set on
	// writing): nginx's stream proxy takes no route-level upstream settings, and the
	// base marks which nodes amesh-upstream-tls reaches with TLS.
	cluster string
	sig     string
}

// syncStreams brings the stream routes up to date with the listeners' claims. The
// cells of one port and address (of every protocol) go to the one listener Envoy
// hands their connections to: the listener for the exact address, then the one for
// the port, then the capture listener (by name among equals); and a capture listener's
// cells of a port that a listener for every address has go to none, since Envoy hands
// that listener all of the port's connections. So no two routes have the same place in
// the stream router's order, and a listener's routes for a port and address are all
// its own.
func (t *Translator) syncStreams() {
	type owner struct {
		rank     int
		listener string
	}
	own := map[streamCell]owner{} // by cell without protocols
	wild := map[[2]int]bool{}     // (capture port, port) of listeners for every address
	names := slices.Sorted(maps.Keys(t.listeners))
	for _, name := range names {
		for _, c := range t.listeners[name].out.streams {
			if c.rank == rankWildcard {
				wild[[2]int{c.cell.listen, c.cell.port}] = true
			}
			slot := c.cell
			slot.proto, slot.alpn = "", ""
			if o, ok := own[slot]; !ok || c.rank < o.rank {
				own[slot] = owner{c.rank, name}
			}
		}
	}
	want := map[string]streamWant{}
	var rep []report.Entry
	for _, name := range names {
		out := &t.listeners[name].out
		for i := range out.streams {
			c := &out.streams[i]
			slot := c.cell
			slot.proto, slot.alpn = "", ""
			if own[slot].listener != name || c.rank == rankCapture && c.cell.port != 0 && wild[[2]int{c.cell.listen, c.cell.port}] {
				continue
			}
			if sw, ok := t.streamRoute(c, name, &rep); ok {
				want[apisix.Key(apisix.KindStreamRoutes, sw.route.ID)] = sw
			}
		}
	}
	for key, st := range t.streams {
		switch sw, ok := want[key]; {
		case ok && sw.sig == st.sig:
			delete(want, key) // unchanged
		case !ok:
			t.out.Delete(key)
			if st.up != "" {
				t.release(st.up)
			}
			delete(t.streams, key)
		}
	}
	// New and changed routes: the new upstream is acquired before the old one is
	// released, so that one both reference stays.
	for key, sw := range want {
		up := ""
		if sw.cluster != "" {
			up = t.acquire(sw.cluster, upstream.Variant{})
			sw.route.UpstreamID = up
		}
		t.out.Set(&t.sc.enc, key, sw.route)
		if old := t.streams[key]; old != nil && old.up != "" {
			t.release(old.up)
		}
		t.streams[key] = &streamState{sig: sw.sig, up: up}
	}
	rep = dedupEntries(rep)
	if !slices.Equal(rep, t.streamReport) {
		t.streamReport = rep
		t.findings.dirty = true
	}
}

// streamRoute returns the stream route of claim c of listener, or false for none; the
// findings of its cluster go to rep.
func (t *Translator) streamRoute(c *streamClaim, listener string, rep *[]report.Entry) (streamWant, bool) {
	sw := streamWant{route: apisix.StreamRoute{ID: c.routeID(), ServerAddr: c.cell.addr, ServerPort: c.cell.port}}
	r := &sw.route
	capture := c.cell.listen != 0
	if capture {
		r.Labels = map[string]string{labelListen: strconv.Itoa(c.cell.listen)}
		if c.cell.proto != "" {
			r.Labels[labelProtocol] = c.cell.proto
		}
		if c.cell.alpn != "" {
			r.Labels[labelALPN] = c.cell.alpn
		}
	}
	add := func(sev report.Severity, msg string) {
		*rep = append(*rep, report.Entry{Kind: "listener", Resource: listener,
			Field: "filter_chains.filters.tcp_proxy.cluster", Severity: sev, Message: msg})
	}
	closed := c.closed
	// tls is the upstream TLS of the route's connections and tlsSig the cluster's digest
	// of it: the signature holds the digest, since %+v prints the pointer's address.
	var tls *upstream.TLSConf
	var tlsSig uint64
	name, info := t.clusters.ref(c.cluster)
	switch {
	case c.mtls:
		r.Plugins = map[string]any{streamMTLSPlugin: struct{}{}}
	case c.http && c.tls:
		r.Plugins = map[string]any{streamHTTPPlugin: map[string]bool{"tls": true}}
	case c.http:
		r.Plugins = map[string]any{streamHTTPPlugin: struct{}{}}
	case closed != "":
	case !info.exists && !capture:
		add(report.Invalid, "cluster "+name+" does not exist; no stream route is emitted (Envoy closes such connections)")
		return sw, false
	case !info.exists:
		add(report.Invalid, "cluster "+name+" does not exist; its connections are closed, as Envoy closes them")
		closed = "no such cluster"
	case info.special != upstream.None && !capture:
		add(report.Unsupported, "TCP to special cluster "+name+" is not translated; no stream route is emitted")
		return sw, false
	case info.special == upstream.BlackHole:
		closed = info.special.String()
	case info.special != upstream.None:
		conf, _, reason := upstream.OriginalDstConfig(t.clusters[name].src.Shape())
		if reason != "" {
			add(report.Unsupported, "cluster "+name+": "+reason+"; its connections are closed")
			closed = "original destination not translated"
			break
		}
		sw.cluster = name
		r.Plugins = map[string]any{upstream.OriginalDstPlugin: conf}
	default:
		sw.cluster = name
		if info.tls != 0 {
			// Some endpoints are reached with TLS: the stream amesh-upstream-tls
			// originates it per node as the base upstream marks them, as the HTTP
			// plugin does. Without a TLS configuration amesh can serve (info.tls 0)
			// the base upstream has left those endpoints out (fail closed, reported
			// on the cluster).
			tls, tlsSig = t.clusters[name].tls.ForTCP(), info.tls
		}
	}
	if closed == "" {
		c.authzPlugins(r)
	}
	if closed != "" {
		if c.cell.bottom() {
			return sw, false
		}
		r.Desc = "amesh: connections are closed (" + closed + ")"
	}
	sw.sig = fmt.Sprintf("%+v|%s|%x", *r, sw.cluster, tlsSig)
	if tls != nil {
		// Keyed by the id of the base upstream, which syncStreams acquires.
		r.Plugins = mergePlugins(r.Plugins, upstream.TLSPlugin,
			upstream.TLSPluginConf{Upstreams: map[string]*upstream.TLSConf{upstream.ID(name): tls}})
	}
	return sw, true
}

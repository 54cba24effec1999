package translate

// Listeners. Any listener change rebuilds the changed listeners (buildListener) and
// compares the route-configuration contexts they want with the current ones: a new
// or changed context is translated in full, a gone one dropped. Stream routes are
// written here, with the upstreams they reference.

import (
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
	sr  []string // stream route keys
	ups []string // upstream ids acquired by stream routes
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
	for name, ls := range t.listeners {
		if l := t.call.snap.Listeners[name]; l == nil || l != ls.l || ls.in != peersOf(l) || t.idx.ListenerStale(name) {
			t.dropListener(name, ls)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(t.call.snap.Listeners)) {
		if _, ok := t.listeners[name]; ok {
			continue
		}
		l := t.call.snap.Listeners[name]
		ls := &listenerState{l: l, in: peersOf(l), out: buildListener(l, peersOf(l), t.opts)}
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

// peers returns what every listener's translation needs to know about the others,
// and what the catch-all outbound listener needs (see peers).
func (t *Translator) peers() (in, out peers) {
	if vi := t.call.snap.Listeners[virtualInbound]; vi != nil && t.opts.OriginalDstVar != "server_port" {
		in.inPort = int(vi.GetAddress().GetSocketAddress().GetPortValue())
	}
	wide, narrow := map[int]bool{}, map[int]bool{}
	for name, l := range t.call.snap.Listeners {
		if name == virtualInbound || name == virtualOutbound || l.GetUseOriginalDst().GetValue() {
			continue
		}
		sa := l.GetAddress().GetSocketAddress()
		switch p := int(sa.GetPortValue()); {
		case p == 0:
		case sa.GetAddress() == "0.0.0.0" || sa.GetAddress() == "::" || sa.GetAddress() == "":
			wide[p] = true
		default:
			narrow[p] = true
		}
	}
	all := maps.Clone(wide)
	for p := range narrow {
		if all[p] = true; wide[p] {
			delete(narrow, p)
		}
	}
	out = in
	out.outPorts, out.narrowPorts = joinPorts(all), joinPorts(narrow)
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
	var v upstream.Variant
	if info.tls != 0 {
		// nginx's stream proxy makes these connections without amesh-upstream-tls.
		v.Plaintext = true
		rep(report.Unsupported, "TCP to cluster "+s.cluster+" originates no TLS: endpoints Envoy reaches with TLS (Istio mTLS) are left out of its stream route (fail closed); the others are reached in plaintext, as by Envoy")
	}
	id := t.acquire(s.cluster, v)
	ls.ups = append(ls.ups, id)
	r := s.route
	r.UpstreamID = id
	key := apisix.Key(apisix.KindStreamRoutes, r.ID)
	ls.sr = append(ls.sr, key)
	t.out.Set(&t.sc.enc, key, r)
}

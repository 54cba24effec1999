package translate

// Controller plugins: the second input of translation. The virtual host builder
// merges the current rules (package overlay) into every route before it is encoded,
// so the output store's digests cover the merged routes and nothing else of them is
// kept. When SetPlugins hands over a new set, the virtual hosts whose routes a changed
// config may select (by their context's direction and port and a summary of their
// hosts, vhostState.hosts) are marked stale and rebuilt from their wire form, like
// those a cluster change affects.

import (
	"slices"

	"github.com/amesh-dev/amesh/internal/overlay"
	"github.com/amesh-dev/amesh/internal/report"
)

// SetPlugins makes set the plugin configs of amesh-controller that Translate merges
// into routes, from its next call on; that call rebuilds the routes a config that
// changed may select. set must not be modified afterwards.
func (t *Translator) SetPlugins(set overlay.Set) { t.nextPlugins = &set }

// syncPlugins installs the set SetPlugins handed over and marks stale the virtual
// hosts whose routes a changed config may select, before or after the change.
func (t *Translator) syncPlugins() {
	if t.nextPlugins == nil {
		return
	}
	next := overlay.Compile(*t.nextPlugins, t.opts.OriginalDstVar)
	t.nextPlugins = nil
	changed := overlay.Changed(t.plugins, next)
	if len(t.plugins.Report()) > 0 || len(next.Report()) > 0 {
		t.findings.dirty = true
	}
	t.plugins = next
	if changed.Empty() {
		return
	}
	for _, st := range t.ctxs {
		dir, port := overlay.DirectionOf(st.ctx.key), overlay.PortOf(st.ctx.vars, t.opts.OriginalDstVar)
		for _, vs := range st.vhosts {
			if changed.MaySelect(dir, port, vs.hosts) {
				t.idx.MarkStale(vs)
			}
		}
	}
}

// routeShadow is a config plugin that a translated plugin kept out of the route key.
type routeShadow struct {
	overlay.Shadow
	key string
}

// setShadows records the shadows of a virtual host's routes (none: forgets them).
func (t *Translator) setShadows(vs *vhostState, shs []routeShadow) {
	if len(shs) == 0 {
		if _, ok := t.shadows[vs]; ok {
			delete(t.shadows, vs)
			t.findings.dirty = true
		}
		return
	}
	if t.shadows == nil {
		t.shadows = map[*vhostState][]routeShadow{}
	}
	t.shadows[vs] = shs
	t.findings.dirty = true
}

// pluginReport returns the findings about the plugin configs: plugins not applied,
// and one entry per config plugin that translated plugins shadow, counting the
// routes and naming the first.
func (t *Translator) pluginReport() []report.Entry {
	es := slices.Clone(t.plugins.Report())
	type routes struct {
		n     int
		first string
	}
	shadowed := map[overlay.Shadow]*routes{}
	for _, shs := range t.shadows {
		for _, sh := range shs {
			r := shadowed[sh.Shadow]
			if r == nil {
				r = &routes{first: sh.key}
				shadowed[sh.Shadow] = r
			}
			r.n++
			r.first = min(r.first, sh.key)
		}
	}
	for sh, r := range shadowed {
		es = append(es, sh.Entry(r.n, r.first))
	}
	return es
}

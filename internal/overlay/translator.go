package overlay

import (
	"fmt"
	"slices"
	"sort"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// Options configure the overlay.
type Options struct {
	// PortVar is the nginx variable of the routes' destination-port condition; it must
	// equal translate.Options.OriginalDstVar. Default "connection_original_dst".
	PortVar string
}

// Inner is the translator the overlay wraps (agent.Translator; declared here so that
// this package does not depend on the pipeline).
type Inner interface {
	Translate(*resource.State) translate.Result
}

// Translator wraps the xDS translator and merges the feed's plugins into its routes.
// Like the translator it wraps, it is not safe for concurrent use.
//
// Cost: to re-render a route when a config changes, it keeps the translated JSON of
// every route (about 60% of the translator's output: some 18 MiB at 10,000 services),
// plus a digest of each merged route. It exists only when a controller is configured;
// other objects pass through without being kept.
type Translator struct {
	inner   Inner
	feed    Feed
	portVar string

	// configs is the set applied by the last Translate, in precedence order, with
	// each config's fingerprint.
	configs  []*Config
	fps      map[*Config]string
	routes   map[string]*routeState  // by key, every route of the inner output
	merged   map[string]uint64       // by route key, apisix.Hash of the merged route written
	shadows  map[string][]shadow     // by route key, routes with shadowed plugins only
	failures map[string]report.Entry // by route key, routes the configs could not be merged into
}

// routeState is one translated route and what was merged into it.
type routeState struct {
	base    []byte
	info    *routeInfo // decoded lazily: nil until a config needs it
	err     error      // decoding base failed; the route is passed through unchanged
	applied []string   // fingerprints of the configs merged into the route, in order
	fresh   bool       // base is new: render even if the applicable configs did not change
}

// NewTranslator returns a Translator that merges feed's configs into inner's routes.
func NewTranslator(inner Inner, feed Feed, opts Options) *Translator {
	if opts.PortVar == "" {
		opts.PortVar = "connection_original_dst"
	}
	return &Translator{
		inner: inner, feed: feed, portVar: opts.PortVar,
		fps: map[*Config]string{}, routes: map[string]*routeState{},
		merged: map[string]uint64{}, shadows: map[string][]shadow{}, failures: map[string]report.Entry{},
	}
}

// Translate translates snap with the wrapped translator and merges the current
// configs into the routes whose translation or applicable configs changed.
func (t *Translator) Translate(snap *resource.State) translate.Result {
	res := t.inner.Translate(snap)
	set, _ := t.feed.Current()
	configsChanged := t.setConfigs(set)

	out := apisix.ChangeSet{Put: map[string][]byte{}}
	// prior: what the previous output held for each changed key. The inner
	// translator's for other kinds; for routes, what was merged (t.merged).
	prior := map[string]uint64{}
	dirty := map[string]bool{}
	for key, b := range res.Changes.Put {
		if apisix.KindOf(key) != apisix.KindRoutes {
			out.Put[key] = b
			if h, ok := res.Prior[key]; ok {
				prior[key] = h
			}
			continue
		}
		t.routes[key] = &routeState{base: b, fresh: true}
		dirty[key] = true
	}
	for _, key := range res.Changes.Delete {
		if h, ok := t.merged[key]; ok {
			prior[key] = h
		} else if h, ok := res.Prior[key]; ok {
			prior[key] = h
		}
		delete(t.routes, key)
		delete(t.shadows, key)
		delete(t.failures, key)
		delete(t.merged, key)
		out.Delete = append(out.Delete, key)
	}
	if configsChanged {
		for key := range t.routes {
			dirty[key] = true
		}
	}
	for key := range dirty {
		t.update(key, &out, prior)
	}
	res.Changes, res.Prior = out, prior
	res.Report = append(slices.Clone(res.Report), t.report()...)
	report.Sort(res.Report)
	return res
}

// setConfigs installs the set's configs in precedence order, keeping the existing
// *Config of every unchanged one, and reports whether anything changed.
func (t *Translator) setConfigs(set Set) bool {
	old := make(map[string]*Config, len(t.configs))
	for _, c := range t.configs {
		old[t.fps[c]] = c
	}
	next := make([]*Config, 0, len(set.Configs))
	fps := make(map[*Config]string, len(set.Configs))
	changed := len(set.Configs) != len(t.configs)
	for i := range set.Configs {
		c := &set.Configs[i]
		fp := fingerprint(c)
		if prev, ok := old[fp]; ok {
			c = prev
		} else {
			changed = true
		}
		next = append(next, c)
		fps[c] = fp
	}
	sortByPrecedence(next)
	t.configs, t.fps = next, fps
	return changed
}

// update re-renders one route if its base or its applicable configs changed, adding
// it to out (and what the previous output held for it to prior) if it differs.
func (t *Translator) update(key string, out *apisix.ChangeSet, prior map[string]uint64) {
	st := t.routes[key]
	var matched []*Config
	var applied []string
	if len(t.configs) > 0 && st.info == nil && st.err == nil {
		st.info, st.err = decodeRoute(st.base, t.portVar)
	}
	if st.info != nil {
		for _, c := range t.configs {
			if st.info.matches(&c.Scope) {
				matched = append(matched, c)
				applied = append(applied, t.fps[c])
			}
		}
	}
	_, reported := t.failures[key]
	if !st.fresh && slices.Equal(applied, st.applied) && reported == (st.err != nil && len(t.configs) > 0) {
		return
	}
	st.fresh = false
	merged, shadows, failure := st.base, []shadow(nil), st.err
	if len(matched) > 0 {
		b, sh, err := render(st.info, matched)
		if err != nil {
			failure = err
		} else {
			merged, shadows = b, sh
		}
	}
	if failure != nil && len(t.configs) > 0 {
		t.failures[key] = report.Entry{Kind: "route", Resource: key, Field: "plugins", Severity: report.Invalid,
			Message: fmt.Sprintf("controller plugins not applied to this route: %v", failure)}
	} else {
		delete(t.failures, key)
	}
	st.applied = applied
	if len(shadows) > 0 {
		t.shadows[key] = shadows
	} else {
		delete(t.shadows, key)
	}
	if cur, ok := t.merged[key]; !ok || cur != apisix.Hash(merged) {
		if ok {
			prior[key] = cur
		}
		t.merged[key] = apisix.Hash(merged)
		out.Put[key] = merged
	}
}

// report lists the routes that configs could not be merged into and summarises the
// shadowed plugins, one entry per config plugin.
func (t *Translator) report() []report.Entry {
	var entries []report.Entry
	for _, e := range t.failures {
		entries = append(entries, e)
	}
	routes := map[shadow][]string{}
	for key, shs := range t.shadows {
		for _, sh := range shs {
			routes[sh] = append(routes[sh], key)
		}
	}
	for sh, keys := range routes {
		sort.Strings(keys)
		entries = append(entries, report.Entry{
			Kind: "plugin_config", Resource: sh.config, Field: "spec.plugins[" + sh.plugin + "]",
			Severity: report.Ignored,
			Message: fmt.Sprintf("%d route(s) (first %s) already have %s from Istio config; set override to replace it",
				len(keys), keys[0], sh.plugin),
		})
	}
	return entries
}

package overlay

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
)

// Rules is a Set ready to be merged into routes: its configs in precedence order, the
// plugins whose configuration is not JSON left out, and the configs indexed by the
// hosts their scopes name, so that a route is compared only with the configs that
// can select it. It is immutable: builders on several goroutines may share it.
type Rules struct {
	portVar string
	configs []*Config // in precedence order
	fps     []string  // fingerprint of each config

	// byHost holds, for each lower-cased host that a scope of exact hosts names, the
	// configs naming it; others holds the configs without hosts or with a wildcard.
	// Both list indexes into configs in ascending (precedence) order.
	byHost map[string][]int
	others []int
	// hostBits holds, for each config, the filter bits (Hosts) of each of its hosts,
	// 0 for a wildcard.
	hostBits [][]Hosts

	report []report.Entry
}

// Compile prepares set for merging into routes whose destination-port condition is
// on the nginx variable portVar. set must not be modified afterwards.
func Compile(set Set, portVar string) *Rules {
	rs := &Rules{portVar: portVar}
	configs := make([]*Config, 0, len(set.Configs))
	for i := range set.Configs {
		configs = append(configs, rs.checked(&set.Configs[i]))
	}
	rs.index(configs)
	return rs
}

// index installs configs in precedence order and indexes them by host.
func (rs *Rules) index(configs []*Config) {
	sort.SliceStable(configs, func(i, j int) bool { return precedes(configs[i], configs[j]) })
	rs.configs, rs.fps, rs.byHost = configs, make([]string, len(configs)), map[string][]int{}
	rs.hostBits = make([][]Hosts, len(configs))
	for i, c := range configs {
		rs.fps[i] = fingerprint(c)
		exact := len(c.Scope.Hosts) > 0
		for _, h := range c.Scope.Hosts {
			var bits Hosts
			if strings.HasPrefix(h, "*") {
				exact = false
			} else {
				bits = hostBits(strings.ToLower(h))
			}
			rs.hostBits[i] = append(rs.hostBits[i], bits)
		}
		if !exact {
			rs.others = append(rs.others, i)
			continue
		}
		for _, h := range c.Scope.Hosts {
			h = strings.ToLower(h)
			if l := rs.byHost[h]; len(l) == 0 || l[len(l)-1] != i {
				rs.byHost[h] = append(l, i)
			}
		}
	}
}

// candidates returns the indexes of the configs whose hosts may match one of hosts, in
// precedence order.
func (rs *Rules) candidates(hosts []string) []int {
	var sel []int
	for _, h := range hosts {
		sel = append(sel, rs.byHost[strings.ToLower(h)]...)
		if i := portSep(h); i > 0 {
			sel = append(sel, rs.byHost[strings.ToLower(h[:i])]...)
		}
	}
	if len(sel) == 0 {
		return rs.others
	}
	sel = append(sel, rs.others...)
	slices.Sort(sel)
	return slices.Compact(sel)
}

// checked returns c, or a copy without the plugins whose configuration is not JSON
// (reported): they cannot be written into a route.
func (rs *Rules) checked(c *Config) *Config {
	var bad []int
	for i, p := range c.Plugins {
		if !json.Valid(p.Config) {
			bad = append(bad, i)
			rs.report = append(rs.report, report.Entry{Kind: "plugin_config", Resource: c.ID(),
				Field: "spec.plugins[" + p.Name + "]", Severity: report.Invalid,
				Message: "the plugin's configuration is not JSON; the plugin is not applied"})
		}
	}
	if len(bad) == 0 {
		return c
	}
	cp := *c
	cp.Plugins = make([]Plugin, 0, len(c.Plugins)-len(bad))
	for i, p := range c.Plugins {
		if !slices.Contains(bad, i) {
			cp.Plugins = append(cp.Plugins, p)
		}
	}
	return &cp
}

// Empty reports whether rs selects no route (nil is empty).
func (rs *Rules) Empty() bool { return rs == nil || len(rs.configs) == 0 }

// Report lists the plugins of the set that are not applied anywhere.
func (rs *Rules) Report() []report.Entry {
	if rs == nil {
		return nil
	}
	return rs.report
}

// Changed returns the configs that differ between old and next: those of old that
// next does not hold with the same content (for the routes they selected), and those
// of next that old does not (for the routes they select now). A route that none of
// them selects keeps what it was merged from old. Its MaySelect finds those routes.
func Changed(old, next *Rules) *Rules {
	in := func(rs *Rules) map[string]bool {
		m := map[string]bool{}
		if rs != nil {
			for _, fp := range rs.fps {
				m[fp] = true
			}
		}
		return m
	}
	inOld, inNext := in(old), in(next)
	var configs []*Config
	for _, pair := range []struct {
		rs    *Rules
		other map[string]bool
	}{{old, inNext}, {next, inOld}} {
		if pair.rs == nil {
			continue
		}
		for i, fp := range pair.rs.fps {
			if !pair.other[fp] {
				configs = append(configs, pair.rs.configs[i])
			}
		}
	}
	rs := &Rules{}
	rs.index(configs)
	return rs
}

// Shadow is a config plugin that a translated plugin of the same name kept out of a
// route.
type Shadow struct {
	Config, Plugin string
}

// Entry reports s for the routes it kept the plugin out of: how many, and the key of
// the first.
func (s Shadow) Entry(routes int, first string) report.Entry {
	return report.Entry{
		Kind: "plugin_config", Resource: s.Config, Field: "spec.plugins[" + s.Plugin + "]",
		Severity: report.Ignored,
		Message: fmt.Sprintf("%d route(s) (first %s) already have %s from Istio config; set override to replace it",
			routes, first, s.Plugin),
	}
}

// Merge merges into r the plugins of the configs whose scopes select it (see the
// package comment) and returns the config plugins that its translated plugins kept
// out. r.Plugins is replaced, never modified: translation shares plugin maps between
// routes.
func (rs *Rules) Merge(r *apisix.Route) []Shadow {
	if rs.Empty() {
		return nil
	}
	t := routeTarget(r, rs.portVar)
	translated := r.Plugins
	var merged map[string]any
	var decided []string
	var shadows []Shadow
	for _, i := range rs.candidates(r.Hosts) {
		c := rs.configs[i]
		if !t.matches(&c.Scope) {
			continue
		}
		for _, p := range c.Plugins {
			if slices.Contains(decided, p.Name) {
				continue // a config with higher precedence set it
			}
			decided = append(decided, p.Name)
			if _, ok := translated[p.Name]; ok && !p.Override {
				shadows = append(shadows, Shadow{Config: c.ID(), Plugin: p.Name})
				continue
			}
			if merged == nil {
				merged = make(map[string]any, len(translated)+len(c.Plugins))
				maps.Copy(merged, translated)
			}
			merged[p.Name] = p.Config
		}
	}
	if merged != nil {
		r.Plugins = merged
	}
	return shadows
}

// MaySelect reports whether a config of rs may select a route that has direction dir,
// the destination port port (0: no port condition) and one of hosts. It looks neither
// at paths nor at hosts beyond their summary, so it errs on yes: for finding, without
// building them, the routes that the configs Changed returns can touch.
func (rs *Rules) MaySelect(dir Direction, port uint32, hosts Hosts) bool {
	if rs == nil {
		return false
	}
	for i, c := range rs.configs {
		if c.maySelect(dir, port, hosts, rs.hostBits[i]) {
			return true
		}
	}
	return false
}

// maySelect is MaySelect for one config; bits are hostBits of its hosts.
func (c *Config) maySelect(dir Direction, port uint32, hosts Hosts, bits []Hosts) bool {
	t := target{dir: dir, port: port, anyPath: true, anyHost: true}
	if !t.matches(&c.Scope) {
		return false
	}
	if len(c.Scope.Hosts) == 0 {
		return true
	}
	for i, p := range c.Scope.Hosts {
		if strings.HasPrefix(p, "*") && hosts != 0 || bits[i] != 0 && hosts&bits[i] == bits[i] {
			return true
		}
	}
	return false
}

// Hosts summarises the hosts of some routes in 64 bits (a Bloom filter), from which
// MaySelect tells whether a scope's hosts may match one of them: sometimes yes when
// none does, never no when one does. The zero value holds no host.
type Hosts uint64

// Add adds a host of a route.
func (h *Hosts) Add(host string) {
	*h |= hostBits(strings.ToLower(host))
	if i := portSep(host); i > 0 {
		*h |= hostBits(strings.ToLower(host[:i])) // hostMatches compares without the port too
	}
}

// hostBits returns the filter bits of a lower-cased host: three of the 64, from its
// FNV-1a hash.
func hostBits(host string) Hosts {
	x := uint64(14695981039346656037)
	for i := 0; i < len(host); i++ {
		x ^= uint64(host[i])
		x *= 1099511628211
	}
	return 1<<(x&63) | 1<<(x>>6&63) | 1<<(x>>12&63)
}

// DirectionOf returns the direction of the route with id id, or of the routes whose
// ids start with id.
func DirectionOf(id string) Direction {
	switch {
	case strings.HasPrefix(id, "in-"):
		return DirectionInbound
	case strings.HasPrefix(id, "out-"):
		return DirectionOutbound
	}
	return DirectionAny
}

// PortOf returns the port of a destination-port condition [portVar, "==", port] in
// vars, 0 if there is none.
func PortOf(vars []apisix.Expr, portVar string) uint32 {
	var port uint32
	for _, e := range vars {
		if len(e) != 3 || e[0] != portVar || e[1] != "==" {
			continue
		}
		if p, ok := portValue(e[2]); ok {
			port = p
		}
	}
	return port
}

func portValue(v any) (uint32, bool) {
	var s string
	switch v := v.(type) {
	case json.Number:
		s = v.String()
	case string:
		s = v
	case int:
		s = strconv.Itoa(v)
	case float64:
		s = strconv.FormatFloat(v, 'f', -1, 64)
	default:
		return 0, false
	}
	p, err := strconv.ParseUint(s, 10, 16)
	return uint32(p), err == nil && p > 0
}

// target is what scope matching reads of a route.
type target struct {
	dir     Direction
	port    uint32 // 0: the route has no destination-port condition
	hosts   []string
	uri     string
	uris    []string
	anyPath bool // the paths are not known: any path scope matches
	anyHost bool // the hosts are not known: any host scope matches
}

func routeTarget(r *apisix.Route, portVar string) target {
	return target{dir: DirectionOf(r.ID), port: PortOf(r.Vars, portVar), hosts: r.Hosts, uri: r.URI, uris: r.URIs}
}

// matches reports whether scope s selects the route.
func (t *target) matches(s *Scope) bool {
	if s.Direction != DirectionAny && s.Direction != t.dir {
		return false
	}
	if len(s.Hosts) > 0 && !t.anyHost && !anyMatch(s.Hosts, t.hosts, hostMatches) {
		return false
	}
	if len(s.Ports) > 0 && (t.port == 0 || !slices.Contains(s.Ports, t.port)) {
		return false
	}
	if len(s.Paths) > 0 && !t.anyPath && !t.pathMatches(s.Paths) {
		return false
	}
	return true
}

func (t *target) pathMatches(patterns []string) bool {
	for _, p := range patterns {
		if t.uri != "" && pathMatches(p, t.uri) {
			return true
		}
	}
	return anyMatch(patterns, t.uris, pathMatches)
}

func anyMatch(patterns, values []string, match func(pattern, value string) bool) bool {
	for _, p := range patterns {
		for _, v := range values {
			if match(p, v) {
				return true
			}
		}
	}
	return false
}

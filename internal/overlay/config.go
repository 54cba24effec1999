// Package overlay holds the rules by which the APISIX plugins that amesh-controller
// distributes (AmeshPluginConfig objects) are merged into the routes translated from
// xDS. It is pure and keeps nothing per route: the translator compiles the current Set
// (Compile) and merges it into each route as it builds it (Rules.Merge); when the set
// changes, Changed and Config.MaySelect tell it which of its routes a change can touch.
//
// # Precedence
//
// For each route, the configs whose scope matches the route are ordered by Priority
// (higher first), then by namespace/name (lexically smaller first). For each plugin
// name, the first config in that order that sets the plugin decides its configuration.
// A plugin that translation produced from Istio config (fault-injection,
// traffic-split, ...) is kept unless that deciding config marks its plugin Override;
// a kept translated plugin shadows the config's plugin, which is reported.
// Removing a config removes exactly the plugins it contributed: a route is always
// built from its translation plus the current set of configs.
package overlay

import (
	"encoding/json"
	"strings"

	"github.com/amesh-dev/amesh/internal/feed"
)

// Plugin is one APISIX plugin of a config.
type Plugin struct {
	Name string
	// Config is the plugin's configuration, a JSON object.
	Config json.RawMessage
	// Override lets the plugin replace a translated plugin of the same name.
	Override bool
}

// Scope narrows a config to some routes. Each non-empty list must match; an empty
// list matches every route.
type Scope struct {
	// Hosts match a route that has one of them in its hosts; "*.example.com" matches
	// any subdomain. A route without hosts (any host) matches only an empty list.
	Hosts []string
	// Ports match a route whose destination-port condition is one of them.
	Ports []uint32
	// Paths match a route whose uri is one of them; a path ending in "*" matches every
	// uri starting with the part before the "*".
	Paths []string
	// Direction, if set, matches only inbound or only outbound routes.
	Direction Direction
}

// Direction is the direction of the traffic a route handles, seen from the pod.
type Direction int

// The directions. Translation names routes "in-..." (Istio's virtualInbound) and
// "out-..." (outbound listeners); a route named otherwise has no known direction and
// only matches DirectionAny.
const (
	DirectionAny Direction = iota
	DirectionInbound
	DirectionOutbound
)

// Config is one AmeshPluginConfig that applies to this pod.
type Config struct {
	Namespace, Name string
	Generation      int64
	Priority        int32
	Scope           Scope
	Plugins         []Plugin
}

// ID is the config's namespace/name.
func (c *Config) ID() string { return c.Namespace + "/" + c.Name }

// Set is the complete set of configs that apply to this pod.
type Set struct {
	// Version orders sets from one controller stream; zero means no set received yet.
	Version uint64
	Configs []Config
}

// Feed publishes the current Set. The channel returned by Current is closed once a
// newer Set is available (and never when none ever will be).
type Feed = feed.Feed[Set]

// precedes reports whether a takes precedence over b (see the package comment).
func precedes(a, b *Config) bool {
	if a.Priority != b.Priority {
		return a.Priority > b.Priority
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// fingerprint identifies a config's content, so that an unchanged config is recognised
// in the next set whatever its version.
func fingerprint(c *Config) string {
	b, _ := json.Marshal(c) // only strings, numbers and valid raw JSON: cannot fail
	return string(b)
}

func hostMatches(pattern, host string) bool {
	pattern, host = strings.ToLower(pattern), strings.ToLower(host)
	if i := portSep(host); i > 0 {
		if pattern == host {
			return true
		}
		host = host[:i] // a route host may carry a port ("reviews:9080")
	}
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return strings.HasSuffix(host, suffix) && len(host) > len(suffix)
	}
	return pattern == host
}

// portSep returns the index of the ':' before a port at the end of host ("reviews:9080",
// "[::1]:80"), or -1.
func portSep(host string) int {
	if i := strings.LastIndexByte(host, ':'); i > 0 && !strings.Contains(host[i:], "]") {
		return i
	}
	return -1
}

func pathMatches(pattern, uri string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(uri, prefix)
	}
	return pattern == uri
}

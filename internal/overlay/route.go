package overlay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/amesh-dev/amesh/internal/apisix"
)

// routeInfo is what scope matching needs of a translated route.
type routeInfo struct {
	hosts []string
	uris  []string
	port  uint32 // 0: the route has no destination-port condition
	dir   Direction
	route apisix.Route
}

// decodeRoute parses a translated route. Plugin configs are decoded with UseNumber so
// that re-encoding keeps their numbers exactly as translation wrote them.
func decodeRoute(b []byte, portVar string) (*routeInfo, error) {
	var r apisix.Route
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&r); err != nil {
		return nil, err
	}
	info := &routeInfo{hosts: r.Hosts, route: r}
	switch {
	case strings.HasPrefix(r.ID, "in-"):
		info.dir = DirectionInbound
	case strings.HasPrefix(r.ID, "out-"):
		info.dir = DirectionOutbound
	}
	if r.URI != "" {
		info.uris = append(info.uris, r.URI)
	}
	info.uris = append(info.uris, r.URIs...)
	for _, e := range r.Vars {
		if len(e) != 3 || e[0] != portVar || e[1] != "==" {
			continue
		}
		if p, ok := portOf(e[2]); ok {
			info.port = p
		}
	}
	return info, nil
}

func portOf(v any) (uint32, bool) {
	var s string
	switch v := v.(type) {
	case json.Number:
		s = v.String()
	case string:
		s = v
	case float64:
		s = strconv.FormatFloat(v, 'f', -1, 64)
	default:
		return 0, false
	}
	p, err := strconv.ParseUint(s, 10, 16)
	return uint32(p), err == nil && p > 0
}

// matches reports whether scope s selects the route.
func (info *routeInfo) matches(s *Scope) bool {
	if s.Direction != DirectionAny && s.Direction != info.dir {
		return false
	}
	if len(s.Hosts) > 0 && !anyMatch(s.Hosts, info.hosts, hostMatches) {
		return false
	}
	if len(s.Ports) > 0 {
		found := false
		for _, p := range s.Ports {
			found = found || (info.port != 0 && p == info.port)
		}
		if !found {
			return false
		}
	}
	if len(s.Paths) > 0 && !anyMatch(s.Paths, info.uris, pathMatches) {
		return false
	}
	return true
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

// shadow is a config plugin that a translated plugin of the same name kept out.
type shadow struct {
	config, plugin string
}

// render merges the plugins of configs (already in precedence order) into the route
// and returns its JSON and the config plugins that translated plugins shadowed.
func render(info *routeInfo, configs []*Config) ([]byte, []shadow, error) {
	r := info.route // a copy; only Plugins is replaced below
	translated := r.Plugins
	plugins := make(map[string]any, len(translated)+len(configs))
	for name, conf := range translated {
		plugins[name] = conf
	}
	decided := map[string]bool{}
	var shadows []shadow
	for _, c := range configs {
		for _, p := range c.Plugins {
			if decided[p.Name] {
				continue // a config with higher precedence set it
			}
			decided[p.Name] = true
			if _, ok := translated[p.Name]; ok && !p.Override {
				shadows = append(shadows, shadow{config: c.ID(), plugin: p.Name})
				continue
			}
			plugins[p.Name] = p.Config
		}
	}
	if len(plugins) > 0 {
		r.Plugins = plugins
	}
	b, err := apisix.Encode(&r)
	if err != nil {
		return nil, nil, fmt.Errorf("encode route %s: %w", r.ID, err)
	}
	return b, shadows, nil
}

// sortByPrecedence orders configs by precedence.
func sortByPrecedence(cs []*Config) {
	sort.Slice(cs, func(i, j int) bool { return precedes(cs[i], cs[j]) })
}

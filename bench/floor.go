package main

import (
	"fmt"
	"strconv"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// naive encodes, for the resources snap says changed (all when Full), one APISIX upstream per
// load assignment and one route per xDS route: the decode + encode floor. It ignores every
// semantic amesh must keep (order, matchers, policies), so it is a lower bound, not a
// translation.
func naive(snap *resource.State) (map[string][]byte, error) {
	out := map[string][]byte{}
	full := snap.Changes.Full || snap.Changes.Since == 0
	for name, cla := range snap.Endpoints {
		if _, ok := snap.Changes.Endpoints[name]; !full && !ok {
			continue
		}
		if err := put(out, apisix.KindUpstreams, name, naiveUpstream(name, cla)); err != nil {
			return nil, err
		}
	}
	for name, src := range snap.RouteConfigs {
		if _, ok := snap.Changes.RouteConfigs[name]; !full && !ok {
			continue
		}
		rc, err := snap.Changes.RouteMessage(src)
		if err != nil {
			return nil, fmt.Errorf("route config %s: %w", name, err)
		}
		for _, vh := range rc.GetVirtualHosts() {
			for i, r := range vh.GetRoutes() {
				id := name + "." + vh.GetName() + "." + strconv.Itoa(i)
				if err := put(out, apisix.KindRoutes, id, naiveRoute(id, vh, r)); err != nil {
					return nil, err
				}
			}
		}
	}
	return out, nil
}

func put(out map[string][]byte, k apisix.Kind, name string, v any) error {
	b, err := apisix.Encode(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	out[apisix.Key(k, apisix.SafeID(name))] = b
	return nil
}

func naiveUpstream(name string, la *resource.LoadAssignment) *apisix.Upstream {
	u := &apisix.Upstream{ID: apisix.SafeID(name), Type: "roundrobin", Nodes: []apisix.Node{}}
	for _, l := range la.Localities {
		for i, e := range l.Endpoints {
			u.Nodes = append(u.Nodes, apisix.Node{Host: l.Address(i), Port: int(e.Port), Weight: int(max(e.Weight, 1))})
		}
	}
	return u
}

func naiveRoute(id string, vh *routev3.VirtualHost, r *routev3.Route) *apisix.Route {
	rt := &apisix.Route{ID: apisix.SafeID(id), Hosts: vh.GetDomains(), URI: "/*"}
	if p := r.GetMatch().GetPrefix(); p != "" {
		rt.URI = p + "*"
	} else if p := r.GetMatch().GetPath(); p != "" {
		rt.URI = p
	}
	if c := r.GetRoute().GetCluster(); c != "" {
		rt.UpstreamID = apisix.SafeID(c)
	}
	return rt
}

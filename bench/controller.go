package main

import (
	"encoding/json"
	"fmt"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/overlay"
)

// The run "with a controller configured": amesh's pipeline with amesh-controller's plugin
// input, a fixed set of plugin configs that select a fraction of the services. Everything
// the bench knows of the plugin configs is in this file.

// ctlMode is the pipeline name of that run (the child runs mode amesh with -controller).
const ctlMode = "amesh+ctl"

// staticFeed returns a feed that holds set from the start and never changes, as the
// controller client does once it has received the set (the bench measures the pipeline
// with the set in place, not the controller connection).
func staticFeed(set json.RawMessage) (overlay.Feed, error) {
	var s overlay.Set
	if err := json.Unmarshal(set, &s); err != nil {
		return nil, fmt.Errorf("controller set: %w", err)
	}
	feed := &overlay.Latest{}
	feed.Publish(s)
	return feed, nil
}

// meshService is a service as an AmeshPluginConfig names it.
type meshService struct {
	namespace, name, host string
}

// pluginSet returns, as the JSON line the child reads, one config per selected service:
// fraction of svcs, spread evenly over them, each scoped to the outbound routes of its
// service's host. Configs alternate between a rate limit plus a request header and the
// request header alone: plugins that translation does not produce for these routes, so
// translation merges them instead of reporting them shadowed.
func pluginSet(svcs []meshService, fraction float64) ([]byte, error) {
	set := overlay.Set{Version: 1}
	for i, s := range svcs {
		if int(float64(i+1)*fraction) == int(float64(i)*fraction) {
			continue
		}
		c := overlay.Config{
			Namespace: s.namespace, Name: s.name + "-plugins", Generation: 1,
			Scope: overlay.Scope{Hosts: []string{s.host}, Direction: overlay.DirectionOutbound},
		}
		if len(set.Configs)%2 == 0 {
			c.Plugins = append(c.Plugins, overlay.Plugin{Name: "limit-count",
				Config: json.RawMessage(`{"count":100,"time_window":60,"rejected_code":429,"key_type":"var","key":"remote_addr","policy":"local"}`)})
		}
		c.Plugins = append(c.Plugins, overlay.Plugin{Name: "proxy-rewrite",
			Config: json.RawMessage(fmt.Sprintf(`{"headers":{"set":{"x-amesh-tenant":%q,"x-request-source":"mesh"}}}`, s.namespace))})
		set.Configs = append(set.Configs, c)
	}
	return json.Marshal(set)
}

// meshServices lists the services of the route configurations in resources (the fake
// control plane's mesh): one per virtual host name's host, "*" (allow_any) excluded.
func meshServices(resources []proto.Message) []meshService {
	var out []meshService
	seen := map[string]bool{}
	for _, m := range resources {
		rc, ok := m.(*routev3.RouteConfiguration)
		if !ok {
			continue
		}
		for _, vh := range rc.GetVirtualHosts() {
			d := vh.GetDomains()
			if len(d) == 0 || d[0] == "*" || seen[d[0]] {
				continue
			}
			seen[d[0]] = true
			// Kubernetes service hosts: <name>.<namespace>.svc.<domain>.
			parts := strings.SplitN(d[0], ".", 3)
			if len(parts) < 3 {
				continue
			}
			out = append(out, meshService{namespace: parts[1], name: parts[0], host: d[0]})
		}
	}
	return out
}

package translate

// Stand-ins for internal/translate/upstream and internal/translate/plugins, which are
// written in parallel. Everything that depends on them goes through the unexported
// names below so that switching to the real packages touches only this file. The
// stand-ins are deliberately conservative: the plugin stand-in fails closed on every
// route feature it does not know, so nothing is ever silently wrong while they are here.

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
)

// variant holds the route-level settings APISIX keeps on the upstream (the
// upstream package's Variant).
type variant struct {
	// Retries is the number of retries; always set for routes (APISIX's default is
	// "number of nodes - 1", Envoy's default without a retry policy is none).
	Retries *int
	// RetryTimeout bounds the time spent retrying, in seconds; 0 = unset.
	RetryTimeout float64
	// HashOn and HashKey select the consistent-hash key (only for chash upstreams).
	HashOn  string
	HashKey string
}

// key names the variant deterministically; "" is the base upstream.
func (v variant) key() string {
	var b strings.Builder
	if v.Retries != nil {
		b.WriteString("r")
		b.WriteString(strconv.Itoa(*v.Retries))
	}
	if v.RetryTimeout > 0 {
		b.WriteString("t")
		b.WriteString(strconv.FormatFloat(v.RetryTimeout, 'f', -1, 64))
	}
	if v.HashOn != "" {
		b.WriteString("h")
		b.WriteString(v.HashOn)
		b.WriteString("-")
		b.WriteString(v.HashKey)
	}
	return b.String()
}

func (v variant) apply(base *apisix.Upstream) *apisix.Upstream {
	u := *base
	if v.Retries != nil {
		n := *v.Retries
		u.Retries = &n
	}
	if v.RetryTimeout > 0 {
		t := v.RetryTimeout
		u.RetryTimeout = &t
	}
	if v.HashOn != "" && u.Type == "chash" {
		u.HashOn, u.Key = v.HashOn, v.HashKey
	}
	return &u
}

func upstreamID(cluster string) string { return apisix.SafeID(cluster) }

func variantID(cluster string, v variant) string {
	k := v.key()
	if k == "" {
		return upstreamID(cluster)
	}
	return apisix.SafeID(cluster + "~" + k)
}

// specialKind is how Istio's special clusters are recognised.
type specialKind int

const (
	specialNone specialKind = iota
	specialPassthrough
	specialBlackHole
	specialOriginalDst
)

func special(c *clusterv3.Cluster) specialKind {
	switch {
	case c.GetName() == "BlackHoleCluster":
		return specialBlackHole
	case c.GetName() == "PassthroughCluster" || c.GetName() == "InboundPassthroughCluster":
		return specialPassthrough
	case c.GetType() == clusterv3.Cluster_ORIGINAL_DST:
		return specialOriginalDst
	}
	return specialNone
}

// buildUpstream is a minimal stand-in for upstream.Build: healthy/unknown endpoints,
// weights and priorities; everything else is the upstream package's job.
func buildUpstream(c *clusterv3.Cluster, cla *endpointv3.ClusterLoadAssignment) (*apisix.Upstream, []report.Entry) {
	u := &apisix.Upstream{ID: upstreamID(c.GetName()), Type: "roundrobin", Nodes: []apisix.Node{}}
	if p := c.GetLbPolicy(); p == clusterv3.Cluster_RING_HASH || p == clusterv3.Cluster_MAGLEV {
		u.Type, u.HashOn, u.Key = "chash", "vars", "remote_addr"
	}
	if cla == nil {
		cla = c.GetLoadAssignment()
	}
	for _, loc := range cla.GetEndpoints() {
		lw := loc.GetLoadBalancingWeight().GetValue()
		if lw == 0 {
			lw = 1
		}
		for _, ep := range loc.GetLbEndpoints() {
			if s := ep.GetHealthStatus(); s != corev3.HealthStatus_HEALTHY && s != corev3.HealthStatus_UNKNOWN {
				continue
			}
			sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil {
				continue
			}
			w := ep.GetLoadBalancingWeight().GetValue()
			if w == 0 {
				w = 1
			}
			u.Nodes = append(u.Nodes, apisix.Node{Host: sa.GetAddress(), Port: int(sa.GetPortValue()),
				Weight: int(w * lw), Priority: -int(loc.GetPriority())})
		}
	}
	sort.SliceStable(u.Nodes, func(i, j int) bool {
		a, b := u.Nodes[i], u.Nodes[j]
		if a.Host != b.Host {
			return a.Host < b.Host
		}
		return a.Port < b.Port
	})
	return u, nil
}

// pluginInput and pluginOutput mirror plugins.Input and plugins.Output.
type pluginInput struct {
	RouteConfig  *routev3.RouteConfiguration
	VirtualHost  *routev3.VirtualHost
	Route        *routev3.Route
	MirrorTarget func(cluster string) (hostURL string, ok bool)
}

type pluginOutput struct {
	Plugins    map[string]any
	Report     []report.Entry
	Terminal   bool
	FailClosed bool
}

// forRoute stands in for plugins.ForRoute: it translates nothing and fails closed on
// every feature that needs a plugin.
func forRoute(in pluginInput) pluginOutput {
	r := in.Route
	var feats []string
	if r.GetRedirect() != nil {
		feats = append(feats, "redirect")
	}
	if r.GetDirectResponse() != nil {
		feats = append(feats, "direct_response")
	}
	if a := r.GetRoute(); a != nil {
		if a.GetPrefixRewrite() != "" || a.GetRegexRewrite() != nil || a.GetHostRewriteLiteral() != "" ||
			a.GetAutoHostRewrite() != nil || a.GetHostRewriteHeader() != "" || a.GetHostRewritePathRegex() != nil {
			feats = append(feats, "rewrite")
		}
		if len(a.GetRequestMirrorPolicies()) > 0 {
			feats = append(feats, "request_mirror_policies")
		}
	}
	if len(r.GetRequestHeadersToAdd())+len(r.GetRequestHeadersToRemove())+len(r.GetResponseHeadersToAdd())+
		len(r.GetResponseHeadersToRemove()) > 0 {
		feats = append(feats, "headers")
	}
	if len(r.GetTypedPerFilterConfig()) > 0 || len(in.VirtualHost.GetTypedPerFilterConfig()) > 0 {
		feats = append(feats, "typed_per_filter_config")
	}
	if len(feats) == 0 {
		return pluginOutput{}
	}
	return pluginOutput{FailClosed: true, Report: []report.Entry{{
		Kind: "route", Field: "route", Severity: report.Unsupported,
		Message: fmt.Sprintf("route features %s are not translated yet; the route fails closed", strings.Join(feats, ",")),
	}}}
}

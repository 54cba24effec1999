package translate

// Route actions: where a matched request goes. A single cluster becomes upstream_id; a
// weighted split becomes traffic-split (weights kept as integers, so the ratio is
// exact; APISIX allows at most 20 per rule, beyond which clusters with equal upstream
// settings share an upstream, see mergeSplit). Retries and the hash key live on APISIX
// upstreams, so each route names an upstream variant (cluster + settings), shared by
// every route with equal settings. Features that need other plugins come from
// forRoute. A route whose action cannot be made equivalent fails closed.

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/translate/plugins"
	"github.com/amesh-dev/amesh/internal/translate/upstream"
)

// maxWeighted is APISIX's traffic-split limit of weighted_upstreams per rule.
const maxWeighted = 20

// envoyDefaultTimeout applies when a route sets no timeout.
const envoyDefaultTimeout = 15.0

// retryOnNginx are retry_on conditions nginx's proxy_next_upstream (error, timeout)
// covers, or that have no effect on an HTTP/1.1 upstream; the rest are reported.
var retryOnNginx = map[string]bool{
	"connect-failure": true, "reset": true, "refused-stream": true, "unavailable": true,
	"cancelled": true, "retriable-status-codes": true, "reset-before-request": true,
}

type tsRule struct {
	WeightedUpstreams []tsUpstream `json:"weighted_upstreams"`
}

type tsUpstream struct {
	UpstreamID string `json:"upstream_id"`
	Weight     uint32 `json:"weight"`
}

type trafficSplit struct {
	Rules []tsRule `json:"rules"`
}

func (b *vhostBuilder) action(r *routev3.Route, br *builtRoute, res string) {
	in := plugins.Input{RouteConfig: b.rc.hdr, VirtualHost: b.vh, Route: r, MirrorTarget: b.mirrorTarget, Resource: res}
	if cf := b.rc.ctx.filters; cf != nil {
		in.HTTPFilters = cf.plugins
	}
	out := plugins.ForRoute(in)
	for _, e := range out.Report {
		if e.Kind == "" {
			e.Kind = "route"
		}
		if e.Resource == "" {
			e.Resource = res
		}
		b.rep = append(b.rep, e)
	}
	if br.fail != nil {
		return
	}
	if out.FailClosed {
		br.fail = &failure{status: 500, reason: "route features cannot be translated faithfully"}
		return
	}
	if out.Terminal {
		br.plugins = out.Plugins
		return
	}
	ra := r.GetRoute()
	if ra == nil {
		br.fail = &failure{status: 500, reason: fmt.Sprintf("route action %T is not supported", r.GetAction())}
		b.report("route", res, "action", report.Unsupported, "route action is not supported; the route fails closed (500)")
		return
	}
	rp := ra.GetRetryPolicy()
	if rp == nil {
		rp = b.vh.GetRetryPolicy()
	}
	retries := 0
	if rp != nil {
		retries = 1
		if rp.GetNumRetries() != nil {
			retries = int(rp.GetNumRetries().GetValue())
		}
	}
	total := envoyDefaultTimeout
	if ra.GetTimeout() != nil {
		total = b.timeout(res, "route.timeout", ra.GetTimeout())
	}
	perTry := 0.0
	if retries > 0 && rp.GetPerTryTimeout() != nil {
		perTry = b.timeout(res, "route.retry_policy.per_try_timeout", rp.GetPerTryTimeout())
	}
	// Envoy's timeout bounds the whole request (0 = none) and per_try_timeout each
	// attempt; nginx bounds each send and read of an attempt, and the retries as a
	// whole (proxy_next_upstream_timeout). The cluster's connect timeout stays.
	readTimeout := minPositive(total, perTry)
	if readTimeout > 0 {
		b.report("route", res, "route.timeout", report.Approximated, fmt.Sprintf(
			"timeout %gs bounds each send and read to the upstream (nginx), not the whole request", readTimeout))
	}
	if retries > 0 {
		var other []string
		for _, c := range strings.Split(rp.GetRetryOn(), ",") {
			if c = strings.TrimSpace(c); c != "" && !retryOnNginx[c] {
				other = append(other, c)
			}
		}
		if len(other) > 0 {
			b.report("route", res, "route.retry_policy.retry_on", report.Approximated,
				"APISIX retries only on connection errors and timeouts; "+strings.Join(other, ",")+" not retried")
		}
	}
	hashOn, hashKey, hashProblems := upstream.HashFromPolicy(ra.GetHashPolicy())
	hashReported := false
	// tls is the upstream TLS of the route's upstreams that use it, by upstream id.
	var tls map[string]*upstream.TLSConf
	addTLS := func(id string, conf *upstream.TLSConf) {
		if conf == nil {
			return
		}
		if tls == nil {
			tls = map[string]*upstream.TLSConf{}
		}
		tls[id] = b.routeTLS(conf)
	}
	// odst is the original-destination plugin's configuration when the route goes to
	// an ORIGINAL_DST cluster.
	var odst *upstream.OriginalDstConf

	// resolve returns the name to keep of one cluster of the route and its kind, or
	// why the route must fail.
	resolve := func(cluster string) (string, clusterInfo, *failure) {
		cluster, info := b.clusters.ref(cluster)
		b.refs.deps = append(b.refs.deps, cluster)
		switch {
		case !info.exists:
			b.report("route", res, "route.cluster", report.Invalid, "cluster "+cluster+" does not exist; the route answers 503 like Envoy")
			return cluster, info, &failure{status: 503, reason: "cluster " + cluster + " not found"}
		case info.special == upstream.BlackHole:
			return cluster, info, &failure{status: 503, reason: "no healthy upstream"}
		case info.special != upstream.None && info.tls != 0:
			b.report("route", res, "route.cluster", report.Unsupported, "cluster "+cluster+
				" forwards to the connection's original destination with TLS, which is not supported; the route fails closed (502)")
			return cluster, info, &failure{status: 502, reason: "TLS to the original destination is not supported"}
		case info.special != upstream.None:
			conf, f := b.originalDst(cluster, res)
			if f != nil {
				return cluster, info, f
			}
			odst = conf
		}
		return cluster, info, nil
	}
	// variantOf returns the route's settings for an upstream of a cluster. Only
	// settings that differ from the base upstream (no retries, no timeouts) make a
	// variant, so that routes which behave alike share one.
	variantOf := func(info clusterInfo) upstream.Variant {
		var v upstream.Variant
		if retries > 0 {
			n := retries
			v.Retries = &n
			if total > 0 {
				rt := total
				v.RetryTimeout = &rt
			}
		}
		if readTimeout > 0 {
			rt := readTimeout
			v.ReadTimeout = &rt
		}
		if info.hashLB {
			v.HashOn, v.HashKey = hashOn, hashKey
			if len(hashProblems) > 0 && !hashReported {
				hashReported = true
				b.report("route", res, "route.hash_policy", report.Approximated, strings.Join(hashProblems, "; "))
			}
		}
		return v
	}
	// target returns the upstream of one cluster or why the route must fail.
	target := func(cluster string) (string, *failure) {
		cluster, info, f := resolve(cluster)
		if f != nil {
			return "", f
		}
		id := b.acquire(cluster, variantOf(info))
		if info.tls != 0 {
			addTLS(id, b.clusters[cluster].tls)
		}
		return id, nil
	}

	switch cs := ra.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		br.upstreamID, br.fail = target(cs.Cluster)
	case *routev3.RouteAction_WeightedClusters:
		var ws []tsUpstream
		for _, wc := range cs.WeightedClusters.GetClusters() {
			if wc.GetWeight().GetValue() == 0 {
				continue
			}
			if wc.GetName() == "" {
				br.fail = &failure{status: 500, reason: "weighted cluster without a name (cluster_header) is not supported"}
				b.report("route", res, "route.weighted_clusters", report.Unsupported, "cluster_header in weighted_clusters is not supported; the route fails closed (500)")
				return
			}
			ws = append(ws, tsUpstream{Weight: wc.GetWeight().GetValue(), UpstreamID: wc.GetName()})
		}
		switch {
		case len(ws) == 0:
			br.fail = &failure{status: 503, reason: "weighted clusters have no positive weight"}
			b.report("route", res, "route.weighted_clusters", report.Invalid, "no cluster has a positive weight; the route answers 503")
			return
		case len(ws) > maxWeighted:
			if ws, br.fail = b.mergeSplit(ws, res, retries, resolve, variantOf, addTLS); br.fail != nil {
				return
			}
		default:
			for i := range ws {
				id, f := target(ws[i].UpstreamID)
				if f != nil {
					br.fail = f
					if f.status != 503 || len(ws) > 1 {
						b.report("route", res, "route.weighted_clusters", report.Unsupported,
							"a cluster of the split cannot be served ("+f.reason+"); the whole route fails closed")
					}
					return
				}
				ws[i].UpstreamID = id
			}
		}
		if odst != nil && len(ws) > 1 {
			// The plugin replaces the upstream of the whole route; traffic-split
			// picks one per request.
			br.fail = &failure{status: 502, reason: "a weighted split over an original-destination cluster is not supported"}
			b.report("route", res, "route.weighted_clusters", report.Unsupported,
				"a weighted split that includes an ORIGINAL_DST cluster is not supported; the route fails closed (502)")
			return
		}
		br.upstreamID = ws[0].UpstreamID
		if len(ws) > 1 {
			br.plugins = mergePlugins(out.Plugins, "traffic-split", trafficSplit{Rules: []tsRule{{WeightedUpstreams: ws}}})
			if tls != nil {
				br.plugins = mergePlugins(br.plugins, upstream.TLSPlugin, upstream.TLSPluginConf{Upstreams: tls})
			}
			br.websocket = b.websocket(ra)
			return
		}
	default:
		br.fail = &failure{status: 500, reason: fmt.Sprintf("cluster specifier %T is not supported", cs)}
		b.report("route", res, "route.cluster_specifier", report.Unsupported, "only cluster and weighted_clusters are supported; the route fails closed (500)")
		return
	}
	if br.fail == nil {
		br.plugins = out.Plugins
		if odst != nil {
			br.plugins = mergePlugins(out.Plugins, upstream.OriginalDstPlugin, odst)
		}
		if tls != nil {
			br.plugins = mergePlugins(br.plugins, upstream.TLSPlugin, upstream.TLSPluginConf{Upstreams: tls})
		}
		br.websocket = b.websocket(ra)
	}
}

// routeTLS is a cluster's upstream TLS as the route sends it: with the ALPN Istio's
// istio.alpn HTTP filter in front of the routes sets per request (Envoy then offers it
// instead of the cluster's, unless the cluster opts out), which the peer's inbound
// listener reads to take its mTLS HTTP chain. APISIX speaks HTTP/1.1 upstream, so that
// filter's HTTP/1.1 list.
func (b *vhostBuilder) routeTLS(conf *upstream.TLSConf) *upstream.TLSConf {
	alpn := b.rc.ctx.filters.alpnOverride()
	if alpn == nil || conf.NoALPNOverride {
		return conf
	}
	c := *conf
	c.ALPN = alpn
	return &c
}

// originalDst returns the original-destination plugin's configuration for a route to
// an ORIGINAL_DST cluster (Istio's PassthroughCluster, InboundPassthroughCluster,
// inbound|<port>||), or why the route fails closed. The route is rebuilt when the
// cluster changes.
func (b *vhostBuilder) originalDst(cluster, res string) (*upstream.OriginalDstConf, *failure) {
	if !b.rc.ctx.originalDst {
		b.report("route", res, "route.cluster", report.Unsupported, "cluster "+cluster+
			" forwards to the connection's original destination, which routes that match on server_port (no traffic capture) do not know; the route fails closed (502)")
		return nil, &failure{status: 502, reason: "no original destination without traffic capture"}
	}
	b.refs.mirror = append(b.refs.mirror, cluster)
	conf, _, reason := upstream.OriginalDstConfig(b.clusters[cluster].src.Shape())
	if reason != "" {
		b.report("route", res, "route.cluster", report.Unsupported, "cluster "+cluster+": "+reason+"; the route fails closed (502)")
		return nil, &failure{status: 502, reason: "cluster " + cluster + " cannot be served"}
	}
	return &conf, nil
}

// mergeSplit serves a split over more clusters than traffic-split takes: clusters
// whose upstreams have the same settings (upstream.SettingsKey) share one upstream
// (upstream.Split), weighted to give each cluster its share; the result lists one
// upstream per group, at most maxWeighted. ws holds cluster names as UpstreamID.
// The route fails closed when the groups are still too many, or a cluster cannot be
// served.
func (b *vhostBuilder) mergeSplit(ws []tsUpstream, res string, retries int,
	resolve func(string) (string, clusterInfo, *failure), variantOf func(clusterInfo) upstream.Variant,
	addTLS func(string, *upstream.TLSConf)) ([]tsUpstream, *failure) {
	type group struct {
		names   []string
		weights []uint32
		v       upstream.Variant
	}
	var groups []*group
	byKey := map[string]*group{}
	total := len(ws)
	hashing := false
	for _, w := range ws {
		name, info, f := resolve(w.UpstreamID)
		if f != nil {
			b.report("route", res, "route.weighted_clusters", report.Unsupported,
				"a cluster of the split cannot be served ("+f.reason+"); the whole route fails closed")
			return nil, f
		}
		v := variantOf(info)
		hashing = hashing || v.HashOn != ""
		key := upstream.SettingsKey(b.up, name, b.clusters[name].src.Shape(), v)
		g := byKey[key]
		if g == nil {
			g = &group{v: v}
			byKey[key] = g
			groups = append(groups, g)
		}
		if i := slices.Index(g.names, name); i >= 0 {
			g.weights[i] += w.Weight // the same cluster twice: one member, both shares
			continue
		}
		g.names = append(g.names, name)
		g.weights = append(g.weights, w.Weight)
	}
	if len(groups) > maxWeighted {
		b.report("route", res, "route.weighted_clusters", report.Unsupported, fmt.Sprintf(
			"%d weighted clusters with %d distinct upstream settings exceed APISIX's traffic-split limit of %d; the route fails closed (500)",
			total, len(groups), maxWeighted))
		return nil, &failure{status: 500, reason: "more than 20 weighted clusters with distinct upstream settings"}
	}
	out := make([]tsUpstream, 0, len(groups))
	merged := 0
	for _, g := range groups {
		var sum uint32
		for _, w := range g.weights {
			sum += w // at most 2^32-1 in all (the client rejects more)
		}
		if len(g.names) == 1 {
			id := b.acquire(g.names[0], g.v)
			addTLS(id, b.clusters[g.names[0]].tls)
			out = append(out, tsUpstream{UpstreamID: id, Weight: sum})
			continue
		}
		merged += len(g.names)
		// The group is made from the clusters' shapes: rebuilt when one changes.
		b.refs.mirror = append(b.refs.mirror, g.names...)
		split := &upstream.Split{Clusters: g.names, Weights: g.weights}
		id := b.acquireSplit(split, g.v)
		shapes := make([]*clusterv3.Cluster, len(g.names))
		for i, n := range g.names {
			shapes[i] = b.clusters[n].src.Shape()
		}
		addTLS(id, upstream.SplitTLS(b.up, split, shapes))
		out = append(out, tsUpstream{UpstreamID: id, Weight: sum})
	}
	b.report("route", res, "route.weighted_clusters", report.Approximated, fmt.Sprintf(
		"%d weighted clusters exceed APISIX's traffic-split limit of %d: %d of them, with the same upstream settings, share upstreams "+
			"(%d in all) whose node weights give each cluster its share", total, maxWeighted, merged, len(out)))
	if retries > 0 {
		b.report("route", res, "route.retry_policy", report.Approximated,
			"a retry may go to another cluster of a shared upstream; Envoy retries within the cluster it picked")
	}
	if hashing {
		b.report("route", res, "route.hash_policy", report.Approximated,
			"consistent hashing spans the clusters of a shared upstream: a key always reaches the same host, where Envoy first picks a cluster by weight")
	}
	return out, nil
}

func mergePlugins(p map[string]any, name string, conf any) map[string]any {
	out := make(map[string]any, len(p)+1)
	maps.Copy(out, p)
	out[name] = conf
	return out
}

func (b *vhostBuilder) websocket(ra *routev3.RouteAction) bool {
	for _, u := range ra.GetUpgradeConfigs() {
		if strings.EqualFold(u.GetUpgradeType(), "websocket") {
			return u.GetEnabled() == nil || u.GetEnabled().GetValue()
		}
	}
	return b.rc.ctx.websocket
}

// mirrorTarget resolves a mirror cluster to one endpoint URL (APISIX's proxy-mirror
// takes a single host). The route then depends on the cluster's endpoints.
func (b *vhostBuilder) mirrorTarget(cluster string) (string, bool) {
	cluster, _ = b.clusters.ref(cluster)
	b.refs.mirror = append(b.refs.mirror, cluster)
	cs := b.clusters[cluster]
	if cs == nil || cs.info.special != upstream.None {
		return "", false
	}
	// proxy-mirror speaks plaintext: a node reached with TLS is no mirror target.
	u, _ := upstream.BuildWith(upstream.Options{NoTLS: true}, cluster, cs.src.Shape(), cs.cla)
	if len(u.Nodes) == 0 {
		return "", false
	}
	n := u.Nodes[0]
	host := n.Host
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		host = "[" + host + "]"
	}
	if n.Port > 0 {
		host += ":" + strconv.Itoa(n.Port)
	}
	return "http://" + host, true
}

// timeout is a route timeout in seconds for nginx (upstream.Timeout); one longer than
// nginx holds is clamped and reported.
func (b *vhostBuilder) timeout(res, field string, d *durationpb.Duration) float64 {
	secs, clamped := upstream.Timeout(d)
	if clamped {
		b.report("route", res, field, report.Approximated, fmt.Sprintf(
			"timeout %ds exceeds what nginx holds (2^31-1 ms); %gs is used", d.GetSeconds(), upstream.MaxTimeout))
	}
	return secs
}

func minPositive(a, b float64) float64 {
	switch {
	case a <= 0:
		return b
	case b <= 0:
		return a
	case a < b:
		return a
	}
	return b
}

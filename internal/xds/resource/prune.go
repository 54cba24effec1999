package resource

// Pruning: the one place that decides what of a decoded resource the xDS client keeps.
//
// At mesh scale the decoded resources are most of amesh's heap: istiod's
// clusters carry TLS contexts and Istio metadata, its endpoints an Istio metadata Struct
// each, its routes metadata, decorators and retry host predicates. amesh's translation
// (internal/translate and its upstream and plugins packages) reads none of that, so the
// client clears it once the resource has been hashed (the hash is of the bytes as
// received, so resends are still recognised) and validated (validation sees the whole
// resource), before storing it.
//
// Two kinds of pruning:
//   - Cleared: the field is set to its zero value. Used for what translation never
//     looks at (metadata but a cluster's istio.alpn_override, decorators, tracing, stat names, access logs, EDS config
//     sources, endpoint health-check config, retry host predicates, cluster filters).
//   - Marked: an Any whose type (or presence) translation reports but whose payload it
//     never decodes keeps its type URL and gets a marker as value (see markAny and
//     markTransportSocket): transport sockets other than TLS (translation asks "is
//     this plaintext?"), typed_per_filter_config entries of HTTP filters other
//     than fault and CORS and of types other than the access-control filters'
//     per-route configs (reported by name, or failed closed, by type), and
//     typed_extension_protocol_options other than HttpProtocolOptions.
//   - Trimmed: a cluster's TLS transport sockets (UpstreamTlsContext, which translation
//     turns into amesh's upstream TLS) keep everything but the config sources of their
//     SDS secrets (translation goes by the secrets' names), and an SNI that is the one
//     istiod derives from the cluster's name is kept as that rule (ClusterSNI), so that
//     clusters differing only in their names still share a shape (see
//     trimTransportSocket). The match criteria of transport_socket_matches stay, and so
//     does the transport socket match metadata of endpoints (socketmatch.go).
//
// TestPruneKeepsTranslation (prune_translate_test.go) proves that translation of the
// istiod testdata and of a generated mesh is byte-identical, objects and report, with
// and without pruning: a translator change that starts reading a pruned field fails it,
// and then the field must be kept here.
//
// Pruning a decoded resource also shares equal small leaves (weights, flags, timeouts)
// and sub-messages istiod repeats verbatim (retry policies, circuit breakers, pruned
// transport socket matches) between resources through the decoder's Interner, see
// intern.go; that changes no value, only allocations.
//
// Consumers of an Update therefore see pruned messages; StoredForm says so on
// /debug/xds.

import (
	"hash/fnv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// StoredForm describes, for debug views, how the client stores resources.
const StoredForm = "pruned: fields amesh's translation never reads are cleared (metadata, decorators, " +
	"tracing, stat names, access logs, SDS config sources, unused per-filter configs; a retry policy " +
	"all routes of a virtual host share is kept once on the virtual host; an SNI derived from the cluster name " +
	"is kept as that rule), see internal/xds/resource/prune.go; endpoints in compact form (address, port, " +
	"weight, health, priority, transport socket match metadata), see internal/xds/resource/endpoints.go"

// HTTP filters whose typed_per_filter_config translation decodes (internal/translate/plugins).
const (
	keepFilterFault = "envoy.filters.http.fault"
	keepFilterCORS  = "envoy.filters.http.cors"
)

// keepProtocolOptions is the typed_extension_protocol_options key translation decodes
// (internal/translate/upstream).
const keepProtocolOptions = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// Prune clears, in place, what amesh never reads from a decoded Listener,
// RouteConfiguration or Cluster (see the file comment), as the client's decoder does
// (without sharing anything with other resources). Other messages, a
// ClusterLoadAssignment included (kept in its own compact form), are left alone.
// Pruning is deterministic: equal messages stay equal, and messages that differ in
// something translation reads still differ.
func Prune(m proto.Message) {
	if k := kindOfValue(m); k != nil {
		k.prune(m, nil)
	}
}

// pruneListener clears listener-level observability settings. The HTTP connection
// managers stay as they are: they are serialized inside Anys that translation decodes,
// and a sidecar has few listeners (one per port), so they are not worth re-encoding.
func pruneListener(l *listenerv3.Listener, _ *Interner) {
	l.Metadata = nil
	l.AccessLog = nil
	l.StatPrefix = ""
	for _, fc := range l.GetFilterChains() {
		fc.Metadata = nil
	}
	if dc := l.GetDefaultFilterChain(); dc != nil {
		dc.Metadata = nil
	}
}

func pruneRouteConfig(rc *routev3.RouteConfiguration, in *Interner) {
	pruneRouteConfigOwn(rc)
	for _, vh := range rc.GetVirtualHosts() {
		pruneVirtualHost(vh, in)
	}
}

// pruneRouteConfigOwn prunes the configuration's own fields, not its virtual hosts.
func pruneRouteConfigOwn(rc *routev3.RouteConfiguration) {
	rc.Metadata = nil
	markFilterConfigs(rc.GetTypedPerFilterConfig())
}

func pruneVirtualHost(vh *routev3.VirtualHost, in *Interner) {
	vh.Metadata = nil
	markFilterConfigs(vh.GetTypedPerFilterConfig())
	for _, r := range vh.GetRoutes() {
		pruneRoute(r, in)
	}
	hoistRetryPolicy(vh)
}

// hoistRetryPolicy moves the retry policy that every forwarding route of vh has up to
// the virtual host: Envoy applies a virtual host's policy to the routes without one of
// their own (a route's own replaces it, nothing is merged), and only forwarding routes
// retry, so the behaviour is the same. istiod gives every route the same default
// policy; kept once per virtual host instead of once per route, a large share of the
// kept route configurations' wire form goes. Routes arrive here pruned, so equal
// policies are usually one interned message.
func hoistRetryPolicy(vh *routev3.VirtualHost) {
	var p *routev3.RetryPolicy
	n := 0
	for _, r := range vh.GetRoutes() {
		a := r.GetRoute()
		if a == nil {
			continue // redirect, direct response: no retries
		}
		rp := a.GetRetryPolicy()
		switch {
		case rp == nil:
			return // this route uses the virtual host's policy: it must stay
		case p == nil:
			p = rp
		case rp != p && !proto.Equal(rp, p):
			return
		}
		n++
	}
	if n < 2 {
		return // nothing to gain
	}
	// The virtual host's own policy applied to no route (each had its own).
	vh.RetryPolicy = p
	for _, r := range vh.GetRoutes() {
		if a := r.GetRoute(); a != nil {
			a.RetryPolicy = nil
		}
	}
}

func pruneRoute(r *routev3.Route, in *Interner) {
	r.Metadata = nil
	r.Decorator = nil
	r.Tracing = nil
	r.StatPrefix = ""
	markFilterConfigs(r.GetTypedPerFilterConfig())
	if m := r.GetMatch(); m != nil {
		in.boolean(&m.CaseSensitive)
	}
	a := r.GetRoute()
	if a == nil {
		return
	}
	in.dur(&a.Timeout)
	in.dur(&a.IdleTimeout)
	//lint:ignore SA1019 deprecated, but istiod still sets it; interning changes no value.
	in.dur(&a.MaxGrpcTimeout)
	if rp := a.GetRetryPolicy(); rp != nil {
		rp.RetryHostPredicate = nil
		in.u32(&rp.NumRetries)
		in.dur(&rp.PerTryTimeout)
		internWhole(in, &a.RetryPolicy)
	}
	for _, cw := range a.GetWeightedClusters().GetClusters() {
		markFilterConfigs(cw.GetTypedPerFilterConfig())
		in.u32(&cw.Weight)
	}
}

// keepPerRouteTypes are the per-filter config types translation decodes whatever the
// filter's name: the per-route configs of the access-control filters (which routes
// they guard) and the wrapper that enables or disables a filter per route.
var keepPerRouteTypes = map[string]bool{
	"envoy.extensions.filters.http.rbac.v3.RBACPerRoute":          true,
	"envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute": true,
	"envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig":   true,
	"envoy.config.route.v3.FilterConfig":                          true,
}

// markFilterConfigs marks the per-filter configs of every HTTP filter but the ones
// translation decodes; their names and types stay, for the report.
func markFilterConfigs(m map[string]*anypb.Any) {
	for name, a := range m {
		if name != keepFilterFault && name != keepFilterCORS && !keepPerRouteTypes[typeName(a.GetTypeUrl())] {
			m[name] = markAny(a)
		}
	}
}

func pruneCluster(c *clusterv3.Cluster, in *Interner) {
	_ = clearCluster(c)
	internCluster(c, in)
}

// clearCluster is the part of pruneCluster that drops and marks fields; internCluster
// the part that shares equal leaves and sub-messages. A decoded cluster whose whole
// shape is shared (see newCluster) needs no interning of its parts. It returns
// ClusterSecrets of c, read while its TLS contexts are decoded anyway.
func clearCluster(c *clusterv3.Cluster) (secrets []string) {
	c.Metadata = keepALPNOverride(c.GetMetadata())
	c.AltStatName = ""
	c.Filters = nil
	if eds := c.GetEdsClusterConfig(); eds != nil {
		eds.EdsConfig = nil
	}
	for _, m := range c.GetTransportSocketMatches() {
		secrets = trimTransportSocket(m.GetTransportSocket(), c.GetName(), secrets)
	}
	secrets = trimTransportSocket(c.GetTransportSocket(), c.GetName(), secrets)
	for k, a := range c.GetTypedExtensionProtocolOptions() {
		if k != keepProtocolOptions {
			c.TypedExtensionProtocolOptions[k] = markAny(a)
		}
	}
	if la := c.GetLoadAssignment(); la != nil {
		pruneEndpoints(la)
	}
	return sortedUnique(secrets)
}

func internCluster(c *clusterv3.Cluster, in *Interner) {
	if in == nil {
		return
	}
	if tsm := c.GetTransportSocketMatches(); len(tsm) > 0 {
		// The matches of a TLS context of its own (subject alt names) still share their
		// parts with other clusters' matches.
		for i := range tsm {
			internWhole(in, &tsm[i])
		}
		if v, ok := in.sharedBy("transport_socket_matches", &clusterv3.Cluster{TransportSocketMatches: tsm}, tsm); ok {
			c.TransportSocketMatches = v.([]*clusterv3.Cluster_TransportSocketMatch)
		}
	}
	in.dur(&c.ConnectTimeout)
	for _, t := range c.GetCircuitBreakers().GetThresholds() {
		in.u32(&t.MaxConnections)
		in.u32(&t.MaxPendingRequests)
		in.u32(&t.MaxRequests)
		in.u32(&t.MaxRetries)
	}
	internWhole(in, &c.CircuitBreakers)
	internWhole(in, &c.CommonLbConfig)
	// What clusters of the same settings repeat: their shapes are separate when they
	// differ in something else (the subject alt names of their TLS contexts, which name
	// each service's accounts), their parts need not be.
	internWhole(in, &c.OutlierDetection)
	internWhole(in, &c.UpstreamConnectionOptions)
	internWhole(in, &c.EdsClusterConfig)
	if o := c.GetTypedExtensionProtocolOptions(); len(o) > 0 {
		if v, ok := in.sharedBy("typed_extension_protocol_options", &clusterv3.Cluster{TypedExtensionProtocolOptions: o}, o); ok {
			c.TypedExtensionProtocolOptions = v.(map[string]*anypb.Any)
		}
	}
	if la := c.GetLoadAssignment(); la != nil {
		internEndpoints(la, in)
	}
}

// trimTransportSocket trims a TLS transport socket of cluster to what translation reads
// and marks any other (markTransportSocket): its UpstreamTlsContext loses the config
// sources of its SDS secrets but for an ADS one's kind, and an SNI equal to ClusterSNI(cluster), istiod's for
// ISTIO_MUTUAL, becomes ClusterSNIRule. A TLS context that does not decode is marked:
// translation then cannot read it and fails closed for the cluster.
func trimTransportSocket(ts *corev3.TransportSocket, cluster string, secrets []string) []string {
	a := ts.GetTypedConfig()
	if a == nil || IsMarker(a) {
		return secrets
	}
	tls := &tlsv3.UpstreamTlsContext{}
	if !a.MessageIs(tls) {
		markTransportSocket(ts)
		return secrets
	}
	if err := a.UnmarshalTo(tls); err != nil {
		markTransportSocket(ts)
		return secrets
	}
	for _, sds := range SDSConfigs(tls.GetCommonTlsContext()) {
		// Only whether the secret comes over ADS matters (the client subscribes to
		// those, see ClusterSecrets); the rest of the source is istio-agent's socket.
		if sds.GetSdsConfig().GetAds() != nil {
			sds.SdsConfig = &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
			if sds.GetName() != "" {
				secrets = append(secrets, sds.GetName())
			}
		} else {
			sds.SdsConfig = nil
		}
	}
	if tls.GetSni() != "" && tls.GetSni() == ClusterSNI(cluster) {
		tls.Sni = ClusterSNIRule
	}
	b, err := wholeDet.Marshal(tls)
	if err != nil {
		markTransportSocket(ts)
		return secrets
	}
	ts.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: a.GetTypeUrl(), Value: b}}
	return secrets
}

// ClusterSNIRule stands, in a pruned TLS context, for the SNI ClusterSNI derives from
// the cluster's name. It is not a host name (it holds a NUL), so no real SNI is ever
// taken for it.
const ClusterSNIRule = "\x00cluster-sni"

// ClusterSNI is the SNI istiod gives an ISTIO_MUTUAL cluster named
// "direction|port|subset|host": "direction_.port_.subset_.host" (Istio's
// BuildDNSSrvSubsetKey); "" for a name of another form.
func ClusterSNI(cluster string) string {
	parts := strings.Split(cluster, "|")
	if len(parts) != 4 {
		return ""
	}
	return strings.Join(parts, "_.")
}

// TLSContextSNI returns the SNI of a TLS context of cluster, restoring what
// ClusterSNIRule stands for.
func TLSContextSNI(cluster, sni string) string {
	if sni == ClusterSNIRule {
		return ClusterSNI(cluster)
	}
	return sni
}

// markTransportSocket keeps the socket's name and the type of its config: for a socket
// other than TLS, translation only asks whether it is plaintext (raw_buffer). Unlike
// markAny the marker carries no digest: such a socket's config changes nothing amesh
// produces.
func markTransportSocket(ts *corev3.TransportSocket) {
	if a := ts.GetTypedConfig(); a != nil && !IsMarker(a) {
		ts.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: a.GetTypeUrl(), Value: []byte{markerTag}}}
	}
}

// markerTag starts every marker. It is a protobuf tag with field number 0, which no
// message has, so decoding a marker fails loudly instead of yielding an empty message.
const markerTag = 0x00

// markAny returns an Any of the same type whose value is a marker: markerTag followed
// by the 64-bit FNV-1a digest of the original value. Equal payloads get equal markers
// and different ones (all but certainly) different markers, so proto.Equal and the
// wire forms the translator compares still see a changed config as changed. Already marked
// values are returned as they are, so pruning twice changes nothing.
func markAny(a *anypb.Any) *anypb.Any {
	if a == nil || IsMarker(a) {
		return a
	}
	h := fnv.New64a()
	h.Write(a.GetValue())
	return &anypb.Any{TypeUrl: a.GetTypeUrl(), Value: h.Sum([]byte{markerTag})}
}

// IsMarker reports whether a's payload was replaced by Prune.
func IsMarker(a *anypb.Any) bool {
	v := a.GetValue()
	return (len(v) == 1 || len(v) == 9) && v[0] == markerTag
}

// pruneEndpoints prunes the inline load assignment of a STATIC or DNS cluster (EDS
// assignments are stored as LoadAssignment instead, see endpoints.go). Of the metadata
// only the transport socket match stays.
func pruneEndpoints(cla *endpointv3.ClusterLoadAssignment) {
	for _, g := range cla.GetEndpoints() {
		g.Metadata = keepSocketMatch(g.GetMetadata())
		for _, e := range g.GetLbEndpoints() {
			e.Metadata = keepSocketMatch(e.GetMetadata())
			if ep := e.GetEndpoint(); ep != nil {
				ep.Hostname = ""
				ep.HealthCheckConfig = nil
				ep.AdditionalAddresses = nil
			}
		}
	}
}

// ALPNOverrideKey is the cluster metadata (under "istio") by which istiod turns Istio's
// ALPN override filter off for a cluster ("false": its TLS is not Istio's).
const ALPNOverrideKey = "alpn_override"

// keepALPNOverride returns the metadata holding only md's istio.alpn_override, nil when
// it has none.
func keepALPNOverride(md *corev3.Metadata) *corev3.Metadata {
	v, ok := md.GetFilterMetadata()["istio"].GetFields()[ALPNOverrideKey]
	if !ok {
		return nil
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"istio": {Fields: map[string]*structpb.Value{ALPNOverrideKey: v}}}}
}

// keepSocketMatch returns the metadata holding only md's transport socket match, nil
// when it has none.
func keepSocketMatch(md *corev3.Metadata) *corev3.Metadata {
	s, ok := md.GetFilterMetadata()[SocketMatchKey]
	if !ok {
		return nil
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{SocketMatchKey: s}}
}

// internEndpoints shares the leaves of a pruned inline load assignment.
func internEndpoints(cla *endpointv3.ClusterLoadAssignment, in *Interner) {
	for _, g := range cla.GetEndpoints() {
		in.u32(&g.LoadBalancingWeight)
		internWhole(in, &g.Locality)
		for _, e := range g.GetLbEndpoints() {
			in.u32(&e.LoadBalancingWeight)
		}
	}
}

package translate

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/translate/upstream"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// The mtls scenario's auto-mTLS cluster with a pod with a sidecar (192.0.2.71, reached
// with Istio mTLS) and one without (192.0.2.72, plaintext).
const mixedCluster = "outbound|8080||mixed.default.svc.cluster.local"

// meshOpts is the workload identity of the mtls golden.
var meshOpts = Options{WorkloadCertID: "amesh-workload", MeshRootFile: "/var/lib/istio/data/root-cert.pem"}

// tcpTo is a TCP listener for 10.96.50.1:5000 to cluster, behind filters (its stream
// route is 15001-5000-10.96.50.1).
func tcpTo(cluster string, filters ...*listenerv3.Filter) *listenerv3.Listener {
	return &listenerv3.Listener{Name: "10.96.50.1_5000", Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "10.96.50.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 5000}}}},
		FilterChains: []*listenerv3.FilterChain{tcpChain(cluster, filters...)}}
}

const tcpToRoute = "15001-5000-10.96.50.1"

// denyFrom is a network RBAC filter that denies connections from addr: a decision per
// connection (amesh-network-rbac).
func denyFrom(addr string) *listenerv3.Filter {
	return &listenerv3.Filter{Name: "envoy.filters.network.rbac", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(
		&rbacnetv3.RBAC{StatPrefix: "tcp.", Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{"p": {
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
			Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: &corev3.CidrRange{
				AddressPrefix: addr, PrefixLen: wrapperspb.UInt32(32)}}}},
		}}}})}}
}

// streamRouteByID returns stream route id of objs.
func streamRouteByID(t *testing.T, objs map[string][]byte, id string) *sRoute {
	t.Helper()
	for _, r := range streamRoutesOf(t, objs) {
		if r.ID == id {
			return r
		}
	}
	t.Fatalf("no stream route %s", id)
	return nil
}

// upstreamTLSOf returns the amesh-upstream-tls configuration of r, nil without.
func upstreamTLSOf(t *testing.T, r *sRoute) *upstream.TLSPluginConf {
	t.Helper()
	raw, ok := r.Plugins[upstream.TLSPlugin]
	if !ok {
		return nil
	}
	var c upstream.TLSPluginConf
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

// upstreamOf decodes upstream id of objs.
func upstreamOf(t *testing.T, objs map[string][]byte, id string) *apisix.Upstream {
	t.Helper()
	raw, ok := objs[apisix.Key(apisix.KindUpstreams, id)]
	if !ok {
		t.Fatalf("no upstream %s", id)
	}
	var u apisix.Upstream
	if err := json.Unmarshal(raw, &u); err != nil {
		t.Fatal(err)
	}
	return &u
}

// nodeTLS is each node's host with its amesh_tls mark (nil: as the scheme).
func nodeTLS(u *apisix.Upstream) map[string]any {
	out := map[string]any{}
	for _, n := range u.Nodes {
		out[n.Host] = n.Metadata[upstream.NodeTLSKey]
	}
	return out
}

// mixedTLS is the TCP proxy's TLS to the mixed cluster: Envoy's tcp_proxy offers the
// cluster's ALPN (Istio's ALPN override is an HTTP filter).
func mixedTLS(san string) *upstream.TLSConf {
	return &upstream.TLSConf{SNI: "outbound_.8080_._.mixed.default.svc.cluster.local", ALPN: []string{"istio-peer-exchange", "istio"},
		Cert: &upstream.TLSCert{SSLID: "amesh-workload"}, CA: &upstream.TLSCA{File: "/var/lib/istio/data/root-cert.pem"},
		SANs:       []upstream.SANMatcher{{Match: "exact", Value: san}},
		MinVersion: "TLSv1_2", MaxVersion: "TLSv1_3"}
}

// TCP to an auto-mTLS cluster originates Istio mTLS as Envoy's tcp_proxy does, per
// endpoint: the stream route uses the cluster's base upstream, whose nodes say which
// endpoints take TLS, with the stream amesh-upstream-tls holding the cluster's TLS for
// it, beside the route's other plugins. Nothing is reported as left out.
func TestStreamUpstreamTLS(t *testing.T) {
	snap := withListener(istiodSnapshot(t, "mtls"), tcpTo(mixedCluster, denyFrom("192.0.2.9")))
	// And TCP to a DestinationRule's SIMPLE TLS without sni: auto_sni and
	// auto_san_validation need an HTTP request, so Envoy's tcp_proxy sends no SNI.
	toSystem := tcpTo("outbound|8443||system.example.com")
	toSystem.Name = "10.96.50.3_5000"
	toSystem.Address.GetSocketAddress().Address = "10.96.50.3"
	snap = withListener(snap, toSystem)
	tr := newTracked(meshOpts)
	rep := tr.Translate(snap).Report
	objs := tr.Objects()
	validateAll(t, objs)
	r := streamRouteByID(t, objs, tcpToRoute)
	id := upstream.ID(mixedCluster)
	if r.UpstreamID != id {
		t.Errorf("upstream %s, want the cluster's base %s", r.UpstreamID, id)
	}
	want := &upstream.TLSPluginConf{Upstreams: map[string]*upstream.TLSConf{id: mixedTLS("spiffe://cluster.local/ns/default/sa/mixed")}}
	if diff := cmp.Diff(want, upstreamTLSOf(t, r)); diff != "" {
		t.Errorf("amesh-upstream-tls (-want +got):\n%s", diff)
	}
	if _, ok := r.Plugins[networkRBACPlugin]; !ok {
		t.Errorf("the route lost its %s: %v", networkRBACPlugin, slices.Sorted(maps.Keys(r.Plugins)))
	}
	u := upstreamOf(t, objs, id)
	if diff := cmp.Diff(map[string]any{"192.0.2.71": nil, "192.0.2.72": false}, nodeTLS(u)); diff != "" || u.Scheme != "https" {
		t.Errorf("scheme %q, nodes (-want +got):\n%s", u.Scheme, diff)
	}
	sys := streamRouteByID(t, objs, "15001-5000-10.96.50.3")
	wantSys := &upstream.TLSPluginConf{Upstreams: map[string]*upstream.TLSConf{sys.UpstreamID: {
		CA: &upstream.TLSCA{System: true}, MinVersion: "TLSv1_2", MaxVersion: "TLSv1_3"}}}
	if diff := cmp.Diff(wantSys, upstreamTLSOf(t, sys)); diff != "" || sys.UpstreamID != upstream.ID("outbound|8443||system.example.com") {
		t.Errorf("TCP to %s: amesh-upstream-tls (-want +got):\n%s", sys.UpstreamID, diff)
	}
	for _, e := range rep {
		if e.Resource == mixedCluster && e.Severity == report.Unsupported || e.Field == "filter_chains.filters.tcp_proxy.cluster" {
			t.Errorf("unexpected finding %+v", e)
		}
	}
}

// Without a TLS configuration amesh can serve (no workload identity, so Istio mTLS
// cannot be originated), the endpoints Envoy reaches with TLS are left out of the
// route's upstream and reported on the cluster; the others are reached in plaintext
// as by Envoy, and the route carries no amesh-upstream-tls.
func TestStreamUpstreamTLSFailsClosed(t *testing.T) {
	snap := withListener(istiodSnapshot(t, "mtls"), tcpTo(mixedCluster))
	tr := newTracked(Options{})
	rep := tr.Translate(snap).Report
	objs := tr.Objects()
	validateAll(t, objs)
	r := streamRouteByID(t, objs, tcpToRoute)
	if r.UpstreamID != upstream.ID(mixedCluster) || upstreamTLSOf(t, r) != nil {
		t.Errorf("upstream %s, plugins %v; want the base upstream without amesh-upstream-tls", r.UpstreamID, slices.Sorted(maps.Keys(r.Plugins)))
	}
	u := upstreamOf(t, objs, r.UpstreamID)
	if diff := cmp.Diff(map[string]any{"192.0.2.72": nil}, nodeTLS(u)); diff != "" || u.Scheme != "" {
		t.Errorf("scheme %q, nodes (-want +got):\n%s", u.Scheme, diff)
	}
	if !findEntry(rep, "transport_socket_matches[tlsMode-istio]", report.Unsupported, "left out (fail closed)") {
		t.Errorf("the endpoints left out are not reported: %v", rep)
	}
}

// withSAN returns the mixed cluster of snap with its TLS context's subject alt name san.
func withSAN(t *testing.T, snap *resource.State, san string) *clusterv3.Cluster {
	t.Helper()
	msg, err := snap.Clusters[mixedCluster].Message()
	if err != nil {
		t.Fatal(err)
	}
	c := proto.Clone(msg).(*clusterv3.Cluster)
	ts := c.GetTransportSocketMatches()[0].GetTransportSocket()
	ctx := &tlsv3.UpstreamTlsContext{}
	if err := ts.GetTypedConfig().UnmarshalTo(ctx); err != nil {
		t.Fatal(err)
	}
	vc := ctx.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext()
	//lint:ignore SA1019 istiod's field, the one the cluster holds
	vc.MatchSubjectAltNames = []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: san}}}
	ts.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}
	return c
}

// A change to the cluster's TLS rewrites the stream route, as a full translation gives
// it; a change to the cluster that leaves its TLS as it was, with another listener's,
// rewrites the upstream but not the route.
func TestStreamUpstreamTLSFollowsCluster(t *testing.T) {
	base := withListener(istiodSnapshot(t, "mtls"), tcpTo(mixedCluster))
	tr := newTracked(meshOpts)
	tr.Translate(base)
	key := apisix.Key(apisix.KindStreamRoutes, tcpToRoute)

	const san = "spiffe://cluster.local/ns/default/sa/mixed-v2"
	next := withListener(base, tcpTo(mixedCluster), withSAN(t, base, san))
	next.Seq = base.Seq + 1
	next.Changes = resource.Changes{Since: base.Seq, Clusters: map[string]struct{}{mixedCluster: {}}}
	r := tr.Translate(next)
	if _, ok := r.Changes.Put[key]; !ok {
		t.Errorf("the new subject alt name did not rewrite %s (put %v)", tcpToRoute, slices.Sorted(maps.Keys(r.Changes.Put)))
	}
	got := upstreamTLSOf(t, streamRouteByID(t, tr.Objects(), tcpToRoute))
	if got == nil || got.Upstreams[upstream.ID(mixedCluster)] == nil || cmp.Diff(mixedTLS(san), got.Upstreams[upstream.ID(mixedCluster)]) != "" {
		t.Errorf("after the change: %+v", got)
	}
	full := newTracked(meshOpts)
	full.Translate(withListener(base, tcpTo(mixedCluster), withSAN(t, base, san)))
	if !sameObjects(full.Objects(), tr.Objects()) {
		t.Error("incremental output differs from a full translation")
	}

	// The same TLS, another connect timeout; and another listener, so that every
	// stream route is looked at again.
	c := withSAN(t, base, san)
	c.ConnectTimeout.Seconds++
	other := tcpTo(mixedCluster)
	other.Name = "10.96.50.2_5000"
	other.Address.GetSocketAddress().Address = "10.96.50.2"
	last := withListener(withListener(next, other), tcpTo(mixedCluster), c)
	last.Seq = next.Seq + 1
	last.Changes = resource.Changes{Since: next.Seq, Clusters: map[string]struct{}{mixedCluster: {}}, Listeners: map[string]struct{}{other.Name: {}}}
	sig := tr.streams[key].sig
	r = tr.Translate(last)
	if _, ok := r.Changes.Put[key]; ok || tr.streams[key].sig != sig {
		// The signature too: the cluster's TLS configuration is a new pointer.
		t.Errorf("a change that leaves the cluster's TLS as it was rebuilt %s", tcpToRoute)
	}
	if _, ok := r.Changes.Put[apisix.Key(apisix.KindUpstreams, upstream.ID(mixedCluster))]; !ok {
		t.Errorf("the connect timeout did not rewrite the upstream (put %v)", slices.Sorted(maps.Keys(r.Changes.Put)))
	}
	if _, ok := r.Changes.Put[apisix.Key(apisix.KindStreamRoutes, "15001-5000-10.96.50.2")]; !ok {
		t.Errorf("the other listener's route was not written (put %v)", slices.Sorted(maps.Keys(r.Changes.Put)))
	}
	if r := tr.Translate(unchanged(last)); !r.Changes.Empty() {
		t.Errorf("nothing changed, yet put %v", slices.Sorted(maps.Keys(r.Changes.Put)))
	}
}

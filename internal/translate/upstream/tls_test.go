package upstream

import (
	"encoding/json"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/apisix/schema"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// istiodMTLS is istiod's xDS for test/istiod's outbound TLS scenario
// (testdata/istiod/mtls/README.md).
func istiodMTLS(t testing.TB) *resource.State {
	t.Helper()
	r, err := dump.LoadDir("../../../testdata/istiod/mtls")
	if err != nil {
		t.Fatal(err)
	}
	return r.Snapshot()
}

var meshIdentity = Options{Identity: Identity{CertID: "amesh-workload", RootFile: "/var/lib/istio/data/root-cert.pem"}}

// buildMTLS builds a cluster of the scenario with opts, checking that the upstream
// validates and that its plugin configuration does.
func buildMTLS(t *testing.T, snap *resource.State, name string, opts Options) (*apisix.Upstream, *TLSConf, []report.Entry) {
	t.Helper()
	src := snap.Clusters[name]
	if src == nil {
		t.Fatalf("no cluster %s", name)
	}
	u, es := BuildWith(opts, name, src.Shape(), snap.Endpoints[src.EDSName()])
	mustValid(t, u)
	conf, digest := ClusterTLS(name, src.Shape(), opts)
	if (conf == nil) != (digest == 0) {
		t.Errorf("%s: conf %v with digest %d", name, conf, digest)
	}
	if conf != nil {
		b, err := json.Marshal(TLSPluginConf{Upstreams: map[string]*TLSConf{u.ID: conf}})
		if err != nil {
			t.Fatal(err)
		}
		if err := schema.ValidatePlugin(TLSPlugin, b); err != nil {
			t.Errorf("%s: plugin configuration does not validate: %v\n%s", name, err, b)
		}
	}
	return u, conf, es
}

func hosts(u *apisix.Upstream) map[string]any {
	out := map[string]any{}
	for _, n := range u.Nodes {
		out[n.Host] = n.Metadata[NodeTLSKey]
	}
	return out
}

// istiod's clusters become the plugin configuration Envoy's TLS contexts say, and
// each endpoint is reached as Envoy reaches it: auto mTLS only for the endpoints of
// pods with a sidecar, a DestinationRule's TLS for all.
func TestIstiodTLS(t *testing.T) {
	snap := istiodMTLS(t)
	istio := func(sni string, sans ...string) *TLSConf {
		c := &TLSConf{SNI: sni, ALPN: []string{"istio-peer-exchange", "istio"},
			Cert: &TLSCert{SSLID: "amesh-workload"}, CA: &TLSCA{File: "/var/lib/istio/data/root-cert.pem"},
			MinVersion: "TLSv1_2", MaxVersion: "TLSv1_3"}
		for _, s := range sans {
			c.SANs = append(c.SANs, SANMatcher{Match: "exact", Value: s})
		}
		return c
	}
	for _, tc := range []struct {
		cluster string
		scheme  string
		nodes   map[string]any // host -> amesh_tls metadata (nil: as the scheme)
		conf    *TLSConf
	}{
		{"outbound|8080||secure.default.svc.cluster.local", "https", map[string]any{"192.0.2.61": nil, "192.0.2.62": nil},
			istio("outbound_.8080_._.secure.default.svc.cluster.local", "spiffe://cluster.local/ns/default/sa/secure")},
		// One pod with a sidecar, one without: Envoy speaks mTLS to the first only.
		{"outbound|8080||mixed.default.svc.cluster.local", "https", map[string]any{"192.0.2.71": nil, "192.0.2.72": false},
			istio("outbound_.8080_._.mixed.default.svc.cluster.local", "spiffe://cluster.local/ns/default/sa/mixed")},
		{"outbound|8080||pinned.default.svc.cluster.local", "https", map[string]any{"192.0.2.81": nil},
			istio("outbound_.8080_._.pinned.default.svc.cluster.local", "spiffe://cluster.local/ns/default/sa/pinned")},
		{"outbound|8080|v1|pinned.default.svc.cluster.local", "https", map[string]any{"192.0.2.81": nil},
			istio("pinned-v1.example", "spiffe://cluster.local/ns/default/sa/pinned")},
		// DestinationRule TLS: not Istio's, so the cluster keeps its ALPN (none) where
		// Istio's ALPN filter would set one (istio.alpn_override "false").
		{"outbound|8443||simple.example.com", "https", map[string]any{"127.0.0.61": nil}, &TLSConf{SNI: "simple.example.com",
			CA: &TLSCA{File: "/etc/amesh-test/ca.pem"}, SANs: []SANMatcher{{Match: "exact", Value: "simple.example.com"}},
			MinVersion: "TLSv1_2", MaxVersion: "TLSv1_3", NoALPNOverride: true}},
		{"outbound|8443||mutual.example.com", "https", map[string]any{"127.0.0.62": nil}, &TLSConf{SNI: "mutual.example.com",
			Cert: &TLSCert{CertFile: "/etc/amesh-test/client.pem", KeyFile: "/etc/amesh-test/client-key.pem"},
			CA:   &TLSCA{File: "/etc/amesh-test/ca.pem"}, MinVersion: "TLSv1_2", MaxVersion: "TLSv1_3", NoALPNOverride: true}},
		// No sni and no subjectAltNames: the Host is the SNI and the name checked.
		{"outbound|8443||system.example.com", "https", map[string]any{"127.0.0.63": nil}, &TLSConf{AutoSNI: true, AutoSAN: true,
			CA: &TLSCA{System: true}, MinVersion: "TLSv1_2", MaxVersion: "TLSv1_3", NoALPNOverride: true}},
		{"outbound|8443||insecure.example.com", "https", map[string]any{"127.0.0.64": nil}, &TLSConf{SNI: "insecure.example.com",
			MinVersion: "TLSv1_2", MaxVersion: "TLSv1_3", NoALPNOverride: true}},
		// Pods without sidecars behind an auto-mTLS cluster: plaintext, no plugin needed
		// but harmless (the cluster's TLS is translatable).
		{"outbound|9080||reviews.default.svc.cluster.local", "", nil,
			istio("outbound_.9080_._.reviews.default.svc.cluster.local", "spiffe://cluster.local/ns/default/sa/reviews")},
	} {
		t.Run(tc.cluster, func(t *testing.T) {
			u, conf, es := buildMTLS(t, snap, tc.cluster, meshIdentity)
			if u.Scheme != tc.scheme {
				t.Errorf("scheme %q, want %q", u.Scheme, tc.scheme)
			}
			if tc.nodes != nil {
				if diff := cmp.Diff(tc.nodes, hosts(u)); diff != "" {
					t.Errorf("nodes (-want +got):\n%s", diff)
				}
			}
			if diff := cmp.Diff(tc.conf, conf); diff != "" {
				t.Errorf("plugin configuration (-want +got):\n%s", diff)
			}
			for _, e := range es {
				if e.Severity == report.Unsupported && e.Field != "circuit_breakers" {
					t.Errorf("unexpected finding %+v", e)
				}
			}
		})
	}
}

// What amesh cannot serve of a cluster's TLS leaves out exactly the endpoints that
// would use it, with a report entry: a credentialName whose SDS secret has not
// arrived from istiod, and Istio mTLS without the workload identity; plaintext endpoints of the
// same cluster stay. A mirror target (NoTLS) keeps only plaintext endpoints.
func TestIstiodTLSFailsClosed(t *testing.T) {
	snap := istiodMTLS(t)
	u, conf, es := buildMTLS(t, snap, "outbound|8443||credential.example.com", meshIdentity)
	if len(u.Nodes) != 0 || conf != nil ||
		!hasEntry(es, "transport_socket", report.Unsupported, `"kubernetes://credential-ca-cacert" (from istiod over ADS, such as a credentialName's) has not been received`) {
		t.Errorf("credentialName: nodes %v, conf %v, %v", u.Nodes, conf, es)
	}

	for _, id := range []Identity{{}, {CertID: "amesh-workload"}, {RootFile: "/root.pem"}} {
		opts := Options{Identity: id}
		u, conf, es := buildMTLS(t, snap, "outbound|8080||mixed.default.svc.cluster.local", opts)
		if diff := cmp.Diff(map[string]any{"192.0.2.72": nil}, hosts(u)); diff != "" || u.Scheme != "" || conf != nil {
			t.Errorf("identity %+v: scheme %q conf %v, nodes (-want +got):\n%s", id, u.Scheme, conf, diff)
		}
		if !hasEntry(es, "transport_socket_matches[tlsMode-istio]", report.Unsupported, "the 1 endpoint(s) Envoy reaches with this transport socket are left out") {
			t.Errorf("identity %+v: %v", id, es)
		}
		u, _, _ = buildMTLS(t, snap, "outbound|8080||secure.default.svc.cluster.local", opts)
		if len(u.Nodes) != 0 {
			t.Errorf("identity %+v: secure has nodes %v", id, u.Nodes)
		}
	}

	mirror := meshIdentity
	mirror.NoTLS = true
	u, _, es = buildMTLS(t, snap, "outbound|8080||mixed.default.svc.cluster.local", mirror)
	if diff := cmp.Diff(map[string]any{"192.0.2.72": nil}, hosts(u)); diff != "" || u.Scheme != "" {
		t.Errorf("mirror: scheme %q, nodes (-want +got):\n%s", u.Scheme, diff)
	}
	if !hasEntry(es, "lb_endpoints.endpoint.address", report.Invalid, "reached with TLS") {
		t.Errorf("mirror: %v", es)
	}
}

// The translator builds from the shapes the client keeps (pruned, with the SNI derived
// from the cluster's name kept as a rule and endpoints decoded by the wire decoder):
// the same upstreams and configurations as from the messages.
func TestIstiodTLSFromDecoded(t *testing.T) {
	snap := istiodMTLS(t)
	in := resource.NewInterner()
	for name, src := range snap.Clusters {
		msg, err := src.Message()
		if err != nil {
			t.Fatal(err)
		}
		b, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		d, err := resource.DecodeBytes(resource.ClusterType, b, name, resource.DecodeOptions{Intern: in})
		if err != nil {
			t.Fatal(err)
		}
		dc := d.Msg.(*resource.Cluster)
		cla := snap.Endpoints[src.EDSName()]
		var dcla *resource.LoadAssignment
		if cla != nil {
			cb, err := proto.Marshal(claOf(t, snap, src.EDSName()))
			if err != nil {
				t.Fatal(err)
			}
			de, err := resource.DecodeBytes(resource.EndpointType, cb, src.EDSName(), resource.DecodeOptions{Intern: in})
			if err != nil {
				t.Fatal(err)
			}
			dcla = de.Msg.(*resource.LoadAssignment)
			if !dcla.Equal(cla) {
				t.Errorf("%s: decoded endpoints differ", name)
			}
		}
		want, wes := BuildWith(meshIdentity, name, src.Shape(), cla)
		got, ges := BuildWith(meshIdentity, name, dc.Shape(), dcla)
		if string(mustValid(t, want)) != string(mustValid(t, got)) || !cmp.Equal(wes, ges) {
			t.Errorf("%s: from the decoded shape %s %v, from the message %s %v", name, mustValid(t, got), ges, mustValid(t, want), wes)
		}
		wc, wd := ClusterTLS(name, src.Shape(), meshIdentity)
		gc, gd := ClusterTLS(name, dc.Shape(), meshIdentity)
		if !cmp.Equal(wc, gc) || wd != gd {
			t.Errorf("%s: TLS from the decoded shape %+v, from the message %+v", name, gc, wc)
		}
	}
}

// claOf reads a load assignment of the scenario as istiod sent it.
func claOf(t *testing.T, snap *resource.State, name string) proto.Message {
	t.Helper()
	r, err := dump.LoadDir("../../../testdata/istiod/mtls")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range r.Endpoints {
		if e.GetClusterName() == name {
			return e
		}
	}
	t.Fatalf("no load assignment %s", name)
	return nil
}

// Envoy's transport socket matching: the endpoint's metadata first, in match order,
// then its locality's; empty criteria match anything; nothing but them matches no
// metadata.
func TestLabelMatch(t *testing.T) {
	st := func(kv ...string) *structpb.Struct {
		s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
		for i := 0; i < len(kv); i += 2 {
			s.Fields[kv[i]] = structpb.NewStringValue(kv[i+1])
		}
		return s
	}
	for _, tc := range []struct {
		criteria, md *structpb.Struct
		want         bool
	}{
		{st(), nil, true},
		{st(), st("tlsMode", "istio"), true},
		{st("tlsMode", "istio"), nil, false},
		{st("tlsMode", "istio"), st("tlsMode", "istio"), true},
		{st("tlsMode", "istio"), st("tlsMode", "istio", "other", "x"), true},
		{st("tlsMode", "istio"), st("tlsMode", "disabled"), false},
		{st("tlsMode", "istio", "tunnel", "http"), st("tlsMode", "istio"), false},
	} {
		if got := labelMatch(tc.criteria, tc.md); got != tc.want {
			t.Errorf("labelMatch(%v, %v) = %v", tc.criteria, tc.md, got)
		}
	}
}

// The plugin's schema refuses what the plugin could not serve (the schema itself is
// checked against the plugin's by internal/translate's TestPluginSchemasMatchLua).
func TestTLSSchema(t *testing.T) {
	for _, bad := range []string{
		`{"upstreams": {}}`,
		`{"upstreams": {"u": {"cert": {"ssl_id": "w", "cert_file": "/c", "key_file": "/k"}}}}`,
		`{"upstreams": {"u": {"cert": {"cert_file": "/c"}}}}`,
		`{"upstreams": {"u": {"ca": {"system": false}}}}`,
		`{"upstreams": {"u": {"sans": [{"match": "regex", "value": "x"}]}}}`,
		`{"upstreams": {"u": {"min_version": "SSLv3"}}}`,
		`{"upstreams": {"u": {"private_key": "-----BEGIN"}}}`,
	} {
		if err := schema.ValidatePlugin(TLSPlugin, []byte(bad)); err == nil {
			t.Errorf("%s validates", bad)
		}
	}
}

// A TCP proxy's connections (a stream route's, which uses the cluster's base upstream
// with its TLS marks) take the cluster's TLS as it is, its own ALPN included; only
// auto_sni and auto_san_validation, HTTP options that need a request's Host, give way
// to the TLS context's own SNI and matchers, as in Envoy's tcp_proxy. The digest
// follows that SNI.
func TestTLSForTCP(t *testing.T) {
	snap := istiodMTLS(t)
	mixed, conf, _ := buildMTLS(t, snap, "outbound|8080||mixed.default.svc.cluster.local", meshIdentity)
	if len(mixed.Nodes) != 2 || mixed.Scheme != "https" || conf.ForTCP() != conf {
		t.Errorf("auto mTLS: nodes %v scheme %q, TCP configuration %+v, want the cluster's %+v", mixed.Nodes, mixed.Scheme, conf.ForTCP(), conf)
	}

	_, conf, _ = buildMTLS(t, snap, "outbound|8443||system.example.com", meshIdentity)
	want := &TLSConf{CA: &TLSCA{System: true}, MinVersion: "TLSv1_2", MaxVersion: "TLSv1_3", NoALPNOverride: true}
	if diff := cmp.Diff(want, conf.ForTCP()); diff != "" || !conf.AutoSNI || !conf.AutoSAN {
		t.Errorf("auto SNI without an SNI (-want +got):\n%s", diff)
	}

	// auto_sni with an SNI of the context: HTTP sends the Host, TCP the context's SNI.
	withSNI := func(sni string) *clusterv3.Cluster {
		c := proto.Clone(snap.Clusters["outbound|8443||simple.example.com"].Shape()).(*clusterv3.Cluster)
		ctx := &tlsv3.UpstreamTlsContext{}
		if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(ctx); err != nil {
			t.Fatal(err)
		}
		ctx.Sni = sni
		a, err := anypb.New(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c.TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: a}
		c.TypedExtensionProtocolOptions = httpOpts(t, &httpv3.HttpProtocolOptions{
			UpstreamHttpProtocolOptions: &corev3.UpstreamHttpProtocolOptions{AutoSni: true}})
		return c
	}
	a, da := ClusterTLS("outbound|8443||simple.example.com", withSNI("a.example.com"), meshIdentity)
	_, db := ClusterTLS("outbound|8443||simple.example.com", withSNI("b.example.com"), meshIdentity)
	if a == nil || !a.AutoSNI || a.SNI != "" || a.ForTCP().SNI != "a.example.com" || a.ForTCP().AutoSNI {
		t.Errorf("auto SNI with the context's SNI: %+v, for TCP %+v", a, a.ForTCP())
	}
	if da == db {
		t.Error("the digest does not follow the context's SNI")
	}
	if len(a.SANs) != 1 || len(a.ForTCP().SANs) != 1 {
		t.Errorf("the context's SAN matchers: %+v, for TCP %+v", a.SANs, a.ForTCP().SANs)
	}
}

// Clusters of a split merged into one upstream (more than traffic-split's 20) keep their
// TLS per node: the upstream's settings without an SNI, each TLS node its cluster's.
func TestSplitTLS(t *testing.T) {
	snap := istiodMTLS(t)
	names := []string{"outbound|8080||pinned.default.svc.cluster.local", "outbound|8080|v1|pinned.default.svc.cluster.local"}
	var members []Member
	var shapes []*clusterv3.Cluster
	for _, n := range names {
		src := snap.Clusters[n]
		members = append(members, Member{Name: n, Shape: src.Shape(), CLA: snap.Endpoints[src.EDSName()], Weight: 1})
		shapes = append(shapes, src.Shape())
	}
	// Their TLS differs in the SNI (and the subset's SANs equal the service's here).
	if SettingsKey(meshIdentity, names[0], shapes[0], Variant{}) != SettingsKey(meshIdentity, names[1], shapes[1], Variant{}) {
		t.Fatal("clusters whose TLS differs only in the SNI have different settings")
	}
	s := &Split{Clusters: names, Weights: []uint32{1, 1}}
	conf := SplitTLS(meshIdentity, s, shapes)
	if conf == nil || conf.SNI != "" || len(conf.SANs) != 1 {
		t.Fatalf("split TLS %+v", conf)
	}
	u, _ := BuildSplit(meshIdentity, "split-x", members, Variant{})
	mustValid(t, u)
	if len(u.Nodes) != 1 || u.Scheme != "https" || u.Nodes[0].Metadata[NodeSNIKey] != "outbound_.8080_._.pinned.default.svc.cluster.local" {
		t.Errorf("merged upstream %+v", u)
	}
}

// Envoy tries the endpoint's metadata against every match first, then the locality's: an
// empty match (istiod's tlsMode-disabled) takes an endpoint without metadata before its
// locality is read.
func TestTransportSocketOfEndpoint(t *testing.T) {
	snap := istiodMTLS(t)
	auto := snap.Clusters["outbound|8080||mixed.default.svc.cluster.local"].Shape()
	istioOnly := proto.Clone(auto).(*clusterv3.Cluster)
	istioOnly.TransportSocketMatches = istioOnly.TransportSocketMatches[:1] // no empty match: plaintext by default
	locality := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{resource.SocketMatchKey: {
		Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio")}}}}
	la := resource.FromCLA(&endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{{
		Metadata:    locality,
		LbEndpoints: []*endpointv3.LbEndpoint{ep("10.0.0.1", 80, 0, 0)},
	}}})
	for _, tc := range []struct {
		name string
		c    *clusterv3.Cluster
		want sockKind
	}{
		{"auto mTLS", auto, sockPlain},
		{"tlsMode-istio only", istioOnly, sockTLS},
	} {
		p := planTLS("outbound|8080||mixed.default.svc.cluster.local", tc.c, meshIdentity)
		if got := p.kindOf(la, &la.Localities[0], 0, map[uint8]*structpb.Struct{}); got != tc.want {
			t.Errorf("%s: socket %d, want %d", tc.name, got, tc.want)
		}
	}
}

package install_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amesh-dev/amesh/internal/identity/identitytest"
	"github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
	"github.com/amesh-dev/amesh/test/netns"
)

// peerTLS is what an Istio peer's inbound TCP chain saw of an mTLS connection.
type peerTLS struct {
	SNI      string
	ALPN     []string // offered by the client
	ClientID string   // the URI SAN of the client's certificate
}

// meshTCPPeer serves the line protocol (greeting first, as MySQL does) behind Istio mTLS
// on addr in ns, as an Envoy sidecar's inbound listener serves a TCP port: its mTLS TCP
// chain is taken by the ALPN istio-peer-exchange or istio (a TLS connection without it
// would take the passthrough chain to an application that speaks plaintext, and fail),
// it presents the workload certificate cert and requires a client certificate of the
// mesh's CA. It returns what each handshake that completed saw, and the number of
// handshakes begun.
func meshTCPPeer(t *testing.T, ns *netns.NS, addr string, ca *identitytest.CA, cert tls.Certificate) (<-chan peerTLS, *atomic.Int64) {
	t.Helper()
	l, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	roots := x509.NewCertPool()
	roots.AddCert(ca.Root())
	seen := make(chan peerTLS, 100)
	var handshakes atomic.Int64
	go func() {
		for {
			raw, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				var hello *tls.ClientHelloInfo
				c := tls.Server(raw, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
					handshakes.Add(1)
					hello = h
					if !slices.Contains(h.SupportedProtos, "istio-peer-exchange") && !slices.Contains(h.SupportedProtos, "istio") {
						return nil, errors.New("no Istio ALPN: the passthrough chain")
					}
					return &tls.Config{
						Certificates: []tls.Certificate{cert},
						ClientAuth:   tls.RequireAndVerifyClientCert,
						ClientCAs:    roots,
						NextProtos:   []string{"istio-peer-exchange", "istio"},
						MinVersion:   tls.VersionTLS12,
					}, nil
				}})
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if c.Handshake() != nil {
					return
				}
				p := peerTLS{SNI: hello.ServerName, ALPN: hello.SupportedProtos}
				if pc := c.ConnectionState().PeerCertificates; len(pc) > 0 && len(pc[0].URIs) > 0 {
					p.ClientID = pc[0].URIs[0].String()
				}
				seen <- p
				answerPing(c, bufio.NewReader(c), addr, true)
			}()
		}
	}()
	return seen, &handshakes
}

// withMeshTCPService makes istiod's mysqldb v1 cluster (auto mTLS: Istio mTLS to the
// endpoints labelled tlsMode istio) expect the server identity san, as istiod does once
// the service's pods have a service account, and returns its name.
func withMeshTCPService(t *testing.T, res *dump.Resources, san string) string {
	t.Helper()
	const mysql = "outbound|3306|v1|mysqldb.default.svc.cluster.local"
	for i, c := range res.Clusters {
		if c.GetName() != mysql {
			continue
		}
		c = proto.Clone(c).(*clusterv3.Cluster)
		for _, m := range c.GetTransportSocketMatches() {
			ts := m.GetTransportSocket()
			ctx := &tlsv3.UpstreamTlsContext{}
			if ts.GetTypedConfig().UnmarshalTo(ctx) != nil {
				continue
			}
			//lint:ignore SA1019 deprecated, but istiod still sets it
			ctx.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().MatchSubjectAltNames =
				[]*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: san}}}
			a, err := anypb.New(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ts.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: a}
		}
		res.Clusters[i] = c
		return mysql
	}
	t.Fatalf("istiod's configuration has no cluster %s", mysql)
	return ""
}

// TestSidecarOutboundTCPMTLS: the application's connections to a TCP service of the mesh
// (istiod's tcp_proxy listener 240.240.0.3_3306 and its auto-mTLS cluster) reach the
// endpoint of a pod with a sidecar over Istio mTLS, as Envoy's tcp_proxy connects: the
// cluster's SNI outbound_.3306_.v1_.mysqldb.default.svc.cluster.local, its ALPN
// istio-peer-exchange and istio (by which the peer takes its mTLS TCP chain), the
// workload certificate amesh follows in the agent's certificate directory, and the
// server's SPIFFE identity checked against the cluster's subject alt names; the endpoint
// of a pod without a sidecar in the same cluster is reached in plaintext. The bytes flow
// both ways, the server speaking first. A peer with another identity gets no data: the
// connection is closed, and the log says why.
func TestSidecarOutboundTCPMTLS(t *testing.T) {
	ca, err := identitytest.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	const productpageID = "spiffe://cluster.local/ns/default/sa/productpage"
	const mysqlID = "spiffe://cluster.local/ns/default/sa/mysqldb"
	certDir := workloadCertDir(t, ca, productpageID)
	serverFiles, err := ca.Issue(identitytest.Options{SPIFFE: mysqlID})
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := tls.X509KeyPair(serverFiles.Chain, serverFiles.Key)
	if err != nil {
		t.Fatal(err)
	}

	s := startSidecar(t, "AMESH_WORKLOAD_CERT_DIR="+certDir)
	const sidecarEP, plainEP = peerIP + ":13306", peerIP + ":13307"
	seen, handshakes := meshTCPPeer(t, s.client, sidecarEP, ca, serverCert)
	plain := tcpServe(t, s.client, plainEP, true)

	res, err := dump.LoadDir(filepath.Join(repoRoot, "testdata", "istiod", "sotw"))
	if err != nil {
		t.Fatal(err)
	}
	mysql := withMeshTCPService(t, res, mysqlID)
	endpoints := xdstest.Endpoints(mysql, sidecarEP, plainEP)
	match, _ := structpb.NewStruct(map[string]any{"tlsMode": "istio"})
	endpoints.GetEndpoints()[0].GetLbEndpoints()[0].Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{resource.SocketMatchKey: match}}
	xds := s.serve(t)
	serveIstiod(xds, res, map[string]proto.Message{mysql: endpoints})
	s.waitReady(t)

	const service = "240.240.0.3:3306"
	reached := map[string]int{}
	// The workload certificate reaches APISIX shortly after the configuration.
	waitFor(t, "both endpoints of the TCP service", 30*time.Second, func() (bool, string) {
		hello, pong, err := ping(s.pod, service, true)
		if err == nil {
			if want := "PONG " + hello[len("HELLO "):] + " " + podIP; pong != want {
				t.Errorf("TCP service: greeting %q, answer %q; want %q", hello, pong, want)
			}
			reached[hello]++
		}
		return reached["HELLO "+sidecarEP] >= 2 && reached["HELLO "+plainEP] >= 2, fmt.Sprintf("%v (last: %v)", reached, err)
	})
	if len(reached) != 2 {
		t.Errorf("the TCP service's connections reached %v; want its two endpoints only", reached)
	}
	want := peerTLS{SNI: "outbound_.3306_.v1_.mysqldb.default.svc.cluster.local", ALPN: []string{"istio-peer-exchange", "istio"}, ClientID: productpageID}
	for n := reached["HELLO "+sidecarEP]; n > 0; n-- {
		select {
		case got := <-seen:
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("the endpoint with a sidecar saw %+v; want %+v", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the endpoint with a sidecar answered without a completed handshake")
		}
	}
	if plain.Load() < 2 {
		t.Errorf("the endpoint without a sidecar took %d connections", plain.Load())
	}

	// The cluster expects another identity: the peer's certificate fails the check, and
	// no byte reaches it.
	other := withMeshTCPService(t, res, "spiffe://cluster.local/ns/default/sa/other")
	endpoints = xdstest.Endpoints(other, sidecarEP)
	endpoints.GetEndpoints()[0].GetLbEndpoints()[0].Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{resource.SocketMatchKey: match}}
	serveIstiod(xds, res, map[string]proto.Message{other: endpoints})
	// Each nginx worker takes the change on its own: several refusals in a row.
	refusals := 0
	waitFor(t, "a peer with another identity to be refused", 30*time.Second, func() (bool, string) {
		hello, pong, err := ping(s.pod, service, true)
		if err != nil && hello == "" {
			refusals++
		} else {
			refusals = 0
		}
		return refusals >= 4, fmt.Sprintf("%q %q %v", hello, pong, err)
	})
	// Connections made before the change took effect completed their handshakes.
	for drained := false; !drained; {
		select {
		case <-seen:
		default:
			drained = true
		}
	}
	before := handshakes.Load()
	for range 3 {
		if hello, pong, err := ping(s.pod, service, true); err == nil || hello != "" {
			t.Errorf("a peer with another identity: %q %q %v; want the connection closed", hello, pong, err)
		}
	}
	if handshakes.Load() == before {
		t.Error("a peer with another identity: no handshake reached it; want each connection to try and fail the identity check")
	}
	select {
	case got := <-seen:
		t.Errorf("a peer with another identity completed a handshake: %+v", got)
	default:
	}
	if !strings.Contains(s.stderr.String(), "none of the expected subject alt names") {
		t.Error("the error log does not say why the peer with another identity was refused")
	}
	s.errorLogClean(t, "none of the expected subject alt names", "SSL_do_handshake() failed")
}

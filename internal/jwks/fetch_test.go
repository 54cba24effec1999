package jwks

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/internal/identity"
	"github.com/amesh-dev/amesh/internal/meshpeer"
)

// start runs a Fetcher for the test.
func start(t *testing.T) *Fetcher {
	t.Helper()
	f := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

// await returns the Set once cond holds for it.
func await(t *testing.T, f *Fetcher, what string, cond func(Set) bool) Set {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		set, ch := f.Current()
		if cond(set) {
			return set
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%s: not within 10s; last set %v", what, set)
		}
	}
}

func has(s Source) func(Set) bool {
	return func(set Set) bool { _, ok := set[s]; return ok }
}

// jwksServer serves body at /jwks and counts the requests; status overrides 200.
type jwksServer struct {
	srv    *httptest.Server
	body   atomic.Value // string
	status atomic.Int64
	hits   atomic.Int64
	host   atomic.Value // string: the last request's Host
}

func newJWKSServer(t *testing.T, body string) *jwksServer {
	s := &jwksServer{}
	s.body.Store(body)
	s.host.Store("")
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.host.Store(r.Host)
		if r.URL.Path != "/jwks" {
			http.NotFound(w, r)
			return
		}
		if st := s.status.Load(); st != 0 {
			w.WriteHeader(int(st))
			return
		}
		io.WriteString(w, s.body.Load().(string))
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *jwksServer) addr() string { return s.srv.Listener.Addr().String() }

// TestFetchPlaintext: a plaintext node of the cluster gets GET of the URI's path with
// the URI's host in Host, whatever the node's address; the keys are fetched again after
// the cache duration and a new set replaces the old one.
func TestFetchPlaintext(t *testing.T) {
	srv := newJWKSServer(t, `{"keys":["one"]}`)
	f := start(t)
	src := Source{URI: "http://jwks.example.svc.cluster.local:8000/jwks", Cluster: "outbound|8000||jwks.example.svc.cluster.local"}
	f.Want([]Plan{{Source: src, Timeout: time.Second, CacheDuration: 200 * time.Millisecond, Nodes: []Node{{Addr: srv.addr()}}}})
	set := await(t, f, "first fetch", has(src))
	if r := set[src]; r.JWKS != `{"keys":["one"]}` || r.Err != "" {
		t.Fatalf("first fetch: %+v", r)
	}
	if h := srv.host.Load(); h != "jwks.example.svc.cluster.local:8000" {
		t.Errorf("Host %q, want the URI's authority", h)
	}
	srv.body.Store(`{"keys":["two"]}`)
	await(t, f, "the new keys after the cache duration", func(s Set) bool { return s[src].JWKS == `{"keys":["two"]}` })
}

// TestFetchFailures: a status other than 200, a refused connection and a cluster
// without endpoints are results with an error (tokens then fail, as Envoy's
// "Jwks remote fetch is failed"); a failed fetch is retried soon, and keys that can no
// longer be fetched after their cache duration are dropped, as Envoy's cache expires.
func TestFetchFailures(t *testing.T) {
	old := Retry
	Retry.Initial, Retry.Max = 50*time.Millisecond, 100*time.Millisecond
	t.Cleanup(func() { Retry = old })

	srv := newJWKSServer(t, `{"keys":[]}`)
	srv.status.Store(503)
	f := start(t)
	src := Source{URI: "http://jwks/jwks", Cluster: "c"}
	f.Want([]Plan{{Source: src, Timeout: time.Second, CacheDuration: time.Hour, Nodes: []Node{{Addr: srv.addr()}}}})
	set := await(t, f, "failed fetch", has(src))
	if r := set[src]; r.Err == "" || !strings.Contains(r.Err, "status 503") || r.JWKS != "" {
		t.Fatalf("503: %+v", r)
	}
	srv.status.Store(0)
	await(t, f, "retry after the failure", func(s Set) bool { return s[src].JWKS == `{"keys":[]}` })

	// Expired keys that cannot be fetched again are gone.
	f.Want([]Plan{{Source: src, Timeout: time.Second, CacheDuration: 50 * time.Millisecond, Nodes: []Node{{Addr: srv.addr()}}}})
	srv.status.Store(500)
	await(t, f, "expired keys dropped", func(s Set) bool { return s[src].Err != "" && s[src].JWKS == "" })

	// No endpoints; nothing listening.
	none := Source{URI: "http://jwks/jwks", Cluster: "empty"}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	refused := Source{URI: "http://jwks/jwks", Cluster: "refused"}
	f.Want([]Plan{{Source: none, Timeout: time.Second}, {Source: refused, Timeout: time.Second, Nodes: []Node{{Addr: closed}}}})
	set = await(t, f, "failures", func(s Set) bool { return has(none)(s) && has(refused)(s) })
	if r := set[none]; !strings.Contains(r.Err, "no endpoint") {
		t.Errorf("no endpoints: %+v", r)
	}
	if r := set[refused]; !strings.Contains(r.Err, "refused") {
		t.Errorf("refused: %+v", r)
	}
	if _, ok := set[src]; ok {
		t.Errorf("a source no longer wanted keeps its result")
	}
}

// TestFetchNodes: only nodes of the highest priority are used, and after a failure the
// next fetch takes the next node.
func TestFetchNodes(t *testing.T) {
	old := Retry
	Retry.Initial, Retry.Max = 20*time.Millisecond, 20*time.Millisecond
	t.Cleanup(func() { Retry = old })
	good, low := newJWKSServer(t, `{"keys":["good"]}`), newJWKSServer(t, `{"keys":["low"]}`)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	f := start(t)
	src := Source{URI: "http://jwks/jwks", Cluster: "c"}
	f.Want([]Plan{{Source: src, Timeout: time.Second, CacheDuration: time.Hour, Nodes: []Node{
		{Addr: low.addr(), Priority: 0}, {Addr: dead, Priority: 1}, {Addr: good.addr(), Priority: 1},
	}}})
	await(t, f, "the good node after the dead one", func(s Set) bool { return s[src].JWKS == `{"keys":["good"]}` })
	if n := low.hits.Load(); n != 0 {
		t.Errorf("a node of lower priority got %d requests", n)
	}
}

// TestFetchIstioMTLS: a node Envoy reaches with Istio mTLS is fetched from as an Envoy
// sidecar's cluster does: the workload certificate, the cluster's SNI and ALPN
// (istio-peer-exchange, istio: tcp_proxy's, since the fetch does not go through the
// HTTP filters that set Istio's HTTP ALPN), the server's SPIFFE identity checked. A
// server of another trust domain, or one the roots do not lead to, fails the fetch.
func TestFetchIstioMTLS(t *testing.T) {
	ca, err := meshpeer.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	serverLeaf, err := ca.Workload(ca.SPIFFE("auth", "jwks"))
	if err != nil {
		t.Fatal(err)
	}
	peer, err := meshpeer.StartPeer(ca, serverLeaf.TLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	client, err := ca.Workload(ca.SPIFFE("default", "app"))
	if err != nil {
		t.Fatal(err)
	}
	sni := "outbound_.8443_._.jwks.auth.svc.cluster.local"
	mtls := func(sans ...SANMatcher) *TLS {
		return &TLS{ServerName: sni, ALPN: []string{"istio-peer-exchange", "istio"}, CertPEM: string(client.CertPEM),
			Key: identity.NewSecret(string(client.KeyPEM)), RootsPEM: string(ca.PEM), SANs: sans,
			MinVersion: 0x0303, MaxVersion: 0x0303}
	}
	f := start(t)
	ok := Source{URI: "http://jwks.auth.svc.cluster.local:8443/jwks", Cluster: "outbound|8443||jwks.auth.svc.cluster.local"}
	wrongSAN := Source{URI: ok.URI, Cluster: "wrong-san"}
	otherCA := Source{URI: ok.URI, Cluster: "other-ca"}
	stranger, err := meshpeer.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	bad := mtls(SANMatcher{Match: "exact", Value: ca.SPIFFE("auth", "jwks")})
	bad.RootsPEM = string(stranger.PEM)
	f.Want([]Plan{
		{Source: ok, Timeout: 2 * time.Second, CacheDuration: time.Hour, Nodes: []Node{{Addr: peer.Addr, TLS: mtls(SANMatcher{Type: "uri", Match: "exact", Value: ca.SPIFFE("auth", "jwks")})}}},
		{Source: wrongSAN, Timeout: 2 * time.Second, CacheDuration: time.Hour, Nodes: []Node{{Addr: peer.Addr, TLS: mtls(SANMatcher{Match: "prefix", Value: "spiffe://other.domain/"})}}},
		{Source: otherCA, Timeout: 2 * time.Second, CacheDuration: time.Hour, Nodes: []Node{{Addr: peer.Addr, TLS: bad}}},
	})
	set := await(t, f, "the three fetches", func(s Set) bool { return has(ok)(s) && has(wrongSAN)(s) && has(otherCA)(s) })
	r := set[ok]
	if r.Err != "" {
		t.Fatalf("Istio mTLS fetch: %s", r.Err)
	}
	var seen meshpeer.Seen
	if err := json.Unmarshal([]byte(r.JWKS), &seen); err != nil {
		t.Fatalf("the peer's answer %q: %v", r.JWKS, err)
	}
	if seen.Chain != meshpeer.ChainMTLSTCP || seen.SNI != sni || seen.ClientID != ca.SPIFFE("default", "app") ||
		strings.Join(seen.ALPNOffered, ",") != "istio-peer-exchange,istio" || seen.Host != "jwks.auth.svc.cluster.local:8443" || seen.Path != "/jwks" {
		t.Errorf("the peer saw %+v", seen)
	}
	if r := set[wrongSAN]; !strings.Contains(r.Err, "no subject alt name") {
		t.Errorf("a server of another identity: %+v", r)
	}
	if r := set[otherCA]; !strings.Contains(r.Err, "certificate") || r.JWKS != "" {
		t.Errorf("a server the roots do not lead to: %+v", r)
	}
}

// TestFetchUnsupportedTLS: a TLS context the fetcher cannot reproduce fails the fetch
// without connecting.
func TestFetchUnsupportedTLS(t *testing.T) {
	srv := newJWKSServer(t, `{}`)
	f := start(t)
	src := Source{URI: "http://jwks/jwks", Cluster: "crl"}
	f.Want([]Plan{{Source: src, Timeout: time.Second, Nodes: []Node{{Addr: srv.addr(), TLS: &TLS{Unsupported: "a CRL"}}}}})
	set := await(t, f, "fetch", has(src))
	if r := set[src]; !strings.Contains(r.Err, "a CRL") || srv.hits.Load() != 0 {
		t.Errorf("got %+v after %d requests", r, srv.hits.Load())
	}
}

func TestDNSMatch(t *testing.T) {
	for _, c := range []struct {
		name, pattern string
		want          bool
	}{
		{"a.example.com", "a.example.com", true},
		{"A.Example.com", "a.example.COM", true},
		{"a.example.com", "*.example.com", true},
		{"a.b.example.com", "*.example.com", false},
		{"example.com", "*.example.com", false},
		{"a.example.com", "*example.com", false},
	} {
		if got := dnsMatch(c.name, c.pattern); got != c.want {
			t.Errorf("dnsMatch(%q, %q) = %v", c.name, c.pattern, got)
		}
	}
}

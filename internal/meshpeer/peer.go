package meshpeer

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Chains of an Istio sidecar's inbound listener (virtualInbound, PERMISSIVE): how a
// Peer answered a connection.
const (
	// ChainPlaintext: no TLS.
	ChainPlaintext = "plaintext"
	// ChainMTLSHTTP: TLS offering one of Istio's HTTP ALPN names (istio-http/1.0,
	// istio-http/1.1, istio-h2, which Istio's outbound istio.alpn filter sets): mTLS
	// terminated, HTTP served with the inbound HTTP filters (authorization policies).
	ChainMTLSHTTP = "mtls-http"
	// ChainMTLSTCP: TLS offering istio-peer-exchange or istio: mTLS terminated, the
	// bytes passed on as TCP.
	ChainMTLSTCP = "mtls-tcp"
)

// ALPN names that pick Envoy's inbound chains (istiod's virtualInbound).
var (
	httpALPN = []string{"istio-http/1.0", "istio-http/1.1", "istio-h2"}
	tcpALPN  = []string{"istio-peer-exchange", "istio"}
)

// Seen is what a Peer saw of a request, its answer (JSON).
type Seen struct {
	Chain string `json:"chain"`
	// ALPNOffered is the client's ALPN list; ALPN the protocol negotiated.
	ALPNOffered []string `json:"alpn_offered"`
	ALPN        string   `json:"alpn"`
	SNI         string   `json:"sni"`
	// ClientID is the URI SAN of the client's certificate.
	ClientID string `json:"client_id"`
	Host     string `json:"host"`
	Path     string `json:"path"`
	// Conn numbers the connection (from 1), to tell new connections from reused ones.
	Conn int64 `json:"conn"`
}

// Peer serves HTTP as an Istio sidecar's inbound listener in PERMISSIVE mode:
// plaintext, or Istio mTLS chosen by the client's ALPN (see the Chain constants; TLS
// without Istio's ALPN takes the TLS passthrough chain, to an application that
// expects plaintext, and fails), presenting its workload certificate and requiring a
// client certificate from the mesh (SAN prefix spiffe://<trust domain>/, as istiod
// configures it). Every answer is a Seen.
type Peer struct {
	Addr string
	// Handshakes counts TLS handshakes (successful or not), Conns connections.
	Handshakes atomic.Int64
	Conns      atomic.Int64

	trustDomain string
	roots       *x509.CertPool
	cert        tls.Certificate
	ln          net.Listener
	srv         *http.Server
	mu          sync.Mutex
	hello       map[net.Conn]*tls.ClientHelloInfo // guarded by mu
}

// StartPeer serves on a free port of 127.0.0.1 with cert, accepting clients of ca.
func StartPeer(ca *CA, cert tls.Certificate) (*Peer, error) {
	return StartPeerTrusting(ca.TrustDomain, ca.Pool(), cert)
}

// StartPeerTrusting is StartPeer for a mesh whose CA is not a CA of this package (a
// real istiod's): clients must chain to roots and carry a SPIFFE ID of trustDomain.
func StartPeerTrusting(trustDomain string, roots *x509.CertPool, cert tls.Certificate) (*Peer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Peer{Addr: ln.Addr().String(), trustDomain: trustDomain, roots: roots, cert: cert, hello: map[net.Conn]*tls.ClientHelloInfo{}}
	p.ln = &sniffing{Listener: ln, p: p, done: make(chan struct{})}
	p.srv = &http.Server{
		Handler: http.HandlerFunc(p.serve),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, &connInfo{c: c, n: p.Conns.Add(1)})
		},
		// The TCP chain hands the bytes to the application, which speaks HTTP/1.1.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){
			"istio-peer-exchange": func(s *http.Server, c *tls.Conn, h http.Handler) {
				// Hidden from the second server as TLS, which would look for a
				// protocol handler again.
				one := &http.Server{Handler: h, ConnContext: s.ConnContext}
				_ = one.Serve(&oneConn{c: tcpChain{Conn: c, tls: c}, done: make(chan struct{})})
			},
		},
	}
	go func() { _ = p.srv.Serve(p.ln) }()
	return p, nil
}

// Close stops the server.
func (p *Peer) Close() error { return p.srv.Close() }

type connKey struct{}

type connInfo struct {
	c net.Conn
	n int64
}

func (p *Peer) serve(w http.ResponseWriter, r *http.Request) {
	ci := r.Context().Value(connKey{}).(*connInfo)
	s := Seen{Chain: ChainPlaintext, Host: r.Host, Path: r.URL.Path, Conn: ci.n}
	tc, ok := ci.c.(*tls.Conn)
	if t, tcp := ci.c.(tcpChain); tcp {
		tc, ok = t.tls, true
	}
	if ok {
		st := tc.ConnectionState()
		s.ALPN, s.SNI = st.NegotiatedProtocol, st.ServerName
		if len(st.PeerCertificates) > 0 && len(st.PeerCertificates[0].URIs) > 0 {
			s.ClientID = st.PeerCertificates[0].URIs[0].String()
		}
		p.mu.Lock()
		h := p.hello[tc.NetConn()]
		p.mu.Unlock()
		if h != nil {
			s.ALPNOffered = h.SupportedProtos
			s.Chain = chainOf(h.SupportedProtos)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s)
}

func chainOf(alpn []string) string {
	for _, a := range alpn {
		if slices.Contains(httpALPN, a) {
			return ChainMTLSHTTP
		}
	}
	for _, a := range alpn {
		if slices.Contains(tcpALPN, a) {
			return ChainMTLSTCP
		}
	}
	return ""
}

// config answers a ClientHello as Envoy's filter chain match does.
func (p *Peer) config(h *tls.ClientHelloInfo) (*tls.Config, error) {
	p.Handshakes.Add(1)
	chain := chainOf(h.SupportedProtos)
	if chain == "" {
		return nil, errors.New("TLS without Istio's ALPN takes the passthrough chain to a plaintext application")
	}
	p.mu.Lock()
	p.hello[h.Conn] = h
	p.mu.Unlock()
	protos := []string{"h2", "http/1.1"}
	if chain == ChainMTLSTCP {
		protos = []string{"istio-peer-exchange", "h2", "http/1.1"}
	}
	// Envoy (BoringSSL) goes on without ALPN when the lists do not meet; Go's server
	// would refuse the handshake.
	protos = slices.DeleteFunc(protos, func(p string) bool { return !slices.Contains(h.SupportedProtos, p) })
	prefix := "spiffe://" + p.trustDomain + "/"
	return &tls.Config{
		Certificates: []tls.Certificate{p.cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.roots,
		NextProtos:   protos,
		MinVersion:   tls.VersionTLS12,
		VerifyPeerCertificate: func(_ [][]byte, chains [][]*x509.Certificate) error {
			for _, u := range chains[0][0].URIs {
				if strings.HasPrefix(u.String(), prefix) {
					return nil
				}
			}
			return fmt.Errorf("client certificate without a SAN under %s", prefix)
		},
	}, nil
}

// sniffing hands plaintext connections to the HTTP server as they are and TLS ones
// (first byte 0x16, a handshake record) wrapped in tls.Server. Each connection's first
// byte is awaited on a goroutine of its own, so a silent client holds up no other.
type sniffing struct {
	net.Listener
	p     *Peer
	once  sync.Once
	conns chan net.Conn
	errs  chan error
	done  chan struct{}
	shut  sync.Once
}

func (l *sniffing) Close() error {
	l.shut.Do(func() { close(l.done) })
	return l.Listener.Close()
}

func (l *sniffing) Accept() (net.Conn, error) {
	l.once.Do(func() {
		l.conns, l.errs = make(chan net.Conn), make(chan error, 1)
		go l.loop()
	})
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *sniffing) loop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			l.errs <- err
			return
		}
		go func() {
			br := bufio.NewReader(c)
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			b, err := br.Peek(1)
			_ = c.SetReadDeadline(time.Time{})
			pc := &peeked{Conn: c, r: br}
			var out net.Conn = pc
			if err == nil && b[0] == 0x16 {
				out = tls.Server(pc, &tls.Config{GetConfigForClient: l.p.config})
			}
			select {
			case l.conns <- out:
			case <-l.done:
				_ = c.Close()
			}
		}()
	}
}

// tcpChain is a TLS connection of the TCP chain, served as plain HTTP/1.1.
type tcpChain struct {
	net.Conn
	tls *tls.Conn
}

// oneConn is a listener that accepts c once.
type oneConn struct {
	c    net.Conn
	once sync.Once
	done chan struct{}
}

func (l *oneConn) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.c })
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConn) Close() error {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	return nil
}

func (l *oneConn) Addr() net.Addr { return l.c.LocalAddr() }

type peeked struct {
	net.Conn
	r *bufio.Reader
}

func (c *peeked) Read(b []byte) (int, error) { return c.r.Read(b) }

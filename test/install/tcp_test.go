package install_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/test/netns"
)

// A line protocol that is not HTTP, for the TCP servers of the tests: the client sends
// "PING\n", the server answers "PONG <its address> <the connection's source address>\n".
// A server-first server (MySQL, SMTP) greets with "HELLO <its address>\n" before it reads.

// answerPing serves one connection of the line protocol, whose reader is r.
func answerPing(c net.Conn, r *bufio.Reader, addr string, greet bool) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if greet {
		if _, err := fmt.Fprintf(c, "HELLO %s\n", addr); err != nil {
			return
		}
	}
	line, err := r.ReadString('\n')
	if err != nil || line != "PING\n" {
		return
	}
	host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	_, _ = fmt.Fprintf(c, "PONG %s %s\n", addr, host)
}

// tcpServe serves the line protocol on addr in ns (greeting first when greet) until the
// test ends; it returns the number of connections that reached it.
func tcpServe(t *testing.T, ns *netns.NS, addr string, greet bool) *atomic.Int64 {
	t.Helper()
	l, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			go answerPing(c, bufio.NewReader(c), addr, greet)
		}
	}()
	return &n
}

// ping speaks the line protocol from ns to addr: it returns the greeting ("" without one,
// when greet is false) and the answer, each without its newline.
func ping(ns *netns.NS, addr string, greet bool) (hello, pong string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ns.Dial(ctx, "tcp", addr)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if greet {
		if hello, err = r.ReadString('\n'); err != nil {
			return "", "", fmt.Errorf("no greeting: %w", err)
		}
	}
	if _, err := io.WriteString(c, "PING\n"); err != nil {
		return hello, "", err
	}
	pong, err = r.ReadString('\n')
	return strings.TrimSuffix(hello, "\n"), strings.TrimSuffix(pong, "\n"), err
}

// closedWithoutAnswer reports whether a connection from ns to addr that speaks first (the
// line protocol, or an HTTP request when http) is closed without a byte of answer, as
// Envoy's BlackHoleCluster closes it; it says what happened instead.
func closedWithoutAnswer(ns *netns.NS, addr string, http bool) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ns.Dial(ctx, "tcp", addr)
	if err != nil {
		// Refused: nothing took the connection either.
		return true, ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := "PING\n"
	if http {
		msg = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
	}
	_, _ = io.WriteString(c, msg)
	b, err := io.ReadAll(c)
	var ne net.Error
	if len(b) > 0 || (errors.As(err, &ne) && ne.Timeout()) {
		return false, fmt.Sprintf("answer %q, %v", b, err)
	}
	return true, ""
}

// serveMixed serves h (HTTP) and the line protocol on one address in ns, as a server
// outside the mesh may do on a port the mesh has an HTTP listener for: a connection
// that starts with "PING" gets the line protocol, any other goes to h. It returns the
// number of line-protocol connections.
func serveMixed(t *testing.T, ns *netns.NS, addr string, h http.Handler) *atomic.Int64 {
	t.Helper()
	l, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	hl := &chanListener{addr: l.Addr(), conns: make(chan net.Conn), done: make(chan struct{})}
	var pings atomic.Int64
	go func() {
		defer hl.Close()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				r := bufio.NewReader(c)
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				b, err := r.Peek(4)
				_ = c.SetReadDeadline(time.Time{})
				if err == nil && string(b) == "PING" {
					pings.Add(1)
					answerPing(c, r, addr, false)
					return
				}
				select {
				case hl.conns <- &readerConn{Conn: c, r: r}:
				case <-hl.done:
					c.Close()
				}
			}()
		}
	}()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(hl) }()
	t.Cleanup(func() { l.Close(); _ = srv.Close() })
	return &pings
}

// chanListener is a net.Listener of the connections sent to it.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

// readerConn is a connection whose first bytes were read into r.
type readerConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// tlsServe serves, on addr in ns over TLS with a certificate for host, what echo serves
// (a JSON description of each request); it returns the certificate's pool for clients and
// the number of requests it answered.
func tlsServe(t *testing.T, ns *netns.NS, addr, host string) (*x509.CertPool, *atomic.Int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: host},
		IPAddresses:  []net.IP{net.ParseIP(host)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	l, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tl := tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	h, n := echoHandler(addr)
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: h}
	go func() { _ = srv.Serve(tl) }()
	t.Cleanup(func() { _ = srv.Close() })
	return pool, n
}

// requestTLS sends GET / over TLS from ns to addr, verifying the server's certificate
// against roots, and decodes the answer.
func requestTLS(ns *netns.NS, addr string, roots *x509.CertPool) (seen, error) {
	tr := &http.Transport{
		DialContext:     func(ctx context.Context, network, a string) (net.Conn, error) { return ns.Dial(ctx, network, a) },
		TLSClientConfig: &tls.Config{RootCAs: roots},
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: tr}).Get("https://" + addr + "/")
	if err != nil {
		return seen{}, err
	}
	defer resp.Body.Close()
	var s seen
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("status %d", resp.StatusCode)
	}
	err = json.NewDecoder(resp.Body).Decode(&s)
	return s, err
}

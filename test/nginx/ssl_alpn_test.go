package nginx

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/internal/meshpeer"
)

// sslALPNConf has two servers with the same certificate (the http level's, so each gets a
// TLS context of its own), each on a listener without and one with HTTP/2: nginx's
// ALPN selection (default) and amesh_ssl_alpn_optional's. strict.test shares the second
// server's first address and has the directive off, so SNI switches a handshake to its
// context and nginx's selection. Every server answers with the request's protocol and
// the negotiated one.
const sslALPNConf = stockLuaNginx + `
    ssl_certificate {{.Cert}};
    ssl_certificate_key {{.Key}};
    server {
        listen 127.0.0.1:{{.Off}} ssl;
        listen 127.0.0.1:{{.OffH2}} ssl http2;
        location / {
            return 200 "$server_protocol alpn=$ssl_alpn_protocol";
        }
    }
    server {
        listen 127.0.0.1:{{.On}} ssl;
        listen 127.0.0.1:{{.OnH2}} ssl http2;
        amesh_ssl_alpn_optional on;
        location / {
            return 200 "$server_protocol alpn=$ssl_alpn_protocol";
        }
    }
    server {
        listen 127.0.0.1:{{.On}} ssl;
        server_name strict.test;
        amesh_ssl_alpn_optional off;
        location / {
            return 200 "$server_protocol alpn=$ssl_alpn_protocol";
        }
    }
}
`

// alpnGet sends GET / to 127.0.0.1:port over TLS, offering protos in ALPN and sni (none
// if empty), over HTTP/2 when the server selects h2. It returns the negotiated protocol
// and the answer: the request's protocol and the protocol nginx saw negotiated.
func alpnGet(port int, sni string, protos []string) (string, string, error) {
	var negotiated string
	tr := &http.Transport{
		ForceAttemptHTTP2: true,
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d := tls.Dialer{Config: &tls.Config{
				ServerName: sni,
				NextProtos: protos,
				// The test is about ALPN, not the server's name.
				InsecureSkipVerify: true, //nolint:gosec
			}}
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			negotiated = c.(*tls.Conn).ConnectionState().NegotiatedProtocol
			return c, nil
		},
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(fmt.Sprintf("https://127.0.0.1:%d/", port))
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", "", err
	}
	if !strings.HasPrefix(string(b), resp.Proto+" ") {
		return "", "", fmt.Errorf("answer %q over %s", b, resp.Proto)
	}
	return negotiated, string(b), nil
}

// amesh_ssl_alpn_optional: a client whose ALPN offer has nothing nginx speaks (Istio's TCP
// ALPN, istio-peer-exchange and istio; h2 alone where there is no HTTP/2) completes the
// handshake without a protocol and is served HTTP/1.1, as by Envoy, where nginx's own
// selection refuses the handshake (no_application_protocol). Every offer nginx can meet
// gets exactly nginx's choice: h2 first on an HTTP/2 listener, then http/1.1 (Istio's
// HTTP ALPN, istio-http/1.1, istio and http/1.1, gets http/1.1). A server name whose
// server has the directive off keeps nginx's selection on the same listener.
func TestSSLALPNOptional(t *testing.T) {
	requireNginx(t)
	mods := nginxModules(t)
	ca, err := meshpeer.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Server("alpn.test", "strict.test")
	if err != nil {
		t.Fatal(err)
	}
	prefix := t.TempDir()
	if err := os.Chmod(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"cert.pem": leaf.CertPEM, "key.pem": leaf.KeyPEM} {
		if err := os.WriteFile(filepath.Join(prefix, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	off, offH2, on, onH2 := freePort(t), freePort(t), freePort(t), freePort(t)
	startStockNginx(t, prefix, sslALPNConf, map[string]any{
		"Module": filepath.Join(mods, "ngx_http_amesh_original_dst_module.so"),
		"Off":    off, "OffH2": offH2, "On": on, "OnH2": onH2,
		"Cert": filepath.Join(prefix, "cert.pem"), "Key": filepath.Join(prefix, "key.pem"),
	}, on)

	type listener struct {
		name string
		port int
		sni  string
	}
	off1, offH2l := listener{"directive off", off, ""}, listener{"directive off, http2", offH2, ""}
	on1, onH2l := listener{"directive on", on, ""}, listener{"directive on, http2", onH2, ""}
	strict := listener{"directive on, SNI to a server with it off", on, "strict.test"}
	const refused = "refused"
	cases := []struct {
		offer []string
		want  map[listener]string // the negotiated protocol, or refused
	}{
		{[]string{"istio-peer-exchange", "istio"}, map[listener]string{off1: refused, offH2l: refused, on1: "", onH2l: "", strict: refused}},
		{[]string{"h2", "http/1.1"}, map[listener]string{off1: "http/1.1", offH2l: "h2", on1: "http/1.1", onH2l: "h2", strict: "http/1.1"}},
		{[]string{"http/1.1"}, map[listener]string{off1: "http/1.1", offH2l: "http/1.1", on1: "http/1.1", onH2l: "http/1.1", strict: "http/1.1"}},
		{[]string{"istio-http/1.1", "istio", "http/1.1"}, map[listener]string{off1: "http/1.1", offH2l: "http/1.1", on1: "http/1.1", onH2l: "http/1.1", strict: "http/1.1"}},
		{[]string{"h2"}, map[listener]string{off1: refused, offH2l: "h2", on1: "", onH2l: "h2", strict: refused}},
		{nil, map[listener]string{off1: "", offH2l: "", on1: "", onH2l: "", strict: ""}},
	}
	for _, c := range cases {
		for l, want := range c.want {
			negotiated, answer, err := alpnGet(l.port, l.sni, c.offer)
			what := fmt.Sprintf("ALPN %q, %s", c.offer, l.name)
			if want == refused {
				if err == nil || !strings.Contains(err.Error(), "no application protocol") {
					t.Errorf("%s: %q %q %v; want the handshake refused with no_application_protocol", what, negotiated, answer, err)
				}
				continue
			}
			wantAnswer := "HTTP/1.1 alpn=" + want
			if want == "h2" {
				wantAnswer = "HTTP/2.0 alpn=h2"
			}
			if err != nil || negotiated != want || answer != wantAnswer {
				t.Errorf("%s: negotiated %q, answer %q, %v; want %q and %q", what, negotiated, answer, err, want, wantAnswer)
			}
		}
	}
}

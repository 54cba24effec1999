package nginx

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/internal/meshpeer"
)

// peerHandshakeConf has three TLS servers that require a client certificate of the mesh's
// roots (roots.pem): Checked applies amesh_tls_verify_client from its ssl_certificate
// phase with a profile of URI SAN matchers (the prefix of the mesh's trust domain) and the
// roots nginx's ssl_client_certificate set, OwnRoots with a profile that carries the roots
// itself on a server that verifies nothing, and Nginx leaves the check to nginx alone.
// Each answers with nginx's verification result.
const peerHandshakeConf = stockLuaNginx + `
    ssl_certificate {{.Cert}};
    ssl_certificate_key {{.Key}};
    ssl_session_cache off;
    ssl_session_tickets off;
    server {
        listen 127.0.0.1:{{.Checked}} ssl;
        ssl_client_certificate {{.Roots}};
        ssl_verify_client on;
        ssl_certificate_by_lua_block {
            require("peerhandshakecheck").run("checked", {sans = {
                {type = "uri", match = "prefix", value = "spiffe://cluster.local/"},
            }})
        }
        location / {
            return 200 "verify=$ssl_client_verify";
        }
    }
    server {
        listen 127.0.0.1:{{.OwnRoots}} ssl;
        ssl_certificate_by_lua_block {
            require("peerhandshakecheck").run("own-roots", {ca_file = "{{.Roots}}", sans = {
                {type = "uri", match = "exact", value = "spiffe://cluster.local/ns/default/sa/reviews"},
            }})
        }
        location / {
            return 200 "verify=$ssl_client_verify";
        }
    }
    server {
        listen 127.0.0.1:{{.Nginx}} ssl;
        ssl_client_certificate {{.Roots}};
        ssl_verify_client on;
        location / {
            return 200 "verify=$ssl_client_verify";
        }
    }
}
`

// handshakeGet connects to 127.0.0.1:port over TLS up to version max with cert as the
// client certificate (nil: none), whatever CAs the server names, and sends GET /. It
// returns the handshake's error, else the answer's status line and body, or the error
// reading it.
func handshakeGet(port int, cert *tls.Certificate, max uint16) (hsErr error, answer string, readErr error) {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		return err, "", nil
	}
	tc := tls.Client(c, &tls.Config{
		MaxVersion:         max,
		InsecureSkipVerify: true, //nolint:gosec // the test is about the client's certificate
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert == nil {
				return &tls.Certificate{}, nil
			}
			return cert, nil
		},
	})
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		return err, "", nil
	}
	if _, err := io.WriteString(tc, "GET / HTTP/1.0\r\nHost: x\r\n\r\n"); err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(tc)
	if len(b) > 0 {
		lines := strings.Split(string(b), "\r\n")
		return nil, lines[0] + " " + lines[len(lines)-1], nil
	}
	return nil, "", err
}

// TestPeerHandshake: amesh_tls_verify_client (nginx/upstream_tls), applied from an
// ssl_certificate_by_lua block through amesh.upstream_tls.verify_client, refuses in the
// handshake, with a TLS alert, a client certificate that does not chain to the roots,
// one of the roots whose URI SANs meet none of the profile's matchers (another trust
// domain), and a client without a certificate; a certificate of the trust domain
// completes the handshake and gets its answer. TLS 1.2 fails Handshake itself; TLS 1.3
// clients finish their side first, and read the server's alert instead of an answer.
// nginx alone completes the same handshakes and refuses with a 400 afterwards, or
// serves the other trust domain.
func TestPeerHandshake(t *testing.T) {
	requireNginx(t)
	mods := nginxModules(t)
	ca, err := meshpeer.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	other, err := meshpeer.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Server("productpage.test")
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(ca *meshpeer.CA, id string) *tls.Certificate {
		l, err := ca.Workload(id)
		if err != nil {
			t.Fatal(err)
		}
		return &l.TLS
	}
	reviews := leaf(ca, "spiffe://cluster.local/ns/default/sa/reviews")
	ratings := leaf(ca, "spiffe://cluster.local/ns/default/sa/ratings")
	foreign := leaf(ca, "spiffe://evil.example/ns/default/sa/reviews")
	otherCA := leaf(other, "spiffe://cluster.local/ns/default/sa/reviews")

	prefix := t.TempDir()
	if err := os.Chmod(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"cert.pem": server.CertPEM, "key.pem": server.KeyPEM, "roots.pem": ca.PEM} {
		if err := os.WriteFile(filepath.Join(prefix, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	checked, ownRoots, plain := freePort(t), freePort(t), freePort(t)
	startStockNginx(t, prefix, peerHandshakeConf, map[string]any{
		"Module":  filepath.Join(mods, "ngx_http_amesh_upstream_tls_module.so"),
		"Checked": checked, "OwnRoots": ownRoots, "Nginx": plain,
		"Cert": filepath.Join(prefix, "cert.pem"), "Key": filepath.Join(prefix, "key.pem"), "Roots": filepath.Join(prefix, "roots.pem"),
	}, plain)

	const ok = "HTTP/1.1 200 OK verify=SUCCESS"
	const refused = "refused"
	cases := []struct {
		what string
		cert *tls.Certificate
		want map[int]string // by port: the answer, refused in the handshake, or a prefix
	}{
		{"a certificate of the trust domain", reviews, map[int]string{checked: ok, ownRoots: ok, plain: ok}},
		{"another identity of the trust domain", ratings, map[int]string{checked: ok, ownRoots: refused, plain: ok}},
		{"a certificate of the roots for another trust domain", foreign, map[int]string{checked: refused, ownRoots: refused, plain: ok}},
		{"a certificate of another CA", otherCA, map[int]string{checked: refused, ownRoots: refused, plain: "HTTP/1.1 400 "}},
		{"no certificate", nil, map[int]string{checked: refused, ownRoots: refused, plain: "HTTP/1.1 400 "}},
	}
	name := map[int]string{checked: "checked", ownRoots: "profile's own roots", plain: "nginx alone"}
	for _, c := range cases {
		for port, want := range c.want {
			for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
				what := fmt.Sprintf("%s, %s, %s", c.what, name[port], tls.VersionName(v))
				hsErr, answer, readErr := handshakeGet(port, c.cert, v)
				switch {
				case want != refused:
					if hsErr != nil || readErr != nil || !strings.HasPrefix(answer, want) {
						t.Errorf("%s: %v %q %v; want the answer %q", what, hsErr, answer, readErr, want)
					}
				case v == tls.VersionTLS12:
					if hsErr == nil || !strings.Contains(hsErr.Error(), "remote error: tls: ") {
						t.Errorf("%s: handshake %v, then %q %v; want the handshake refused with an alert", what, hsErr, answer, readErr)
					}
				default:
					// TLS 1.3: the server verifies the client's certificate after the
					// client's Finished; its alert is what the client reads first.
					if hsErr == nil && (readErr == nil || !strings.Contains(readErr.Error(), "remote error: tls: ") || answer != "") {
						t.Errorf("%s: %q %v; want the server's alert before any answer", what, answer, readErr)
					} else if hsErr != nil && !strings.Contains(hsErr.Error(), "remote error: tls: ") {
						t.Errorf("%s: handshake %v; want an alert", what, hsErr)
					}
				}
			}
		}
	}
	log, _ := os.ReadFile(filepath.Join(prefix, "error.log"))
	for _, want := range []string{
		"amesh downstream tls: the client's certificate has none of the expected subject alt names",
		"amesh downstream tls: certificate verify error: (20:",
	} {
		if !strings.Contains(string(log), want) {
			t.Errorf("error log lacks %q", want)
		}
	}
	if strings.Contains(string(log), "peerhandshakecheck:") {
		t.Errorf("the ssl_certificate phase failed:\n%s", log)
	}
}

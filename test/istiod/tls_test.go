package istiod_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/internal/xds/client"
)

// TestTLS is the production path: istiod's TLS port (15012 in a real install) with the serving
// certificate from istiod's self-signed CA, verified against the mesh root certificate that
// istiod publishes in every namespace (ConfigMap istio-ca-root-cert, what a sidecar mounts),
// and a service-account token from the API server's TokenRequest (audience istio-ca) that
// istiod verifies with TokenReview.
func TestTLS(t *testing.T) {
	requireEnv(t)
	dir := t.TempDir()
	ca := filepath.Join(dir, "root-cert.pem")
	writeFile(t, ca, rootCert(t))
	ctx, cancel := context.WithTimeout(context.Background(), mustHappen)
	defer cancel()
	tok, err := env.kube.Client.TokenRequest(ctx, namespace, "productpage", "istio-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	token := filepath.Join(dir, "istio-token")
	writeFile(t, token, tok)
	tlsEnv := func(proto client.Protocol, tokenFile string) []string {
		return append(sidecarEnv(t, env.istiod.SecureGRPCAddr, proto),
			"AMESH_XDS_TLS=true", "AMESH_XDS_CA_FILE="+ca,
			"AMESH_XDS_SERVER_NAME="+env.istiod.ServerName, "AMESH_XDS_TOKEN_FILE="+tokenFile)
	}

	for _, proto := range protocols {
		t.Run(string(proto), func(t *testing.T) {
			sc := startSidecar(t, tlsEnv(proto, token))
			snap := sc.next(t, mustHappen)
			if snap.RouteConfigs["9080"] == nil || snap.Clusters[outbound("9080", "v1", reviews)] == nil {
				t.Errorf("incomplete config over TLS")
			}
		})
	}

	t.Run("wrong-root", func(t *testing.T) {
		// The API server's certificate is not the mesh root: the client must refuse istiod.
		e := append(tlsEnv(client.Delta, token), "AMESH_XDS_CA_FILE="+env.kube.Client.CAFile)
		sc := startSidecar(t, e)
		waitUntil(t, "the client refuses istiod's certificate", func() bool {
			return sc.c.Status().LastError != ""
		})
		if st := sc.c.Status(); st.Ready || st.Seq != 0 {
			t.Errorf("a client with the wrong root got config: %+v", st)
		}
		if e := sc.c.Status().LastError; !strings.Contains(e, "certificate") {
			t.Errorf("LastError = %q, want a certificate error", e)
		}
	})

	t.Run("bad-token", func(t *testing.T) {
		bad := filepath.Join(dir, "bad-token")
		// A well-formed token of another issuer's key is as good as garbage to istiod.
		writeFile(t, bad, tok[:len(tok)-8]+"AAAAAAAA")
		sc := startSidecar(t, tlsEnv(client.Delta, bad))
		waitUntil(t, "istiod rejects the stream", func() bool {
			return sc.c.Status().LastError != ""
		})
		if st := sc.c.Status(); st.Ready || st.Seq != 0 {
			t.Errorf("a client with a bad token got config: %+v", st)
		}
		if e := sc.c.Status().LastError; !strings.Contains(strings.ToLower(e), "authenticat") {
			t.Errorf("LastError = %q, want an authentication error", e)
		}
	})
}

// rootCert waits for istiod's mesh root certificate in the workload's namespace.
func rootCert(t *testing.T) string {
	t.Helper()
	var pem string
	waitUntil(t, "ConfigMap istio-ca-root-cert", func() bool {
		o, err := env.kube.Client.Get(context.Background(), "/api/v1/namespaces/"+namespace+"/configmaps/istio-ca-root-cert")
		if err != nil {
			return false
		}
		data, _ := o["data"].(map[string]any)
		pem, _ = data["root-cert.pem"].(string)
		return strings.Contains(pem, "BEGIN CERTIFICATE")
	})
	return pem
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

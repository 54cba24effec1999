package istiod_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/internal/identity/identitytest"
	upstreamtls "github.com/amesh-dev/amesh/internal/translate/upstream"
	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/test/istiod/harness"
)

// credentialObjects are a Kubernetes Secret with tls.crt, tls.key and ca.crt of f, a
// ServiceEntry and a DestinationRule MUTUAL naming the secret as credentialName,
// for productpage.
func credentialObjects(f identitytest.Files) []harness.Object {
	return []harness.Object{
		{"apiVersion": "v1", "kind": "Secret",
			"metadata":   map[string]any{"name": "cred-mutual", "namespace": namespace},
			"stringData": map[string]any{"tls.crt": string(f.Chain), "tls.key": string(f.Key), "ca.crt": string(f.Root)}},
		{"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
			"metadata": map[string]any{"name": "cred-mutual", "namespace": namespace},
			"spec": map[string]any{"hosts": []any{"credmutual.example.com"}, "location": "MESH_EXTERNAL", "resolution": "STATIC",
				"ports":     []any{map[string]any{"number": 8443, "name": "http", "protocol": "HTTP"}},
				"endpoints": []any{map[string]any{"address": "127.0.0.66"}}}},
		{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
			"metadata": map[string]any{"name": "cred-mutual", "namespace": namespace},
			"spec": map[string]any{"host": "credmutual.example.com",
				"workloadSelector": map[string]any{"matchLabels": map[string]any{"app": "productpage"}},
				"trafficPolicy": map[string]any{"tls": map[string]any{"mode": "MUTUAL", "credentialName": "cred-mutual",
					"sni": "credmutual.example.com"}}}},
	}
}

// A DestinationRule MUTUAL with credentialName: istiod names the Secret's parts in the
// cluster as SDS secrets over ADS, "kubernetes://cred-mutual" (tls.crt, tls.key) and
// "kubernetes://cred-mutual-cacert" (ca.crt), and serves them on the ADS stream to a
// proxy authenticated on its TLS port (a service-account token, as a sidecar
// connects): amesh's client subscribes, gets both with the Secret's content, follows
// the Secret's rotation, and the cluster's TLS is served from them. istiod's
// pilot/pkg/xds/sds.go also requires, for the certificate and key (not for the
// "-cacert"), that the proxy's service account may list secrets in its namespace (a
// SubjectAccessReview); this tier's API server authorizes everything
// (--authorization-mode=AlwaysAllow), so that check passes here as it does for a
// gateway's service account with its Role. On the plaintext port istiod verifies no
// identity and serves no secret at all: the client reports both missing after its
// resource timeout and the cluster's endpoints stay out.
func TestCredentialNameSecrets(t *testing.T) {
	requireEnv(t)
	ca, err := identitytest.NewCA("credential")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ca.Issue(identitytest.Options{SPIFFE: "spiffe://example.com/client"})
	if err != nil {
		t.Fatal(err)
	}
	objs := credentialObjects(f)
	ctx, cancel := context.WithTimeout(context.Background(), mustHappen)
	defer cancel()
	if err := env.kube.Client.ApplyAll(ctx, objs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteAll(t, objs) })

	const cluster = "outbound|8443||credmutual.example.com"
	cert, caName := "kubernetes://cred-mutual", "kubernetes://cred-mutual-cacert"

	dir := t.TempDir()
	root := filepath.Join(dir, "root-cert.pem")
	writeFile(t, root, rootCert(t))
	tok, err := env.kube.Client.TokenRequest(ctx, namespace, "productpage", "istio-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	token := filepath.Join(dir, "istio-token")
	writeFile(t, token, tok)

	for _, proto := range protocols {
		t.Run(string(proto), func(t *testing.T) {
			sc := startSidecar(t, append(sidecarEnv(t, env.istiod.SecureGRPCAddr, proto),
				"AMESH_XDS_TLS=true", "AMESH_XDS_CA_FILE="+root,
				"AMESH_XDS_SERVER_NAME="+env.istiod.ServerName, "AMESH_XDS_TOKEN_FILE="+token))
			snap := sc.waitFor(t, "the credentialName's secrets", func(s *resource.State) bool {
				return s.Clusters[cluster] != nil && s.Secrets[cert] != nil && s.Secrets[caName] != nil
			})
			if got := snap.Clusters[cluster].Secrets(); !slices.Equal(got, []string{cert, caName}) {
				t.Errorf("cluster names secrets %v", got)
			}
			if got := secretNamesOf(snap); !slices.Equal(got, []string{cert, caName}) {
				t.Errorf("secrets %v, want exactly the cluster's", got)
			}
			c := snap.Secrets[cert]
			if !c.IsCert() || c.CertChain != string(f.Chain) || c.Key.Reveal() != string(f.Key) {
				t.Errorf("certificate secret %v does not hold the Secret's tls.crt and tls.key", c)
			}
			v := snap.Secrets[caName]
			if v.Validation == nil || string(v.Validation.GetTrustedCa().GetInlineBytes()) != string(f.Root) {
				t.Errorf("validation context secret %v does not hold the Secret's ca.crt", v)
			}
			conf, _ := upstreamtls.ClusterTLS(cluster, snap.Clusters[cluster].Shape(), upstreamtls.Options{Secrets: snap.Secrets})
			if conf == nil || conf.Cert == nil || conf.Cert.SSLID != upstreamtls.SecretSSLID(cert) || conf.CA == nil ||
				conf.CA.PEM != string(f.Root) || conf.SNI != "credmutual.example.com" {
				t.Errorf("cluster TLS %+v", conf)
			}
		})
	}

	t.Run("rotation", func(t *testing.T) {
		sc := startSidecar(t, append(sidecarEnv(t, env.istiod.SecureGRPCAddr, client.Delta),
			"AMESH_XDS_TLS=true", "AMESH_XDS_CA_FILE="+root,
			"AMESH_XDS_SERVER_NAME="+env.istiod.ServerName, "AMESH_XDS_TOKEN_FILE="+token))
		sc.waitFor(t, "the secrets", func(s *resource.State) bool { return s.Secrets[cert] != nil && s.Secrets[caName] != nil })
		f2, err := ca.Issue(identitytest.Options{SPIFFE: "spiffe://example.com/client"})
		if err != nil {
			t.Fatal(err)
		}
		if err := env.kube.Client.Apply(ctx, credentialObjects(f2)[0]); err != nil {
			t.Fatal(err)
		}
		sc.waitFor(t, "the rotated certificate", func(s *resource.State) bool {
			return s.Secrets[cert] != nil && s.Secrets[cert].CertChain == string(f2.Chain) && s.Secrets[cert].Key.Reveal() == string(f2.Key)
		})
	})

	t.Run("plaintext", func(t *testing.T) {
		sc := startSidecarWith(t, sidecarEnv(t, env.istiod.GRPCAddr, client.Delta), func(cfg *client.Config) {
			cfg.ResourceTimeout = 2 * time.Second
		})
		snap := sc.waitFor(t, "the cluster without its secrets", func(s *resource.State) bool { return s.Clusters[cluster] != nil })
		if len(snap.Secrets) != 0 {
			t.Errorf("istiod served secrets on its plaintext port: %v", secretNamesOf(snap))
		}
		var missing []string
		for _, m := range snap.Missing {
			if m.TypeURL == resource.SecretType {
				missing = append(missing, m.Name)
			}
		}
		if !slices.Equal(missing, []string{cert, caName}) {
			t.Errorf("missing secrets %v", snap.Missing)
		}
		if conf, _ := upstreamtls.ClusterTLS(cluster, snap.Clusters[cluster].Shape(), upstreamtls.Options{Secrets: snap.Secrets}); conf != nil {
			t.Errorf("TLS served without the secrets: %+v", conf)
		}
	})
}

func secretNamesOf(s *resource.State) []string {
	var out []string
	for n := range s.Secrets {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

package istiod_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/apisix/schema"
	"github.com/amesh-dev/amesh/internal/identity"
	"github.com/amesh-dev/amesh/internal/identity/identitytest"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/test/netns"
)

// What the pod test checks of the workload identity: amesh reads the certificate
// istio-agent writes into OUTPUT_CERTS and puts it, exactly, into the dict as APISIX's
// ssl objects, and follows the agent's rotations.

// agentCerts is what istio-agent's OUTPUT_CERTS holds at one moment.
type agentCerts struct{ key, chain, root []byte }

func readAgentCerts(dir string) (agentCerts, error) {
	var c agentCerts
	for _, f := range []struct {
		name string
		to   *[]byte
	}{{identity.KeyFile, &c.key}, {identity.ChainFile, &c.chain}, {identity.RootFile, &c.root}} {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			return c, err
		}
		*f.to = b
	}
	return c, nil
}

func (c agentCerts) equal(o agentCerts) bool {
	return bytes.Equal(c.key, o.key) && bytes.Equal(c.chain, o.chain) && bytes.Equal(c.root, o.root)
}

// dictIdentity is the dict's two ssl objects.
type dictIdentity struct{ client, server apisix.SSL }

// identityOf decodes the dict's ssl objects (ok false while either is missing), checking
// them against APISIX's schema and that each one's key belongs to its certificate:
// whatever state of the dict a test sees never holds a mismatched pair.
func identityOf(t *testing.T, d nginxDump) (dictIdentity, bool) {
	t.Helper()
	var di dictIdentity
	for _, s := range []struct {
		id string
		to *apisix.SSL
	}{{translate.ClientSSLID, &di.client}, {translate.ServerSSLID, &di.server}} {
		key := apisix.Key(apisix.KindSSLs, s.id)
		v, ok := d.Keys[key]
		if !ok {
			return di, false
		}
		if err := schema.Validate(key, []byte(v)); err != nil {
			t.Fatalf("%s fails APISIX's schema: %v", key, err)
		}
		if err := json.Unmarshal([]byte(v), s.to); err != nil {
			t.Fatal(err)
		}
		if _, err := tls.X509KeyPair([]byte(s.to.Cert), []byte(s.to.Key)); err != nil {
			t.Fatalf("%s holds a key that is not its certificate's: %v", key, err)
		}
	}
	return di, true
}

// carries reports whether the dict's ssl objects hold exactly the agent's files.
func (di dictIdentity) carries(c agentCerts) bool {
	return di.client.Type == "client" && di.client.Cert == string(c.chain) && di.client.Key == string(c.key) &&
		di.server.Type == "server" && di.server.SNI == "*" && di.server.Cert == string(c.chain) && di.server.Key == string(c.key) &&
		di.server.Client != nil && di.server.Client.CA == string(c.root)
}

// waitDictCarriesAgentCerts waits until the dict's ssl objects hold exactly what
// OUTPUT_CERTS holds (the same files before and after the dict was read, since the
// agent may rotate meanwhile) and accept takes those files, and returns the dump and
// the files.
func waitDictCarriesAgentCerts(t *testing.T, pod *netns.NS, port int, dir, what string, accept func(agentCerts) bool) (nginxDump, agentCerts) {
	t.Helper()
	var d nginxDump
	var files agentCerts
	waitUntil(t, what, func() bool {
		before, err := readAgentCerts(dir)
		if err != nil {
			return false
		}
		if d, err = podDump(pod, port); err != nil {
			return false
		}
		di, ok := identityOf(t, d)
		if files, err = readAgentCerts(dir); err != nil || !files.equal(before) {
			return false
		}
		return ok && di.carries(files) && accept(files)
	})
	return d, files
}

// leafSerial returns the serial of the chain's first certificate, checking that it is
// the workload's SPIFFE identity and chains to root.
func leafSerial(t *testing.T, chain []byte, root, spiffe string) string {
	t.Helper()
	certs, err := x509Chain(chain)
	if err != nil {
		t.Fatal(err)
	}
	leaf := certs[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != spiffe {
		t.Errorf("the dict's certificate has URIs %v, want [%s]", leaf.URIs, spiffe)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(root))
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the dict's certificate does not chain to the mesh root: %v", err)
	}
	return fmt.Sprintf("%x", leaf.SerialNumber)
}

// x509Chain parses the certificates of a PEM chain.
func x509Chain(chain []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := chain; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no certificate in the chain")
	}
	return out, nil
}

// nonSSL returns the dict's keys but the ssl objects.
func nonSSL(keys map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range keys {
		if !strings.HasPrefix(k, "/"+string(apisix.KindSSLs)+"/") {
			out[k] = v
		}
	}
	return out
}

// noKeyMaterial checks that none of keys appears in the files.
func noKeyMaterial(t *testing.T, keys [][]byte, files ...string) {
	t.Helper()
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, k := range keys {
			if m := identitytest.Leaks(b, k); m != "" {
				t.Errorf("%s holds key material %q", f, m)
			}
		}
	}
}

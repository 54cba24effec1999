package nginx

import (
	"crypto/tls"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/apisix/schema"
	"github.com/amesh-dev/amesh/internal/identity"
	"github.com/amesh-dev/amesh/internal/identity/identitytest"
	"github.com/amesh-dev/amesh/internal/translate"
)

var (
	clientSSL = apisix.Key(apisix.KindSSLs, translate.ClientSSLID)
	serverSSL = apisix.Key(apisix.KindSSLs, translate.ServerSSLID)
)

// sslsOf decodes the dict's two ssl objects (nil when either is missing), checking
// them against APISIX's schema and that each one's key belongs to its certificate.
func sslsOf(t *testing.T, kv map[string]string) map[string]apisix.SSL {
	t.Helper()
	out := map[string]apisix.SSL{}
	for _, k := range []string{clientSSL, serverSSL} {
		v, ok := kv[k]
		if !ok {
			return nil
		}
		if err := schema.Validate(k, []byte(v)); err != nil {
			t.Fatalf("%s fails APISIX's schema: %v", k, err)
		}
		var s apisix.SSL
		if err := json.Unmarshal([]byte(v), &s); err != nil {
			t.Fatal(err)
		}
		if _, err := tls.X509KeyPair([]byte(s.Cert), []byte(s.Key)); err != nil {
			t.Fatalf("%s holds a key that is not its certificate's: %v", k, err)
		}
		out[k] = s
	}
	return out
}

// carries reports whether the ssl objects hold exactly the files.
func carries(s map[string]apisix.SSL, f identitytest.Files) bool {
	c, srv := s[clientSSL], s[serverSSL]
	return c.Type == "client" && c.Cert == string(f.Chain) && c.Key == string(f.Key) &&
		srv.Type == "server" && srv.SNI == "*" && srv.Cert == string(f.Chain) && srv.Key == string(f.Key) &&
		srv.Client != nil && srv.Client.CA == string(f.Root)
}

// TestWorkloadIdentityInDict: libxds.so in nginx publishes the workload certificate
// istio-agent writes as the two ssl objects in the dict, and every worker reads them;
// a rotation written file by file reaches the dict without a restart and changes
// those two objects only, and no state of the dict seen holds a key that is not its
// certificate's; the status server shows the objects with the key redacted, and no
// view, nor the logs, hold key material.
func TestWorkloadIdentityInDict(t *testing.T) {
	ca, err := identitytest.NewCA("mesh")
	if err != nil {
		t.Fatal(err)
	}
	first, err := ca.Issue(identitytest.Options{RSA: true}) // istio-agent's default key
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := first.Write(dir); err != nil {
		t.Fatal(err)
	}
	res := smallMesh(3).Resources()
	n := start(t, newXDS(t, res), options{Workers: 2, CertDir: dir})
	// With a certificate directory, upstream mTLS presents the identity's client ssl
	// object and trusts the roots beside it (internal/sidecar).
	want := expectedWith(t, res, translate.Options{OriginalDstVar: "server_port",
		WorkloadCertID: translate.ClientSSLID, MeshRootFile: filepath.Join(dir, identity.RootFile)})
	d := n.waitDump("the mesh and the identity", func(d dump) bool {
		s := sslsOf(t, d.Keys)
		return len(d.Keys) == len(want)+2 && s != nil && carries(s, first)
	})
	for k, v := range want {
		if d.Keys[k] != v {
			t.Errorf("%s differs from the translator's output", k)
		}
	}
	d = n.converged(t)
	pids, loader := n.workerPIDs(), d.LoaderPID

	// A rotation, file by file as istio-agent writes it; every state of the dict
	// seen on the way holds a consistent pair (sslsOf checks it).
	next, err := ca.Issue(identitytest.Options{RSA: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := next.Write(dir); err != nil {
		t.Fatal(err)
	}
	before := d
	d = n.waitDump("the rotated identity", func(d dump) bool { return carries(sslsOf(t, d.Keys), next) })
	if changed := diffKeys(before.Keys, d.Keys); !slices.Equal(sortedCopy(changed), []string{clientSSL, serverSSL}) {
		t.Errorf("the rotation changed %v, want the two ssl objects only", changed)
	}
	d = n.converged(t)
	if !slices.Equal(n.workerPIDs(), pids) || d.LoaderPID != loader {
		t.Errorf("workers %v (loader %d) after the rotation, were %v (loader %d): nothing may restart", n.workerPIDs(), d.LoaderPID, pids, loader)
	}

	// The status server inside nginx: the objects with the key redacted.
	var view map[string]map[string]any
	n.statusJSON(t, "/debug/apisix?kind=ssls", &view)
	if c := view[clientSSL]; c == nil || c["key"] != apisix.RedactedKey || c["cert"] != string(next.Chain) {
		t.Errorf("/debug/apisix shows %s as %v, want the certificate and a redacted key", clientSSL, c)
	}
	var all []byte
	for _, p := range []string{"/", "/metrics", "/debug/xds", "/debug/apisix", "/debug/report", "/debug/controller", "/debug/identity"} {
		all = append(all, n.statusBody(t, p)...)
	}
	if !strings.Contains(string(all), `"serial": "`+next.Serial+`"`) {
		t.Errorf("/debug/identity does not show the identity in force (serial %s)", next.Serial)
	}
	for _, f := range []string{"amesh.log", "error.log"} {
		b, _ := os.ReadFile(filepath.Join(n.prefix, f))
		all = append(all, b...)
	}
	for _, f := range []identitytest.Files{first, next} {
		if m := identitytest.Leaks(all, f.Key); m != "" {
			t.Errorf("key material %q in the status views or the logs", m)
		}
	}
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

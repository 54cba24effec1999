package translate

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/translate/upstream"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// nextState is s after an update that sets the secrets secs (nil: remove) and the
// clusters cs, as resource.State.Apply would leave it.
func nextState(s *resource.State, secs map[string]*tlsv3.Secret, cs ...*resource.Cluster) *resource.State {
	n := *s
	n.Seq = s.Seq + 1
	n.Secrets = maps.Clone(s.Secrets)
	if n.Secrets == nil {
		n.Secrets = map[string]*resource.Secret{}
	}
	n.Clusters = maps.Clone(s.Clusters)
	n.Changes = resource.Changes{Since: s.Seq, Secrets: map[string]struct{}{}, Clusters: map[string]struct{}{}}
	for name, sec := range secs {
		if sec == nil {
			delete(n.Secrets, name)
		} else {
			n.Secrets[name] = resource.NewSecret(sec)
		}
		n.Changes.Secrets[name] = struct{}{}
	}
	for _, c := range cs {
		n.Clusters[c.Name] = c
		n.Changes.Clusters[c.Name] = struct{}{}
	}
	return &n
}

// sortedChanges lists the keys a translation put or deleted, sorted.
func sortedChanges(r Result) []string {
	out := changedKeys(r.Changes)
	slices.Sort(out)
	return out
}

// A credentialName's secrets, as the client delivers them, drive the output
// incrementally: the certificate becomes an ssl object the routes' plugin
// configurations name, the CA sits in them; the endpoints stay out until both have
// arrived; a new certificate rewrites its ssl object alone, a new CA the routes that
// carry it; a secret gone takes its ssl object and the endpoints with it. Each step's
// output equals a full translation of the same state, and no ssl object is left over.
func TestCredentialSecrets(t *testing.T) {
	base := istiodSnapshot(t, "mtls")
	const name = "outbound|8443||credential.example.com"
	cert, ca := "kubernetes://credential-client", "kubernetes://credential-ca-cacert"
	c := resource.NewCluster(xdstest.CredentialCluster(name, "credential.example.com", cert, ca, "credential.example.com"))
	sslKey := apisix.Key(apisix.KindSSLs, upstream.SecretSSLID(cert))

	tt := newTracked(Options{})
	tt.Translate(base)
	s := nextState(base, nil, c)
	r := tt.Translate(s)
	if strings.Contains(strings.Join(sortedChanges(r), " "), "/ssls/") {
		t.Errorf("ssl object before the secret: %v", sortedChanges(r))
	}

	// pad makes a value long enough for APISIX's ssl schema.
	pad := func(v string) string { return v + strings.Repeat("-", 128) }
	check := func(what string, s *resource.State, wantSSL string, wantCA string) {
		t.Helper()
		objs := tt.Objects()
		full := newTracked(Options{})
		full.Translate(s)
		if !maps.EqualFunc(objs, full.Objects(), func(a, b []byte) bool { return string(a) == string(b) }) {
			t.Errorf("%s: the incremental output differs from a full translation", what)
		}
		validateAll(t, objs)
		var ssl apisix.SSL
		if v, ok := objs[sslKey]; ok {
			if err := json.Unmarshal(v, &ssl); err != nil {
				t.Fatal(err)
			}
		}
		if (wantSSL == "") != (ssl.Cert == "") || wantSSL != "" && (ssl.Cert != pad(wantSSL) || ssl.Type != "client" || ssl.Key != pad("KEY-"+wantSSL)) {
			t.Errorf("%s: ssl object %+v, want cert %q", what, ssl, wantSSL)
		}
		found := false
		for k, v := range objs {
			if apisix.KindOf(k) == apisix.KindRoutes && strings.Contains(string(v), upstream.SecretSSLID(cert)) {
				found = true
				if !strings.Contains(string(v), `"pem":"`+wantCA+`"`) {
					t.Errorf("%s: route %s without the CA %q: %s", what, k, wantCA, v)
				}
			}
		}
		if found != (wantCA != "") {
			t.Errorf("%s: routes carry the credential: %v, want %v", what, found, wantCA != "")
		}
	}
	check("no secrets", s, "", "")

	s = nextState(s, map[string]*tlsv3.Secret{cert: xdstest.CertSecret(cert, pad("C1"), pad("KEY-C1"))})
	tt.Translate(s)
	check("certificate only", s, "C1", "")

	s = nextState(s, map[string]*tlsv3.Secret{ca: xdstest.CASecret(ca, "CA1")})
	tt.Translate(s)
	check("both", s, "C1", "CA1")

	s = nextState(s, map[string]*tlsv3.Secret{cert: xdstest.CertSecret(cert, pad("C2"), pad("KEY-C2"))})
	r = tt.Translate(s)
	if got := sortedChanges(r); !slices.Equal(got, []string{sslKey}) {
		t.Errorf("new certificate changed %v, want its ssl object alone", got)
	}
	check("new certificate", s, "C2", "CA1")

	s = nextState(s, map[string]*tlsv3.Secret{ca: xdstest.CASecret(ca, "CA2")})
	r = tt.Translate(s)
	if got := sortedChanges(r); slices.Contains(got, sslKey) || len(got) == 0 {
		t.Errorf("new CA changed %v", got)
	}
	check("new CA", s, "C2", "CA2")

	s = nextState(s, map[string]*tlsv3.Secret{cert: nil})
	tt.Translate(s)
	check("certificate gone", s, "", "")
	for _, e := range tt.fullReport() {
		if e.Resource == name && strings.Contains(e.Message, "has not been received") {
			return
		}
	}
	t.Errorf("no report of the missing secret: %v", tt.fullReport())
}

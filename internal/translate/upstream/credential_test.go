package upstream

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

const credCluster = "outbound|8443||credential.example.com"

func withSecrets(secs ...*tlsv3.Secret) Options {
	o := meshIdentity
	o.Secrets = map[string]*resource.Secret{}
	for _, s := range secs {
		o.Secrets[s.GetName()] = resource.NewSecret(s)
	}
	return o
}

// istiod's cluster for a DestinationRule SIMPLE with credentialName (captured by
// test/istiod): once the validation context secret it names has arrived, the
// endpoint is served with the secret's CA inline; decoded as the client keeps it
// (pruned), the cluster still names the secret as one served over ADS.
func TestCredentialNameCA(t *testing.T) {
	snap := istiodMTLS(t)
	opts := withSecrets(xdstest.CASecret("kubernetes://credential-ca-cacert", "CA-PEM"))
	u, conf, es := buildMTLS(t, snap, credCluster, opts)
	want := &TLSConf{SNI: "credential.example.com", CA: &TLSCA{PEM: "CA-PEM"}, MinVersion: "TLSv1_2", MaxVersion: "TLSv1_3", NoALPNOverride: true}
	if diff := cmp.Diff(want, conf); diff != "" {
		t.Errorf("plugin configuration (-want +got):\n%s", diff)
	}
	if u.Scheme != "https" || len(u.Nodes) != 1 {
		t.Errorf("scheme %q nodes %v", u.Scheme, u.Nodes)
	}
	for _, e := range es {
		if e.Severity == report.Unsupported {
			t.Errorf("unexpected finding %+v", e)
		}
	}

	msg, _ := snap.Clusters[credCluster].Message()
	b, _ := proto.Marshal(msg)
	d, err := resource.DecodeBytes(resource.ClusterType, b, credCluster, resource.DecodeOptions{Intern: resource.NewInterner()})
	if err != nil {
		t.Fatal(err)
	}
	dc := d.Msg.(*resource.Cluster)
	if got := dc.Secrets(); !cmp.Equal(got, []string{"kubernetes://credential-ca-cacert"}) {
		t.Errorf("decoded cluster names secrets %v", got)
	}
	if got, _ := ClusterTLS(credCluster, dc.Shape(), opts); !cmp.Equal(got, want) {
		t.Errorf("from the decoded shape: %+v", got)
	}
	// istio-agent's secrets are not served over ADS: no cluster of the scenario
	// names one but this.
	for name, c := range snap.Clusters {
		if name != credCluster && len(c.Secrets()) > 0 {
			t.Errorf("%s names %v", name, c.Secrets())
		}
	}
}

// MUTUAL with credentialName: the certificate secret becomes the ssl object the
// configuration names; the validation context secret merges into the default one as
// in Envoy's CombinedValidationContext (its matchers appended, its CA in force).
// Until both secrets have arrived, and when one cannot be used, the endpoints stay out.
func TestCredentialNameMutual(t *testing.T) {
	cert, ca := "kubernetes://cred", "kubernetes://cred-cacert"
	c := xdstest.CredentialCluster("outbound|8443||cred.example.com", "cred.example.com", cert, ca, "cred.example.com")
	snap := &resource.State{
		Clusters:  map[string]*resource.Cluster{c.Name: resource.NewCluster(c)},
		Endpoints: map[string]*resource.LoadAssignment{c.Name: resource.FromCLA(xdstest.Endpoints(c.Name, "10.0.0.9:8443"))},
	}
	caSecret := xdstest.CASecret(ca, "CA-PEM")
	caSecret.GetValidationContext().MatchTypedSubjectAltNames = []*tlsv3.SubjectAltNameMatcher{{
		SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://"}}}}
	opts := withSecrets(xdstest.CertSecret(cert, pemPad("CHAIN"), pemPad("KEY")), caSecret)
	u, conf, es := buildMTLS(t, snap, c.Name, opts)
	for _, e := range es {
		if e.Field != "lb_policy" {
			t.Errorf("finding %+v", e)
		}
	}
	want := &TLSConf{SNI: "cred.example.com", Cert: &TLSCert{SSLID: SecretSSLID(cert)}, CA: &TLSCA{PEM: "CA-PEM"},
		SANs:       []SANMatcher{{Type: "dns", Match: "exact", Value: "cred.example.com"}, {Type: "uri", Match: "prefix", Value: "spiffe://"}},
		MinVersion: "TLSv1_2", MaxVersion: "TLSv1_2"}
	if diff := cmp.Diff(want, conf); diff != "" {
		t.Errorf("plugin configuration (-want +got):\n%s", diff)
	}
	if len(u.Nodes) != 1 || u.Scheme != "https" {
		t.Errorf("nodes %v scheme %q", u.Nodes, u.Scheme)
	}
	if id := SecretSSLID(cert); id == SecretSSLID(ca) || len(id) > 64 || strings.ContainsAny(id, ":/") {
		t.Errorf("ssl id %q", id)
	}

	// The digest follows the CA; the certificate's content is the ssl object's.
	_, d1 := ClusterTLS(c.Name, snap.Clusters[c.Name].Shape(), opts)
	_, d2 := ClusterTLS(c.Name, snap.Clusters[c.Name].Shape(), withSecrets(xdstest.CertSecret(cert, pemPad("CHAIN2"), pemPad("KEY2")), caSecret))
	ca2 := proto.Clone(caSecret).(*tlsv3.Secret)
	ca2.GetValidationContext().TrustedCa = xdstest.CASecret(ca, "CA-PEM-2").GetValidationContext().TrustedCa
	_, d3 := ClusterTLS(c.Name, snap.Clusters[c.Name].Shape(), withSecrets(xdstest.CertSecret(cert, pemPad("CHAIN"), pemPad("KEY")), ca2))
	if d1 != d2 || d1 == d3 {
		t.Errorf("digests %x %x %x: want same for a new certificate, another for a new CA", d1, d2, d3)
	}

	key := &tlsv3.Secret{Name: cert, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain:   xdstest.CertSecret(cert, "C", "K").GetTlsCertificate().GetCertificateChain(),
		PrivateKeyProvider: &tlsv3.PrivateKeyProvider{ProviderName: "cryptomb"}}}}
	for what, tc := range map[string]struct {
		opts Options
		msg  string
	}{
		"no secret":          {meshIdentity, `SDS secret "kubernetes://cred" (from istiod over ADS, such as a credentialName's) has not been received`},
		"no CA yet":          {withSecrets(xdstest.CertSecret(cert, pemPad("CHAIN"), pemPad("KEY"))), `"kubernetes://cred-cacert" (from istiod over ADS`},
		"no certificate yet": {withSecrets(caSecret), `"kubernetes://cred" (from istiod over ADS`},
		"swapped":            {withSecrets(xdstest.CASecret(cert, "X"), caSecret), "is a validation context where a certificate belongs"},
		"key provider":       {withSecrets(key, caSecret), "a private key provider is not supported"},
	} {
		u, conf, es := buildMTLS(t, snap, c.Name, tc.opts)
		if len(u.Nodes) != 0 || conf != nil || !hasEntry(es, "transport_socket", report.Unsupported, tc.msg) {
			t.Errorf("%s: nodes %v conf %+v, report %v", what, u.Nodes, conf, es)
		}
	}

	// The same names from another SDS source than the ADS stream: never taken from
	// the secrets istiod served over ADS.
	other := proto.Clone(c).(*clusterv3.Cluster)
	tc := &tlsv3.UpstreamTlsContext{}
	if err := other.GetTransportSocket().GetTypedConfig().UnmarshalTo(tc); err != nil {
		t.Fatal(err)
	}
	tc.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()[0].SdsConfig = nil
	a, err := anypb.New(tc)
	if err != nil {
		t.Fatal(err)
	}
	other.TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: a}
	snap.Clusters[c.Name] = resource.NewCluster(other)
	if got := snap.Clusters[c.Name].Secrets(); !cmp.Equal(got, []string{ca}) {
		t.Errorf("secrets over ADS %v, want the CA's only", got)
	}
	u, conf, es = buildMTLS(t, snap, c.Name, opts)
	if len(u.Nodes) != 0 || conf != nil || !hasEntry(es, "transport_socket", report.Unsupported, `"kubernetes://cred" is not available to amesh`) {
		t.Errorf("another SDS source: nodes %v conf %+v, report %v", u.Nodes, conf, es)
	}
}

// pemPad makes v as long as APISIX's ssl schema wants a certificate or key.
func pemPad(v string) string { return v + strings.Repeat("-", 128) }

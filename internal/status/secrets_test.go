package status

import (
	"strings"
	"testing"

	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// A credentialName's private key, which istiod serves over ADS and the translation
// writes into an APISIX ssl object, shows in no debug view: /debug/apisix redacts it,
// the report names the secret only.
func TestCredentialKeyNotInDebugViews(t *testing.T) {
	const secretKey = "-----BEGIN PRIVATE KEY-----\nS3CR3T-CREDENTIAL-KEY-MATERIAL-0123456789-0123456789-0123456789-0123456789\n-----END PRIVATE KEY-----\n"
	chain := "-----BEGIN CERTIFICATE-----\n" + strings.Repeat("A", 128) + "\n-----END CERTIFICATE-----\n"
	cert, ca := "kubernetes://cred", "kubernetes://cred-cacert"
	c := xdstest.CredentialCluster("outbound|8443||cred.example.com", "cred.example.com", cert, ca)
	snap := &resource.State{
		Seq:       1,
		Clusters:  map[string]*resource.Cluster{c.Name: resource.NewCluster(c)},
		Endpoints: map[string]*resource.LoadAssignment{c.Name: resource.FromCLA(xdstest.Endpoints(c.Name, "10.0.0.9:8443"))},
		// The CA has not arrived: the report names the cluster's secrets.
		Secrets: map[string]*resource.Secret{cert: resource.NewSecret(xdstest.CertSecret(cert, chain, secretKey))},
		Changes: resource.Changes{Full: true},
	}
	r := translate.New(translate.Options{}).Translate(snap)
	objs := map[string][]byte{}
	r.Changes.ApplyTo(objs)
	found := false
	for _, v := range objs {
		found = found || strings.Contains(string(v), "S3CR3T")
	}
	if !found {
		t.Fatal("the translation wrote no ssl object with the key: the test checks nothing")
	}
	base := startServer(t, Sources{
		Objects: func() map[string][]byte { return objs },
		Report:  func() []report.Entry { return r.Report },
	})
	for _, path := range []string{"/debug/apisix", "/debug/apisix?kind=ssls", "/debug/report", "/debug/xds", "/metrics"} {
		_, _, body := get(t, base+path)
		if strings.Contains(body, "S3CR3T") || strings.Contains(body, "PRIVATE KEY") {
			t.Errorf("%s shows the key:\n%s", path, body)
		}
	}
}

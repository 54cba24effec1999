package client_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// keyPEM stands for a private key: it must reach the snapshot and nothing else.
const keyPEM = "-----BEGIN PRIVATE KEY-----\nS3CR3T-KEY-MATERIAL\n-----END PRIVATE KEY-----\n"

// syncBuffer is a log sink safe for the client's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func secretNames(s *resource.State) []string {
	var out []string
	for n := range s.Secrets {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func hasSecrets(names ...string) func(*resource.State) bool {
	return func(s *resource.State) bool { return slices.Equal(secretNames(s), names) }
}

// The client subscribes to exactly the SDS secrets that clusters' TLS contexts name
// with an ADS config source (a credentialName's, not istio-agent's), holds the
// snapshot back until they arrive, follows the clusters' changes, and shows the
// secrets' private keys nowhere: not in its logs, status, dump or formatted state.
func TestSecretSubscriptions(t *testing.T) {
	for _, p := range protocols {
		t.Run(string(p), func(t *testing.T) {
			srv := newServer(t, xdsOpts())
			basicMesh(t, srv)
			var logs syncBuffer
			c := startClient(t, srv, p, func(cfg *client.Config) {
				cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			})
			waitSnapshot(t, c, hasCounts(counts{1, 1, 3, 2}))

			cert, ca := "kubernetes://cred", "kubernetes://cred-cacert"
			mark := srv.Mark()
			if err := srv.Update(xdstest.CredentialCluster("outbound|8443||cred.example.com", "cred.example.com", cert, ca, "cred.example.com"),
				xdstest.Endpoints("outbound|8443||cred.example.com", "10.0.0.9:8443")); err != nil {
				t.Fatal(err)
			}
			sub, err := srv.WaitRequest(ctxFor(t, mustHappen), mark, subReq(resource.SecretType, cert, ca))
			if err != nil {
				t.Fatal(err)
			}
			if p == client.Delta && !equal(sub.Delta.GetResourceNamesSubscribe(), []string{cert, ca}) {
				t.Errorf("subscribe %v", sub.Delta.GetResourceNamesSubscribe())
			}
			// Consistency: no snapshot with the cluster but without its secrets.
			if st := c.Status(); st.Types[resource.SecretType].Subscribed != 2 || st.Types[resource.SecretType].Resources != 0 {
				t.Fatalf("secret status %+v", st.Types[resource.SecretType])
			}
			if err := srv.Update(xdstest.CertSecret(cert, "CHAIN", keyPEM), xdstest.CASecret(ca, "CA"),
				xdstest.CertSecret("kubernetes://unrelated", "CHAIN", keyPEM)); err != nil {
				t.Fatal(err)
			}
			s := waitSnapshot(t, c, func(s *resource.State) bool { return len(s.Clusters) == 4 })
			if got := secretNames(s); !slices.Equal(got, []string{cert, ca}) {
				t.Fatalf("secrets %v, want exactly the two the cluster names", got)
			}
			if got := s.Secrets[cert]; got.CertChain != "CHAIN" || got.Key.Reveal() != keyPEM || !got.IsCert() {
				t.Errorf("certificate secret %v", got)
			}
			if got := s.Secrets[ca]; got.Validation == nil || string(got.Validation.GetTrustedCa().GetInlineBytes()) != "CA" {
				t.Errorf("validation context secret %v", got)
			}

			// The cluster now names another certificate and no validation context: the
			// subscription follows, the old secrets leave the snapshot.
			mark = srv.Mark()
			cert2 := "kubernetes://cred2"
			if err := srv.Update(xdstest.CertSecret(cert2, "CHAIN2", keyPEM),
				xdstest.CredentialCluster("outbound|8443||cred.example.com", "cred.example.com", cert2, "")); err != nil {
				t.Fatal(err)
			}
			s = waitSnapshot(t, c, hasSecrets(cert2))
			if s.Secrets[cert2].CertChain != "CHAIN2" {
				t.Errorf("secret %v", s.Secrets[cert2])
			}
			if _, err := srv.WaitRequest(ctxFor(t, mustHappen), mark, subReq(resource.SecretType, cert2)); err != nil {
				t.Fatal(err)
			}

			// A secret's change reaches the snapshot as that secret alone.
			if err := srv.Update(xdstest.CertSecret(cert2, "CHAIN3", keyPEM)); err != nil {
				t.Fatal(err)
			}
			s = waitSnapshot(t, c, func(s *resource.State) bool { return s.Secrets[cert2].CertChain == "CHAIN3" })
			if ch := s.Changes; ch.Full || len(ch.Clusters)+len(ch.Endpoints)+len(ch.Listeners)+len(ch.RouteConfigs) != 0 || len(ch.Secrets) != 1 {
				t.Errorf("changes %+v", ch)
			}

			// Removing the cluster unsubscribes.
			if err := srv.Remove(resource.ClusterType, "outbound|8443||cred.example.com"); err != nil {
				t.Fatal(err)
			}
			waitSnapshot(t, c, hasSecrets())

			st := dumpOf(t, c)
			js, err := json.Marshal(st)
			if err != nil {
				t.Fatal(err)
			}
			for what, text := range map[string]string{
				"logs": logs.String(), "dump": string(js),
				"formatted state":  fmt.Sprintf("%v %+v %#v %s", *s, *s, s.Secrets, s.Secrets),
				"formatted secret": fmt.Sprintf("%v %+v %#v %s %q", s.Secrets[cert2], s.Secrets[cert2], s.Secrets[cert2], s.Secrets[cert2], s.Secrets[cert2]),
			} {
				if strings.Contains(text, "S3CR3T") {
					t.Errorf("%s show key material: %s", what, text)
				}
			}
		})
	}
}

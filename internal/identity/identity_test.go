package identity_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/internal/identity"
	"github.com/amesh-dev/amesh/internal/identity/identitytest"
)

func newCA(t *testing.T, name string) *identitytest.CA {
	t.Helper()
	ca, err := identitytest.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *identitytest.CA, o identitytest.Options) identitytest.Files {
	t.Helper()
	f, err := ca.Issue(o)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// A consistent set parses into the files' contents, verbatim, and the leaf's identity;
// both key forms istio-agent writes are accepted.
func TestParseConsistent(t *testing.T) {
	ca := newCA(t, "mesh")
	for _, rsa := range []bool{false, true} {
		t.Run(fmt.Sprintf("rsa=%v", rsa), func(t *testing.T) {
			f := issue(t, ca, identitytest.Options{RSA: rsa, SPIFFE: "spiffe://cluster.local/ns/bookinfo/sa/reviews"})
			id, err := identity.Parse(f.Key, f.Chain, f.Root, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if id.CertChain != string(f.Chain) || id.Key.Reveal() != string(f.Key) || id.Roots != string(f.Root) {
				t.Error("the identity does not hold the files' contents verbatim")
			}
			if id.URI != "spiffe://cluster.local/ns/bookinfo/sa/reviews" || id.Serial != f.Serial || id.NotAfter.IsZero() {
				t.Errorf("identity %s serial %s not after %s; want the leaf's", id.URI, id.Serial, id.NotAfter)
			}
		})
	}
}

// Every way the three files can disagree is refused, with an error that names the file
// and holds no key material.
func TestParseRefusesInconsistentSets(t *testing.T) {
	ca, other := newCA(t, "mesh"), newCA(t, "other mesh")
	good := issue(t, ca, identitytest.Options{})
	rotated := issue(t, ca, identitytest.Options{})
	foreign := issue(t, other, identitytest.Options{})
	expired := issue(t, ca, identitytest.Options{NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	outlives := issue(t, ca, identitytest.Options{NotAfter: time.Now().Add(48 * time.Hour)}) // its root expires first
	now := time.Now()
	for _, tc := range []struct {
		name             string
		key, chain, root []byte
		at               time.Time
		want             string
	}{
		{"half-written rotation: new key, old chain", rotated.Key, good.Chain, good.Root, now, "key.pem does not hold the private key of the certificate in cert-chain.pem"},
		{"old key, new chain", good.Key, rotated.Chain, good.Root, now, "key.pem does not hold the private key"},
		{"chain of another mesh", foreign.Key, foreign.Chain, good.Root, now, "does not verify against root-cert.pem"},
		{"leaf alone from another mesh", foreign.Key, leafOnly(t, foreign.Chain), good.Root, now, "does not verify against root-cert.pem"},
		{"expired", expired.Key, expired.Chain, expired.Root, now, "the certificate in cert-chain.pem is valid from"},
		{"not yet valid", good.Key, good.Chain, good.Root, now.Add(-3 * time.Hour), "the certificate in cert-chain.pem is valid from"},
		{"root expired", outlives.Key, outlives.Chain, outlives.Root, now.Add(30 * time.Hour), "a CA certificate on the way (O=mesh) is valid from"},
		{"missing root", good.Key, good.Chain, nil, now, "root-cert.pem holds no PEM certificate"},
		{"empty chain", good.Key, nil, good.Root, now, "cert-chain.pem holds no PEM certificate"},
		{"empty key", nil, good.Chain, good.Root, now, "key.pem does not hold the private key"},
		{"truncated chain", good.Key, good.Chain[:len(good.Chain)/3], good.Root, now, "cert-chain.pem"},
		{"key where the root belongs", good.Key, good.Chain, good.Key, now, `root-cert.pem holds a "EC PRIVATE KEY" PEM block`},
		{"key in the chain", good.Key, append(append([]byte{}, good.Chain...), good.Key...), good.Root, now, `cert-chain.pem holds a "EC PRIVATE KEY" PEM block`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := identity.Parse(tc.key, tc.chain, tc.root, tc.at)
			if err == nil {
				t.Fatalf("accepted (%s)", id.URI)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
			// The watcher recognises a lasting problem by its message.
			if _, later := identity.Parse(tc.key, tc.chain, tc.root, tc.at.Add(time.Second)); later == nil || later.Error() != err.Error() {
				t.Errorf("a second later the error is %q, was %q", later, err)
			}
			for _, k := range [][]byte{good.Key, rotated.Key, foreign.Key, expired.Key, outlives.Key} {
				if m := identitytest.Leaks([]byte(err.Error()), k); m != "" {
					t.Errorf("the error holds key material %q", m)
				}
			}
		})
	}
}

func leafOnly(t *testing.T, chain []byte) []byte {
	t.Helper()
	end := strings.Index(string(chain), "-----END CERTIFICATE-----")
	if end < 0 {
		t.Fatal("no certificate in the chain")
	}
	return chain[:end+len("-----END CERTIFICATE-----\n")]
}

// An identity printed, logged or encoded in any usual way shows no key material.
func TestSecretNeverShows(t *testing.T) {
	f := issue(t, newCA(t, "mesh"), identitytest.Options{})
	id, err := identity.Parse(f.Key, f.Chain, f.Root, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st := identity.State{Identity: id, Dir: "/var/lib/istio/data"}
	type holder struct {
		unexported identity.Identity
		state      identity.State
	}
	h := holder{*id, st}
	var outs []string
	for _, v := range []any{id, *id, st, h, &h, id.Key, []identity.Secret{id.Key}} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X"} {
			outs = append(outs, fmt.Sprintf(verb, v))
		}
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, string(j))
		var b strings.Builder
		slog.New(slog.NewTextHandler(&b, nil)).Info("x", "v", v)
		slog.New(slog.NewJSONHandler(&b, nil)).Info("x", "v", v)
		outs = append(outs, b.String())
	}
	outs = append(outs, errors.New(fmt.Sprint(id)).Error())
	for _, o := range outs {
		if m := identitytest.Leaks([]byte(o), f.Key); m != "" {
			t.Fatalf("key material %q in %q", m, o)
		}
	}
	if !strings.Contains(fmt.Sprintf("%+v", *id), identity.Redacted) {
		t.Errorf("%%+v of an identity does not show the key as %s", identity.Redacted)
	}
	if id.Key.Reveal() != string(f.Key) {
		t.Error("Reveal does not return the key")
	}
}

// Same compares the files' contents.
func TestSame(t *testing.T) {
	ca := newCA(t, "mesh")
	a, b := issue(t, ca, identitytest.Options{}), issue(t, ca, identitytest.Options{})
	parse := func(f identitytest.Files) *identity.Identity {
		id, err := identity.Parse(f.Key, f.Chain, f.Root, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	ia, ia2, ib := parse(a), parse(a), parse(b)
	if !ia.Same(ia2) || ia.Same(ib) || ia.Same(nil) || !(*identity.Identity)(nil).Same(nil) {
		t.Error("Same does not compare the contents")
	}
}

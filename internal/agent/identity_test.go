package agent

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/feed"
	"github.com/amesh-dev/amesh/internal/identity"
	"github.com/amesh-dev/amesh/internal/identity/identitytest"
	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/translate"
)

const certDir = "/var/lib/istio/data"

var sslKeys = []string{apisix.Key(apisix.KindSSLs, translate.ClientSSLID), apisix.Key(apisix.KindSSLs, translate.ServerSSLID)}

// fullWithIdentity is a from-scratch translation of the mesh's current state with st.
func fullWithIdentity(m *meshgen.Mesh, st identity.State) map[string]string {
	tr := translate.New(translate.Options{})
	tr.SetIdentity(st)
	return stringMap(tr.Translate(m.Snapshot()).Changes.Put)
}

// issued returns a new identity of ca as the watcher publishes it, and its key.
func issued(t *testing.T, ca *identitytest.CA) (identity.State, []byte) {
	t.Helper()
	id, f, err := ca.IssueIdentity(identitytest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return identity.State{Identity: id, Dir: certDir}, f.Key
}

func withIdentity(f Identity) func(*Options) { return func(o *Options) { o.Identity = f } }

// The identity is an input like the plugin set: one published before the first
// update is in the first write; a rotation is translated and written without any xDS
// change, and the write holds the two ssl objects only; a problem changes the report
// and writes nothing. The report never holds the key.
func TestIdentityIsTranslatedAndWritten(t *testing.T) {
	ca, err := identitytest.NewCA("mesh")
	if err != nil {
		t.Fatal(err)
	}
	m := meshgen.Generate(meshgen.Options{Services: 3})
	in := &feed.Latest[identity.State]{}
	first, key1 := issued(t, ca)
	in.Publish(first)
	r := startRealWith(t, withIdentity(in))

	r.push(t, m.Snapshot())
	got := r.flush(t, r.clock.timer(t))
	if diff := cmp.Diff(fullWithIdentity(m, first), got.puts); diff != "" {
		t.Fatalf("first write (-want +got):\n%s", diff)
	}
	for _, k := range sslKeys {
		if _, ok := got.puts[k]; !ok {
			t.Fatalf("%s not in the first write", k)
		}
	}

	rotated, key2 := issued(t, ca)
	in.Publish(rotated)
	r.waitTranslated(t, m.Snapshot())
	got = r.flush(t, r.clock.timer(t))
	if keys := slices.Sorted(maps.Keys(got.puts)); !slices.Equal(keys, sslKeys) || len(got.deletes) != 0 {
		t.Errorf("a rotation wrote %v and deleted %v, want the ssl objects only", keys, got.deletes)
	}
	if diff := cmp.Diff(fullWithIdentity(m, rotated), stringMap(r.sink.Objects())); diff != "" {
		t.Fatalf("after a rotation (-want +got):\n%s", diff)
	}

	unchanged := r.agent.Stats().Unchanged
	problem := rotated
	problem.Problem = "key.pem does not hold the private key of the certificate in cert-chain.pem"
	in.Publish(problem)
	r.waitTranslated(t, m.Snapshot())
	r.flushNothing(t, "a problem with the files", unchanged)
	found := false
	for _, e := range r.agent.Report() {
		found = found || e.Kind == "workload_certificate" && e.Resource == certDir
	}
	if !found {
		t.Errorf("the report does not name the problem: %+v", r.agent.Report())
	}
	rep, _ := json.Marshal(r.agent.Report())
	for _, k := range [][]byte{key1, key2} {
		if l := identitytest.Leaks(rep, k); l != "" {
			t.Errorf("the report holds key material %q", l)
		}
	}
}

// A translation that panics on a new identity is recovered like any other: the new
// translator gets the identity in force, and the next write brings the sink to a
// from-scratch translation with it.
func TestIdentitySurvivesTranslatorPanic(t *testing.T) {
	ca, err := identitytest.NewCA("mesh")
	if err != nil {
		t.Fatal(err)
	}
	m := meshgen.Generate(meshgen.Options{Services: 3})
	in := &feed.Latest[identity.State]{}
	first, _ := issued(t, ca)
	in.Publish(first)
	r := startRealWith(t, withIdentity(in))
	r.push(t, m.Snapshot())
	r.flush(t, r.clock.timer(t))

	rotated, _ := issued(t, ca)
	r.panicNext.Store(true)
	in.Publish(rotated)
	r.waitTranslated(t, m.Snapshot())
	waitFor(t, "the panic to be recorded", func() bool { return r.agent.Stats().Panics == 1 })

	r.push(t, m.ChangeEndpoint(referenced(t, m, full(m))))
	r.flush(t, r.clock.timer(t))
	if diff := cmp.Diff(fullWithIdentity(m, rotated), stringMap(r.sink.Objects())); diff != "" {
		t.Fatalf("after a panic on a new identity (-want +got):\n%s", diff)
	}
}

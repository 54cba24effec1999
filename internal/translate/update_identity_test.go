package translate

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/identity"
	"github.com/amesh-dev/amesh/internal/identity/identitytest"
	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/report"
)

const certDir = "/var/lib/istio/data"

var (
	clientKey = apisix.Key(apisix.KindSSLs, ClientSSLID)
	serverKey = apisix.Key(apisix.KindSSLs, ServerSSLID)
)

// workload issues an identity from ca, as the watcher would publish it.
func workload(t *testing.T, ca *identitytest.CA) (*identity.Identity, identitytest.Files) {
	t.Helper()
	id, f, err := ca.IssueIdentity(identitytest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return id, f
}

// wantSSLs checks that objs hold the two ssl objects of files, exactly, valid for APISIX.
func wantSSLs(t *testing.T, objs map[string][]byte, f identitytest.Files) {
	t.Helper()
	want := map[string]apisix.SSL{
		clientKey: {ID: ClientSSLID, Type: "client", Cert: string(f.Chain), Key: string(f.Key)},
		serverKey: {ID: ServerSSLID, Type: "server", SNI: "*", Cert: string(f.Chain), Key: string(f.Key),
			Client: &apisix.SSLClient{CA: string(f.Root), Depth: 100}},
	}
	got := map[string]apisix.SSL{}
	for k, v := range objs {
		if apisix.KindOf(k) != apisix.KindSSLs {
			continue
		}
		if err := validate(k, v); err != nil {
			t.Errorf("%s fails APISIX's schema: %v", k, err)
		}
		var s apisix.SSL
		if err := json.Unmarshal(v, &s); err != nil {
			t.Fatal(err)
		}
		got[k] = s
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ssl objects (-want +got):\n%s", diff)
	}
}

func withoutSSLs(objs map[string][]byte) map[string]string {
	out := stringMap(objs)
	maps.DeleteFunc(out, func(k, _ string) bool { return apisix.KindOf(k) == apisix.KindSSLs })
	return out
}

// The identity becomes the two ssl objects, schema-valid, with the files' contents
// verbatim, beside an output otherwise identical to a translation without it. A
// rotation changes those two keys only; no identity deletes them; an identity handed
// over again unchanged changes nothing.
func TestIdentityBecomesSSLs(t *testing.T) {
	ca, err := identitytest.NewCA("mesh")
	if err != nil {
		t.Fatal(err)
	}
	m := meshgen.Generate(meshgen.Options{Services: 3})
	snap := m.Snapshot()
	plain := New(Options{}).Translate(snap).Changes.Put

	tr := newTracked(Options{})
	id, files := workload(t, ca)
	tr.SetIdentity(identity.State{Identity: id, Dir: certDir})
	tr.Translate(snap)
	wantSSLs(t, tr.Objects(), files)
	if diff := cmp.Diff(withoutSSLs(plain), withoutSSLs(tr.Objects())); diff != "" {
		t.Errorf("the identity changed other objects (-without +with):\n%s", diff)
	}

	next, nextFiles := workload(t, ca)
	tr.SetIdentity(identity.State{Identity: next, Dir: certDir})
	r := tr.Translate(unchanged(snap))
	if got := slices.Sorted(maps.Keys(r.Changes.Put)); !slices.Equal(got, []string{clientKey, serverKey}) || len(r.Changes.Delete) != 0 {
		t.Errorf("a rotation wrote %v and deleted %v, want the two ssl objects only", got, r.Changes.Delete)
	}
	wantSSLs(t, tr.Objects(), nextFiles)

	tr.SetIdentity(identity.State{Identity: next, Dir: certDir})
	if r := tr.Translate(unchanged(snap)); !r.Changes.Empty() {
		t.Errorf("the same identity again changed %v %v", slices.Collect(maps.Keys(r.Changes.Put)), r.Changes.Delete)
	}

	tr.SetIdentity(identity.State{Dir: certDir})
	r = tr.Translate(unchanged(snap))
	if len(r.Changes.Put) != 0 || !slices.Equal(r.Changes.Delete, []string{clientKey, serverKey}) {
		t.Errorf("without identity: put %d, deleted %v; want the two ssl objects deleted", len(r.Changes.Put), r.Changes.Delete)
	}
	if diff := cmp.Diff(withoutSSLs(plain), stringMap(tr.Objects())); diff != "" {
		t.Errorf("without identity (-want +got):\n%s", diff)
	}
}

// A problem with the files is a report entry naming the identity kept, without key
// material, and without any write; it goes when the problem does. An identity too long
// for APISIX's schema is reported, not written.
func TestIdentityReport(t *testing.T) {
	ca, err := identitytest.NewCA("mesh")
	if err != nil {
		t.Fatal(err)
	}
	snap := meshgen.Generate(meshgen.Options{Services: 1}).Snapshot()
	tr := newTracked(Options{})
	id, files := workload(t, ca)
	tr.SetIdentity(identity.State{Identity: id, Dir: certDir})
	tr.Translate(snap)

	tr.SetIdentity(identity.State{Identity: id, Dir: certDir, Problem: "key.pem does not hold the private key of the certificate in cert-chain.pem"})
	r := tr.Translate(unchanged(snap))
	if !r.Changes.Empty() {
		t.Errorf("a problem wrote %v", slices.Collect(maps.Keys(r.Changes.Put)))
	}
	var found []report.Entry
	for _, e := range r.Report {
		if e.Kind == "workload_certificate" {
			found = append(found, e)
		}
	}
	if len(found) != 1 || found[0].Resource != certDir || found[0].Severity != report.Invalid ||
		!strings.Contains(found[0].Message, "does not hold the private key") || !strings.Contains(found[0].Message, "keeps "+id.URI) {
		t.Errorf("report entries %+v, want the problem and the identity kept", found)
	}
	b, _ := json.Marshal(r.Report)
	if m := identitytest.Leaks(b, files.Key); m != "" {
		t.Errorf("the report holds key material %q", m)
	}
	wantSSLs(t, tr.Objects(), files)

	tr.SetIdentity(identity.State{Identity: id, Dir: certDir})
	for _, e := range tr.Translate(unchanged(snap)).Report {
		if e.Kind == "workload_certificate" {
			t.Errorf("entry %+v after the problem went", e)
		}
	}

	long := *id
	long.Roots = strings.Repeat(id.Roots, maxPEM/len(id.Roots)+1)
	tr.SetIdentity(identity.State{Identity: &long, Dir: certDir})
	r = tr.Translate(unchanged(snap))
	if !slices.Equal(r.Changes.Delete, []string{clientKey, serverKey}) {
		t.Errorf("an identity APISIX would refuse was not taken out: deleted %v", r.Changes.Delete)
	}
	found = nil
	for _, e := range r.Report {
		if e.Kind == "workload_certificate" {
			found = append(found, e)
		}
	}
	if len(found) != 1 || found[0].Field != identity.RootFile || found[0].Severity != report.Unsupported {
		t.Errorf("report entries %+v, want root-cert.pem too long", found)
	}
}

// A translator that starts over (after a panic) and is handed the identity in force
// produces the same ssl objects; the identity handed over before the first state is in
// the first output.
func TestIdentityOnNewTranslator(t *testing.T) {
	ca, err := identitytest.NewCA("mesh")
	if err != nil {
		t.Fatal(err)
	}
	snap := meshgen.Generate(meshgen.Options{Services: 2}).Snapshot()
	id, files := workload(t, ca)
	a, b := newTracked(Options{}), newTracked(Options{})
	a.SetIdentity(identity.State{Identity: id, Dir: certDir})
	a.Translate(snap)
	a.Translate(unchanged(snap))
	b.SetIdentity(identity.State{Identity: id, Dir: certDir})
	b.Translate(snap)
	if diff := cmp.Diff(stringMap(a.Objects()), stringMap(b.Objects())); diff != "" {
		t.Errorf("(-first +restarted):\n%s", diff)
	}
	wantSSLs(t, b.Objects(), files)
}

package resource_test

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// TestPruneKeepsTranslation is the guard of prune.go: translating what the xDS client
// stores (resources decoded, validated and pruned by resource.DecodeBytes) must give
// byte-identical objects and the identical report as translating the resources as
// received. If a translator change starts reading a field Prune clears, this fails;
// keep the field in prune.go then.
func TestPruneKeepsTranslation(t *testing.T) {
	for _, tc := range []struct {
		mode string
		opts translate.Options
	}{
		{"sotw", translate.Options{}},
		{"delta", translate.Options{}},
		{"sotw-interception-none", translate.Options{OriginalDstVar: "server_port"}},
		// TLS contexts, endpoint socket match metadata, istio.alpn_override.
		{"mtls", translate.Options{WorkloadCertID: "w", MeshRootFile: "/root.pem"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			dir := filepath.Join("..", "..", "..", "testdata", "istiod", tc.mode)
			if _, err := os.Stat(dir); err != nil {
				t.Skipf("istiod testdata %s not present: %v", tc.mode, err)
			}
			res, err := dump.LoadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			full := res.Snapshot()
			pruned := prunedCopy(t, full)
			if n := shrunk(t, full, pruned); n == 0 {
				t.Fatal("pruning removed nothing from the istiod testdata: the comparison proves nothing")
			}
			sameTranslation(t, newTracked(tc.opts), newTracked(tc.opts), full, pruned)
		})
	}

	t.Run("meshgen", func(t *testing.T) {
		m := meshgen.Generate(meshgen.Options{Services: 20, Ports: 2})
		full := m.Snapshot()
		pruned := prunedCopy(t, full)
		if n := shrunk(t, full, pruned); n == 0 {
			t.Fatal("pruning removed nothing from the generated mesh")
		}
		opts := translate.Options{}
		a, b := newTracked(opts), newTracked(opts)
		sameTranslation(t, a, b, full, pruned)

		// Incremental work too (the translator compares resent virtual hosts by
		// content): an endpoint change, then everything resent with new pointers.
		for _, next := range []func() *resource.State{
			func() *resource.State { return m.ChangeEndpoint(3) },
			m.Resend,
		} {
			full = next()
			pruned = advance(t, pruned, full)
			sameTranslation(t, a, b, full, pruned)
		}
	})
}

// tracked is a translator plus the output its change sets add up to (the translator
// itself keeps only a digest per object).
type tracked struct {
	tr      *translate.Translator
	objects map[string][]byte
}

func newTracked(opts translate.Options) *tracked {
	return &tracked{tr: translate.New(opts), objects: map[string][]byte{}}
}

func (x *tracked) translate(s *resource.State) translate.Result {
	r := x.tr.Translate(s)
	r.Changes.ApplyTo(x.objects)
	return r
}

// sameTranslation translates full with a and pruned with b and compares the outcome.
func sameTranslation(t *testing.T, a, b *tracked, full, pruned *resource.State) {
	t.Helper()
	ra, rb := a.translate(full), b.translate(pruned)
	if diff := cmp.Diff(ra.Report, rb.Report); diff != "" {
		t.Errorf("report differs with pruning (-full +pruned):\n%s", diff)
	}
	oa, ob := a.objects, b.objects
	if len(oa) == 0 {
		t.Fatal("no objects: the comparison proves nothing")
	}
	keys := map[string]bool{}
	for k := range oa {
		keys[k] = true
	}
	for k := range ob {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		if !bytes.Equal(oa[k], ob[k]) {
			t.Errorf("%s differs with pruning:\nfull:   %s\npruned: %s", k, oa[k], ob[k])
		}
	}
	if diff := cmp.Diff(ra.Changes.Delete, rb.Changes.Delete); diff != "" {
		t.Errorf("deletes differ with pruning (-full +pruned):\n%s", diff)
	}
}

// prunedCopy is s as the xDS client stores it: every resource serialized and decoded
// by resource.DecodeBytes (hash, validation, pruning). Endpoints are already in their
// stored form (LoadAssignment; eds_decode_test.go compares its decoder with FromCLA).
func prunedCopy(t *testing.T, s *resource.State) *resource.State {
	t.Helper()
	out := *s
	out.Listeners = decodeAll(t, resource.ListenerType, s.Listeners)
	out.RouteConfigs = decodeAll(t, resource.RouteConfigType, s.RouteConfigs)
	out.Clusters = decodeAll(t, resource.ClusterType, s.Clusters)
	return &out
}

// advance is prunedCopy for the next snapshot: the resources named in its Changes are
// decoded again, the others keep their pruned messages (and pointers).
func advance(t *testing.T, prev, next *resource.State) *resource.State {
	t.Helper()
	out := *next
	out.Listeners = patch(t, resource.ListenerType, prev.Listeners, next.Listeners, next.Changes.Listeners)
	out.RouteConfigs = patch(t, resource.RouteConfigType, prev.RouteConfigs, next.RouteConfigs, next.Changes.RouteConfigs)
	out.Clusters = patch(t, resource.ClusterType, prev.Clusters, next.Clusters, next.Changes.Clusters)
	return &out
}

func patch[M any](t *testing.T, typeURL string, prev, next map[string]M, changed map[string]struct{}) map[string]M {
	out := make(map[string]M, len(next))
	for n, m := range prev {
		out[n] = m
	}
	for n := range changed {
		m, ok := next[n]
		if !ok {
			delete(out, n)
			continue
		}
		out[n] = decodeOne(t, typeURL, m)
	}
	return out
}

func decodeAll[M any](t *testing.T, typeURL string, ms map[string]M) map[string]M {
	out := make(map[string]M, len(ms))
	for n, m := range ms {
		out[n] = decodeOne(t, typeURL, m)
	}
	return out
}

func decodeOne[M any](t *testing.T, typeURL string, m M) M {
	t.Helper()
	b, err := proto.Marshal(message(t, m))
	if err != nil {
		t.Fatal(err)
	}
	d, err := resource.DecodeBytes(typeURL, b, "", clientOpts)
	if err != nil {
		t.Fatalf("%s: %v", typeURL, err)
	}
	return d.Msg.(M)
}

// message is m as a proto message: a route configuration decoded from its wire form
// (resource.RouteConfig), a cluster put together from its names and shape
// (resource.Cluster), any other resource as it is.
func message(t *testing.T, m any) proto.Message {
	t.Helper()
	var (
		msg proto.Message
		err error
	)
	switch m := m.(type) {
	case *resource.RouteConfig:
		msg, err = m.Message()
	case *resource.Cluster:
		msg, err = m.Message()
	default:
		return m.(proto.Message)
	}
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// shrunk returns how many resources pruning made smaller.
func shrunk(t *testing.T, full, pruned *resource.State) int {
	t.Helper()
	return count(t, full.Listeners, pruned.Listeners) + count(t, full.RouteConfigs, pruned.RouteConfigs) +
		count(t, full.Clusters, pruned.Clusters)
}

func count[M any](t *testing.T, full, pruned map[string]M) int {
	t.Helper()
	n := 0
	for k, m := range full {
		if proto.Size(message(t, pruned[k])) < proto.Size(message(t, m)) {
			n++
		}
	}
	return n
}

package dump

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// istiodTestdata returns the directory of the recorded istiod output for mode.
func istiodTestdata(t testing.TB, mode string) string {
	t.Helper()
	dir := filepath.Join("../../../testdata/istiod", mode)
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("istiod testdata: %v", err)
	}
	return dir
}

func names[T interface{ GetName() string }](xs []T) []string {
	var out []string
	for _, x := range xs {
		out = append(out, x.GetName())
	}
	return out
}

func TestLoadDirIstiod(t *testing.T) {
	for _, tc := range []struct {
		mode                                   string
		listeners, routes, clusters, endpoints int
	}{
		{"sotw", 4, 1, 13, 9},
		{"delta", 4, 1, 13, 9},
		{"sotw-interception-none", 2, 1, 12, 9},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			r, err := LoadDir(istiodTestdata(t, tc.mode))
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Listeners) != tc.listeners || len(r.RouteConfigs) != tc.routes ||
				len(r.Clusters) != tc.clusters || len(r.Endpoints) != tc.endpoints {
				t.Fatalf("got %d listeners, %d route configs, %d clusters, %d endpoints; want %d, %d, %d, %d",
					len(r.Listeners), len(r.RouteConfigs), len(r.Clusters), len(r.Endpoints),
					tc.listeners, tc.routes, tc.clusters, tc.endpoints)
			}
			for _, l := range [][]string{names(r.Listeners), names(r.RouteConfigs), names(r.Clusters)} {
				for i := 1; i < len(l); i++ {
					if l[i-1] >= l[i] {
						t.Errorf("not sorted by name: %q before %q", l[i-1], l[i])
					}
				}
			}
			snap := r.Snapshot()
			if snap.Seq != 1 || !snap.Changes.Full {
				t.Errorf("snapshot Seq=%d Full=%v, want 1 and true", snap.Seq, snap.Changes.Full)
			}
			// Route configurations are in the snapshot's wire form, with the loaded
			// content.
			if len(snap.RouteConfigs) != len(r.RouteConfigs) {
				t.Errorf("%d route configs in the snapshot, want %d", len(snap.RouteConfigs), len(r.RouteConfigs))
			}
			for _, rc := range r.RouteConfigs {
				got := snap.RouteConfigs[rc.GetName()]
				if got == nil {
					t.Errorf("route config %s not in the snapshot", rc.GetName())
					continue
				}
				if m, err := got.Message(); err != nil || !proto.Equal(m, rc) || len(got.VirtualHosts) != len(rc.GetVirtualHosts()) {
					t.Errorf("route config %s: snapshot content differs (%v)", rc.GetName(), err)
				}
			}
			// Clusters (names and shape) hold the loaded content too; and consistency:
			// every EDS cluster has its endpoints under its EDS name.
			if len(snap.Clusters) != len(r.Clusters) {
				t.Errorf("%d clusters in the snapshot, want %d", len(snap.Clusters), len(r.Clusters))
			}
			for _, c := range r.Clusters {
				got := snap.Clusters[c.GetName()]
				if got == nil {
					t.Errorf("cluster %s not in the snapshot", c.GetName())
					continue
				}
				if m, err := got.Message(); err != nil || !proto.Equal(m, c) {
					t.Errorf("cluster %s: snapshot content differs (%v)", c.GetName(), err)
				}
				if !resource.IsEDS(c) {
					continue
				}
				if got.EDS != c.GetEdsClusterConfig().GetServiceName() {
					t.Errorf("cluster %s: EDS name %q, want %q", c.GetName(), got.EDS, c.GetEdsClusterConfig().GetServiceName())
				}
				if _, ok := snap.Endpoints[got.EDS]; !ok {
					t.Errorf("cluster %s: no endpoints in the snapshot", c.GetName())
				}
			}
		})
	}
}

// Istio's ALPN filter config decodes (package resource registers its type): its
// HTTP/1.1 list is what the translation sends upstream.
func TestLoadDirIstioALPN(t *testing.T) {
	r, err := LoadDir(istiodTestdata(t, "sotw"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, hf := range httpFilters(t, r) {
		if a := hf.GetTypedConfig(); a.GetTypeUrl() == "type.googleapis.com/"+resource.IstioALPNType {
			got = resource.IstioALPN(a)
		}
	}
	if want := []string{"istio-http/1.1", "istio", "http/1.1"}; !slices.Equal(got, want) {
		t.Errorf("Istio's ALPN for HTTP/1.1: %q, want %q", got, want)
	}
}

// A typed config of a type nobody registered survives as an Any with its type URL and an
// empty value.
func TestLoadDirKeepsUnknownAny(t *testing.T) {
	const unknown = "type.googleapis.com/example.filter.v1.Unknown"
	dir := writeFiles(t, map[string]string{"lds/l.json": `{"name": "l", "filterChains": [{"filters": [{"name": "hcm", "typedConfig": {
		"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
		"statPrefix": "s", "rds": {"routeConfigName": "r", "configSource": {"ads": {}}},
		"httpFilters": [{"name": "x", "typedConfig": {"@type": "` + unknown + `", "anything": [1, 2]}},
			{"name": "envoy.filters.http.router", "typedConfig": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}`})
	r, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, hf := range httpFilters(t, r) {
		if a := hf.GetTypedConfig(); a.GetTypeUrl() == unknown {
			found = true
			if len(a.GetValue()) != 0 {
				t.Errorf("unknown Any has value %x, want empty", a.GetValue())
			}
		}
	}
	if !found {
		t.Fatalf("no HTTP filter with type %s found", unknown)
	}
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// httpFilters are the HTTP filters of every HTTP connection manager of r's listeners.
func httpFilters(t *testing.T, r *Resources) []*hcmv3.HttpFilter {
	t.Helper()
	var out []*hcmv3.HttpFilter
	for _, l := range r.Listeners {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				hcm := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig().MessageIs(hcm) {
					if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
						t.Fatal(err)
					}
					out = append(out, hcm.GetHttpFilters()...)
				}
			}
		}
	}
	return out
}

func TestLoadDirEndpointNameFromCluster(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"cds/outbound_80__a.json": `{"name":"outbound|80||a","type":"EDS","edsClusterConfig":{"serviceName":"eds-a"}}`,
		"eds/outbound_80__a.json": `{"endpoints":[{"lbEndpoints":[{"endpoint":{"address":{"socketAddress":{"address":"10.0.0.1","portValue":80}}}}]}]}`,
		"eds/README.txt":          "ignored",
	})
	r, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Endpoints) != 1 || r.Endpoints[0].GetClusterName() != "eds-a" {
		t.Fatalf("endpoints %v, want one named eds-a", r.Endpoints)
	}
	if _, ok := r.Snapshot().Endpoints["eds-a"]; !ok {
		t.Error("snapshot has no endpoints under eds-a")
	}
}

func TestLoadDirErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  []string // substrings of the error
	}{
		{"bad json", map[string]string{"lds/x.json": `{"name":`}, []string{"lds/x.json", "Listener"}},
		{"unknown field", map[string]string{"cds/c.json": `{"name":"c","bogus":1}`}, []string{"cds/c.json", "bogus"}},
		{"no name", map[string]string{"rds/r.json": `{}`}, []string{"rds/r.json", "no name"}},
		{"orphan endpoints", map[string]string{"eds/e.json": `{"endpoints":[]}`}, []string{"eds/e.json", "cluster_name is empty"}},
		{"duplicate", map[string]string{"cds/a.json": `{"name":"c"}`, "cds/b.json": `{"name":"c"}`}, []string{`two cluster resources named "c"`}},
		{"registered Any with bad field", map[string]string{"lds/l.json": `{"name":"l","filterChains":[{"filters":[{"name":"f","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy","nope":1}}]}]}`}, []string{"lds/l.json", "nope"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadDir(writeFiles(t, tc.files))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	if _, err := LoadDir(filepath.Join(t.TempDir(), "absent")); err == nil {
		t.Error("missing directory: no error")
	}
}

func TestStripKeepsLargeIntegers(t *testing.T) {
	in := []byte(`{"a":{"@type":"type.googleapis.com/x.Unknown","f":1},"n":18446744073709551615}`)
	out, err := stripUnknownAny(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "18446744073709551615") || strings.Contains(string(out), `"f"`) {
		t.Errorf("stripUnknownAny = %s", out)
	}
	var a anypb.Any
	if err := unmarshal([]byte(`{"@type":"type.googleapis.com/x.Unknown","f":{"g":[1,2]}}`), &a); err != nil {
		t.Fatal(err)
	}
	if a.GetTypeUrl() != "type.googleapis.com/x.Unknown" || len(a.GetValue()) != 0 {
		t.Errorf("Any = %v", &a)
	}
}

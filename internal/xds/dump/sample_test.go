package dump

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var updateSample = flag.Bool("update", false, "rewrite testdata/envoy/config_dump.json from testdata/istiod/sotw")

const samplePath = "../../../testdata/envoy/config_dump.json"

// TestSampleConfigDump keeps testdata/envoy/config_dump.json, the sample to try
// `amesh translate -config-dump` on, what its README says: the recorded istiod SotW
// resources in Envoy's /config_dump?include_eds shape. -update rewrites it.
func TestSampleConfigDump(t *testing.T) {
	src := istiodTestdata(t, "sotw")
	if *updateSample {
		b, err := sampleConfigDump(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(samplePath, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := LoadConfigDumpFile(samplePath, 0)
	if err != nil {
		t.Fatal(err)
	}
	want, err := LoadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Endpoints) == 0 {
		t.Error("the sample has no endpoints")
	}
	for _, c := range []struct {
		kind      string
		got, want []proto.Message
	}{
		{"listeners", msgs(got.Listeners), msgs(want.Listeners)},
		{"route configurations", msgs(got.RouteConfigs), msgs(want.RouteConfigs)},
		{"clusters", msgs(got.Clusters), msgs(want.Clusters)},
		{"endpoints", msgs(got.Endpoints), msgs(want.Endpoints)},
	} {
		if len(c.got) != len(c.want) {
			t.Errorf("%s: %d in the sample, %d recorded (run with -update)", c.kind, len(c.got), len(c.want))
			continue
		}
		for i := range c.got {
			if !proto.Equal(c.got[i], c.want[i]) {
				t.Errorf("%s[%d] differs from the recording (run with -update)", c.kind, i)
			}
		}
	}
}

func msgs[M proto.Message](ms []M) []proto.Message {
	out := make([]proto.Message, len(ms))
	for i, m := range ms {
		out[i] = m
	}
	return out
}

// sampleConfigDump builds the /config_dump document of the recorded directory dir: the
// sections in Envoy's order, each resource as the dynamic, active one of the version
// istiod last sent for its type (from _responses.jsonl), with that version's time as
// last_updated, and field names as Envoy prints them (the proto names).
func sampleConfigDump(dir string) ([]byte, error) {
	res, err := LoadDir(dir)
	if err != nil {
		return nil, err
	}
	versions, err := recordedVersions(filepath.Join(dir, "_responses.jsonl"))
	if err != nil {
		return nil, err
	}
	var summary struct {
		NodeID string `json:"node_id"`
	}
	if b, err := os.ReadFile(filepath.Join(dir, "_summary.json")); err != nil {
		return nil, err
	} else if err := json.Unmarshal(b, &summary); err != nil {
		return nil, err
	}
	updated := func(typ string) *timestamppb.Timestamp {
		at, _, _ := strings.Cut(versions[typ], "/")
		t, err := time.Parse(time.RFC3339, at)
		if err != nil {
			return nil
		}
		return timestamppb.New(t)
	}
	pack := func(m proto.Message) *anypb.Any {
		a, err := anypb.New(m)
		if err != nil {
			panic(err)
		}
		return a
	}

	boot := &adminv3.BootstrapConfigDump{Bootstrap: &bootstrapv3.Bootstrap{Node: &corev3.Node{Id: summary.NodeID}}}
	clusters := &adminv3.ClustersConfigDump{VersionInfo: versions["cds"]}
	for _, c := range res.Clusters {
		clusters.DynamicActiveClusters = append(clusters.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{
			VersionInfo: versions["cds"], Cluster: pack(c), LastUpdated: updated("cds")})
	}
	endpoints := &adminv3.EndpointsConfigDump{}
	for _, e := range res.Endpoints {
		endpoints.DynamicEndpointConfigs = append(endpoints.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{
			VersionInfo: versions["eds"], EndpointConfig: pack(e), LastUpdated: updated("eds")})
	}
	listeners := &adminv3.ListenersConfigDump{VersionInfo: versions["lds"]}
	for _, l := range res.Listeners {
		listeners.DynamicListeners = append(listeners.DynamicListeners, &adminv3.ListenersConfigDump_DynamicListener{
			Name: l.GetName(), ActiveState: &adminv3.ListenersConfigDump_DynamicListenerState{
				VersionInfo: versions["lds"], Listener: pack(l), LastUpdated: updated("lds")}})
	}
	routes := &adminv3.RoutesConfigDump{}
	for _, r := range res.RouteConfigs {
		routes.DynamicRouteConfigs = append(routes.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{
			VersionInfo: versions["rds"], RouteConfig: pack(r), LastUpdated: updated("rds")})
	}
	doc := &adminv3.ConfigDump{}
	for _, s := range []proto.Message{boot, clusters, endpoints, listeners, &adminv3.ScopedRoutesConfigDump{}, routes, &adminv3.SecretsConfigDump{}} {
		doc.Configs = append(doc.Configs, pack(s))
	}
	b, err := protojson.MarshalOptions{UseProtoNames: true, Resolver: lenientResolver{}}.Marshal(doc)
	if err != nil {
		return nil, err
	}
	// Typed configs of Istio's own filters (types amesh does not link) were decoded
	// empty: put back their recorded bodies.
	bodies, err := unknownBodies(dir)
	if err != nil {
		return nil, err
	}
	var tree any
	if err := json.Unmarshal(b, &tree); err != nil {
		return nil, err
	}
	restore(tree, bodies)
	// Field order and spacing as encoding/json prints them: stable across builds
	// (protojson's spacing is not).
	return json.MarshalIndent(tree, "", " ")
}

// unknownBodies returns the recorded body of every typed config in dir's resources
// whose type is not registered, by type URL, with Envoy's (proto) field names.
func unknownBodies(dir string) (map[string]map[string]any, error) {
	out := map[string]map[string]any{}
	files, err := filepath.Glob(filepath.Join(dir, "*", "*.json"))
	if err != nil {
		return nil, err
	}
	var walk func(v any) error
	walk = func(v any) error {
		switch t := v.(type) {
		case map[string]any:
			if url, ok := t["@type"].(string); ok && len(t) > 1 {
				if _, err := (lenientResolver{}).FindMessageByURL(url); err == nil && !registered(url) {
					body := snakeKeys(t).(map[string]any)
					if prev, ok := out[url]; ok && !jsonEqual(prev, body) {
						return fmt.Errorf("%s occurs with different bodies", url)
					}
					out[url] = body
				}
			}
			for _, x := range t {
				if err := walk(x); err != nil {
					return err
				}
			}
		case []any:
			for _, x := range t {
				if err := walk(x); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		if err := walk(v); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
	}
	return out, nil
}

func registered(url string) bool {
	_, err := protoregistry.GlobalTypes.FindMessageByURL(url)
	return err == nil
}

// restore replaces every typed config decoded empty ({"@type": url, "value": {}}, an
// Empty in an Any) that bodies has a body for.
func restore(v any, bodies map[string]map[string]any) {
	body := func(x any) (map[string]any, bool) {
		m, ok := x.(map[string]any)
		if !ok || len(m) != 2 || fmt.Sprint(m["value"]) != "map[]" {
			return nil, false
		}
		b, ok := bodies[fmt.Sprint(m["@type"])]
		return b, ok
	}
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if b, ok := body(x); ok {
				t[k] = b
				continue
			}
			restore(x, bodies)
		}
	case []any:
		for i, x := range t {
			if b, ok := body(x); ok {
				t[i] = b
				continue
			}
			restore(x, bodies)
		}
	}
}

// snakeKeys converts the keys of JSON objects from protojson's camelCase to proto
// names (alpnOverride -> alpn_override); for messages without map fields only.
func snakeKeys(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			if k != "@type" {
				var b strings.Builder
				for _, r := range k {
					if unicode.IsUpper(r) {
						b.WriteByte('_')
						r = unicode.ToLower(r)
					}
					b.WriteRune(r)
				}
				k = b.String()
			}
			out[k] = snakeKeys(x)
		}
		return out
	case []any:
		for i, x := range t {
			t[i] = snakeKeys(x)
		}
	}
	return v
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// recordedVersions returns the last version received per type ("cds", ...).
func recordedVersions(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e struct{ Dir, Type, Version string }
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, err
		}
		if e.Dir == "recv" {
			out[e.Type] = e.Version
		}
	}
	return out, sc.Err()
}

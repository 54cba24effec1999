package resource_test

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// richRC is a valid route configuration with fields before and after virtual_hosts
// (field 2), maps at the configuration and virtual-host level, and what Prune clears
// (metadata, decorators, per-filter configs of filters translation does not read).
func richRC(t *testing.T) *routev3.RouteConfiguration {
	t.Helper()
	meta := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"istio": {Fields: map[string]*structpb.Value{"config": structpb.NewStringValue("/apis/x")}},
	}}
	filters := map[string]*anypb.Any{
		"envoy.filters.http.fault": mustAny(t, wrapperspb.String("fault")),
		"envoy.filters.http.cors":  mustAny(t, wrapperspb.String("cors")),
		"istio.stats":              mustAny(t, wrapperspb.String("stats")),
	}
	vh := func(n int) *routev3.VirtualHost {
		name := fmt.Sprintf("svc-%d.default.svc.cluster.local:9080", n)
		return &routev3.VirtualHost{
			Name:                 name,
			Domains:              []string{name, fmt.Sprintf("svc-%d", n)},
			Metadata:             meta,
			TypedPerFilterConfig: filters,
			Routes: []*routev3.Route{{
				Name:      "default",
				Match:     &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Metadata:  meta,
				Decorator: &routev3.Decorator{Operation: name + "/*"},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: fmt.Sprintf("outbound|9080||svc-%d", n)},
				}},
			}},
		}
	}
	return &routev3.RouteConfiguration{
		Name:                           "9080",
		VirtualHosts:                   []*routev3.VirtualHost{vh(0), vh(1), vh(2)},
		ValidateClusters:               wrapperspb.Bool(false),
		Metadata:                       meta,
		TypedPerFilterConfig:           filters,
		MaxDirectResponseBodySizeBytes: wrapperspb.UInt32(1024),
	}
}

// reassemble is the wire form of r's route configuration: its header followed by each
// virtual host's wire form as a virtual_hosts field.
func reassemble(t *testing.T, r *resource.RouteConfig) []byte {
	t.Helper()
	b := append([]byte(nil), r.Header...)
	for _, v := range r.VirtualHosts {
		w, err := resource.VirtualHostWire(v)
		if err != nil {
			t.Fatal(err)
		}
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, w)
	}
	return b
}

func TestRouteConfigRoundTrip(t *testing.T) {
	orig := richRC(t)
	want := proto.Clone(orig)
	r, err := resource.NewRouteConfig(orig)
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != "9080" || len(r.VirtualHosts) != 3 || r.Routes != 3 {
		t.Fatalf("name %q, %d virtual hosts, %d routes; want 9080, 3, 3", r.Name, len(r.VirtualHosts), r.Routes)
	}
	m, err := r.Message()
	if err != nil {
		t.Fatal(err)
	}
	if m == orig || !proto.Equal(m, want) {
		t.Errorf("Message is not a new decode equal to the original:\n%v\nwant\n%v", m, want)
	}
	if m2, _ := r.Message(); m2 == m {
		t.Error("a RouteConfig handed out the same decoded message twice: it keeps it")
	}

	// The header holds everything but the virtual hosts.
	h, err := r.HeaderMessage()
	if err != nil {
		t.Fatal(err)
	}
	noVH := proto.Clone(want).(*routev3.RouteConfiguration)
	noVH.VirtualHosts = nil
	if !proto.Equal(h, noVH) {
		t.Errorf("HeaderMessage = %v, want the configuration without virtual hosts", h)
	}

	// Each virtual host decodes to the original's, in order, and header plus virtual
	// hosts re-assemble the deterministic wire form of the whole message.
	for i, v := range r.VirtualHosts {
		vh, err := resource.DecodeVirtualHost(v)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(vh, want.(*routev3.RouteConfiguration).VirtualHosts[i]) {
			t.Errorf("virtual host %d = %v, want %v", i, vh, want.(*routev3.RouteConfiguration).VirtualHosts[i])
		}
	}
	var back routev3.RouteConfiguration
	if err := proto.Unmarshal(reassemble(t, r), &back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&back, want) {
		t.Error("header + virtual hosts do not re-assemble the configuration")
	}
	if b := marshal(t, want); len(b) != len(reassemble(t, r)) {
		t.Errorf("re-assembled %d bytes, the message marshals to %d", len(reassemble(t, r)), len(b))
	}

	// The virtual hosts are capped slices of one array: appending to one must not
	// overwrite the next.
	next := append([]byte(nil), r.VirtualHosts[1]...)
	_ = append(r.VirtualHosts[0], 0xff, 0xff, 0xff)
	if !bytes.Equal(r.VirtualHosts[1], next) {
		t.Error("appending to one virtual host's wire form overwrote the next")
	}
}

// A configuration without virtual hosts, and one that is empty, round-trip too.
func TestRouteConfigNoVirtualHosts(t *testing.T) {
	for _, rc := range []*routev3.RouteConfiguration{{}, {Name: "x", ValidateClusters: wrapperspb.Bool(true)}} {
		r := resource.MustRouteConfig(rc)
		m, err := r.Message()
		if err != nil || !proto.Equal(m, rc) || len(r.VirtualHosts) != 0 || r.Name != rc.GetName() {
			t.Errorf("%v: got %v (%v), %d virtual hosts", rc, m, err, len(r.VirtualHosts))
		}
	}
}

// withReversedMap returns the wire form of m with the entries of its map field
// re-serialized in reverse order of keys: what a marshaller that does not sort maps
// (istiod's) may send for the same content.
func withReversedMap(t *testing.T, m proto.Message, field protoreflect.Name) []byte {
	t.Helper()
	fd := m.ProtoReflect().Descriptor().Fields().ByName(field)
	rest := proto.Clone(m)
	rest.ProtoReflect().Clear(fd)
	b := marshal(t, rest)
	only := m.ProtoReflect().Type().New()
	only.Set(fd, m.ProtoReflect().Get(fd))
	det := marshal(t, only.Interface())
	// det holds the entries sorted by key; append them last to first.
	var sorted [][]byte
	for rest := det; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 || num != fd.Number() || typ != protowire.BytesType {
			t.Fatalf("unexpected field %d in the map's wire form", num)
		}
		v, k := protowire.ConsumeBytes(rest[n:])
		if k < 0 {
			t.Fatal(protowire.ParseError(k))
		}
		sorted = append(sorted, v)
		rest = rest[n+k:]
	}
	if len(sorted) < 2 {
		t.Fatal("need two map entries to reorder")
	}
	for i := len(sorted) - 1; i >= 0; i-- {
		b = protowire.AppendTag(b, fd.Number(), protowire.BytesType)
		b = protowire.AppendBytes(b, sorted[i])
	}
	return b
}

func TestRouteConfigEqual(t *testing.T) {
	checkKeptEqual(t, richRC(t), "typed_per_filter_config", resource.MustRouteConfig,
		nil,
		map[string]func(*routev3.RouteConfiguration){
			"one virtual host's route": func(m *routev3.RouteConfiguration) {
				m.VirtualHosts[1].Routes[0].GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "elsewhere"}
			},
			"one virtual host's domains": func(m *routev3.RouteConfiguration) { m.VirtualHosts[2].Domains = m.VirtualHosts[2].Domains[:1] },
			"virtual host order": func(m *routev3.RouteConfiguration) {
				m.VirtualHosts[0], m.VirtualHosts[1] = m.VirtualHosts[1], m.VirtualHosts[0]
			},
			"a virtual host removed": func(m *routev3.RouteConfiguration) { m.VirtualHosts = m.VirtualHosts[:2] },
			"the header":             func(m *routev3.RouteConfiguration) { m.ValidateClusters = wrapperspb.Bool(true) },
			"the name":               func(m *routev3.RouteConfiguration) { m.Name = "8080" },
		})
}

// DecodeBytes of an RDS resource gives the RouteConfig of the pruned message, and the
// pruned message itself (Decoded.Route, which the client hands over once).
func TestDecodeBytesRouteConfig(t *testing.T) {
	check := func(t *testing.T, rc *routev3.RouteConfiguration) {
		t.Helper()
		d := checkDecodeBytes(t, resource.RouteConfigType, rc, func(r *resource.RouteConfig) string { return r.Name })
		want := proto.Clone(rc)
		resource.Prune(want)
		if !proto.Equal(d.Route, want) {
			t.Error("Decoded.Route is not the pruned message")
		}
	}
	builtAndRecorded(t, richRC(t), func(r *dump.Resources) []*routev3.RouteConfiguration { return r.RouteConfigs }, check)
}

// builtAndRecorded runs check on built, which Prune must change, and on each resource
// of the istiod recording that recorded picks.
func builtAndRecorded[M proto.Message](t *testing.T, built M, recorded func(*dump.Resources) []M, check func(*testing.T, M)) {
	t.Run("built", func(t *testing.T) {
		pruned := proto.Clone(built)
		resource.Prune(pruned)
		if proto.Equal(pruned, built) {
			t.Fatal("Prune changed nothing: the test would not see an unpruned result")
		}
		check(t, built)
	})
	t.Run("istiod", func(t *testing.T) {
		res, err := dump.LoadDir(filepath.Join("..", "..", "..", "testdata", "istiod", "sotw"))
		if err != nil {
			t.Skipf("istiod testdata: %v", err)
		}
		ms := recorded(res)
		if len(ms) == 0 {
			t.Fatal("no such resources in the istiod testdata")
		}
		for _, m := range ms {
			name := m.ProtoReflect().Get(m.ProtoReflect().Descriptor().Fields().ByName("name")).String()
			t.Run(name, func(t *testing.T) { check(t, m) })
		}
	})
}

// A big configuration keeps its virtual hosts in order, each the wire form of the
// message's virtual host of the same index.
func TestRouteConfigBig(t *testing.T) {
	msgs := meshgen.Generate(meshgen.Options{Services: 1000}).Resources()[resource.RouteConfigType]
	if len(msgs) == 0 {
		t.Fatal("no route configurations")
	}
	for _, msg := range msgs {
		rc := msg.(*routev3.RouteConfiguration)
		d, err := resource.DecodeBytes(resource.RouteConfigType, marshal(t, rc), "", clientOpts)
		if err != nil {
			t.Fatal(err)
		}
		r := d.Msg.(*resource.RouteConfig)
		vhs := rc.GetVirtualHosts()
		if len(vhs) <= 1000 || len(r.VirtualHosts) != len(vhs) {
			t.Fatalf("%s: %d virtual hosts, the message has %d (want more than 1,000)", rc.GetName(), len(r.VirtualHosts), len(vhs))
		}
		routes := 0
		for i, v := range r.VirtualHosts {
			vh, err := resource.DecodeVirtualHost(v)
			if err != nil {
				t.Fatal(err)
			}
			if vh.GetName() != vhs[i].GetName() || len(vh.GetRoutes()) != len(vhs[i].GetRoutes()) {
				t.Fatalf("%s: virtual host %d is %q with %d routes, want %q with %d", rc.GetName(), i, vh.GetName(), len(vh.GetRoutes()), vhs[i].GetName(), len(vhs[i].GetRoutes()))
			}
			routes += len(vhs[i].GetRoutes())
		}
		if r.Routes != routes {
			t.Errorf("%s: Routes %d, want %d", rc.GetName(), r.Routes, routes)
		}
		m, err := r.Message()
		if err != nil {
			t.Fatal(err)
		}
		want := proto.Clone(rc)
		resource.Prune(want)
		if !proto.Equal(m, want) {
			t.Errorf("%s: message differs from the pruned original", rc.GetName())
		}
	}
}

// Message may be called concurrently (the client and its consumer share a
// RouteConfig); every Message is the same content.
func TestRouteConfigConcurrent(t *testing.T) {
	rc := richRC(t)
	want := proto.Clone(rc).(*routev3.RouteConfiguration)
	r := resource.MustRouteConfig(rc)
	checkConcurrentMessage(t, r, want, func(int, *routev3.RouteConfiguration) {})
}

package resource_test

// Differential tests of the wire decoder of ClusterLoadAssignments (eds_decode.go)
// against the general path (proto.Unmarshal + ValidateAll + FromCLA).

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// compareDecoders checks the wire decoder's contract on b and reports whether it
// handled b itself (without falling back) and whether the general path accepts b:
//   - the general path accepts b: the wire decoder accepts it with an equal result;
//   - the wire decoder accepts b that the general path rejects: the only defect is in
//     the metadata it skips, so the general path accepts b without its metadata
//     (stripMetadata), with a result equal to the wire decoder's;
//   - decodeLoadAssignment (what DecodeBytes calls) returns exactly the general
//     path's result and error whenever the wire decoder gives up.
func compareDecoders(t testing.TB, b []byte) (fast, valid bool) {
	t.Helper()
	want, wantErr := resource.DecodeLoadAssignmentProto(b)
	got, fast := resource.DecodeLoadAssignmentWire(b)
	if fast != (got != nil) {
		t.Fatalf("wire decoder returned %v with ok=%v", got, fast)
	}
	switch {
	case wantErr == nil && !fast:
		// Allowed (the decoder gives up on what it does not handle); the combined
		// path below must then give the general path's result.
	case wantErr == nil && !got.Equal(want):
		t.Fatalf("wire decoder result differs from the general path:\n got %+v\nwant %+v", got, want)
	case wantErr != nil && fast:
		stripped, ok := stripMetadata(b)
		if !ok {
			t.Fatalf("wire decoder accepted what the general path rejects (%v), and metadata cannot be stripped from it", wantErr)
		}
		sw, err := resource.DecodeLoadAssignmentProto(stripped)
		if err != nil {
			t.Fatalf("wire decoder accepted what the general path rejects (%v), and not only because of metadata: %v", wantErr, err)
		}
		if !got.Equal(sw) {
			t.Fatalf("wire decoder result differs from the general path's without metadata:\n got %+v\nwant %+v", got, sw)
		}
	}
	la, err := resource.DecodeLoadAssignment(b)
	if fast {
		if err != nil || !la.Equal(got) {
			t.Fatalf("decodeLoadAssignment = %+v, %v; the wire decoder gave %+v", la, err, got)
		}
	} else if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) || !la.Equal(want) {
		t.Fatalf("decodeLoadAssignment = %+v, %v; the general path gave %+v, %v", la, err, want, wantErr)
	}
	return fast, wantErr == nil
}

// stripMetadata removes from LocalityLbEndpoints.metadata (9) and LbEndpoint.metadata
// (3) everything the wire decoder skips unvalidated: all but the filter_metadata
// entry of the transport socket match. ok is false when b is not well-formed down to
// those fields.
func stripMetadata(b []byte) ([]byte, bool) {
	return rewrite(b, func(num protowire.Number, v []byte) ([]byte, bool, bool) {
		if num != 2 { // ClusterLoadAssignment.endpoints
			return nil, false, true
		}
		out, ok := rewrite(v, func(num protowire.Number, v []byte) ([]byte, bool, bool) {
			switch num {
			case 9: // LocalityLbEndpoints.metadata
				return keepSocketMatch(v)
			case 2: // LocalityLbEndpoints.lb_endpoints
				out, ok := rewrite(v, func(num protowire.Number, v []byte) ([]byte, bool, bool) {
					if num == 3 { // LbEndpoint.metadata
						return keepSocketMatch(v)
					}
					return nil, false, true
				})
				return out, false, ok
			}
			return nil, false, true
		})
		return out, false, ok
	})
}

// keepSocketMatch is the replacement of a Metadata for stripMetadata: only its
// filter_metadata entries for the transport socket match (dropped when there are none).
func keepSocketMatch(md []byte) ([]byte, bool, bool) {
	kept := false
	out, ok := rewrite(md, func(num protowire.Number, v []byte) ([]byte, bool, bool) {
		if num != 1 {
			return nil, true, true
		}
		// The entry's key, when it comes first (as every encoder writes it).
		knum, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return nil, true, true
		}
		k, m := protowire.ConsumeBytes(v[n:])
		if knum != 1 || typ != protowire.BytesType || m < 0 || string(k) != resource.SocketMatchKey {
			return nil, true, true
		}
		kept = true
		return nil, false, true
	})
	if !kept {
		return nil, true, ok
	}
	if out == nil {
		out = []byte{}
	}
	return out, false, ok
}

// rewrite copies the fields of message b. For each length-delimited field, edit returns
// a replacement value (nil: keep), whether to drop the field, and ok.
func rewrite(b []byte, edit func(protowire.Number, []byte) (repl []byte, drop, ok bool)) ([]byte, bool) {
	var out []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, false
		}
		whole := b[:n+m]
		b = b[n+m:]
		if typ != protowire.BytesType {
			out = append(out, whole...)
			continue
		}
		v, _ := protowire.ConsumeBytes(whole[n:])
		repl, drop, ok := edit(num, v)
		switch {
		case !ok:
			return nil, false
		case drop:
		case repl != nil:
			out = protowire.AppendTag(out, num, typ)
			out = protowire.AppendBytes(out, repl)
		default:
			out = append(out, whole...)
		}
	}
	return out, true
}

// Wire builders, for inputs proto.Marshal refuses to produce (invalid UTF-8, unknown
// fields, wrong wire types, repeated singular fields).
func msg(fields ...[]byte) []byte { return bytes.Join(fields, nil) }

func fBytes(num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v)
}

func fStr(num protowire.Number, s string) []byte { return fBytes(num, []byte(s)) }

func fVarint(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
}

// wire-built messages of the common shapes
func wSocket(addr string, port uint64) []byte {
	return wEndpoint(fBytes(1, fBytes(1, msg(fStr(2, addr), fVarint(3, port))))) // LbEndpoint.endpoint.address.socket_address
}

func wLbEndpoint(fields ...[]byte) []byte { return fBytes(2, msg(fields...)) } // LocalityLbEndpoints.lb_endpoints
func wLocality(fields ...[]byte) []byte   { return fBytes(2, msg(fields...)) } // ClusterLoadAssignment.endpoints
func wCLA(fields ...[]byte) []byte        { return msg(append([][]byte{fStr(1, "c")}, fields...)...) }
func wEndpoint(fields ...[]byte) []byte   { return fBytes(1, msg(fields...)) } // LbEndpoint.endpoint
func wWeight(num protowire.Number, v uint64) []byte {
	return fBytes(num, fVarint(1, v))
}

// Message builders for the semantic cases.
func socket(addr string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func lbEndpoint(a *corev3.Address) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{
		HostIdentifier:      &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: a}},
		LoadBalancingWeight: wrapperspb.UInt32(1),
	}
}

func istioMetadata(workload string) *corev3.Metadata {
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"istio":                        {Fields: map[string]*structpb.Value{"workload": structpb.NewStringValue(workload)}},
		"envoy.transport_socket_match": {Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio")}},
	}}
}

// istioCLA is an assignment shaped like istiod's: two localities, weights, metadata.
func istioCLA() *endpointv3.ClusterLoadAssignment {
	e1, e2, e3 := lbEndpoint(socket("10.0.0.1", 9080)), lbEndpoint(socket("10.0.0.2", 9080)), lbEndpoint(socket("fd00::3", 9080))
	e1.Metadata, e2.Metadata = istioMetadata("a;default;a;v1;Kubernetes"), istioMetadata("b;default;a;v1;Kubernetes")
	e2.HealthStatus = corev3.HealthStatus_UNHEALTHY
	e3.LoadBalancingWeight = wrapperspb.UInt32(7)
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: "outbound|9080||a.default.svc.cluster.local",
		Endpoints: []*endpointv3.LocalityLbEndpoints{
			{
				Locality:            &corev3.Locality{Region: "r1", Zone: "z1"},
				LbEndpoints:         []*endpointv3.LbEndpoint{e1, e2},
				LoadBalancingWeight: wrapperspb.UInt32(2),
				Metadata:            istioMetadata("x"),
			},
			{LbEndpoints: []*endpointv3.LbEndpoint{e3}, LoadBalancingWeight: wrapperspb.UInt32(7), Priority: 1},
		},
	}
}

// cla is istioCLA with one change.
func cla(edit func(c *endpointv3.ClusterLoadAssignment)) *endpointv3.ClusterLoadAssignment {
	c := istioCLA()
	edit(c)
	return c
}

// firstEndpoint is the first LbEndpoint's endpoint.
func firstEndpoint(c *endpointv3.ClusterLoadAssignment) *endpointv3.Endpoint {
	return c.Endpoints[0].LbEndpoints[0].GetEndpoint()
}

func firstSocket(c *endpointv3.ClusterLoadAssignment) *corev3.SocketAddress {
	return firstEndpoint(c).GetAddress().GetSocketAddress()
}

type edsCase struct {
	name string
	b    []byte
	// valid: the general path accepts it; fast: the wire decoder handles it itself.
	valid, fast bool
	// check, when set, inspects the accepted result.
	check func(t *testing.T, la *resource.LoadAssignment)
}

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func firstKind(want resource.EndpointKind, addr string, port uint16) func(t *testing.T, la *resource.LoadAssignment) {
	return func(t *testing.T, la *resource.LoadAssignment) {
		e := la.Localities[0].Endpoints[0]
		if e.Kind != want || la.Localities[0].Address(0) != addr || e.Port != port {
			t.Errorf("first endpoint = %+v, want kind %d address %q port %d", e, want, addr, port)
		}
	}
}

func edsCases(t testing.TB) []edsCase {
	badUTF8 := string([]byte{0xff, 0xfe})
	base := marshal(t, istioCLA())
	return []edsCase{
		{name: "istio shape", b: base, valid: true, fast: true, check: func(t *testing.T, la *resource.LoadAssignment) {
			if len(la.Localities) != 2 || la.NumEndpoints() != 3 || la.Localities[0].Weight != 2 || la.Localities[1].Priority != 1 ||
				la.Localities[0].Endpoints[1].Health() != corev3.HealthStatus_UNHEALTHY || la.Localities[1].Endpoints[0].Weight != 7 ||
				la.Localities[1].Address(0) != "fd00::3" {
				t.Errorf("got %+v", la)
			}
		}},
		{name: "no endpoints", b: marshal(t, &endpointv3.ClusterLoadAssignment{ClusterName: "c"}), valid: true, fast: true},
		{name: "empty locality", b: wCLA(wLocality()), valid: true, fast: true},
		{name: "udp", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			firstSocket(c).Protocol = corev3.SocketAddress_UDP
		})), valid: true, fast: true, check: firstKind(resource.SocketUDP, "10.0.0.1", 9080)},
		{name: "named port", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			firstSocket(c).PortSpecifier = &corev3.SocketAddress_NamedPort{NamedPort: "http"}
		})), valid: true, fast: true, check: firstKind(resource.NamedPort, "10.0.0.1", 0)},
		{name: "udp named port", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			firstSocket(c).Protocol = corev3.SocketAddress_UDP
			firstSocket(c).PortSpecifier = &corev3.SocketAddress_NamedPort{NamedPort: "dns"}
		})), valid: true, fast: true, check: firstKind(resource.SocketUDP, "10.0.0.1", 0)},
		{name: "socket extras", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			s := firstSocket(c)
			s.ResolverName, s.Ipv4Compat, s.NetworkNamespaceFilepath = "r", true, "/ns"
			firstEndpoint(c).Hostname, firstEndpoint(c).ObservabilityName = "h.example", "obs"
		})), valid: true, fast: true, check: firstKind(resource.SocketTCP, "10.0.0.1", 9080)},
		{name: "pipe", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			firstEndpoint(c).Address = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/s", Mode: 0o600}}}
		})), valid: true, fast: true, check: firstKind(resource.OtherAddress, "", 0)},
		{name: "pipe without path", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			firstEndpoint(c).Address = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Mode: 1}}}
		}))},
		{name: "pipe mode 512", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			firstEndpoint(c).Address = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/p", Mode: 512}}}
		}))},
		{name: "internal address", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			firstEndpoint(c).Address = &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{
				AddressNameSpecifier: &corev3.EnvoyInternalAddress_ServerListenerName{ServerListenerName: "l"}, EndpointId: "e",
			}}}
		})), valid: true, fast: true, check: firstKind(resource.OtherAddress, "", 0)},
		{name: "internal address without listener", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			firstEndpoint(c).Address = &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{EndpointId: "e"}}}
		}))},
		{name: "endpoint without address", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			firstEndpoint(c).Address = nil
		})), valid: true, fast: true, check: firstKind(resource.OtherAddress, "", 0)},
		{name: "address without member", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			firstEndpoint(c).Address = &corev3.Address{}
		}))},
		{name: "endpoint_name", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			c.Endpoints[0].LbEndpoints[0].HostIdentifier = &endpointv3.LbEndpoint_EndpointName{EndpointName: "ep"}
		})), valid: true, fast: true, check: firstKind(resource.NamedEndpoint, "", 0)},
		{name: "no host identifier", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			c.Endpoints[0].LbEndpoints[0].HostIdentifier = nil
		})), valid: true, fast: true, check: firstKind(resource.NamedEndpoint, "", 0)},
		{name: "leds", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			c.Endpoints[1].LbConfig = &endpointv3.LocalityLbEndpoints_LedsClusterLocalityConfig{LedsClusterLocalityConfig: &endpointv3.LedsClusterLocalityConfig{}}
		})), valid: true, fast: true, check: func(t *testing.T, la *resource.LoadAssignment) {
			if la.Localities[0].LEDS || !la.Localities[1].LEDS {
				t.Errorf("LEDS flags: %+v", la.Localities)
			}
		}},
		{name: "leds with collection", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			c.Endpoints[1].LbConfig = &endpointv3.LocalityLbEndpoints_LedsClusterLocalityConfig{LedsClusterLocalityConfig: &endpointv3.LedsClusterLocalityConfig{LedsCollectionName: "x"}}
		})), valid: true},
		{name: "leds with invalid config source", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			c.Endpoints[1].LbConfig = &endpointv3.LocalityLbEndpoints_LedsClusterLocalityConfig{LedsClusterLocalityConfig: &endpointv3.LedsClusterLocalityConfig{LedsConfig: &corev3.ConfigSource{}}}
		}))},
		// load_balancer_endpoints (7) is deprecated, so built on the wire.
		{name: "load_balancer_endpoints", b: wCLA(wLocality(fBytes(7, nil))), valid: true},
		{name: "proximity", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) { c.Endpoints[0].Proximity = wrapperspb.UInt32(3) })), valid: true},
		{name: "priority 128", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) { c.Endpoints[1].Priority = 128 })), valid: true, fast: true},
		{name: "priority 129", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) { c.Endpoints[1].Priority = 129 }))},
		{name: "priority overflowing uint32", b: wCLA(wLocality(fVarint(5, 1<<32+3))), valid: true, fast: true, check: func(t *testing.T, la *resource.LoadAssignment) {
			if la.Localities[0].Priority != 3 {
				t.Errorf("priority %d, want 3 (truncated as the runtime does)", la.Localities[0].Priority)
			}
		}},
		{name: "locality weight 0", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) { c.Endpoints[0].LoadBalancingWeight = wrapperspb.UInt32(0) }))},
		{name: "endpoint weight 0", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			c.Endpoints[0].LbEndpoints[1].LoadBalancingWeight = wrapperspb.UInt32(0)
		}))},
		{name: "no weights", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			c.Endpoints[0].LoadBalancingWeight, c.Endpoints[0].LbEndpoints[0].LoadBalancingWeight = nil, nil
		})), valid: true, fast: true},
		{name: "weight wrappers merge", b: wCLA(wLocality(wWeight(3, 5), fBytes(3, nil))), valid: true, fast: true, check: func(t *testing.T, la *resource.LoadAssignment) {
			if la.Localities[0].Weight != 5 {
				t.Errorf("weight %d, want 5", la.Localities[0].Weight)
			}
		}},
		{name: "weight wrapper with unknown field", b: wCLA(wLocality(fBytes(3, msg(fVarint(1, 5), fVarint(2, 1))))), valid: true},
		{name: "port 65535", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			firstSocket(c).PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: 65535}
		})), valid: true, fast: true, check: firstKind(resource.SocketTCP, "10.0.0.1", 65535)},
		{name: "port 70000", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			firstSocket(c).PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: 70000}
		}))},
		{name: "port 70000 replaced by named port", b: wCLA(wLocality(wLbEndpoint(wEndpoint(fBytes(1, fBytes(1, msg(fStr(2, "h"), fVarint(3, 70000), fStr(4, "http")))))))),
			valid: true, fast: true, check: firstKind(resource.NamedPort, "h", 0)},
		{name: "named port replaced by port 70000", b: wCLA(wLocality(wLbEndpoint(wEndpoint(fBytes(1, fBytes(1, msg(fStr(2, "h"), fStr(4, "http"), fVarint(3, 70000)))))))),
			valid: false},
		{name: "no port", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) { firstSocket(c).PortSpecifier = nil }))},
		{name: "empty address", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) { firstSocket(c).Address = "" }))},
		{name: "unknown protocol", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) { firstSocket(c).Protocol = 7 }))},
		{name: "unknown health status", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			c.Endpoints[0].LbEndpoints[0].HealthStatus = 42
		})), valid: true, fast: true, check: func(t *testing.T, la *resource.LoadAssignment) {
			if la.Localities[0].Endpoints[0].Health() != 42 {
				t.Errorf("health %v, want 42", la.Localities[0].Endpoints[0].Health())
			}
		}},
		// Undefined statuses beyond a byte are kept as one undefined value (see
		// resource.HealthOther), by both paths.
		{name: "health status beyond a byte", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			c.Endpoints[0].LbEndpoints[0].HealthStatus = 300
		})), valid: true, fast: true, check: func(t *testing.T, la *resource.LoadAssignment) {
			if h := la.Localities[0].Endpoints[0].Health(); h != resource.HealthOther {
				t.Errorf("health %v, want %v", h, resource.HealthOther)
			}
		}},
		{name: "negative health status", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			c.Endpoints[0].LbEndpoints[0].HealthStatus = -1
		})), valid: true, fast: true, check: func(t *testing.T, la *resource.LoadAssignment) {
			if h := la.Localities[0].Endpoints[0].Health(); h != resource.HealthOther {
				t.Errorf("health %v, want %v", h, resource.HealthOther)
			}
		}},
		{name: "empty cluster name", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) { c.ClusterName = "" }))},
		{name: "cluster name repeated", b: msg(fStr(1, "first"), fStr(1, "second")), valid: true, fast: true, check: func(t *testing.T, la *resource.LoadAssignment) {
			if la.ClusterName != "second" {
				t.Errorf("name %q", la.ClusterName)
			}
		}},
		{name: "empty policy", b: msg(base, fBytes(4, nil)), valid: true, fast: true},
		{name: "drop_overloads", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			c.Policy = &endpointv3.ClusterLoadAssignment_Policy{DropOverloads: []*endpointv3.ClusterLoadAssignment_Policy_DropOverload{
				{Category: "lb", DropPercentage: &typev3.FractionalPercent{Numerator: 1}},
			}}
		})), valid: true, check: func(t *testing.T, la *resource.LoadAssignment) {
			if la.DropOverloads != 1 {
				t.Errorf("DropOverloads = %d", la.DropOverloads)
			}
		}},
		{name: "drop_overload without category", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			c.Policy = &endpointv3.ClusterLoadAssignment_Policy{DropOverloads: []*endpointv3.ClusterLoadAssignment_Policy_DropOverload{{}}}
		}))},
		{name: "named_endpoints", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			c.NamedEndpoints = map[string]*endpointv3.Endpoint{"n": {Address: socket("10.0.0.9", 1)}}
		})), valid: true},
		{name: "health_check_config", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			firstEndpoint(c).HealthCheckConfig = &endpointv3.Endpoint_HealthCheckConfig{PortValue: 8080}
		})), valid: true},
		{name: "health_check_config port 70000", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			firstEndpoint(c).HealthCheckConfig = &endpointv3.Endpoint_HealthCheckConfig{PortValue: 70000}
		}))},
		{name: "additional_addresses", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			firstEndpoint(c).AdditionalAddresses = []*endpointv3.Endpoint_AdditionalAddress{{Address: socket("10.0.0.8", 1)}}
		})), valid: true},
		// Wire-level cases.
		{name: "unknown top-level field", b: msg(base, fVarint(99, 1)), valid: true},
		{name: "unknown endpoint field", b: wCLA(wLocality(wLbEndpoint(wEndpoint(fBytes(1, fBytes(1, msg(fStr(2, "h"), fVarint(3, 1)))), fVarint(77, 1))))), valid: true},
		{name: "fixed64 unknown field", b: msg(base, protowire.AppendFixed64(protowire.AppendTag(nil, 50, protowire.Fixed64Type), 1)), valid: true},
		// A known field with another wire type is an unknown field to the runtime.
		{name: "priority as bytes", b: wCLA(wLocality(fStr(5, "x"))), valid: true},
		{name: "cluster name as varint", b: msg(fStr(1, "c"), fVarint(1, 3)), valid: true},
		{name: "truncated", b: base[:len(base)-3]},
		{name: "truncated short field", b: []byte{0x0a, 0x02, 'c'}},
		{name: "truncated tag", b: append(append([]byte{}, base...), 0x80)},
		{name: "field number 0", b: msg(base, []byte{0x00, 0x01})},
		{name: "invalid UTF-8 cluster name", b: msg(fStr(1, badUTF8))},
		{name: "invalid UTF-8 address", b: wCLA(wLocality(wLbEndpoint(wSocket(badUTF8, 80))))},
		{name: "invalid UTF-8 named port", b: wCLA(wLocality(wLbEndpoint(wEndpoint(fBytes(1, fBytes(1, msg(fStr(2, "h"), fStr(4, badUTF8))))))))},
		{name: "invalid UTF-8 endpoint_name", b: wCLA(wLocality(wLbEndpoint(fStr(5, badUTF8))))},
		{name: "invalid UTF-8 hostname", b: wCLA(wLocality(wLbEndpoint(wEndpoint(fStr(3, badUTF8)))))},
		{name: "invalid UTF-8 locality", b: wCLA(wLocality(fBytes(1, fStr(1, badUTF8))))},
		{name: "endpoint set twice", b: wCLA(wLocality(wLbEndpoint(wSocket("a", 1), wSocket("b", 2)))), valid: true},
		{name: "socket address set twice", b: wCLA(wLocality(wLbEndpoint(wEndpoint(fBytes(1, msg(fBytes(1, msg(fStr(2, "a"), fVarint(3, 1))), fBytes(1, fVarint(3, 2)))))))), valid: true},
		// The runtime merges the second socket address into the first: UDP b:2.
		{name: "socket address merged", b: wCLA(wLocality(wLbEndpoint(wEndpoint(fBytes(1, msg(
			fBytes(1, msg(fVarint(1, 1), fStr(2, "a"), fVarint(3, 1))), fBytes(1, msg(fStr(2, "b"), fVarint(3, 2))))))))),
			valid: true, check: firstKind(resource.SocketUDP, "b", 2)},
		{name: "endpoint replaced by endpoint_name", b: wCLA(wLocality(wLbEndpoint(wSocket("a", 1), fStr(5, "n")))), valid: true, fast: true,
			check: firstKind(resource.NamedEndpoint, "", 0)},
		{name: "endpoint_name replaced by endpoint", b: wCLA(wLocality(wLbEndpoint(fStr(5, "n"), wSocket("a", 1)))), valid: true, fast: true,
			check: firstKind(resource.SocketTCP, "a", 1)},
		{name: "invalid endpoint replaced by endpoint_name", b: wCLA(wLocality(wLbEndpoint(wSocket("a", 70000), fStr(5, "n")))), valid: true},
		{name: "malformed endpoint replaced by endpoint_name", b: wCLA(wLocality(wLbEndpoint(wEndpoint([]byte{0x0a, 0x05}), fStr(5, "n"))))},
		{name: "lb_endpoints interleaved", b: wCLA(wLocality(wLbEndpoint(wSocket("a", 1)), fVarint(5, 2), wLbEndpoint(wSocket("b", 2))), wLocality(wLbEndpoint(wSocket("c", 3)))),
			valid: true, fast: true, check: func(t *testing.T, la *resource.LoadAssignment) {
				if len(la.Localities) != 2 || la.Localities[0].Priority != 2 || len(la.Localities[0].Endpoints) != 2 ||
					la.Localities[0].Address(1) != "b" || la.Localities[1].Address(0) != "c" {
					t.Errorf("got %+v", la)
				}
			}},
		// Metadata is skipped without validation (see eds_decode.go): the general
		// path rejects these, the wire decoder accepts them.
		{name: "invalid UTF-8 in endpoint metadata", b: wCLA(wLocality(wLbEndpoint(wSocket("a", 1), fBytes(3, fBytes(1, msg(fStr(1, badUTF8))))))), fast: true},
		{name: "empty filter_metadata key", b: marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) {
			c.Endpoints[0].LbEndpoints[0].Metadata.FilterMetadata[""] = &structpb.Struct{}
		})), fast: true},
		// The wire decoder reads filter_metadata's entries to find the socket match:
		// a malformed one is left to the general path.
		{name: "malformed locality metadata", b: wCLA(wLocality(fBytes(9, []byte{0x0a, 0x09}), wLbEndpoint(wSocket("a", 1))))},
		// The transport socket match metadata is kept, in one canonical form
		// whatever order its fields come in; what the wire decoder does not
		// re-encode with certainty is left to the general path.
		{name: "socket match", b: wCLA(wLocality(wLbEndpoint(wSocket("a", 1), wSocketMatch(smField("tlsMode", smStr("istio")))))),
			valid: true, fast: true, check: socketMatch(0, 0, `{"tlsMode":"istio"}`, "")},
		{name: "socket match fields in any order", b: wCLA(wLocality(wLbEndpoint(wSocket("a", 1),
			wSocketMatch(smField("tlsMode", smStr("istio")), smField("b", fVarint(4, 2)), smField("a", fVarint(1, 0)))))),
			valid: true, fast: true, check: socketMatch(0, 0, `{"a":null,"b":true,"tlsMode":"istio"}`, "")},
		{name: "socket match of a locality", b: wCLA(wLocality(wLbEndpoint(wSocket("a", 1)), fBytes(9, socketMatchMD(smField("x", smStr("1")))))),
			valid: true, fast: true, check: socketMatch(0, 0, "", `{"x":"1"}`)},
		{name: "socket match forms numbered alike", b: wCLA(wLocality(
			wLbEndpoint(wSocket("a", 1), wSocketMatch(smField("z", smStr("1")))),
			wLbEndpoint(wSocket("b", 1)),
			fBytes(9, socketMatchMD(smField("a", smStr("2")))))),
			valid: true, fast: true, check: func(t *testing.T, la *resource.LoadAssignment) {
				socketMatch(0, 0, `{"z":"1"}`, `{"a":"2"}`)(t, la)
				socketMatch(0, 1, "", `{"a":"2"}`)(t, la)
			}},
		{name: "socket match with a number", b: wCLA(wLocality(wLbEndpoint(wSocket("a", 1),
			wSocketMatch(smField("n", protowire.AppendFixed64(protowire.AppendTag(nil, 2, protowire.Fixed64Type), 0)))))),
			valid: true, check: socketMatch(0, 0, `{"n":0}`, "")},
		{name: "socket match key twice", b: wCLA(wLocality(wLbEndpoint(wSocket("a", 1),
			wSocketMatch(smField("k", smStr("1")), smField("k", smStr("2")))))),
			valid: true, check: socketMatch(0, 0, `{"k":"2"}`, "")},
		{name: "socket match entry twice", b: wCLA(wLocality(wLbEndpoint(wSocket("a", 1), fBytes(3, msg(
			socketMatchEntry(smField("k", smStr("1"))), socketMatchEntry(smField("k", smStr("2")))))))),
			valid: true, check: socketMatch(0, 0, `{"k":"2"}`, "")},
		{name: "empty socket match", b: wCLA(wLocality(wLbEndpoint(wSocket("a", 1), wSocketMatch()))),
			valid: true, fast: true, check: socketMatch(0, 0, "", "")},
		{name: "metadata as varint", b: wCLA(wLocality(fVarint(9, 1))), valid: true},
	}
}

// Wire builders of transport socket match metadata.
func smStr(s string) []byte { return fStr(3, s) } // Value.string_value

// smField is one field of a Struct: a map entry with key and a Value of members v.
func smField(key string, v []byte) []byte { return fBytes(1, msg(fStr(1, key), fBytes(2, v))) }

// socketMatchEntry is the filter_metadata entry of the socket match Struct with fields.
func socketMatchEntry(fields ...[]byte) []byte {
	return fBytes(1, msg(fStr(1, resource.SocketMatchKey), fBytes(2, msg(fields...))))
}

// socketMatchMD is a Metadata with the socket match Struct and an Istio entry.
func socketMatchMD(fields ...[]byte) []byte {
	return msg(fBytes(1, msg(fStr(1, "istio"), fBytes(2, smField("workload", smStr("w"))))), socketMatchEntry(fields...))
}

func wSocketMatch(fields ...[]byte) []byte { return fBytes(3, socketMatchMD(fields...)) } // LbEndpoint.metadata

// socketMatch checks the socket match metadata of endpoint i of locality l, and of l,
// as JSON ("" for none).
func socketMatch(l, i int, endpoint, locality string) func(*testing.T, *resource.LoadAssignment) {
	return func(t *testing.T, la *resource.LoadAssignment) {
		t.Helper()
		e, lm := la.Localities[l].SocketMatch(i)
		for _, c := range []struct {
			what string
			idx  uint8
			want string
		}{{"endpoint", e, endpoint}, {"locality", lm, locality}} {
			got := ""
			if c.idx != resource.SocketMatchNone {
				s, err := resource.SocketMatchStruct(la.SocketMatchForm(c.idx))
				if err != nil {
					t.Fatal(err)
				}
				b, err := protojson.Marshal(s)
				if err != nil {
					t.Fatal(err)
				}
				got = strings.ReplaceAll(string(b), " ", "")
			}
			if got != c.want {
				t.Errorf("%s socket match of endpoint %d/%d: %s, want %s", c.what, l, i, got, c.want)
			}
		}
	}
}

func TestDecodeLoadAssignmentCases(t *testing.T) {
	for _, tc := range edsCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			fast, valid := compareDecoders(t, tc.b)
			if fast != tc.fast || valid != tc.valid {
				t.Errorf("wire decoder handled it: %v (want %v); general path accepts it: %v (want %v)", fast, tc.fast, valid, tc.valid)
			}
			if tc.check != nil {
				la, err := resource.DecodeLoadAssignment(tc.b)
				if err != nil {
					t.Fatal(err)
				}
				tc.check(t, la)
			}
		})
	}
}

// A rejected assignment's error names the field, as a NACK detail should, and carries
// the assignment's name.
func TestDecodeLoadAssignmentError(t *testing.T) {
	b := marshal(t, cla(func(c *endpointv3.ClusterLoadAssignment) { c.Endpoints[1].Priority = 129 }))
	d, err := resource.DecodeBytes(resource.EndpointType, b, "", clientOpts)
	if d != nil || err == nil {
		t.Fatalf("got %v, %v", d, err)
	}
	for _, want := range []string{"outbound|9080||a.default.svc.cluster.local", "Endpoints[1]", "Priority"} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// istiodAssignments are the recorded istiod assignments (testdata/istiod/*/eds),
// serialized.
func istiodAssignments(t testing.TB) [][]byte {
	t.Helper()
	files, err := filepath.Glob("../../../testdata/istiod/*/eds/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no istiod eds recordings: %v", err)
	}
	var out [][]byte
	for _, f := range files {
		j, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c := &endpointv3.ClusterLoadAssignment{}
		if err := protojson.Unmarshal(j, c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, marshal(t, c))
	}
	return out
}

func meshgenAssignments(t testing.TB, services int) [][]byte {
	t.Helper()
	var out [][]byte
	for _, m := range meshgen.Generate(meshgen.Options{Services: services}).Resources()[resource.EndpointType] {
		b, err := proto.Marshal(m) // not deterministic: map order varies, as from istiod
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// What istiod sends and what meshgen generates must take the wire decoder, with the
// general path's result.
func TestDecodeLoadAssignmentRecorded(t *testing.T) {
	for name, all := range map[string][][]byte{"istiod": istiodAssignments(t), "meshgen": meshgenAssignments(t, 200)} {
		endpoints := 0
		for i, b := range all {
			fast, valid := compareDecoders(t, b)
			if !fast || !valid {
				t.Errorf("%s #%d: wire decoder handled it: %v, general path accepts it: %v", name, i, fast, valid)
			}
			la, _ := resource.DecodeLoadAssignmentWire(b)
			endpoints += la.NumEndpoints()
		}
		if endpoints == 0 {
			t.Errorf("%s: no endpoints in %d assignments", name, len(all))
		}
	}
}

// randomCLA builds an assignment on the wire from random choices around every rule
// and oneof the wire decoder implements (edge values, fields repeated, oneof members
// replacing each other, fields in any order).
func randomCLA(r *rand.Rand) []byte {
	pick := func(vs ...uint64) uint64 { return vs[r.IntN(len(vs))] }
	maybe := func(p float64) bool { return r.Float64() < p }
	fields := func(fs ...[]byte) []byte { // drops nils, shuffles
		var out [][]byte
		for _, f := range fs {
			if f != nil {
				out = append(out, f)
			}
		}
		r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
		return msg(out...)
	}
	opt := func(p float64, f func() []byte) []byte {
		if maybe(p) {
			return f()
		}
		return nil
	}
	weight := func(num protowire.Number) []byte {
		if maybe(0.2) {
			return fBytes(num, nil)
		}
		return wWeight(num, pick(0, 1, 5, 1<<32+1))
	}
	metadata, err := proto.Marshal(istioMetadata("w;ns"))
	if err != nil {
		panic(err)
	}
	meta := func(num protowire.Number) []byte { return fBytes(num, metadata) }
	socketAddr := func() []byte {
		return fields(
			opt(0.3, func() []byte { return fVarint(1, pick(0, 1, 2)) }),
			opt(0.9, func() []byte { return fStr(2, []string{"", "10.0.0.1", "h.example", "fd00::1"}[r.IntN(4)]) }),
			opt(0.85, func() []byte { return fVarint(3, pick(0, 80, 65535, 65536)) }),
			opt(0.15, func() []byte { return fStr(4, "http") }),
			opt(0.05, func() []byte { return fVarint(6, 1) }),
		)
	}
	address := func() []byte {
		var members [][]byte
		for n := pick(1, 1, 1, 1, 1, 1, 0, 2); n > 0; n-- {
			switch r.IntN(6) {
			case 0:
				members = append(members, fBytes(2, fields(opt(0.8, func() []byte { return fStr(1, "/p") }), opt(0.5, func() []byte { return fVarint(2, pick(0, 511, 512)) }))))
			case 1:
				members = append(members, fBytes(3, fields(opt(0.8, func() []byte { return fStr(1, "l") }), opt(0.3, func() []byte { return fStr(2, "e") }))))
			default:
				members = append(members, fBytes(1, socketAddr()))
			}
		}
		return msg(members...)
	}
	lbEndpoint := func() []byte {
		return fields(
			opt(0.9, func() []byte {
				return fBytes(1, fields(opt(0.95, func() []byte { return fBytes(1, address()) }), opt(0.05, func() []byte { return fStr(3, "h") })))
			}),
			opt(0.1, func() []byte { return fStr(5, "named") }),
			opt(0.3, func() []byte { return fVarint(2, pick(0, 1, 2, 3, 42, 1<<32+2)) }),
			opt(0.7, func() []byte { return weight(4) }),
			opt(0.5, func() []byte { return meta(3) }),
		)
	}
	locality := func() []byte {
		var eps [][]byte
		for n := r.IntN(4); n > 0; n-- {
			eps = append(eps, fBytes(2, lbEndpoint()))
		}
		return fields(
			msg(eps...),
			opt(0.3, func() []byte { return fVarint(5, pick(0, 1, 127, 128, 129, 1<<32+4)) }),
			opt(0.5, func() []byte { return weight(3) }),
			opt(0.3, func() []byte { return fBytes(1, msg(fStr(1, "r"), fStr(2, "z"))) }),
			opt(0.1, func() []byte { return fBytes(8, nil) }),
			opt(0.2, func() []byte { return meta(9) }),
		)
	}
	var locs [][]byte
	for n := r.IntN(4); n > 0; n-- {
		locs = append(locs, fBytes(2, locality()))
	}
	return fields(
		opt(0.97, func() []byte { return fStr(1, []string{"c", "", "outbound|80||a"}[r.IntN(3)]) }),
		msg(locs...),
		opt(0.05, func() []byte { return fBytes(4, nil) }),
		opt(0.03, func() []byte { return fBytes(4, fBytes(2, fStr(1, "cat"))) }),
		opt(0.02, func() []byte { return fVarint(42, 1) }),
	)
}

// Random assignments around every rule: both paths agree, and the wire decoder
// handles a good share of them itself (else this would test only the fallback).
func TestDecodeLoadAssignmentRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var fast, valid, n int
	for n = 0; n < 5000; n++ {
		f, v := compareDecoders(t, randomCLA(r))
		if f {
			fast++
		}
		if v {
			valid++
		}
	}
	t.Logf("%d assignments: %d valid, %d taken by the wire decoder", n, valid, fast)
	if fast < n/10 || valid < n/5 || valid == n {
		t.Errorf("generator out of balance: %d of %d valid, %d taken by the wire decoder", valid, n, fast)
	}
}

func FuzzDecodeLoadAssignment(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 30 {
		f.Add(randomCLA(r))
	}
	for _, tc := range edsCases(f) {
		f.Add(tc.b)
	}
	for _, b := range istiodAssignments(f) {
		f.Add(b)
	}
	for _, b := range meshgenAssignments(f, 1)[:2] {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		compareDecoders(t, b)
	})
}

// BenchmarkDecodeLoadAssignment decodes all assignments of a 1,000-service mesh (3,000
// assignments, 30,000 endpoints with Istio metadata) per op.
func BenchmarkDecodeLoadAssignment(b *testing.B) {
	all := meshgenAssignments(b, 1000)
	endpoints, size := 0, 0
	for _, m := range all {
		la, err := resource.DecodeLoadAssignment(m)
		if err != nil {
			b.Fatal(err)
		}
		endpoints += la.NumEndpoints()
		size += len(m)
	}
	for _, bc := range []struct {
		name   string
		decode func([]byte) (*resource.LoadAssignment, error)
	}{
		{"wire", resource.DecodeLoadAssignment},
		{"proto", resource.DecodeLoadAssignmentProto},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				for _, m := range all {
					if _, err := bc.decode(m); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*endpoints), "ns/endpoint")
		})
	}
}

// BenchmarkLoadAssignmentRetained measures what the kept form costs: the heap that the
// decoded assignments of a 1,000-service mesh (3,000 assignments of 10 endpoints, the
// the bench shape) hold once the input is gone, per endpoint. The figure is exact (live
// heap after a GC), not a timing.
func BenchmarkLoadAssignmentRetained(b *testing.B) {
	all := meshgenAssignments(b, 1000)
	kept := make([]*resource.LoadAssignment, len(all))
	var before, after runtime.MemStats
	for b.Loop() {
		clear(kept)
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i, m := range all {
			la, err := resource.DecodeLoadAssignment(m)
			if err != nil {
				b.Fatal(err)
			}
			kept[i] = la
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
	}
	endpoints := 0
	for _, la := range kept {
		endpoints += la.NumEndpoints()
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(endpoints), "retained-B/endpoint")
	b.ReportMetric(float64(after.HeapObjects-before.HeapObjects)/float64(len(kept)), "objects/assignment")
}

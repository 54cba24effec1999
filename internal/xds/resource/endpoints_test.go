package resource_test

import (
	"testing"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// keptEndpoint is what translation reads of one endpoint.
type keptEndpoint struct {
	addr   string
	port   uint16
	weight uint32
	health corev3.HealthStatus
	kind   resource.EndpointKind
}

func keptEndpoints(la *resource.LoadAssignment) [][]keptEndpoint {
	var out [][]keptEndpoint
	for li := range la.Localities {
		l := &la.Localities[li]
		var eps []keptEndpoint
		for i, e := range l.Endpoints {
			eps = append(eps, keptEndpoint{l.Address(i), e.Port, e.Weight, e.Health(), e.Kind})
		}
		out = append(out, eps)
	}
	return out
}

func tcpEndpoint(addr string, port uint32, weight uint32, health corev3.HealthStatus) *endpointv3.LbEndpoint {
	e := lbEndpoint(socket(addr, port))
	e.HealthStatus = health
	e.LoadBalancingWeight = nil
	if weight > 0 {
		e.LoadBalancingWeight = wrapperspb.UInt32(weight)
	}
	return e
}

// FromCLA keeps every endpoint's address, port, weight, health and kind in order,
// across localities, including endpoints without an address between ones with one.
// Values that validation rejects (FromCLA also converts unvalidated dumps) are kept
// as documented: a port above 65535 as 0, an undefined health beyond a byte as
// HealthOther.
func TestFromCLAKeptForm(t *testing.T) {
	named := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_EndpointName{EndpointName: "n"}}
	pipe := lbEndpoint(&corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/p"}}})
	udp := tcpEndpoint("10.0.0.9", 53, 0, corev3.HealthStatus_HEALTHY)
	udp.GetEndpoint().GetAddress().GetSocketAddress().Protocol = corev3.SocketAddress_UDP
	cla := &endpointv3.ClusterLoadAssignment{
		ClusterName: "c",
		Endpoints: []*endpointv3.LocalityLbEndpoints{
			{LbEndpoints: []*endpointv3.LbEndpoint{
				tcpEndpoint("10.0.0.1", 80, 3, corev3.HealthStatus_HEALTHY),
				named,
				tcpEndpoint("fd00::1234", 70000, 0, 1000),
				pipe,
				tcpEndpoint("svc.example.com", 8080, 0, corev3.HealthStatus_DEGRADED),
			}},
			{},
			{Priority: 1, LbEndpoints: []*endpointv3.LbEndpoint{udp, tcpEndpoint("10.0.0.2", 65535, 7, -3)}},
		},
	}
	want := [][]keptEndpoint{
		{
			{"10.0.0.1", 80, 3, corev3.HealthStatus_HEALTHY, resource.SocketTCP},
			{"", 0, 0, 0, resource.NamedEndpoint},
			{"fd00::1234", 0, 0, resource.HealthOther, resource.SocketTCP},
			{"", 0, 1, 0, resource.OtherAddress}, // lbEndpoint sets weight 1
			{"svc.example.com", 8080, 0, corev3.HealthStatus_DEGRADED, resource.SocketTCP},
		},
		nil,
		{
			{"10.0.0.9", 53, 0, corev3.HealthStatus_HEALTHY, resource.SocketUDP},
			{"10.0.0.2", 65535, 7, resource.HealthOther, resource.SocketTCP},
		},
	}
	la := resource.FromCLA(cla)
	got := keptEndpoints(la)
	if len(got) != len(want) {
		t.Fatalf("%d localities, want %d", len(got), len(want))
	}
	for i := range want {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("locality %d: %+v, want %+v", i, got[i], want[i])
		}
		for j := range want[i] {
			if got[i][j] != want[i][j] {
				t.Errorf("locality %d endpoint %d: %+v, want %+v", i, j, got[i][j], want[i][j])
			}
		}
	}
	if !la.Equal(resource.FromCLA(cla)) {
		t.Error("two conversions of one message are not Equal")
	}
}

// Equal compares addresses, not only how they are laid out: the same bytes split
// differently, or different bytes split the same way, are different assignments.
func TestLoadAssignmentEqualAddresses(t *testing.T) {
	of := func(addrs ...string) *resource.LoadAssignment {
		var eps []*endpointv3.LbEndpoint
		for _, a := range addrs {
			eps = append(eps, tcpEndpoint(a, 80, 0, 0))
		}
		return resource.FromCLA(&endpointv3.ClusterLoadAssignment{ClusterName: "c",
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}}})
	}
	for _, tc := range []struct {
		a, b  []string
		equal bool
	}{
		{[]string{"10.0.0.1", "10.0.0.2"}, []string{"10.0.0.1", "10.0.0.2"}, true},
		{[]string{"10.0.0.12", "10.0.0.2"}, []string{"10.0.0.1", "210.0.0.2"}, false},
		{[]string{"10.0.0.1", "10.0.0.2"}, []string{"10.0.0.1", "10.0.0.3"}, false},
		{[]string{"10.0.0.1", "10.0.0.2"}, []string{"10.0.0.2", "10.0.0.1"}, false},
	} {
		if got := of(tc.a...).Equal(of(tc.b...)); got != tc.equal {
			t.Errorf("%q equal to %q: %v, want %v", tc.a, tc.b, got, tc.equal)
		}
	}
}

// An endpoint is kept in 12 bytes (its address is in its locality's string): the
// endpoints are most of what amesh keeps, so a field added to Endpoint
// should be a deliberate choice.
func TestEndpointSize(t *testing.T) {
	if n := unsafe.Sizeof(resource.Endpoint{}); n > 12 {
		t.Errorf("Endpoint is %d bytes, want at most 12", n)
	}
}

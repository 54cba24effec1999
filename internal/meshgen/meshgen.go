// Package meshgen generates synthetic meshes in the exact shapes istiod sends a sidecar
// (REDIRECT mode), for benchmarks and scale tests: per service and port a virtual host
// with Istio's domains and a few VirtualService-like routes, a default and per-subset
// EDS clusters with their load assignments, an outbound listener per port with an RDS
// HTTP connection manager, and the fixed virtualOutbound / virtualInbound listeners and
// Passthrough / BlackHole / InboundPassthrough clusters. Generation is deterministic.
package meshgen

import (
	"fmt"
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// Options size the mesh. Zero values take the defaults.
type Options struct {
	// Services is the number of services (default 1).
	Services int
	// Ports is the number of service ports, 9080, 9081, ...; each gets an outbound
	// listener "0.0.0.0_<port>" and a route configuration "<port>" (default 1).
	Ports int
	// RoutesPerService is the number of routes in each virtual host (default 3); the
	// last one is the catch-all prefix "/".
	RoutesPerService int
	// Subsets is the number of DestinationRule subsets per service, each an extra
	// cluster "outbound|<port>|v<n>|<host>" (default 2; negative means none).
	Subsets int
	// EndpointsPerCluster is the number of endpoints in each load assignment (default 10).
	EndpointsPerCluster int
	// BasePort is the first service port (default BasePort), for a data plane that
	// must listen on the mesh's ports next to others on one machine.
	BasePort int
}

func (o Options) withDefaults() Options {
	if o.Services <= 0 {
		o.Services = 1
	}
	if o.Ports <= 0 {
		o.Ports = 1
	}
	if o.RoutesPerService <= 0 {
		o.RoutesPerService = 3
	}
	switch {
	case o.Subsets == 0:
		o.Subsets = 2
	case o.Subsets < 0:
		o.Subsets = 0
	}
	if o.EndpointsPerCluster <= 0 {
		o.EndpointsPerCluster = 10
	}
	if o.BasePort <= 0 {
		o.BasePort = BasePort
	}
	return o
}

// Mesh is a generated mesh and its current state.
//
// The mutation methods (ChangeEndpoint, Resend, ResendRouteConfigs) update the mesh's
// resource maps in place and return a snapshot that shares them: copying maps of tens of
// thousands of entries per change would dominate the benchmarks this package exists for.
// An earlier snapshot of the same Mesh therefore sees later changes; consumers must only
// look at the newest one. A Mesh is not safe for concurrent use.
type Mesh struct {
	opts Options
	seq  uint64

	listeners    map[string]*listenerv3.Listener
	routeConfigs map[string]*routev3.RouteConfiguration
	clusters     map[string]*clusterv3.Cluster
	endpoints    map[string]*endpointv3.ClusterLoadAssignment
	// stored is endpoints in the form snapshots carry them (resource.LoadAssignment),
	// kept in step with endpoints; storedRC and storedClusters the same for
	// routeConfigs and clusters.
	stored         map[string]*resource.LoadAssignment
	storedRC       map[string]*resource.RouteConfig
	storedClusters map[string]*resource.Cluster

	// edsNames lists the EDS clusters in a fixed order, for ChangeEndpoint.
	edsNames []string
	// changes counts ChangeEndpoint calls; it makes every change produce a new address.
	changes int
}

// Generate builds the mesh described by o.
func Generate(o Options) *Mesh {
	o = o.withDefaults()
	t := templates()
	m := &Mesh{
		opts:           o,
		seq:            1,
		listeners:      map[string]*listenerv3.Listener{},
		routeConfigs:   map[string]*routev3.RouteConfiguration{},
		clusters:       map[string]*clusterv3.Cluster{},
		endpoints:      map[string]*endpointv3.ClusterLoadAssignment{},
		stored:         map[string]*resource.LoadAssignment{},
		storedRC:       map[string]*resource.RouteConfig{},
		storedClusters: map[string]*resource.Cluster{},
	}
	for _, l := range []*listenerv3.Listener{t.virtualInbound, t.virtualOutbound} {
		m.listeners[l.GetName()] = clone(l)
	}
	for _, c := range []*clusterv3.Cluster{t.passthrough, t.blackHole, t.inboundPassthrough, t.inbound} {
		m.clusters[c.GetName()] = clone(c)
		m.storedClusters[c.GetName()] = resource.MustCluster(m.clusters[c.GetName()])
	}
	svcs := make([]service, o.Services)
	for i := range svcs {
		svcs[i] = newService(i)
	}
	for p := 0; p < o.Ports; p++ {
		port := o.BasePort + p
		m.listeners[ListenerName(port)] = outboundListener(t.outboundHTTP, port)
		rc := &routev3.RouteConfiguration{
			Name:                           fmt.Sprint(port),
			ValidateClusters:               wrapBool(false),
			MaxDirectResponseBodySizeBytes: wrapU32(1 << 20),
			IgnorePortInHostMatching:       true,
		}
		for i, s := range svcs {
			rc.VirtualHosts = append(rc.VirtualHosts, virtualHost(s, port, o))
			for k := 0; k <= o.Subsets; k++ {
				c := outboundCluster(t.outbound, s, port, subsetName(k))
				m.clusters[c.GetName()] = c
				m.storedClusters[c.GetName()] = resource.MustCluster(c)
				cla := loadAssignment(c.GetName(), s, i, port, k, o)
				m.endpoints[c.GetName()] = cla
				m.stored[c.GetName()] = resource.FromCLA(cla)
				m.edsNames = append(m.edsNames, c.GetName())
			}
		}
		rc.VirtualHosts = append(rc.VirtualHosts, allowAny())
		m.routeConfigs[rc.GetName()] = rc
		m.storedRC[rc.GetName()] = resource.MustRouteConfig(rc)
	}
	return m
}

// BasePort is the default first service port; port p of Options.Ports is BasePort+p.
const BasePort = 9080

// ListenerName is the name of the outbound listener of a port, as istiod names it.
func ListenerName(port int) string { return fmt.Sprintf("0.0.0.0_%d", port) }

// ClusterName is Istio's outbound cluster name; subset "" is the default cluster.
func ClusterName(port int, subset, host string) string {
	return fmt.Sprintf("outbound|%d|%s|%s", port, subset, host)
}

func subsetName(k int) string {
	if k == 0 {
		return ""
	}
	return fmt.Sprintf("v%d", k)
}

// Snapshot returns the current state as a snapshot that asks for a full translation,
// with the decoded route configurations as an update from the client brings them.
func (m *Mesh) Snapshot() *resource.State {
	return m.snapshot(resource.Changes{Full: true, Decoded: m.routeConfigs})
}

func (m *Mesh) snapshot(ch resource.Changes) *resource.State {
	return &resource.State{
		Seq:          m.seq,
		Listeners:    m.listeners,
		RouteConfigs: m.storedRC,
		Clusters:     m.storedClusters,
		Endpoints:    m.stored,
		Changes:      ch,
	}
}

// LoadAssignment returns the current ClusterLoadAssignment message of an EDS cluster
// (snapshots carry its compact form), for serving it; nil when there is none.
func (m *Mesh) LoadAssignment(name string) *endpointv3.ClusterLoadAssignment {
	return m.endpoints[name]
}

// EDSClusters returns the names of the EDS clusters, in ChangeEndpoint's order.
func (m *Mesh) EDSClusters() []string { return append([]string(nil), m.edsNames...) }

// ChangeEndpoint replaces the address of one endpoint of one cluster (cluster i modulo
// the number of EDS clusters; the endpoint rotates with every call), as when a pod is
// rescheduled, and returns the next snapshot with only that load assignment changed.
func (m *Mesh) ChangeEndpoint(i int) *resource.State {
	name := m.edsNames[((i%len(m.edsNames))+len(m.edsNames))%len(m.edsNames)]
	cla := clone(m.endpoints[name])
	m.changes++
	lbs := cla.GetEndpoints()[0].GetLbEndpoints()
	sa := lbs[m.changes%len(lbs)].GetEndpoint().GetAddress().GetSocketAddress()
	// 172.16.0.0/12 is never used by the generated endpoints (10.0.0.0/8).
	sa.Address = ipv4(172<<24 | 16<<16 | uint32(m.changes)&0xfffff)
	m.endpoints[name] = cla
	m.stored[name] = resource.FromCLA(cla)
	m.seq++
	return m.snapshot(resource.Changes{Since: m.seq - 1, Endpoints: set(name)})
}

// Resend replaces every resource by a freshly decoded copy with identical content (new
// pointers), as after istiod resends everything, and returns the next snapshot listing
// every resource as changed.
func (m *Mesh) Resend() *resource.State {
	ch := resource.Changes{
		Listeners:    redecodeAll(m.listeners),
		RouteConfigs: redecodeAll(m.routeConfigs),
		Clusters:     redecodeAll(m.clusters),
		Endpoints:    redecodeAll(m.endpoints),
	}
	for name, cla := range m.endpoints {
		m.stored[name] = resource.FromCLA(cla)
	}
	m.restoreRCs()
	m.restoreClusters()
	m.seq++
	ch.Since = m.seq - 1
	return m.snapshot(ch)
}

// ResendRouteConfigs is Resend for the route configurations only.
func (m *Mesh) ResendRouteConfigs() *resource.State {
	ch := resource.Changes{RouteConfigs: redecodeAll(m.routeConfigs)}
	m.restoreRCs()
	m.seq++
	ch.Since = m.seq - 1
	return m.snapshot(ch)
}

// EditRouteConfig changes route configuration name with f, in the mesh and in the
// snapshots it returned (their maps are the mesh's), without a new Seq: for a test
// that edits the snapshot it is about to translate.
func (m *Mesh) EditRouteConfig(name string, f func(*routev3.RouteConfiguration)) {
	f(m.routeConfigs[name])
	m.storedRC[name] = resource.MustRouteConfig(m.routeConfigs[name])
}

// restoreRCs brings storedRC in step with routeConfigs (new pointers for all).
func (m *Mesh) restoreRCs() {
	for name, rc := range m.routeConfigs {
		m.storedRC[name] = resource.MustRouteConfig(rc)
	}
}

// restoreClusters brings storedClusters in step with clusters (new pointers for all).
func (m *Mesh) restoreClusters() {
	for name, c := range m.clusters {
		m.storedClusters[name] = resource.MustCluster(c)
	}
}

func redecodeAll[M proto.Message](ms map[string]M) map[string]struct{} {
	names := make(map[string]struct{}, len(ms))
	for name, msg := range ms {
		b, err := proto.Marshal(msg)
		if err != nil {
			panic(fmt.Sprintf("meshgen: marshal %s: %v", name, err))
		}
		n := msg.ProtoReflect().New().Interface().(M)
		if err := proto.Unmarshal(b, n); err != nil {
			panic(fmt.Sprintf("meshgen: unmarshal %s: %v", name, err))
		}
		ms[name] = n
		names[name] = struct{}{}
	}
	return names
}

// Resources returns the current resources by type URL, each list sorted by name, in the
// form go-control-plane's snapshot cache takes.
func (m *Mesh) Resources() map[string][]proto.Message {
	return map[string][]proto.Message{
		resource.ListenerType:    sorted(m.listeners),
		resource.RouteConfigType: sorted(m.routeConfigs),
		resource.ClusterType:     sorted(m.clusters),
		resource.EndpointType:    sorted(m.endpoints),
	}
}

// Anys returns Resources marshalled into Any values, as they travel in a
// DiscoveryResponse.
func (m *Mesh) Anys() (map[string][]*anypb.Any, error) {
	out := map[string][]*anypb.Any{}
	for typ, msgs := range m.Resources() {
		for _, msg := range msgs {
			a, err := anypb.New(msg)
			if err != nil {
				return nil, fmt.Errorf("meshgen: %w", err)
			}
			out[typ] = append(out[typ], a)
		}
	}
	return out, nil
}

func sorted[M proto.Message](ms map[string]M) []proto.Message {
	names := make([]string, 0, len(ms))
	for n := range ms {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]proto.Message, len(names))
	for i, n := range names {
		out[i] = ms[n]
	}
	return out
}

func set(names ...string) map[string]struct{} {
	s := make(map[string]struct{}, len(names))
	for _, n := range names {
		s[n] = struct{}{}
	}
	return s
}

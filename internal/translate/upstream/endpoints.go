package upstream

import (
	"fmt"
	"math"
	"net/netip"
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// maxScale bounds the common multiple used to turn locality shares into integer
// weights exactly; beyond it the weights are rounded (and reported).
const maxScale = 1 << 16

// roundedScale is the resolution of rounded locality shares.
const roundedScale = 10000

// nodes turns a load assignment into APISIX nodes.
//
//   - Only HEALTHY and UNKNOWN endpoints are routable (Envoy's rule); the others are
//     left out, DEGRADED ones with a report (Envoy would still use them as a last resort).
//   - Envoy priority p (0 tried first) becomes APISIX priority -p (APISIX tries the
//     highest first, default 0).
//   - Weights: without locality-weighted load balancing Envoy ignores locality weights
//     and balances over endpoint weights; with it, each locality gets its weight's share
//     of the priority level, divided among its endpoints by their weights. The node
//     weight is then locality_weight × endpoint_weight / (sum of the locality's endpoint
//     weights), scaled to integers exactly where possible. Weights are finally divided
//     by their greatest common divisor, so identical shapes give identical numbers.
func (b *builder) nodes(c *clusterv3.Cluster, cla *resource.LoadAssignment, dns bool) []apisix.Node {
	if cla == nil {
		return []apisix.Node{}
	}
	b.tls = planTLS(b.name, c, b.opts)
	forms := map[uint8]*structpb.Struct{}
	localityWeighted := c.GetCommonLbConfig().GetLocalityWeightedLbConfig() != nil
	// Sized up front: a first translation builds tens of thousands of these, and
	// growing them by appends shows in its allocations.
	total := 0
	if !b.reportOnly {
		total = cla.NumEndpoints()
	}
	// Nodes are written straight into the result: Weight holds the endpoint weight
	// (then the final one, computed in uint64 and stored bit for bit), and groups the
	// locality of each node, needed only for locality weights. In reportOnly mode
	// the endpoints are checked (the report counts those left out) but no node is made.
	var (
		routable  int
		tlsOut    int // endpoints left out for their transport socket
		tlsUsed   bool
		out       = make([]apisix.Node, 0, total)
		groups    []int
		degraded  int
		skipped   map[string]int                           // reason -> count, made on the first skip
		groupW    = make([]uint64, 0, len(cla.Localities)) // locality weight per group
		groupSum  = make([]uint64, 0, len(cla.Localities)) // sum of routable endpoint weights per group
		prio0     uint32                                   // the first routable endpoint's priority
		multiPrio bool                                     // routable endpoints in more than one priority
	)
	skip := func(reason string) {
		if skipped == nil {
			skipped = map[string]int{}
		}
		skipped[reason]++
	}
	for gi := range cla.Localities {
		g := &cla.Localities[gi]
		lw := uint64(1)
		if localityWeighted {
			lw = uint64(g.Weight) // unset: 0, no traffic
		}
		groupW = append(groupW, lw)
		groupSum = append(groupSum, 0)
		if g.LEDS {
			skip("LEDS locality (not supported)")
		}
		if localityWeighted && lw == 0 {
			continue
		}
		for ei := range g.Endpoints {
			e := &g.Endpoints[ei]
			switch e.Health() {
			case corev3.HealthStatus_HEALTHY, corev3.HealthStatus_UNKNOWN:
			case corev3.HealthStatus_DEGRADED:
				degraded++
				continue
			default:
				continue // UNHEALTHY, DRAINING, TIMEOUT: not routable, as in Envoy
			}
			host, port, reason := address(e, g.Address(ei), dns)
			if reason != "" {
				skip(reason)
				continue
			}
			kind := b.tls.kindOf(cla, g, ei, forms)
			switch {
			case kind == sockOther || kind == sockTLS && b.tls.conf == nil:
				tlsOut++
				continue
			case kind == sockTLS && b.opts.NoTLS:
				skip("reached with TLS, which the mirror does not speak")
				continue
			case kind == sockTLS:
				tlsUsed = true
			}
			w := uint64(1)
			if e.Weight > 0 {
				w = uint64(e.Weight)
			}
			groupSum[gi] += w
			if routable == 0 {
				prio0 = g.Priority
			} else if g.Priority != prio0 {
				multiPrio = true
			}
			routable++
			if b.reportOnly {
				continue
			}
			out = append(out, apisix.Node{Host: host, Port: port, Weight: int(w), Priority: -int(g.Priority)})
			b.kinds = append(b.kinds, kind)
			if localityWeighted {
				groups = append(groups, gi)
			}
		}
	}
	b.reportTLS(tlsOut, tlsUsed)
	if degraded > 0 {
		b.add("endpoints", "lb_endpoints.health_status", report.Approximated, fmt.Sprintf(
			"%d DEGRADED endpoint(s) left out; Envoy would use them when too few healthy ones remain", degraded))
	}
	reasons := make([]string, 0, len(skipped))
	for r := range skipped {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		b.add("endpoints", "lb_endpoints.endpoint.address", report.Invalid, fmt.Sprintf("%d endpoint(s) left out: %s", skipped[r], r))
	}
	if cla.DropOverloads > 0 {
		b.add("endpoints", "policy.drop_overloads", report.Unsupported, "drop_overloads is not supported; no requests are dropped")
	}
	if multiPrio {
		b.add("endpoints", "endpoints.priority", report.Approximated,
			"APISIX moves to a lower priority only when every node of the higher one failed; Envoy spills over gradually as hosts become unhealthy")
	}
	if localityWeighted {
		b.localityWeights(out, groups, groupW, groupSum)
	}
	reduceWeights(out)
	return out
}

// localityWeights turns endpoint weights into shares of their locality's weight
// (groups[i] is the locality of nodes[i]). The arithmetic is uint64, as Envoy's
// weights are unsigned; Weight stores the uint64 bit for bit.
func (b *builder) localityWeights(nodes []apisix.Node, groups []int, groupW, groupSum []uint64) {
	scale := uint64(1)
	for gi, s := range groupSum {
		if s == 0 || groupW[gi] == 0 {
			continue
		}
		scale = lcm(scale, s)
		if scale > maxScale {
			break
		}
	}
	exact := scale <= maxScale
	if !exact {
		scale = roundedScale
		b.add("endpoints", "endpoints.load_balancing_weight", report.Approximated,
			"locality and endpoint weights combined with rounding (shares exact to 1/10000)")
	}
	for i := range nodes {
		g, w := groups[i], uint64(nodes[i].Weight)
		s := groupSum[g]
		if exact {
			w = groupW[g] * w * (scale / s)
		} else {
			w = max(1, uint64(math.Round(float64(groupW[g])*float64(w)*float64(scale)/float64(s))))
		}
		nodes[i].Weight = int(w)
	}
}

// reduceWeights divides all weights by their gcd and caps them at APISIX's integer range.
// Weights are read and written as uint64 (see localityWeights).
func reduceWeights(nodes []apisix.Node) {
	g := uint64(0)
	for _, n := range nodes {
		g = gcd(g, uint64(n.Weight))
	}
	var top uint64
	for i := range nodes {
		w := uint64(nodes[i].Weight)
		if g > 1 {
			w /= g
			nodes[i].Weight = int(w)
		}
		top = max(top, w)
	}
	if top > math.MaxInt32 {
		// Keep proportions; only absurd inputs get here (weights are uint32 in Envoy).
		for i := range nodes {
			nodes[i].Weight = int(max(1, uint64(nodes[i].Weight)*math.MaxInt32/top))
		}
	}
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func lcm(a, b uint64) uint64 {
	g := gcd(a, b)
	if a/g > math.MaxUint64/b {
		return math.MaxUint64
	}
	return a / g * b
}

// address extracts host and port of e, whose address is addr; reason is non-empty when
// the endpoint cannot be used.
func address(e *resource.Endpoint, addr string, dns bool) (host string, port int, reason string) {
	switch e.Kind {
	case resource.NamedEndpoint:
		return "", 0, "named endpoints (endpoint_name) are not supported"
	case resource.OtherAddress:
		return "", 0, "only socket addresses are supported (no pipes or internal addresses)"
	case resource.SocketUDP:
		return "", 0, "only TCP socket addresses are supported"
	case resource.NamedPort:
		return "", 0, "named ports are not supported"
	}
	port = int(e.Port)
	if port < 1 || port > 65535 {
		return "", 0, "port out of range"
	}
	host = addr
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return "", 0, "IPv6 zones are not supported"
		}
	} else {
		if !dns {
			return "", 0, "address is not an IP address"
		}
		if !validHostName(host) {
			return "", 0, "invalid host name"
		}
	}
	return host, port, ""
}

// validHostName accepts what APISIX's node host pattern allows for a DNS name.
func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

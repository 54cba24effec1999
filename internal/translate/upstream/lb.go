package upstream

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
)

// Type URLs of the load_balancing_policy extensions that have an APISIX balancer.
const (
	policyRoundRobin   = "type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin"
	policyLeastRequest = "type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest"
	policyRingHash     = "type.googleapis.com/envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash"
	policyMaglev       = "type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev"
	policyRandom       = "type.googleapis.com/envoy.extensions.load_balancing_policies.random.v3.Random"
)

// lb sets the balancer.
//
//   - ROUND_ROBIN → roundrobin (weighted round robin in both).
//   - LEAST_REQUEST → least_conn. Envoy picks the better of two random hosts (P2C),
//     APISIX the best of all; both send to the least loaded, weighted. Not reported:
//     it is Istio's default and the difference is statistical, not in which hosts serve.
//   - RANDOM → roundrobin, reported: same long-run distribution, different sequence.
//   - RING_HASH, MAGLEV → roundrobin on the base upstream, marked (see Hashing): Envoy
//     hashes only when a route gives a hash policy and picks a random host otherwise;
//     route variants with a hash key become chash (a consistent-hash ring, like RING_HASH;
//     MAGLEV's table differs and is reported).
func (b *builder) lb(c *clusterv3.Cluster, u *apisix.Upstream) {
	policy := c.GetLbPolicy()
	if lp := c.GetLoadBalancingPolicy(); lp != nil {
		policy = -1
	policies:
		for _, p := range lp.GetPolicies() {
			switch p.GetTypedExtensionConfig().GetTypedConfig().GetTypeUrl() {
			case policyRoundRobin:
				policy = clusterv3.Cluster_ROUND_ROBIN
			case policyLeastRequest:
				policy = clusterv3.Cluster_LEAST_REQUEST
			case policyRingHash:
				policy = clusterv3.Cluster_RING_HASH
			case policyMaglev:
				policy = clusterv3.Cluster_MAGLEV
			case policyRandom:
				policy = clusterv3.Cluster_RANDOM
			default:
				continue
			}
			break policies
		}
		if policy == -1 {
			b.add("cluster", "load_balancing_policy", report.Approximated,
				"no supported load balancing policy in the list; using round robin")
			return
		}
	}
	switch policy {
	case clusterv3.Cluster_ROUND_ROBIN:
		u.Type = "roundrobin"
	case clusterv3.Cluster_LEAST_REQUEST:
		u.Type = "least_conn"
		if cfg := c.GetLeastRequestLbConfig(); cfg.GetChoiceCount() != nil || cfg.GetActiveRequestBias() != nil {
			b.add("cluster", "least_request_lb_config", report.Approximated,
				"choice_count and active_request_bias are not supported; APISIX's least_conn compares all hosts")
		}
	case clusterv3.Cluster_RANDOM:
		u.Type = "roundrobin"
		b.add("cluster", "lb_policy", report.Approximated, "RANDOM: weighted round robin instead (same distribution over time)")
	case clusterv3.Cluster_RING_HASH:
		u.Type = "roundrobin"
		u.Labels = map[string]string{labelLB: "ring_hash"}
	case clusterv3.Cluster_MAGLEV:
		u.Type = "roundrobin"
		u.Labels = map[string]string{labelLB: "maglev"}
		b.add("cluster", "lb_policy", report.Approximated,
			"MAGLEV: APISIX's consistent-hash ring (chash) instead of a Maglev table; requests with the same key still stick to one host")
	case clusterv3.Cluster_CLUSTER_PROVIDED:
		// ORIGINAL_DST clusters; handled by Special.
	default:
		u.Type = "roundrobin"
		b.add("cluster", "lb_policy", report.Approximated, fmt.Sprintf("%s is not supported; using round robin", policy))
	}
}

// Hashing reports whether u is the upstream of a RING_HASH or MAGLEV cluster, the only
// ones on which Envoy honours a route's hash_policy.
func Hashing(u *apisix.Upstream) bool { return u.Labels[labelLB] != "" }

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
//   - LEAST_REQUEST (Istio's default) → roundrobin, reported. Envoy picks the less
//     loaded of two random hosts, or with unequal weights an earliest-deadline schedule
//     of weight / (active + 1): under light load, hosts get their weights' shares.
//     APISIX's least_conn keeps a heap of (active + 1) / weight per worker, rebuilt with
//     each new version of the configuration, and takes its top: light traffic all goes
//     to one host (the first one after each rebuild, the heaviest one with unequal
//     weights). Round robin gives Envoy's shares under light load, and under heavy load
//     on hosts of equal speed; only with hosts of unequal speed under load does Envoy
//     send fewer requests to the slower ones (TestLeastRequestMapping measures both).
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
		u.Type = "roundrobin"
		b.add("cluster", "lb_policy", report.Approximated, "LEAST_REQUEST: weighted round robin; the same shares "+
			"as Envoy's, except under load on hosts of unequal speed, where Envoy sends fewer requests to the slower ones")
		if cfg := c.GetLeastRequestLbConfig(); cfg.GetChoiceCount() != nil || cfg.GetActiveRequestBias() != nil {
			b.add("cluster", "least_request_lb_config", report.Approximated,
				"choice_count and active_request_bias have no effect on round robin")
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

package upstream

import (
	"fmt"
	"math"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
)

// Envoy's outlier detection defaults.
const (
	defaultConsecutive5xx     = 5
	defaultConsecutiveGateway = 5
	defaultInterval           = 10.0 // seconds
	defaultBaseEjection       = 30.0 // seconds
)

// statuses5xx are the 5xx codes HTTP defines; Envoy counts every 5xx, APISIX needs a list.
var statuses5xx = []any{500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511}

// statusesGateway are what Envoy calls gateway failures.
var statusesGateway = []any{502, 503, 504}

// outlierDetection maps Envoy's outlier detection to APISIX health checks.
//
// Envoy ejects a host after N consecutive 5xx (or gateway errors; local connect
// failures count as 503) for base_ejection_time, then lets it back. APISIX's passive
// check marks a host unhealthy after N failures, but only an active check ever marks it
// healthy again, and its schema requires an active check whenever a passive one is set.
// The most faithful combination:
//
//   - passive: http_failures = tcp_failures = timeouts = N, over the 5xx codes (or the
//     gateway codes when only gateway failures are enforced);
//   - active: a TCP connect probe, every base_ejection_time for unhealthy hosts (one
//     success restores them, as Envoy's ejection ends) and every interval for healthy
//     ones (a host that refuses connections N times is marked unhealthy, as Envoy would
//     after N connect failures).
//
// Reported as approximated, with what differs (max_ejection_percent, growing ejection
// times, success-rate and failure-percentage ejection are not supported).
func (b *builder) outlierDetection(c *clusterv3.Cluster, u *apisix.Upstream) {
	od := c.GetOutlierDetection()
	if od == nil {
		return
	}
	enf5xx := enforcing(od.GetEnforcingConsecutive_5Xx(), 100)
	enfGw := enforcing(od.GetEnforcingConsecutiveGatewayFailure(), 0)
	n5xx := value(od.GetConsecutive_5Xx(), defaultConsecutive5xx)
	nGw := value(od.GetConsecutiveGatewayFailure(), defaultConsecutiveGateway)
	var notes []string
	var statuses []any
	var failures uint32
	switch {
	case enf5xx > 0 && n5xx > 0:
		statuses, failures = statuses5xx, n5xx
		if enfGw > 0 && nGw > 0 && nGw < n5xx {
			notes = append(notes, fmt.Sprintf("consecutive_gateway_failure=%d not applied separately (threshold %d for all 5xx)", nGw, n5xx))
		}
	case enfGw > 0 && nGw > 0:
		statuses, failures = statusesGateway, nGw
	}
	if enforcing(od.GetEnforcingSuccessRate(), 100) > 0 {
		notes = append(notes, "success-rate ejection not supported")
	}
	if enforcing(od.GetEnforcingFailurePercentage(), 0) > 0 || enforcing(od.GetEnforcingFailurePercentageLocalOrigin(), 0) > 0 {
		notes = append(notes, "failure-percentage ejection not supported")
	}
	if od.GetSplitExternalLocalOriginErrors() {
		notes = append(notes, "local-origin errors not counted separately")
	}
	if statuses == nil {
		if len(notes) > 0 {
			b.add("cluster", "outlier_detection", report.Unsupported, strings.Join(notes, "; ")+"; no host is ejected")
		}
		return
	}
	if enf5xx > 0 && enf5xx < 100 || enf5xx == 0 && enfGw < 100 {
		notes = append(notes, "enforcement percentage below 100 treated as 100")
	}
	failures = min(failures, 254) // APISIX's maximum
	interval := secondsOr(od.GetInterval().AsDuration().Seconds(), od.GetInterval() != nil, defaultInterval)
	ejection := secondsOr(od.GetBaseEjectionTime().AsDuration().Seconds(), od.GetBaseEjectionTime() != nil, defaultBaseEjection)
	u.Checks = &apisix.HealthChecks{
		Passive: map[string]any{
			"type": "http",
			"unhealthy": map[string]any{
				"http_statuses": statuses,
				"http_failures": failures,
				"tcp_failures":  failures,
				"timeouts":      failures,
			},
		},
		Active: map[string]any{
			"type": "tcp",
			"healthy": map[string]any{
				"interval":  wholeSeconds(ejection),
				"successes": 1,
			},
			"unhealthy": map[string]any{
				"interval":     wholeSeconds(interval),
				"tcp_failures": failures,
				"timeouts":     failures,
			},
		},
	}
	notes = append(notes,
		fmt.Sprintf("ejected hosts return after a successful TCP probe every %ds (Envoy: after base_ejection_time, growing with each ejection)", wholeSeconds(ejection)),
		"hosts are also probed with TCP connects", "max_ejection_percent not enforced (APISIX uses all hosts when none is healthy)")
	b.add("cluster", "outlier_detection", report.Approximated, "passive health checks: "+strings.Join(notes, "; "))
}

// enforcing returns an enforcement percentage, def when unset.
func enforcing(v *wrapperspb.UInt32Value, def uint32) uint32 {
	if v == nil {
		return def
	}
	return v.GetValue()
}

func value(v *wrapperspb.UInt32Value, def uint32) uint32 {
	if v == nil {
		return def
	}
	return v.GetValue()
}

func secondsOr(s float64, set bool, def float64) float64 {
	if !set || s <= 0 {
		return def
	}
	return s
}

// wholeSeconds rounds up to APISIX's integer check intervals (minimum 1).
func wholeSeconds(s float64) int { return int(max(1, min(math.Ceil(s), math.MaxInt32))) }

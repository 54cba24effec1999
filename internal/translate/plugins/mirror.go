package plugins

import (
	"fmt"
	"regexp"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/amesh-dev/amesh/internal/report"
)

// mirrorHost is proxy-mirror's pattern for host.
var mirrorHost = regexp.MustCompile(`^(http(s)?|grpc(s)?):\/\/([\da-zA-Z.-]+|\[[\da-fA-F:]+\])(:\d+)?$`)

// minSampleRatio is the smallest sample_ratio proxy-mirror accepts.
const minSampleRatio = 1e-5

// mirror translates request_mirror_policies. The most specific non-empty list wins
// (route, then virtual host, then route configuration). Mirroring never changes the
// client's response, so what cannot be mirrored is reported, not failed closed.
// APISIX mirrors to one target: the first policy that can be expressed is used.
func (b *builder) mirror(ra *routev3.RouteAction) {
	field := "route.route.request_mirror_policies"
	policies := ra.GetRequestMirrorPolicies()
	if len(policies) == 0 {
		field, policies = "virtual_host.request_mirror_policies", b.in.VirtualHost.GetRequestMirrorPolicies()
	}
	if len(policies) == 0 {
		field, policies = "route_config.request_mirror_policies", b.in.RouteConfig.GetRequestMirrorPolicies()
	}
	used := false
	for i, p := range policies {
		f := fmt.Sprintf("%s[%d]", field, i)
		if used {
			b.note(f, report.Unsupported, "APISIX mirrors each request to one target; mirror to %q is dropped", p.GetCluster())
			continue
		}
		used = b.mirrorPolicy(f, p)
	}
}

// mirrorPolicy emits proxy-mirror for one policy and reports whether it did.
func (b *builder) mirrorPolicy(field string, p *routev3.RouteAction_RequestMirrorPolicy) bool {
	if p.GetClusterHeader() != "" {
		b.note(field+".cluster_header", report.Unsupported, "mirror cluster taken from header %q cannot be expressed; not mirrored", p.GetClusterHeader())
		return false
	}
	ratio := runtimeFraction(p.GetRuntimeFraction())
	if ratio <= 0 {
		return false // Envoy mirrors 0% of requests.
	}
	if ratio < minSampleRatio {
		b.note(field+".runtime_fraction", report.Approximated, "mirror fraction %g is below proxy-mirror's minimum; %g is used", ratio, minSampleRatio)
		ratio = minSampleRatio
	}
	if b.in.MirrorTarget == nil {
		b.note(field+".cluster", report.Unsupported, "mirror cluster %q cannot be resolved; not mirrored", p.GetCluster())
		return false
	}
	host, ok := b.in.MirrorTarget(p.GetCluster())
	if !ok {
		// Envoy's shadow request would find no healthy host either: nothing is sent.
		b.note(field+".cluster", report.Ignored, "mirror cluster %q has no usable endpoint; not mirrored", p.GetCluster())
		return false
	}
	if !mirrorHost.MatchString(host) {
		b.note(field+".cluster", report.Invalid, "mirror target %q for cluster %q does not fit proxy-mirror's host pattern; not mirrored", host, p.GetCluster())
		return false
	}
	if !p.GetDisableShadowHostSuffixAppend() {
		b.note(field+".disable_shadow_host_suffix_append", report.Approximated, "Envoy appends \"-shadow\" to the mirrored request's Host; APISIX sends it unchanged")
	}
	if p.GetHostRewriteLiteral() != "" || len(p.GetRequestHeadersMutations()) > 0 {
		b.note(field, report.Approximated, "host rewrite and header mutations of the mirrored request are not applied")
	}
	conf := map[string]any{"host": host}
	if ratio < 1 {
		conf["sample_ratio"] = ratio
	}
	b.setPlugin(pluginMirror, conf)
	return true
}

// fraction converts an Envoy FractionalPercent into a fraction in [0, 1]; Envoy
// treats a numerator above the denominator as 100%.
func fraction(fp *typev3.FractionalPercent) float64 {
	if fp == nil {
		return 0
	}
	den := denominator(fp.GetDenominator())
	if den == 0 {
		return 0
	}
	f := float64(fp.GetNumerator()) / float64(den)
	if f > 1 {
		f = 1
	}
	return f
}

// runtimeFraction reads a RuntimeFractionalPercent's default (runtime overrides do not
// exist in a mesh driven by istiod); nil means 100%.
func runtimeFraction(rf *corev3.RuntimeFractionalPercent) float64 {
	if rf == nil {
		return 1
	}
	return fraction(rf.GetDefaultValue())
}

// denominator returns the value of a FractionalPercent denominator, 0 if unknown.
func denominator(d typev3.FractionalPercent_DenominatorType) uint64 {
	switch d {
	case typev3.FractionalPercent_HUNDRED:
		return 100
	case typev3.FractionalPercent_TEN_THOUSAND:
		return 10000
	case typev3.FractionalPercent_MILLION:
		return 1000000
	}
	return 0
}

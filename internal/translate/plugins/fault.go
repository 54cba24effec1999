package plugins

import (
	"math"

	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/amesh-dev/amesh/internal/report"
)

// faultAbortBody is the body of Envoy's fault abort reply (sent as text/plain); without
// a body APISIX would send nginx's HTML error page instead.
const faultAbortBody = "fault filter abort"

// fault translates an HTTPFault into fault-injection. Envoy delays first, then aborts,
// each with its own independent chance; so does fault-injection. An unset percentage
// is 0% in Envoy (the fault never fires) and is left out.
func (b *builder) fault(field string, f *faultv3.HTTPFault) {
	switch {
	case len(f.GetHeaders()) > 0:
		b.fail(field+".headers", report.Unsupported, "fault injection restricted by header matchers is not translated")
		return
	case len(f.GetDownstreamNodes()) > 0:
		b.fail(field+".downstream_nodes", report.Unsupported, "fault injection restricted to downstream nodes is not translated")
		return
	case f.GetResponseRateLimit() != nil:
		b.fail(field+".response_rate_limit", report.Unsupported, "response rate limiting has no APISIX equivalent")
		return
	}
	if uc := f.GetUpstreamCluster(); uc != "" {
		ra := b.in.Route.GetRoute()
		switch {
		case ra.GetWeightedClusters() != nil:
			b.fail(field+".upstream_cluster", report.Unsupported, "fault injection restricted to cluster %q of a weighted route is not translated", uc)
			return
		case ra.GetCluster() != uc:
			b.note(field+".upstream_cluster", report.Ignored, "fault applies only to cluster %q, which this route does not use", uc)
			return
		}
	}
	if f.GetMaxActiveFaults() != nil {
		b.note(field+".max_active_faults", report.Approximated, "the limit of %d concurrent faults is not enforced", f.GetMaxActiveFaults().GetValue())
	}

	conf := map[string]any{}
	if d := f.GetDelay(); d != nil {
		switch {
		case d.GetHeaderDelay() != nil:
			b.note(field+".delay.header_delay", report.Unsupported, "header-controlled delay (x-envoy-fault-delay-request) is not translated; requests carrying it are not delayed")
		case d.GetFixedDelay() != nil:
			fd := d.GetFixedDelay()
			secs := float64(fd.GetSeconds()) + float64(fd.GetNanos())/1e9
			if secs <= 0 {
				b.fail(field+".delay.fixed_delay", report.Invalid, "fixed_delay must be positive (Envoy rejects this configuration)")
				return
			}
			if pct, ok := b.percent(field+".delay.percentage", d.GetPercentage()); ok {
				conf["delay"] = map[string]any{
					"duration":   secs,
					"percentage": pct,
				}
			}
		}
	}
	if a := f.GetAbort(); a != nil {
		switch {
		case a.GetHeaderAbort() != nil:
			b.note(field+".abort.header_abort", report.Unsupported, "header-controlled abort (x-envoy-fault-abort-request) is not translated; requests carrying it are not aborted")
		case a.GetGrpcStatus() != 0:
			b.fail(field+".abort.grpc_status", report.Unsupported, "a gRPC status abort is not translated")
			return
		case a.GetHttpStatus() != 0:
			status := a.GetHttpStatus()
			if status < 200 || status > 599 {
				b.fail(field+".abort.http_status", report.Invalid, "status %d is outside Envoy's range [200, 600)", status)
				return
			}
			if pct, ok := b.percent(field+".abort.percentage", a.GetPercentage()); ok {
				conf["abort"] = map[string]any{
					"http_status": status,
					"percentage":  pct,
					"body":        faultAbortBody,
					"headers":     map[string]any{"content-type": "text/plain"},
				}
			}
		}
	}
	if len(conf) > 0 {
		b.setPlugin(pluginFault, conf)
	}
}

// percent converts a FractionalPercent into fault-injection's integer percentage. ok
// is false for 0% (the fault is left out). Fractions of a percent are rounded, but
// never down to 0, and reported.
func (b *builder) percent(field string, fp *typev3.FractionalPercent) (pct int, ok bool) {
	den := denominator(fp.GetDenominator())
	if fp.GetNumerator() == 0 || den == 0 {
		return 0, false
	}
	hundredths := uint64(fp.GetNumerator()) * 100
	if hundredths > 100*den {
		hundredths = 100 * den // Envoy caps at 100%
	}
	p := float64(hundredths) / float64(den)
	pct = int(math.Round(p))
	if pct == 0 {
		pct = 1
	}
	if hundredths%den != 0 {
		b.note(field, report.Approximated, "%g%% is not a whole percentage; fault-injection uses %d%%", p, pct)
	}
	return pct, true
}

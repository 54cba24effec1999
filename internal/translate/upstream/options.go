package upstream

import (
	"fmt"
	"math"
	"sort"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rawv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
)

const httpOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// Envoy's defaults for what APISIX keeps in keepalive_pool.
const defaultIdleTimeout = 3600.0 // seconds

// httpOptions translates the cluster's HttpProtocolOptions: idle_timeout and
// max_requests_per_connection become the keepalive pool (nginx closes idle upstream
// connections after idle_timeout and reuses one for at most `requests` requests, the
// same two limits); the other settings are reported.
func (b *builder) httpOptions(c *clusterv3.Cluster, u *apisix.Upstream) {
	a, ok := c.GetTypedExtensionProtocolOptions()[httpOptionsKey]
	if !ok {
		return
	}
	opts := &httpv3.HttpProtocolOptions{}
	if err := a.UnmarshalTo(opts); err != nil {
		b.add("cluster", "typed_extension_protocol_options", report.Invalid,
			fmt.Sprintf("cannot decode %s: %v; ignored", httpOptionsKey, err))
		return
	}
	common := opts.GetCommonHttpProtocolOptions()
	if common.GetIdleTimeout() != nil || common.GetMaxRequestsPerConnection() != nil {
		kp := &apisix.KeepalivePool{IdleTimeout: defaultIdleTimeout}
		if it := common.GetIdleTimeout(); it != nil {
			var clamped bool
			kp.IdleTimeout, clamped = Timeout(it)
			if clamped {
				b.add("cluster", "typed_extension_protocol_options.common_http_protocol_options.idle_timeout", report.Approximated,
					fmt.Sprintf("idle_timeout %ds exceeds what nginx holds; %gs is used", it.GetSeconds(), MaxTimeout))
			}
			if kp.IdleTimeout == 0 {
				kp.IdleTimeout = NoTimeout // Envoy: 0 disables the idle timeout
			}
		}
		if n := common.GetMaxRequestsPerConnection(); n != nil && n.GetValue() > 0 {
			kp.Requests = int(min(n.GetValue(), math.MaxInt32))
		}
		u.KeepalivePool = kp
	}
	var ignored []string
	if common.GetMaxConnectionDuration() != nil {
		ignored = append(ignored, "max_connection_duration")
	}
	if common.GetMaxHeadersCount() != nil {
		ignored = append(ignored, "max_headers_count")
	}
	if common.GetMaxStreamDuration() != nil {
		ignored = append(ignored, "max_stream_duration")
	}
	if common.GetHeadersWithUnderscoresAction() != corev3.HttpProtocolOptions_ALLOW {
		ignored = append(ignored, "headers_with_underscores_action")
	}
	if len(ignored) > 0 {
		b.add("cluster", "typed_extension_protocol_options.common_http_protocol_options", report.Unsupported,
			strings.Join(ignored, ", ")+" not supported by APISIX upstreams; ignored")
	}
	switch {
	case opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil, opts.GetExplicitHttpConfig().GetHttp3ProtocolOptions() != nil:
		b.add("cluster", "typed_extension_protocol_options.explicit_http_config", report.Approximated,
			"the cluster speaks HTTP/2 or HTTP/3 upstream; APISIX proxies HTTP/1.1 (gRPC needs HTTP/2 and will fail)")
	case opts.GetUseDownstreamProtocolConfig() != nil:
		b.add("cluster", "typed_extension_protocol_options.use_downstream_protocol_config", report.Approximated,
			"APISIX proxies HTTP/1.1 upstream whatever the downstream protocol (gRPC needs HTTP/2 and will fail)")
	case opts.GetAutoConfig() != nil:
		b.add("cluster", "typed_extension_protocol_options.auto_config", report.Approximated,
			"APISIX proxies HTTP/1.1 upstream; no ALPN protocol selection")
	}
	if len(opts.GetHttpFilters()) > 0 || opts.GetRetryPolicy() != nil || len(opts.GetHashPolicy()) > 0 ||
		len(opts.GetRequestMirrorPolicies()) > 0 || opts.GetOutlierDetection() != nil {
		b.add("cluster", "typed_extension_protocol_options", report.Unsupported,
			"upstream HTTP filters and cluster-level retry, hash, mirror and outlier settings are not supported; ignored")
	}
}

// unlimited is what istiod sends for a threshold without a DestinationRule limit.
const unlimited = math.MaxUint32

// circuitBreakers reports the limits APISIX cannot enforce: nginx has no cap on
// concurrent connections, pending or active requests, or concurrent retries per upstream.
func (b *builder) circuitBreakers(c *clusterv3.Cluster) {
	var set []string
	for _, t := range c.GetCircuitBreakers().GetThresholds() {
		for _, f := range []struct {
			name string
			v    *wrapperspb.UInt32Value
		}{
			{"max_connections", t.GetMaxConnections()},
			{"max_pending_requests", t.GetMaxPendingRequests()},
			{"max_requests", t.GetMaxRequests()},
			{"max_retries", t.GetMaxRetries()},
			{"max_connection_pools", t.GetMaxConnectionPools()},
		} {
			if f.v != nil && f.v.GetValue() != unlimited {
				set = append(set, fmt.Sprintf("%s=%d (%s)", f.name, f.v.GetValue(), t.GetPriority()))
			}
		}
		if t.GetRetryBudget() != nil {
			set = append(set, fmt.Sprintf("retry_budget (%s)", t.GetPriority()))
		}
	}
	if len(set) > 0 {
		sort.Strings(set)
		b.add("cluster", "circuit_breakers", report.Unsupported,
			"limits not enforced by APISIX: "+strings.Join(set, ", "))
	}
}

// isTLS reports whether ts is anything but plaintext (raw_buffer): TLS, or a socket
// that wraps one, which APISIX cannot reproduce either.
func isTLS(ts *corev3.TransportSocket) bool {
	if ts == nil {
		return false
	}
	a := ts.GetTypedConfig()
	if a == nil {
		return ts.GetName() != "envoy.transport_sockets.raw_buffer"
	}
	return a.MessageIs(&tlsv3.UpstreamTlsContext{}) || !a.MessageIs(&rawv3.RawBuffer{})
}

// unsupportedClusterFields reports cluster settings that change which hosts serve a
// request and have no APISIX equivalent.
func (b *builder) unsupportedClusterFields(c *clusterv3.Cluster) {
	if len(c.GetHealthChecks()) > 0 {
		b.add("cluster", "health_checks", report.Unsupported, "active health checks are not translated; all endpoints EDS marks healthy are used")
	}
	if c.GetLbSubsetConfig() != nil {
		b.add("cluster", "lb_subset_config", report.Unsupported, "subset load balancing is not supported; all endpoints are used")
	}
	if c.GetCommonLbConfig().GetZoneAwareLbConfig() != nil {
		b.add("cluster", "common_lb_config.zone_aware_lb_config", report.Unsupported, "zone-aware routing is not supported")
	}
}

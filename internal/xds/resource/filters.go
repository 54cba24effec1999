package resource

// Network and HTTP filters. Envoy finds a filter's implementation by the type of its
// typed_config (a TypedStruct stands for the type it names), never by the filter's
// name, and a type it has no implementation for is an error that rejects the whole
// listener, unless the HTTP filter is is_optional. The tables below are the filter
// types of Envoy's registry (categories envoy.filters.network and envoy.filters.http
// of source/extensions/extensions_metadata.yaml) plus those istio-proxy, the Envoy a
// sidecar runs, adds; each says what amesh does with a filter of that type.

import (
	"fmt"
	"strings"

	udpav1 "github.com/cncf/xds/go/udpa/type/v1"
	xdsv3 "github.com/cncf/xds/go/xds/type/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	wasmhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// FilterRole is what amesh does with a filter of a given type.
type FilterRole uint8

const (
	// RoleUnknown: Envoy has no implementation for the type.
	RoleUnknown FilterRole = iota
	// RoleHCM and RoleTCPProxy: the network filters amesh translates (routes, stream
	// routes).
	RoleHCM
	RoleTCPProxy
	// RoleRouter: the HTTP filter that forwards requests along the routes.
	RoleRouter
	// RoleObserve: only observes or decorates traffic (stats, peer metadata exchange,
	// ALPN for upstream TLS); it changes neither who gets in nor what a request gets,
	// and is ignored.
	RoleObserve
	// RoleFault and RoleCORS: translated from their per-route configs.
	RoleFault
	RoleCORS
	// RoleRBAC, RoleExtAuthz and RoleJWT decide who gets in; their configs are read
	// to enforce what can be enforced exactly, and the rest fails closed (403).
	RoleRBAC
	RoleExtAuthz
	RoleJWT
	// RoleAccess: can decide who gets in (authentication, authorization, code that
	// may reject requests) and is not translated: what it guards answers 403.
	RoleAccess
	// RoleOther: changes requests, responses or connections and is not translated:
	// what it applies to fails closed.
	RoleOther
)

// Guards reports whether a filter of role r can refuse a request or connection on
// grounds of who sends it: what it guards answers 403 when it is not enforced.
func (r FilterRole) Guards() bool {
	return r == RoleRBAC || r == RoleExtAuthz || r == RoleJWT || r == RoleAccess
}

// terminality says whether a filter type must be the last of its chain.
type terminality uint8

const (
	notTerminal terminality = iota
	terminal
	// maybeTerminal: the filter's config decides (dynamic modules, for example).
	maybeTerminal
)

type filterType struct {
	factory string // the extension's name, as Envoy's errors call its type
	role    FilterRole
	term    terminality
}

// httpFilterTypes are the HTTP filter types by message name.
var httpFilterTypes = map[string]filterType{
	"envoy.extensions.filters.http.router.v3.Router": {"envoy.filters.http.router", RoleRouter, terminal},

	"envoy.extensions.filters.http.grpc_stats.v3.FilterConfig": {"envoy.filters.http.grpc_stats", RoleObserve, notTerminal},
	// istio-proxy's own: istio.metadata_exchange, istio.alpn, istio.stats.
	"io.istio.http.peer_metadata.Config":                        {"envoy.filters.http.peer_metadata", RoleObserve, notTerminal},
	"istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig": {"istio.alpn", RoleObserve, notTerminal},
	"stats.PluginConfig":                                        {"istio.stats", RoleObserve, notTerminal},

	"envoy.extensions.filters.http.fault.v3.HTTPFault": {"envoy.filters.http.fault", RoleFault, notTerminal},
	"envoy.extensions.filters.http.cors.v3.Cors":       {"envoy.filters.http.cors", RoleCORS, notTerminal},

	"envoy.extensions.filters.http.rbac.v3.RBAC":                   {"envoy.filters.http.rbac", RoleRBAC, notTerminal},
	"envoy.extensions.filters.http.ext_authz.v3.ExtAuthz":          {"envoy.filters.http.ext_authz", RoleExtAuthz, notTerminal},
	"envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication": {"envoy.filters.http.jwt_authn", RoleJWT, notTerminal},

	"envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth":                                {"envoy.filters.http.api_key_auth", RoleAccess, notTerminal},
	"envoy.extensions.filters.http.basic_auth.v3.BasicAuth":                                   {"envoy.filters.http.basic_auth", RoleAccess, notTerminal},
	"envoy.extensions.filters.http.composite.v3.Composite":                                    {"envoy.filters.http.composite", RoleAccess, notTerminal},
	"envoy.extensions.filters.http.csrf.v3.CsrfPolicy":                                        {"envoy.filters.http.csrf", RoleAccess, notTerminal},
	"envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter":                    {"envoy.extensions.filters.http.dynamic_modules", RoleAccess, maybeTerminal},
	"envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor":                             {"envoy.filters.http.ext_proc", RoleAccess, notTerminal},
	"envoy.extensions.filters.http.filter_chain.v3.FilterChainConfig":                         {"envoy.filters.http.filter_chain", RoleAccess, notTerminal},
	"envoy.extensions.filters.http.lua.v3.Lua":                                                {"envoy.filters.http.lua", RoleAccess, notTerminal},
	"envoy.extensions.filters.http.oauth2.v3.OAuth2":                                          {"envoy.filters.http.oauth2", RoleAccess, notTerminal},
	"envoy.extensions.filters.http.wasm.v3.Wasm":                                              {"envoy.filters.http.wasm", RoleAccess, notTerminal},
	"envoy.extensions.filters.http.adaptive_concurrency.v3.AdaptiveConcurrency":               {"envoy.filters.http.adaptive_concurrency", RoleOther, notTerminal},
	"envoy.extensions.filters.http.admission_control.v3.AdmissionControl":                     {"envoy.filters.http.admission_control", RoleOther, notTerminal},
	"envoy.extensions.filters.http.ai_protocol_manager.v3.AiProtocolManager":                  {"envoy.filters.http.ai_protocol_manager", RoleOther, terminal},
	"envoy.extensions.filters.http.alternate_protocols_cache.v3.FilterConfig":                 {"envoy.filters.http.alternate_protocols_cache", RoleOther, notTerminal},
	"envoy.extensions.filters.http.aws_lambda.v3.Config":                                      {"envoy.filters.http.aws_lambda", RoleOther, notTerminal},
	"envoy.extensions.filters.http.aws_request_signing.v3.AwsRequestSigning":                  {"envoy.filters.http.aws_request_signing", RoleOther, notTerminal},
	"envoy.extensions.filters.http.bandwidth_limit.v3.BandwidthLimit":                         {"envoy.filters.http.bandwidth_limit", RoleOther, notTerminal},
	"envoy.extensions.filters.http.bandwidth_share.v3.BandwidthShare":                         {"envoy.filters.http.bandwidth_share", RoleOther, notTerminal},
	"envoy.extensions.filters.http.buffer.v3.Buffer":                                          {"envoy.filters.http.buffer", RoleOther, notTerminal},
	"envoy.extensions.filters.http.cache.v3.CacheConfig":                                      {"envoy.filters.http.cache", RoleOther, notTerminal},
	"envoy.extensions.filters.http.cache_v2.v3.CacheV2Config":                                 {"envoy.filters.http.cache_v2", RoleOther, notTerminal},
	"envoy.extensions.filters.http.cdn_loop.v3.CdnLoopConfig":                                 {"envoy.filters.http.cdn_loop", RoleOther, notTerminal},
	"envoy.extensions.filters.http.compressor.v3.Compressor":                                  {"envoy.filters.http.compressor", RoleOther, notTerminal},
	"envoy.extensions.filters.http.connect_grpc_bridge.v3.FilterConfig":                       {"envoy.filters.http.connect_grpc_bridge", RoleOther, notTerminal},
	"envoy.extensions.filters.http.credential_injector.v3.CredentialInjector":                 {"envoy.filters.http.credential_injector", RoleOther, notTerminal},
	"envoy.extensions.filters.http.custom_response.v3.CustomResponse":                         {"envoy.filters.http.custom_response", RoleOther, notTerminal},
	"envoy.extensions.filters.http.decompressor.v3.Decompressor":                              {"envoy.filters.http.decompressor", RoleOther, notTerminal},
	"envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig":                     {"envoy.filters.http.dynamic_forward_proxy", RoleOther, notTerminal},
	"envoy.extensions.filters.http.file_server.v3.FileServerConfig":                           {"envoy.filters.http.file_server", RoleOther, maybeTerminal},
	"envoy.extensions.filters.http.file_system_buffer.v3.FileSystemBufferFilterConfig":        {"envoy.filters.http.file_system_buffer", RoleOther, notTerminal},
	"envoy.extensions.filters.http.gcp_authn.v3.GcpAuthnFilterConfig":                         {"envoy.filters.http.gcp_authn", RoleOther, notTerminal},
	"envoy.extensions.filters.http.geoip.v3.Geoip":                                            {"envoy.filters.http.geoip", RoleOther, notTerminal},
	"envoy.extensions.filters.http.grpc_field_extraction.v3.GrpcFieldExtractionConfig":        {"envoy.filters.http.grpc_field_extraction", RoleOther, notTerminal},
	"envoy.extensions.filters.http.grpc_http1_bridge.v3.Config":                               {"envoy.filters.http.grpc_http1_bridge", RoleOther, notTerminal},
	"envoy.extensions.filters.http.grpc_http1_reverse_bridge.v3.FilterConfig":                 {"envoy.filters.http.grpc_http1_reverse_bridge", RoleOther, notTerminal},
	"envoy.extensions.filters.http.grpc_json_reverse_transcoder.v3.GrpcJsonReverseTranscoder": {"envoy.filters.http.grpc_json_reverse_transcoder", RoleOther, notTerminal},
	"envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder":                {"envoy.filters.http.grpc_json_transcoder", RoleOther, notTerminal},
	"envoy.extensions.filters.http.grpc_web.v3.GrpcWeb":                                       {"envoy.filters.http.grpc_web", RoleOther, notTerminal},
	"envoy.extensions.filters.http.header_mutation.v3.HeaderMutation":                         {"envoy.filters.http.header_mutation", RoleOther, notTerminal},
	"envoy.extensions.filters.http.header_to_metadata.v3.Config":                              {"envoy.filters.http.header_to_metadata", RoleOther, notTerminal},
	"envoy.extensions.filters.http.health_check.v3.HealthCheck":                               {"envoy.filters.http.health_check", RoleOther, notTerminal},
	"envoy.extensions.filters.http.ip_tagging.v3.IPTagging":                                   {"envoy.filters.http.ip_tagging", RoleOther, notTerminal},
	"envoy.extensions.filters.http.json_to_metadata.v3.JsonToMetadata":                        {"envoy.filters.http.json_to_metadata", RoleOther, notTerminal},
	"envoy.extensions.filters.http.kill_request.v3.KillRequest":                               {"envoy.filters.http.kill_request", RoleOther, notTerminal},
	"envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit":                         {"envoy.filters.http.local_ratelimit", RoleOther, notTerminal},
	"envoy.extensions.filters.http.mcp.v3.Mcp":                                                {"envoy.filters.http.mcp", RoleOther, notTerminal},
	"envoy.extensions.filters.http.mcp_json_rest_bridge.v3.McpJsonRestBridge":                 {"envoy.filters.http.mcp_json_rest_bridge", RoleOther, notTerminal},
	"envoy.extensions.filters.http.mcp_router.v3.McpRouter":                                   {"envoy.filters.http.mcp_router", RoleOther, terminal},
	"envoy.extensions.filters.http.on_demand.v3.OnDemand":                                     {"envoy.filters.http.on_demand", RoleOther, notTerminal},
	"envoy.extensions.filters.http.original_src.v3.OriginalSrc":                               {"envoy.filters.http.original_src", RoleOther, notTerminal},
	"envoy.extensions.filters.http.proto_api_scrubber.v3.ProtoApiScrubberConfig":              {"envoy.filters.http.proto_api_scrubber", RoleOther, notTerminal},
	"envoy.extensions.filters.http.proto_message_extraction.v3.ProtoMessageExtractionConfig":  {"envoy.filters.http.proto_message_extraction", RoleOther, notTerminal},
	"envoy.extensions.filters.http.rate_limit_quota.v3.RateLimitQuotaFilterConfig":            {"envoy.filters.http.rate_limit_quota", RoleOther, notTerminal},
	"envoy.extensions.filters.http.ratelimit.v3.RateLimit":                                    {"envoy.filters.http.ratelimit", RoleOther, notTerminal},
	"envoy.extensions.filters.http.set_filter_state.v3.Config":                                {"envoy.filters.http.set_filter_state", RoleOther, notTerminal},
	"envoy.extensions.filters.http.set_metadata.v3.Config":                                    {"envoy.filters.http.set_metadata", RoleOther, notTerminal},
	"envoy.extensions.filters.http.sse_to_metadata.v3.SseToMetadata":                          {"envoy.filters.http.sse_to_metadata", RoleOther, notTerminal},
	"envoy.extensions.filters.http.stateful_session.v3.StatefulSession":                       {"envoy.filters.http.stateful_session", RoleOther, notTerminal},
	"envoy.extensions.filters.http.tap.v3.Tap":                                                {"envoy.filters.http.tap", RoleOther, notTerminal},
	"envoy.extensions.filters.http.thrift_to_metadata.v3.ThriftToMetadata":                    {"envoy.filters.http.thrift_to_metadata", RoleOther, notTerminal},
	"envoy.extensions.filters.http.transform.v3.TransformConfig":                              {"envoy.filters.http.transform", RoleOther, notTerminal},
}

// networkFilterTypes are the network filter types by message name.
var networkFilterTypes = map[string]filterType{
	hcmTypeName: {"envoy.filters.network.http_connection_manager", RoleHCM, terminal},
	"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy": {"envoy.filters.network.tcp_proxy", RoleTCPProxy, terminal},

	// istio-proxy's own: istio.metadata_exchange, peer metadata (HBONE), istio.stats.
	"envoy.tcp.metadataexchange.config.MetadataExchange":            {"envoy.filters.network.metadata_exchange", RoleObserve, notTerminal},
	"envoy.extensions.network_filters.peer_metadata.Config":         {"envoy.filters.network.peer_metadata", RoleObserve, notTerminal},
	"envoy.extensions.network_filters.peer_metadata.UpstreamConfig": {"envoy.filters.network.upstream.peer_metadata", RoleObserve, notTerminal},
	"stats.PluginConfig": {"istio.stats", RoleObserve, notTerminal},

	"envoy.extensions.filters.network.rbac.v3.RBAC":                                  {"envoy.filters.network.rbac", RoleRBAC, notTerminal},
	"envoy.extensions.filters.network.ext_authz.v3.ExtAuthz":                         {"envoy.filters.network.ext_authz", RoleAccess, notTerminal},
	"envoy.extensions.filters.network.dynamic_modules.v3.DynamicModuleNetworkFilter": {"envoy.filters.network.dynamic_modules", RoleAccess, maybeTerminal},
	"envoy.extensions.filters.network.ext_proc.v3.NetworkExternalProcessor":          {"envoy.filters.network.ext_proc", RoleAccess, notTerminal},
	"envoy.extensions.filters.network.wasm.v3.Wasm":                                  {"envoy.filters.network.wasm", RoleAccess, notTerminal},
	"envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit":           {"envoy.filters.network.connection_limit", RoleOther, notTerminal},
	"envoy.extensions.filters.network.geoip.v3.Geoip":                                {"envoy.filters.network.geoip", RoleOther, notTerminal},
	"envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit":             {"envoy.filters.network.local_ratelimit", RoleOther, notTerminal},
	"envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy":                     {"envoy.filters.network.mongo_proxy", RoleOther, notTerminal},
	"envoy.extensions.filters.network.ratelimit.v3.RateLimit":                        {"envoy.filters.network.ratelimit", RoleOther, notTerminal},
	"envoy.extensions.filters.network.set_filter_state.v3.Config":                    {"envoy.filters.network.set_filter_state", RoleOther, notTerminal},
	"envoy.extensions.filters.network.sni_cluster.v3.SniCluster":                     {"envoy.filters.network.sni_cluster", RoleOther, notTerminal},
	"envoy.extensions.filters.network.sni_dynamic_forward_proxy.v3.FilterConfig":     {"envoy.filters.network.sni_dynamic_forward_proxy", RoleOther, notTerminal},
	"envoy.extensions.filters.network.tcp_bandwidth_limit.v3.TcpBandwidthLimit":      {"envoy.filters.network.tcp_bandwidth_limit", RoleOther, notTerminal},
	"envoy.extensions.filters.network.zookeeper_proxy.v3.ZooKeeperProxy":             {"envoy.filters.network.zookeeper_proxy", RoleOther, notTerminal},
	"envoy.extensions.filters.network.direct_response.v3.Config":                     {"envoy.filters.network.direct_response", RoleOther, terminal},
	"envoy.extensions.filters.network.dubbo_proxy.v3.DubboProxy":                     {"envoy.filters.network.dubbo_proxy", RoleOther, terminal},
	"envoy.extensions.filters.network.echo.v3.Echo":                                  {"envoy.filters.network.echo", RoleOther, terminal},
	"envoy.extensions.filters.network.generic_proxy.v3.GenericProxy":                 {"envoy.filters.network.generic_proxy", RoleOther, terminal},
	"envoy.extensions.filters.network.redis_proxy.v3.RedisProxy":                     {"envoy.filters.network.redis_proxy", RoleOther, terminal},
	"envoy.extensions.filters.network.reverse_tunnel.v3.ReverseTunnel":               {"envoy.filters.network.reverse_tunnel", RoleOther, maybeTerminal},
	"envoy.extensions.filters.network.thrift_proxy.v3.ThriftProxy":                   {"envoy.filters.network.thrift_proxy", RoleOther, terminal},
}

// Type names of the TypedStructs that stand for the type they name (Envoy looks the
// implementation up by that type and converts the struct's fields into it).
const (
	typedStructType       = "xds.type.v3.TypedStruct"
	legacyTypedStructType = "udpa.type.v1.TypedStruct"
	hcmTypeName           = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)

// typeName returns the message name of a type URL (what follows the last '/').
func typeName(url string) string {
	if i := strings.LastIndexByte(url, '/'); i >= 0 {
		return url[i+1:]
	}
	return url
}

// FilterTypeName returns the type Envoy looks a filter's implementation up by: the
// message name of typed_config, or the type a TypedStruct names. It is "" for a
// filter without typed_config.
func FilterTypeName(a *anypb.Any) (string, error) {
	t := typeName(a.GetTypeUrl())
	switch t {
	case typedStructType:
		var ts xdsv3.TypedStruct
		if err := proto.Unmarshal(a.GetValue(), &ts); err != nil {
			return "", fmt.Errorf("cannot decode TypedStruct: %w", err)
		}
		return typeName(ts.GetTypeUrl()), nil
	case legacyTypedStructType:
		var ts udpav1.TypedStruct
		if err := proto.Unmarshal(a.GetValue(), &ts); err != nil {
			return "", fmt.Errorf("cannot decode TypedStruct: %w", err)
		}
		return typeName(ts.GetTypeUrl()), nil
	}
	return t, nil
}

// UnpackFilterConfig decodes a filter's typed_config into m, whose type must be the
// one FilterTypeName names: a TypedStruct's fields are converted as Envoy converts
// them (through JSON; fields m does not have are ignored, as Envoy ignores unknown
// fields of dynamic configuration).
func UnpackFilterConfig(a *anypb.Any, m proto.Message) error {
	var st *structpb.Struct
	switch typeName(a.GetTypeUrl()) {
	case typedStructType:
		var ts xdsv3.TypedStruct
		if err := proto.Unmarshal(a.GetValue(), &ts); err != nil {
			return fmt.Errorf("cannot decode TypedStruct: %w", err)
		}
		st = ts.GetValue()
	case legacyTypedStructType:
		var ts udpav1.TypedStruct
		if err := proto.Unmarshal(a.GetValue(), &ts); err != nil {
			return fmt.Errorf("cannot decode TypedStruct: %w", err)
		}
		st = ts.GetValue()
	default:
		if want := string(m.ProtoReflect().Descriptor().FullName()); typeName(a.GetTypeUrl()) != want {
			return fmt.Errorf("typed_config has type %s, want %s", typeName(a.GetTypeUrl()), want)
		}
		return proto.Unmarshal(a.GetValue(), m)
	}
	if st == nil {
		return nil
	}
	b, err := protojson.Marshal(st)
	if err != nil {
		return fmt.Errorf("cannot convert TypedStruct: %w", err)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, m); err != nil {
		return fmt.Errorf("cannot convert TypedStruct into %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return nil
}

// HTTPFilterRole returns the role of an HTTP filter given its typed_config type
// (FilterTypeName) and typed_config. Istio's stats and metadata exchange plugins in
// Envoy's built-in (null) Wasm VM observe only, unlike Wasm code in general.
func HTTPFilterRole(typ string, a *anypb.Any) FilterRole {
	ft, ok := httpFilterTypes[typ]
	if !ok {
		return RoleUnknown
	}
	if ft.role == RoleAccess && typ == "envoy.extensions.filters.http.wasm.v3.Wasm" && istioNullVM(a) {
		return RoleObserve
	}
	return ft.role
}

// istioNullVM reports whether a Wasm filter runs one of Istio's observing plugins
// compiled into Envoy.
func istioNullVM(a *anypb.Any) bool {
	var w wasmhttpv3.Wasm
	if UnpackFilterConfig(a, &w) != nil {
		return false
	}
	vm := w.GetConfig().GetVmConfig()
	if vm.GetRuntime() != "envoy.wasm.runtime.null" {
		return false
	}
	switch vm.GetCode().GetLocal().GetInlineString() {
	case "envoy.wasm.stats", "envoy.wasm.metadata_exchange":
		return true
	}
	return false
}

// NetworkFilterRole returns the role of a network filter given its typed_config
// type (FilterTypeName).
func NetworkFilterRole(typ string) FilterRole { return networkFilterTypes[typ].role }

// ECDSRole is the role of a filter whose config comes from the extension config
// discovery service (config_discovery), which amesh does not serve: the strongest of
// the roles its allowed types have (a config of any of them may arrive).
func ECDSRole(typeURLs []string, network bool) FilterRole {
	table := httpFilterTypes
	if network {
		table = networkFilterTypes
	}
	role := RoleObserve
	for _, u := range typeURLs {
		switch r := table[typeName(u)].role; {
		case r.Guards():
			return RoleAccess
		case r != RoleObserve:
			role = RoleOther
		}
	}
	return role
}

// ValidateListenerFilters checks the filters of every filter chain of l as Envoy does
// when it loads the listener: every network filter and every HTTP filter of an HTTP
// connection manager must have a type Envoy implements (an HTTP filter may be
// is_optional instead), the configs of the types amesh links must decode and pass
// their validation rules, and terminal filters (router, HTTP connection manager,
// tcp_proxy...) must come last, and only they. Errors use Envoy's wording and name the
// chain and filter.
func ValidateListenerFilters(l *listenerv3.Listener) error {
	for i, fc := range chainsOf(l) {
		if err := checkNetworkFilters(fc, chainName(fc, i)); err != nil {
			return err
		}
	}
	return nil
}

// chainsOf returns the filter chains of l, the default filter chain last.
func chainsOf(l *listenerv3.Listener) []*listenerv3.FilterChain {
	chains := l.GetFilterChains()
	if dc := l.GetDefaultFilterChain(); dc != nil {
		chains = append(chains[:len(chains):len(chains)], dc)
	}
	return chains
}

func chainName(fc *listenerv3.FilterChain, i int) string {
	if n := fc.GetName(); n != "" {
		return n
	}
	return fmt.Sprintf("#%d", i)
}

func checkNetworkFilters(fc *listenerv3.FilterChain, chain string) error {
	fs := fc.GetFilters()
	for i, f := range fs {
		last := i == len(fs)-1
		if err := checkNetworkFilter(f, last); err != nil {
			return fmt.Errorf("filter chain %s, filter %s: %w", chain, f.GetName(), err)
		}
	}
	return nil
}

func checkNetworkFilter(f *listenerv3.Filter, last bool) error {
	if cd := f.GetConfigDiscovery(); cd != nil {
		return checkECDS(f.GetName(), cd, networkFilterTypes)
	}
	typ, err := FilterTypeName(f.GetTypedConfig())
	if err != nil {
		return err
	}
	ft, ok := networkFilterTypes[typ]
	if !ok {
		return envoyErr("Didn't find a registered implementation for '%s' with type URL: '%s'", f.GetName(), typ)
	}
	if ft.role == RoleHCM {
		h := &hcmv3.HttpConnectionManager{}
		if err := UnpackFilterConfig(f.GetTypedConfig(), h); err != nil {
			return err
		}
		if err := h.ValidateAll(); err != nil {
			return err
		}
		if err := Validate(h); err != nil {
			return err
		}
		if err := checkHTTPFilters(h.GetHttpFilters(), "http"); err != nil {
			return err
		}
		for _, u := range h.GetUpgradeConfigs() {
			if err := checkHTTPFilters(u.GetFilters(), "http upgrade"); err != nil {
				return fmt.Errorf("upgrade %s: %w", u.GetUpgradeType(), err)
			}
		}
	} else if err := validateLinked(f.GetTypedConfig(), typ); err != nil {
		return err
	}
	return checkTerminal(f.GetName(), ft, "network", last)
}

func checkHTTPFilters(fs []*hcmv3.HttpFilter, chainType string) error {
	for i, f := range fs {
		if err := checkHTTPFilter(f, chainType, i == len(fs)-1); err != nil {
			return fmt.Errorf("http filter %s: %w", f.GetName(), err)
		}
	}
	return nil
}

func checkHTTPFilter(f *hcmv3.HttpFilter, chainType string, last bool) error {
	if last && f.GetDisabled() {
		return envoyErr("Error: the last (terminal) filter (%s) in the chain cannot be disabled by default.", f.GetName())
	}
	if cd := f.GetConfigDiscovery(); cd != nil {
		return checkECDS(f.GetName(), cd, httpFilterTypes)
	}
	typ, err := FilterTypeName(f.GetTypedConfig())
	if err != nil {
		return err
	}
	ft, ok := httpFilterTypes[typ]
	if !ok {
		if f.GetIsOptional() {
			return nil // Envoy skips it
		}
		return envoyErr("Didn't find a registered implementation for '%s' with type URL: '%s'", f.GetName(), typ)
	}
	if err := validateLinked(f.GetTypedConfig(), typ); err != nil {
		return err
	}
	return checkTerminal(f.GetName(), ft, chainType, last)
}

// checkECDS checks a filter whose config comes from the extension config discovery
// service: Envoy needs an implementation of every type the config may have, and a
// default config to apply without waiting for one.
func checkECDS(name string, cd *corev3.ExtensionConfigSource, table map[string]filterType) error {
	if cd.GetApplyDefaultConfigWithoutWarming() && cd.GetDefaultConfig() == nil {
		return envoyErr("Error: filter config %s applied without warming but has no default config.", name)
	}
	for _, u := range cd.GetTypeUrls() {
		if _, ok := table[typeName(u)]; !ok {
			return envoyErr("Error: no factory found for a required type URL %s.", typeName(u))
		}
	}
	return nil
}

// checkTerminal is Envoy's rule that terminal filters come last, and only they.
func checkTerminal(name string, ft filterType, chainType string, last bool) error {
	switch {
	case ft.term == terminal && !last:
		return envoyErr("Error: terminal filter named %s of type %s must be the last filter in a %s filter chain.", name, ft.factory, chainType)
	case ft.term == notTerminal && last:
		return envoyErr("Error: non-terminal filter named %s of type %s is the last filter in a %s filter chain.", name, ft.factory, chainType)
	}
	return nil
}

// validateLinked decodes and validates a filter config whose Go type amesh links (the
// types it reads, see extensions.go); others are not checked beyond their type.
func validateLinked(a *anypb.Any, typ string) error {
	if typ == "" {
		return nil
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(typ))
	if err != nil {
		return nil
	}
	m := mt.New().Interface()
	if err := UnpackFilterConfig(a, m); err != nil {
		return fmt.Errorf("cannot decode %s: %w", typ, err)
	}
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			return err
		}
	}
	// Envoy validates a typed config as it unpacks it, with the same checks as a
	// resource: an inline route configuration's regexes, durations and domains included.
	return Validate(m)
}

// envoyErr formats an error in Envoy's own words (capitalized, some with a final
// period), so that a NACK reads like the one Envoy would send.
func envoyErr(format string, args ...any) error { return fmt.Errorf(format, args...) }

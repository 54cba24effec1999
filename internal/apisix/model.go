// Package apisix is the APISIX data model amesh produces: the objects APISIX reads from
// its config provider (routes, upstreams, stream routes, ...), their shared-dict keys, and a
// deterministic JSON encoding. It knows nothing about xDS.
package apisix

// Kind is the APISIX config type of an object; it is also the first segment of the
// object's key ("/routes/<id>").
type Kind string

// The kinds amesh writes. The order of KindOrder is the order in which puts are applied
// (referenced objects first); deletes are applied in reverse.
const (
	KindSSLs          Kind = "ssls"
	KindUpstreams     Kind = "upstreams"
	KindPluginConfigs Kind = "plugin_configs"
	KindServices      Kind = "services"
	KindGlobalRules   Kind = "global_rules"
	KindRoutes        Kind = "routes"
	KindStreamRoutes  Kind = "stream_routes"
	// KindPluginMetadata holds one object per plugin, whose id is the plugin's name.
	KindPluginMetadata Kind = "plugin_metadata"
)

// KindOrder lists the kinds so that a kind only references kinds before it.
var KindOrder = []Kind{KindPluginMetadata, KindSSLs, KindUpstreams, KindPluginConfigs, KindServices, KindGlobalRules, KindRoutes, KindStreamRoutes}

// Key returns the shared-dict key of the object of kind k with id.
func Key(k Kind, id string) string { return "/" + string(k) + "/" + id }

// Route is an APISIX HTTP route (schema_def.route). Only the fields amesh sets exist.
type Route struct {
	ID      string   `json:"id"`
	Name    string   `json:"name,omitempty"`
	Desc    string   `json:"desc,omitempty"`
	URI     string   `json:"uri,omitempty"`
	URIs    []string `json:"uris,omitempty"`
	Hosts   []string `json:"hosts,omitempty"`
	Methods []string `json:"methods,omitempty"`
	// Vars is a lua-resty-expr expression list, e.g. [["http_x_user","==","a"]].
	Vars       []Expr            `json:"vars,omitempty"`
	Priority   int               `json:"priority,omitempty"`
	UpstreamID string            `json:"upstream_id,omitempty"`
	Plugins    map[string]any    `json:"plugins,omitempty"`
	Timeout    *Timeout          `json:"timeout,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	// EnableWebsocket mirrors Envoy's upgrade_configs for websocket.
	EnableWebsocket bool `json:"enable_websocket,omitempty"`
}

// Expr is one lua-resty-expr term: [var, op, value] or ["!", var, op, value], or a
// nested logical group such as ["OR", [...], [...]].
type Expr []any

// Timeout is an APISIX timeout in seconds; every field must be > 0 when present.
type Timeout struct {
	Connect float64 `json:"connect"`
	Send    float64 `json:"send"`
	Read    float64 `json:"read"`
}

// Upstream is an APISIX upstream (schema_def.upstream).
type Upstream struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	Desc string `json:"desc,omitempty"`
	// Type is the balancer: roundrobin, chash, least_conn or ewma.
	Type   string `json:"type,omitempty"`
	Nodes  []Node `json:"nodes"`
	HashOn string `json:"hash_on,omitempty"`
	Key    string `json:"key,omitempty"`
	// Retries is a pointer because 0 (no retries) differs from unset (APISIX: number of nodes - 1).
	Retries       *int              `json:"retries,omitempty"`
	RetryTimeout  *float64          `json:"retry_timeout,omitempty"`
	Timeout       *Timeout          `json:"timeout,omitempty"`
	Scheme        string            `json:"scheme,omitempty"`
	PassHost      string            `json:"pass_host,omitempty"`
	UpstreamHost  string            `json:"upstream_host,omitempty"`
	KeepalivePool *KeepalivePool    `json:"keepalive_pool,omitempty"`
	Checks        *HealthChecks     `json:"checks,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
}

// Node is one upstream endpoint. Lower Priority is tried later in APISIX (higher first),
// which is why translation maps Envoy priority p to APISIX priority -p.
type Node struct {
	Host     string         `json:"host"`
	Port     int            `json:"port,omitempty"`
	Weight   int            `json:"weight"`
	Priority int            `json:"priority,omitempty"`
	Metadata map[string]any `json:"metadata,omitempty"`
}

// KeepalivePool configures upstream connection reuse.
type KeepalivePool struct {
	Size        int     `json:"size,omitempty"`
	IdleTimeout float64 `json:"idle_timeout"`
	Requests    int     `json:"requests,omitempty"`
}

// HealthChecks is APISIX's upstream.checks. APISIX's schema requires an active check
// whenever a passive one is present.
type HealthChecks struct {
	Active  map[string]any `json:"active,omitempty"`
	Passive map[string]any `json:"passive,omitempty"`
}

// StreamRoute is an APISIX L4 route (schema_def.stream_route).
type StreamRoute struct {
	ID         string `json:"id"`
	Desc       string `json:"desc,omitempty"`
	ServerAddr string `json:"server_addr,omitempty"`
	ServerPort int    `json:"server_port,omitempty"`
	RemoteAddr string `json:"remote_addr,omitempty"`
	SNI        string `json:"sni,omitempty"`
	// Labels carry what amesh's stream router matches besides address and port (the
	// capture port a connection arrived on, its protocol).
	Labels     map[string]string `json:"labels,omitempty"`
	UpstreamID string            `json:"upstream_id,omitempty"`
	Plugins    map[string]any    `json:"plugins,omitempty"`
}

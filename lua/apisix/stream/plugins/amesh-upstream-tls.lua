-- amesh-upstream-tls (stream): upstream TLS for TCP proxying, as Envoy's tcp_proxy
-- connects with its cluster's UpstreamTlsContext: Istio mTLS to the pods with a sidecar
-- (auto mTLS, DestinationRule ISTIO_MUTUAL) with the cluster's SNI
-- (outbound_.PORT_.SUBSET_.HOST), its ALPN (istio-peer-exchange, istio: a peer's inbound
-- listener takes its mTLS TCP chain by it), the workload certificate, and the server's
-- SPIFFE identity checked against the cluster's subject alt names; DestinationRule
-- SIMPLE/MUTUAL likewise. amesh adds it to the stream routes of clusters that speak TLS,
-- with the same settings as the HTTP plugin of this name (whose schema, certificate
-- loading and profile cache it uses); it must be in config.yaml's `stream_plugins`, and
-- nginx must load ngx_stream_amesh_upstream_tls_module with a template server in
-- stream{} (nginx/upstream_tls/README.md):
--
--     server {
--         amesh_upstream_tls_template;
--         proxy_pass apisix_backend;
--     }
--
-- It runs before each connection attempt (before_proxy: in the preread phase for the
-- first node, in the balancer phase for a retry) and decides per node as the HTTP plugin
-- does: the upstream's scheme ("https": TLS), unless the node's metadata says otherwise.
-- For a TLS node it attaches the upstream's profile to the session, for a plaintext one
-- none. What it cannot do closes the connection: a node is never reached in plaintext or
-- with less TLS than Envoy would use.
local core = require("apisix.core")
local http_plugin = require("apisix.plugins.amesh-upstream-tls")

local plugin_name = "amesh-upstream-tls"

local _M = {
    version = 0.1,
    priority = 964,
    name = plugin_name,
    schema = http_plugin.schema,
}


function _M.check_schema(conf)
    return core.schema.check(_M.schema, conf)
end


local settle = http_plugin.settle


function _M.before_proxy(conf, ctx)
    local up = ctx.upstream_conf
    local matched = ctx.matched_upstream
    if not up or not matched then
        return
    end
    local p, err = settle(conf, ctx, up, matched)
    if p == nil then
        core.log.error(plugin_name, ": ", err)
        return 503
    end
end


return _M

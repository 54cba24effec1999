-- amesh-network-rbac (stream): enforces Envoy's network RBAC filters
-- (envoy.filters.network.rbac, actions ALLOW and DENY: Istio's AuthorizationPolicy on
-- TCP ports) per connection, as the translator emits them in front of tcp_proxy
-- (internal/translate/streamauthz.go): the filters in order, the first that denies
-- closes the connection, as Envoy closes it. The evaluation is amesh.rbac's
-- decide_connection over the connection's client, original destination and TLS peer.
-- On the route of Istio mTLS that the stream server's TLS socket terminated, the
-- client and the destination are the PROXY header's (the router keeps the destination
-- in ctx.amesh_original_dst); elsewhere the connection's own, whose local address is
-- its original destination (amesh_original_dst_local).
--
-- Its config's filters have amesh-rbac's schema (lua/apisix/plugins/amesh-rbac.lua),
-- as internal/apisix/schema/schemas/stream_plugins/amesh-network-rbac.json says. It
-- must be in config.yaml's stream_plugins (the chart's APISIX config lists it).
local core = require("apisix.core")
local rbac = require("amesh.rbac")
local http_schema = require("apisix.plugins.amesh-rbac").schema
local ngx = ngx
local tonumber = tonumber

local plugin_name = "amesh-network-rbac"

local schema = {
    type = "object",
    properties = {
        filters = http_schema.properties.filters,
    },
    required = {"filters"},
    additionalProperties = false,
    definitions = http_schema.definitions,
}

local _M = {
    version = 0.1,
    -- after amesh-mtls-peer, before the plugins that send the connection on
    priority = 11500,
    name = plugin_name,
    schema = schema,
}


function _M.check_schema(conf)
    return core.schema.check(schema, conf)
end


function _M.preread(conf, ctx)
    local var = ngx.var
    local conn
    local dst = ctx.amesh_original_dst
    if dst then
        conn = {remote = var.proxy_protocol_addr, dest = dst.addr, port = dst.port}
    else
        conn = {remote = var.remote_addr, dest = var.server_addr,
                port = tonumber(var.server_port)}
    end
    local filter, policy = rbac.decide_connection(conf, conn)
    if filter then
        core.log.info(plugin_name, ": filter ", filter, " denied the connection from ",
                      conn.remote, policy and (" (policy " .. policy .. ")") or "",
                      ": closed")
        return 403
    end
end


return _M

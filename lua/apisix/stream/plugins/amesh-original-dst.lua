-- amesh-original-dst (stream): sends a captured connection to its original destination,
-- as Envoy's ORIGINAL_DST clusters do for tcp_proxy chains (Istio's PassthroughCluster,
-- InboundPassthroughCluster and inbound|<port>||); the stream counterpart of the http
-- plugin of the same name (lua/apisix/plugins/amesh-original-dst.lua), with the same
-- configuration. It must be in config.yaml's stream_plugins (the chart's APISIX config
-- lists it).
--
-- The route names the cluster's upstream (no nodes); in the preread phase this plugin
-- hands APISIX's balancer that upstream with the original destination as its one node
-- (amesh.original_dst), binding to the cluster's source address through
-- `proxy_bind $amesh_upstream_bind;` in the stream block, with the variable declared
-- there (`map $server_port $amesh_upstream_bind { default ""; }`: APISIX's stream server
-- has no snippet for `set`), which the chart's APISIX config has. Whatever is missing,
-- the connection is closed: it never goes anywhere else.
local core = require("apisix.core")
local upstream = require("apisix.upstream")
local original_dst = require("amesh.original_dst")

local plugin_name = "amesh-original-dst"

local schema = original_dst.schema

local _M = {
    version = 0.1,
    priority = 965,
    name = plugin_name,
    schema = schema,
}


function _M.check_schema(conf)
    return core.schema.check(schema, conf)
end


function _M.preread(conf, ctx)
    -- APISIX's preread phase has found the route's upstream (or closed the connection).
    local route = ctx.matched_route
    local up_id = route and route.value.upstream_id
    local up_conf, bind, err = original_dst.upstream(conf, ctx.var, up_id and ctx.matched_upstream,
                                                     ctx.amesh_original_dst)
    if not up_conf then
        core.log.error(plugin_name, ": ", err, " (stream route ",
                       route and route.value.id, "): closed")
        return bind
    end
    local node = up_conf.nodes[1]
    upstream.set(ctx, plugin_name .. "#" .. up_id .. "#" .. node.host .. ":" .. node.port,
                 ctx.conf_version, up_conf)
end


return _M

-- amesh-original-dst: sends a route's requests to the original destination of their
-- connection, as Envoy's ORIGINAL_DST clusters do (Istio's PassthroughCluster,
-- InboundPassthroughCluster and inbound|<port>||). amesh adds it to the routes of such
-- clusters; it must be in config.yaml's `plugins` (the chart's APISIX config lists it).
--
-- The route names the cluster's upstream (no nodes); in the access phase this plugin
-- hands APISIX's balancer that upstream with the original destination as its one node
-- (amesh.original_dst), as traffic-split does, binding to the cluster's source address
-- through `proxy_bind $amesh_upstream_bind;`, with the variable declared
-- (`set $amesh_upstream_bind '';`) in the server, which the chart's APISIX config does.
-- Whatever is missing, the request is refused: it never goes anywhere else.
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


function _M.access(conf, ctx)
    local route = ctx.matched_route
    local up_id = route and route.value.upstream_id
    local base = up_id and upstream.get_by_id(up_id)
    local up_conf, bind, err = original_dst.upstream(conf, ctx.var, base)
    if not up_conf then
        core.log.error(plugin_name, ": ", err, " (route ", route and route.value.id, ")")
        return bind
    end
    up_conf.pass_host = base.pass_host
    up_conf.upstream_host = base.upstream_host
    up_conf.keepalive_pool = base.keepalive_pool
    if bind then
        -- APISIX names its pools of idle upstream connections by the upstream's scheme,
        -- the node's address and its port (balancer.lua, set_current_peer), not by source
        -- address. A connection bound to 127.0.0.6 and one APISIX makes from the pod's own
        -- address to the same destination (an outbound call of the application to its
        -- own service, which Istio's rules capture again, to 15006) must not share a
        -- pool: a request would take the other's path, skipping the inbound hop or
        -- taking it twice. So the bound upstream's scheme names a pool of its own; the
        -- request is proxied with the scheme set below ($upstream_scheme), not this one.
        up_conf.scheme = base.scheme .. "+bind=" .. bind
    end
    local node = up_conf.nodes[1]
    upstream.set(ctx, plugin_name .. "#" .. up_id .. "#" .. node.host .. ":" .. node.port,
                 ctx.conf_version, up_conf)
    upstream.set_scheme(ctx, base)
end


return _M

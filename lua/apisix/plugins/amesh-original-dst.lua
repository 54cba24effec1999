-- amesh-original-dst: sends a route's requests to the original destination of their
-- connection, as Envoy's ORIGINAL_DST clusters do (Istio's PassthroughCluster,
-- InboundPassthroughCluster and inbound|<port>||). amesh adds it to the routes of such
-- clusters; it must be in config.yaml's `plugins` (the chart's APISIX config lists it).
--
-- The route names the cluster's upstream, which has no nodes: amesh puts the cluster's
-- settings (timeouts, retries) there. In the access phase this plugin takes that
-- upstream with one node, the address and port the kernel recorded for the connection
-- before iptables redirected it ($connection_original_dst_addr and _port, from
-- ngx_http_amesh_original_dst_module), and hands it to APISIX's balancer as
-- traffic-split does. Without the variables, or without the upstream, the request is
-- refused: it never goes anywhere else.
--
-- `bind` and `bind6` are the source address for IPv4 and IPv6 destinations
-- (amesh.original_dst). nginx binds upstream connections through
-- `proxy_bind $amesh_upstream_bind;`, with the variable declared
-- (`set $amesh_upstream_bind '';`) in the server, which the chart's APISIX config does.
local core = require("apisix.core")
local upstream = require("apisix.upstream")
local original_dst = require("amesh.original_dst")
local tonumber = tonumber

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
    local var = ctx.var
    local addr = var.connection_original_dst_addr
    local port = conf.port or tonumber(var.connection_original_dst_port)
    if not addr or addr == "" or not port then
        core.log.error(plugin_name, ": the connection has no original destination ",
                       "($connection_original_dst_addr is empty: is ",
                       "ngx_http_amesh_original_dst_module loaded?)")
        return 502
    end

    local route = ctx.matched_route
    local up_id = route and route.value.upstream_id
    local base = up_id and upstream.get_by_id(up_id)
    if not base then
        core.log.error(plugin_name, ": route ", route and route.value.id,
                       " names no upstream that exists")
        return 503
    end

    local host, bind = original_dst.target(conf, addr)
    if not host then
        core.log.error(plugin_name, ": ", bind)
        return 502
    end
    if bind and not original_dst.set_bind(bind) then
        core.log.error(plugin_name, ": $amesh_upstream_bind is not declared ",
                       "(set $amesh_upstream_bind ''; proxy_bind $amesh_upstream_bind;)")
        return 500
    end

    local up_conf = {
        type = "roundrobin",
        nodes = {{host = host, port = port, weight = 1, priority = 0}},
        timeout = base.timeout,
        retries = base.retries,
        retry_timeout = base.retry_timeout,
        scheme = base.scheme,
        pass_host = base.pass_host,
        upstream_host = base.upstream_host,
        keepalive_pool = base.keepalive_pool,
    }
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
    upstream.set(ctx, plugin_name .. "#" .. up_id .. "#" .. host .. ":" .. port,
                 ctx.conf_version, up_conf)
    upstream.set_scheme(ctx, base)
end


return _M

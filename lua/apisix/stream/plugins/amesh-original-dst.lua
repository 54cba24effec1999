-- amesh-original-dst (stream): sends a captured connection to its original destination,
-- as Envoy's ORIGINAL_DST clusters do for tcp_proxy chains (Istio's PassthroughCluster,
-- InboundPassthroughCluster and inbound|<port>||); the stream counterpart of the http
-- plugin of the same name (lua/apisix/plugins/amesh-original-dst.lua), with the same
-- configuration. It must be in config.yaml's stream_plugins (the chart's APISIX config
-- lists it).
--
-- The route names the cluster's upstream (its timeouts, no nodes). In the preread phase
-- this plugin hands APISIX's balancer that upstream with one node: the address and port
-- the kernel recorded for the connection before iptables redirected it
-- ($connection_original_dst_addr and _port, ngx_stream_amesh_original_dst_module).
--
-- `bind` and `bind6` are the source address for IPv4 and IPv6 destinations
-- (amesh.original_dst). nginx binds through `proxy_bind $amesh_upstream_bind;` in the
-- stream block, with the variable declared there
-- (`map $server_port $amesh_upstream_bind { default ""; }`: APISIX's stream server has no
-- snippet for `set`), which the chart's APISIX config has. Whatever is missing (the
-- module's variables, the upstream, the bind variable, a source address for the
-- destination's family), the connection is closed: it never goes anywhere else.
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


function _M.preread(conf, ctx)
    local var = ctx.var
    local addr = var.connection_original_dst_addr
    local port = conf.port or tonumber(var.connection_original_dst_port)
    if not addr or addr == "" or not port then
        core.log.error(plugin_name, ": the connection has no original destination ",
                       "($connection_original_dst_addr is empty: is ",
                       "ngx_stream_amesh_original_dst_module loaded?): closed")
        return 502
    end

    -- APISIX's preread phase has found the route's upstream (or closed the connection).
    local route = ctx.matched_route
    local up_id = route and route.value.upstream_id
    local base = up_id and ctx.matched_upstream
    if not base then
        core.log.error(plugin_name, ": stream route ", route and route.value.id,
                       " names no upstream that exists: closed")
        return 503
    end

    local host, bind = original_dst.target(conf, addr)
    if not host then
        core.log.error(plugin_name, ": ", bind, ": closed")
        return 502
    end
    if bind and not original_dst.set_bind(bind) then
        core.log.error(plugin_name, ": $amesh_upstream_bind is not declared in the ",
                       "stream block (map $server_port $amesh_upstream_bind ",
                       "{ default \"\"; } proxy_bind $amesh_upstream_bind;): closed")
        return 500
    end

    upstream.set(ctx, plugin_name .. "#" .. up_id .. "#" .. host .. ":" .. port,
                 ctx.conf_version, {
        type = "roundrobin",
        nodes = {{host = host, port = port, weight = 1, priority = 0}},
        timeout = base.timeout,
        retries = base.retries,
        retry_timeout = base.retry_timeout,
        scheme = base.scheme,
    })
end


return _M

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
-- `bind` and `bind6` are the source address for IPv4 and IPv6 destinations (Istio binds
-- its inbound clusters to 127.0.0.6 and ::6; its capture rules do not redirect such
-- connections to the pod's own address back to the sidecar). nginx binds through
-- `proxy_bind $amesh_upstream_bind;` in the stream block, with the variable declared
-- there (`map $server_port $amesh_upstream_bind { default ""; }`), which the chart's
-- APISIX config has. A destination of a family without a source address is refused, as
-- Envoy's connection from the other family's address fails. Whatever is missing (the
-- module's variables, the upstream, the bind variable), the connection is closed: it
-- never goes anywhere else.
local core = require("apisix.core")
local upstream = require("apisix.upstream")
local ngx = ngx
local tonumber = tonumber
local pcall = pcall
local find = string.find

local plugin_name = "amesh-original-dst"

local schema = {
    type = "object",
    properties = {
        bind = {type = "string", format = "ipv4"},
        bind6 = {type = "string", format = "ipv6"},
        port = {type = "integer", minimum = 1, maximum = 65535},
    },
    additionalProperties = false,
}

local _M = {
    version = 0.1,
    priority = 965,
    name = plugin_name,
    schema = schema,
}


function _M.check_schema(conf)
    return core.schema.check(schema, conf)
end


local function set_bind(addr)
    return pcall(function() ngx.var.amesh_upstream_bind = addr end)
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

    local route = ctx.matched_route
    local up_id = route and route.value.upstream_id
    local base = up_id and upstream.get_by_id(up_id)
    if not base then
        core.log.error(plugin_name, ": stream route ", route and route.value.id,
                       " names no upstream that exists: closed")
        return 503
    end

    local host, bind = addr, conf.bind
    if find(addr, ":", 1, true) then
        host, bind = "[" .. addr .. "]", conf.bind6
    end
    if bind then
        if not set_bind(bind) then
            core.log.error(plugin_name, ": $amesh_upstream_bind is not declared in the ",
                           "stream block (map $server_port $amesh_upstream_bind ",
                           "{ default \"\"; } proxy_bind $amesh_upstream_bind;): closed")
            return 500
        end
    elseif conf.bind or conf.bind6 then
        core.log.error(plugin_name, ": no source address for destination ", addr, ": closed")
        return 502
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

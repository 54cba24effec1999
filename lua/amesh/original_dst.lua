-- What amesh-original-dst (lua/apisix/plugins and lua/apisix/stream/plugins, the http and
-- stream plugins of that name) decide alike: their configuration, and for a request or
-- connection its original destination as the one node of an upstream.
--
-- The route names the cluster's upstream, which has no nodes: amesh puts the cluster's
-- settings (timeouts, retries) there. The node is the address and port the kernel recorded
-- for the connection before iptables redirected it ($connection_original_dst_addr and
-- _port, from ngx_http_amesh_original_dst_module and ngx_stream_amesh_original_dst_module).
--
-- `bind` and `bind6` are the source address for IPv4 and IPv6 destinations (Istio binds
-- its inbound clusters to 127.0.0.6 and ::6: its capture rules do not redirect such
-- connections to the pod's own address back to the sidecar). nginx binds upstream
-- connections through `proxy_bind $amesh_upstream_bind;`. A destination of a family
-- without a source address is refused, as Envoy's connection from the other family's
-- address fails: an unbound connection to the pod's own address would be captured again.
local ngx = ngx
local pcall = pcall
local tonumber = tonumber
local find = string.find

local _M = {}

_M.schema = {
    type = "object",
    properties = {
        bind = {type = "string", format = "ipv4"},
        bind6 = {type = "string", format = "ipv6"},
        port = {type = "integer", minimum = 1, maximum = 65535},
    },
    additionalProperties = false,
}

-- How each subsystem declares $amesh_upstream_bind (APISIX's stream server has no snippet
-- for `set`), for the error log.
local declare_bind = {
    http = "set $amesh_upstream_bind ''; proxy_bind $amesh_upstream_bind; in the server",
    stream = "map $server_port $amesh_upstream_bind { default \"\"; } "
             .. "proxy_bind $amesh_upstream_bind; in the stream block",
}

local function set_bind(addr)
    return (pcall(function() ngx.var.amesh_upstream_bind = addr end))
end

--- upstream returns the upstream conf that sends to the original destination of the
-- current request or connection (var: its variables; dst, when set, the destination
-- the stream router read from the PROXY header of a connection the stream server's TLS
-- socket terminated), from base (the route's upstream, nil when it has none), and the
-- source address it binds (nil: none), having set $amesh_upstream_bind; or nil, the
-- status to refuse with and why.
function _M.upstream(conf, var, base, dst)
    local subsystem = ngx.config.subsystem
    local addr = dst and dst.addr or var.connection_original_dst_addr
    local port = conf.port or (dst and dst.port) or tonumber(var.connection_original_dst_port)
    if not addr or addr == "" or not port then
        return nil, 502, "the connection has no original destination "
                         .. "($connection_original_dst_addr is empty: is ngx_" .. subsystem
                         .. "_amesh_original_dst_module loaded?)"
    end
    if not base then
        return nil, 503, "the route names no upstream that exists"
    end
    local host, bind = addr, conf.bind
    if find(addr, ":", 1, true) then
        host, bind = "[" .. addr .. "]", conf.bind6
    end
    if not bind and (conf.bind or conf.bind6) then
        return nil, 502, "no source address for destination " .. addr
    end
    if bind and not set_bind(bind) then
        return nil, 500, "$amesh_upstream_bind is not declared (" .. declare_bind[subsystem] .. ")"
    end
    return {
        type = "roundrobin",
        nodes = {{host = host, port = port, weight = 1, priority = 0}},
        timeout = base.timeout,
        retries = base.retries,
        retry_timeout = base.retry_timeout,
        scheme = base.scheme,
    }, bind
end

return _M

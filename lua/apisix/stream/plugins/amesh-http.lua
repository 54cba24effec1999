-- amesh-http (stream): hands a captured connection to APISIX's HTTP server, whose
-- routes then decide (an Envoy filter chain with an http_connection_manager). amesh's
-- translation puts it on the stream routes of such chains; it must be in config.yaml's
-- stream_plugins (the chart's APISIX config lists it).
--
-- The HTTP server listens on one unix socket per capture port,
-- <socket_dir>/<port>.sock (plugin_attr.amesh-http.socket_dir; the chart's is
-- /var/run/amesh, a directory of the sidecar's own), declared with `proxy_protocol` and
-- `amesh_capture_listener` (ngx_http_amesh_original_dst_module). The connection goes
-- there with a PROXY protocol v1 header nginx writes ($amesh_upstream_proxy_protocol,
-- ngx_stream_amesh_original_dst_module): source the client, destination the original
-- destination. The HTTP side then sees what it saw when it listened on the capture port
-- itself: $remote_addr the client, $server_port the capture port, the original
-- destination in $connection_original_dst*.
--
-- The socket is the one of the route's capture port (labels["amesh-listen"]). Without
-- the socket directory or the variable, the connection is closed: it never reaches
-- the HTTP server without the header that says whom it is from.
--
-- With "tls" (a filter chain that terminates Istio mTLS), the connection, still
-- encrypted, goes to <socket_dir>/<port>.tls.sock instead: the HTTP server listens
-- there with `ssl`, and APISIX's ssl phase terminates it with the ssl object
-- istio-mtls-server (the workload certificate; client certificates verified against
-- the mesh's roots). The HTTP routes of such chains match scheme https only.
local core = require("apisix.core")
local plugin = require("apisix.plugin")
local upstream = require("apisix.upstream")
local ngx = ngx
local pcall = pcall
local tonumber = tonumber
local type = type

local plugin_name = "amesh-http"

local schema = {
    type = "object",
    properties = {
        tls = {type = "boolean"},
    },
    additionalProperties = false,
}

local _M = {
    version = 0.1,
    priority = 1000,
    name = plugin_name,
    schema = schema,
}


function _M.check_schema(conf)
    return core.schema.check(schema, conf)
end


local function set_proxy_protocol()
    return pcall(function() ngx.var.amesh_upstream_proxy_protocol = "on" end)
end


function _M.preread(conf, ctx)
    local route = ctx.matched_route
    local labels = route and route.value.labels
    local port = tonumber(type(labels) == "table" and labels["amesh-listen"])
    if not port or port < 1 or port > 65535 or port % 1 ~= 0 then
        core.log.error(plugin_name, ": route ", route and route.value.id,
                       " has no amesh-listen port: closed")
        return 503
    end
    local attr = plugin.plugin_attr(plugin_name)
    local dir = type(attr) == "table" and attr.socket_dir
    if type(dir) ~= "string" or dir == "" then
        core.log.error(plugin_name, ": plugin_attr.", plugin_name, ".socket_dir is not ",
                       "set in config.yaml: closed")
        return 503
    end
    if not set_proxy_protocol() then
        core.log.error(plugin_name, ": $amesh_upstream_proxy_protocol cannot be set (is ",
                       "ngx_stream_amesh_original_dst_module loaded?): closed")
        return 503
    end
    local sock = port .. (conf.tls and ".tls.sock" or ".sock")
    upstream.set(ctx, plugin_name .. "#" .. sock, ctx.conf_version, {
        type = "roundrobin",
        nodes = {{host = "unix:" .. dir .. "/" .. sock, port = 0,
                  weight = 1, priority = 0}},
        scheme = "tcp",
    })
end


return _M

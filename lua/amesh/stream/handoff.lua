-- Hand-off of a captured connection to another of APISIX's listeners on a unix socket of
-- the sidecar's socket directory (plugin_attr.amesh-http.socket_dir; the chart's is
-- /var/run/amesh, a directory of the sidecar's own), with a PROXY protocol v1 header
-- nginx writes ($amesh_upstream_proxy_protocol, ngx_stream_amesh_original_dst_module):
-- source the client, destination the original destination. The stream plugins
-- amesh-http (to the HTTP server) and amesh-mtls (to the stream server's TLS socket)
-- use it. Whatever is missing, the connection is closed: it never reaches a socket
-- without the header that says whom it is from and where it was going.
local core = require("apisix.core")
local plugin = require("apisix.plugin")
local upstream = require("apisix.upstream")
local ngx = ngx
local pcall = pcall
local tonumber = tonumber
local type = type

local _M = {}

local function set_proxy_protocol()
    return pcall(function() ngx.var.amesh_upstream_proxy_protocol = "on" end)
end

--- to sends the connection of ctx (preread phase) to <socket_dir>/<port><suffix>, port
-- the capture port of its route (labels["amesh-listen"]); who names the plugin for the
-- log. It returns nothing, or 503 when the connection must be closed.
function _M.to(ctx, who, suffix)
    local route = ctx.matched_route
    local labels = route and route.value.labels
    local port = tonumber(type(labels) == "table" and labels["amesh-listen"])
    if not port or port < 1 or port > 65535 or port % 1 ~= 0 then
        core.log.error(who, ": route ", route and route.value.id,
                       " has no amesh-listen port: closed")
        return 503
    end
    local attr = plugin.plugin_attr("amesh-http")
    local dir = type(attr) == "table" and attr.socket_dir
    if type(dir) ~= "string" or dir == "" then
        core.log.error(who, ": plugin_attr.amesh-http.socket_dir is not ",
                       "set in config.yaml: closed")
        return 503
    end
    if not set_proxy_protocol() then
        core.log.error(who, ": $amesh_upstream_proxy_protocol cannot be set (is ",
                       "ngx_stream_amesh_original_dst_module loaded?): closed")
        return 503
    end
    local sock = port .. suffix
    upstream.set(ctx, who .. "#" .. sock, ctx.conf_version, {
        type = "roundrobin",
        nodes = {{host = "unix:" .. dir .. "/" .. sock, port = 0,
                  weight = 1, priority = 0}},
        scheme = "tcp",
    })
end

return _M

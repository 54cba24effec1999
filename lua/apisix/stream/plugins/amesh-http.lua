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
local handoff = require("amesh.stream.handoff")

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


function _M.preread(conf, ctx)
    return handoff.to(ctx, plugin_name, conf.tls and ".tls.sock" or ".sock")
end


return _M

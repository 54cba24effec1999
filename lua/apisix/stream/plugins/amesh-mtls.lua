-- amesh-mtls (stream): hands a captured connection that starts Istio mTLS, for a filter
-- chain that terminates it in front of TCP (tcp_proxy), to the stream server's TLS
-- socket <socket_dir>/<port>.mtls.sock (amesh.stream.handoff; listed in config.yaml's
-- stream_proxy.tcp with `tls` and `proxy_protocol`). There APISIX's ssl phase
-- terminates it with the ssl object istio-mtls-server (the workload certificate;
-- client certificates verified against the mesh's roots) and amesh's stream router
-- gives the plaintext the route of the same place with amesh-protocol "mtls", which
-- does what the chain's tcp_proxy does. It must be in config.yaml's stream_plugins
-- (the chart's APISIX config lists it).
local core = require("apisix.core")
local handoff = require("amesh.stream.handoff")

local plugin_name = "amesh-mtls"

local schema = {
    type = "object",
    properties = {},
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
    return handoff.to(ctx, plugin_name, ".mtls.sock")
end


return _M

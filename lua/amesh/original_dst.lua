-- What amesh-original-dst (lua/apisix/plugins and lua/apisix/stream/plugins, the http and
-- stream plugins of that name) decide alike: their configuration, and for an original
-- destination the upstream node's host and the source address to bind.
--
-- `bind` and `bind6` are the source address for IPv4 and IPv6 destinations (Istio binds
-- its inbound clusters to 127.0.0.6 and ::6: its capture rules do not redirect such
-- connections to the pod's own address back to the sidecar). nginx binds upstream
-- connections through `proxy_bind $amesh_upstream_bind;`. A destination of a family
-- without a source address is refused, as Envoy's connection from the other family's
-- address fails: an unbound connection to the pod's own address would be captured again.
local ngx = ngx
local pcall = pcall
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

--- target returns the upstream node's host for destination address addr (IPv6 in
-- brackets) and the source address to bind (nil: none), or nil and why it is refused.
function _M.target(conf, addr)
    local host, bind = addr, conf.bind
    if find(addr, ":", 1, true) then
        host, bind = "[" .. addr .. "]", conf.bind6
    end
    if not bind and (conf.bind or conf.bind6) then
        return nil, "no source address for destination " .. addr
    end
    return host, bind
end

--- set_bind sets $amesh_upstream_bind; false when the variable is not declared.
function _M.set_bind(addr)
    return (pcall(function() ngx.var.amesh_upstream_bind = addr end))
end

return _M

-- amesh's stream router, in place of APISIX's own apisix/stream/router/ip_port.lua (the
-- only stream router APISIX has; with amesh's lua/ directory in apisix.extra_lua_path
-- this file comes first, as apisix/core/config_xds.lua does). It keeps that module's
-- interface: stream_init_worker(filter), match(api_ctx), routes() and
-- stream_route_checker(item, in_cp).
--
-- Under Istio's capture every connection of the pod arrives on 15001 (outbound) or
-- 15006 (inbound); nginx's stream module ngx_stream_amesh_original_dst_module
-- (`amesh_original_dst_local on`) makes the connection's local address its original
-- destination, so $server_addr and $server_port are where the client was going, and
-- $connection_listen_port is the capture port. A connection gets the route
-- amesh.stream.index selects for those (Envoy's filter chain match order); when the
-- routes it could get differ in amesh-protocol, its first bytes are inspected
-- (amesh.stream.sniff) for at most protocol_timeout seconds.
--
-- A connection gets no route, and is closed, when no route matches (Envoy's
-- BlackHoleCluster and REGISTRY_ONLY have no routes), when its route has nothing to
-- send it to (no upstream_id, upstream, service_id or plugins: a route that only
-- closes), when its route names one of amesh's stream plugins that config.yaml's
-- stream_plugins does not enable (it would otherwise go on without it), and when its
-- destination port is the capture port it arrived on: such a connection was made to
-- the capture port itself (no original destination) or passed back to it, and sending
-- it on could only come back again; istiod's own configuration has a blackhole chain
-- for exactly those (virtualOutbound-blackhole, virtualInbound-blackhole).
--
-- Istio mTLS in front of TCP comes back here: amesh-mtls hands such a connection to the
-- stream server's TLS socket <socket_dir>/<port>.mtls.sock, which terminates it and
-- passes the plaintext, whose original destination is the PROXY header's, to the
-- routes with amesh-protocol "mtls" only (amesh.stream.index), without sniffing;
-- amesh-original-dst then reads the destination from api_ctx.amesh_original_dst.
--
-- The index is rebuilt only when the stream routes' conf_version changes.
local core = require("apisix.core")
local core_ip = require("apisix.core.ip")
local iterate_values = require("apisix.core.config_util").iterate_values
local plugin = require("apisix.plugin")
local index_mod = require("amesh.stream.index")
local sniff = require("amesh.stream.sniff")
local ipairs = ipairs
local pairs = pairs
local next = next
local type = type
local error = error
local tonumber = tonumber
local tostring = tostring
local sub = string.sub
local str_match = string.match

-- How long a connection may stay silent before it is taken to have no protocol
-- (server-first protocols). Envoy under istiod waits forever (protocolDetectionTimeout
-- 0s); one second is a delay a server-first client sees once per connection, and long
-- enough for any client that writes as soon as it has connected.
local protocol_timeout = 1

local _M = {version = 0.1}

local user_routes
local index
local index_ver

local function nothing_to_send_to(route)
    return route.upstream_id == nil and route.upstream == nil and route.service_id == nil
           and (type(route.plugins) ~= "table" or next(route.plugins) == nil)
end

-- refusal returns why a route closes its connections, or nil.
local function refusal(route)
    if nothing_to_send_to(route) then
        return "closes connections (it has nothing to send them to)"
    end
    if type(route.plugins) == "table" then
        for name in pairs(route.plugins) do
            if type(name) == "string" and sub(name, 1, 6) == "amesh-"
               and not plugin.get_stream(name) then
                return "needs stream plugin " .. name .. ", which config.yaml's "
                       .. "stream_plugins does not enable"
            end
        end
    end
    if route.sni or route.remote_addr or route.protocol then
        return "matches on sni, remote_addr or protocol, which amesh's stream router "
               .. "does not evaluate"
    end
    return nil
end

local function rebuild()
    local entries = {}
    for _, item in iterate_values(user_routes.values) do
        local route = item.value
        entries[#entries + 1] = {
            id = route.id,
            item = item,
            route = route,
            refuse = refusal(route),
        }
    end
    -- Ties (which the translation never emits) go to the lowest id.
    table.sort(entries, function(a, b) return tostring(a.id) < tostring(b.id) end)
    local idx, problems = index_mod.build(entries)
    for _, p in ipairs(problems) do
        core.log.error("amesh: stream route ", p.id, " left out: ", p.err)
    end
    index = idx
    index_ver = user_routes.conf_version
end

-- detector returns the protocol detection of a connection for index:select, run once:
-- api_ctx.amesh_protocol is then the protocol, "" for none, or false when the
-- connection must be closed (amesh.stream.sniff).
local function detector(api_ctx)
    return function()
        local protocol = api_ctx.amesh_protocol
        if protocol == nil then
            local reason, hello
            protocol, reason, hello = sniff.detect(protocol_timeout)
            if protocol == nil then
                protocol = ""
            end
            api_ctx.amesh_protocol = protocol
            api_ctx.amesh_alpn = hello and hello.alpn
            core.log.info("connection protocol: ", tostring(protocol), " (", reason, ")",
                          hello and (" alpn " .. table.concat(hello.alpn, ",")) or "")
            if protocol == false then
                core.log.warn("connection to ", api_ctx.var.server_addr, ":",
                              api_ctx.var.server_port, ": ", reason, ": closed")
            end
        end
        return protocol ~= "" and protocol or nil, api_ctx.amesh_alpn
    end
end

function _M.match(api_ctx)
    if index_ver ~= user_routes.conf_version or not index then
        rebuild()
    end
    local var = api_ctx.var
    local mtls = tonumber(str_match(var.server_addr or "", "^unix:.*/(%d+)%.mtls%.sock$"))
    if mtls then
        local addr, port = var.proxy_protocol_server_addr, tonumber(var.proxy_protocol_server_port)
        if not addr or not port then
            core.log.error("connection on the mTLS socket without a PROXY header: closed")
            return true
        end
        api_ctx.amesh_original_dst = {addr = addr, port = port}
        local entry = index:select(mtls, addr, port, nil, "mtls")
        if not entry or entry.refuse then
            core.log.info("no stream route for terminated mTLS to ", addr, ":", port,
                          entry and (": " .. entry.refuse) or "", ": closed")
            return true
        end
        api_ctx.matched_route = entry.item
        return true
    end
    local listen = tonumber(var.connection_listen_port)
    if not listen then
        core.log.error("the connection has no $connection_listen_port (is ",
                       "ngx_stream_amesh_original_dst_module loaded?): closed")
        return true
    end
    local port = tonumber(var.server_port)
    if port == listen then
        core.log.info("connection to the capture port ", listen, " itself: closed")
        return true
    end
    local entry = index:select(listen, var.server_addr, port, detector(api_ctx))
    if api_ctx.amesh_protocol == false then
        return true
    end
    if not entry then
        core.log.info("no stream route for ", var.server_addr, ":", port, " on ", listen,
                      ": closed")
        return true
    end
    if entry.refuse then
        core.log.info("stream route ", entry.id, " ", entry.refuse, ": closed")
        return true
    end
    api_ctx.matched_route = entry.item
    return true
end

function _M.routes()
    if not user_routes then
        return nil, nil
    end
    return user_routes.values, user_routes.conf_version
end

-- stream_route_checker checks what APISIX's own checker does: the route's plugins
-- against the stream plugins' schemas, its addresses.
local function stream_route_checker(item, in_cp)
    if item.plugins then
        local ok, err = plugin.stream_plugin_checker(item, in_cp)
        if not ok then
            return false, err
        end
    end
    for _, field in ipairs({"remote_addr", "server_addr"}) do
        if item[field] and not core_ip.validate_cidr_or_ip(item[field]) then
            return false, "invalid " .. field .. ": " .. item[field]
        end
    end
    return true
end
_M.stream_route_checker = stream_route_checker

function _M.stream_init_worker(filter)
    -- the stream TLS socket's handshakes check client certificates as the http one's
    require("apisix.ssl.router.amesh_sni").install_stream()
    local err
    user_routes, err = core.config.new("/stream_routes", {
        automatic = true,
        item_schema = core.schema.stream_route,
        checker = function(item)
            return stream_route_checker(item)
        end,
        filter = filter,
    })
    if not user_routes then
        error("failed to create the config object for /stream_routes: " .. tostring(err))
    end
end

return _M

-- upstreamtlscheck: drives amesh.upstream_tls in stock nginx the way amesh's APISIX
-- plugin does (upstream_tls_test.go). The test writes a JSON file of routes, by the
-- first path segment:
--
--   {"<name>": {"nodes": [{"addr": "127.0.0.1", "port": 1234, "tls": true}, ...],
--               "profile": {sni, auto_sni, alpn, cert_file, key_file, ca_file,
--                           crl_file, sans, auto_san, min_version, max_version}}}
--
-- The access phase picks the first node, sets $upstream_scheme and attaches the
-- route's profile (or none, for a plaintext node); the balancer phase connects to the
-- node and, on a retry, to the next one, switching TLS on or off for it.
local cjson = require("cjson.safe")
local balancer = require("ngx.balancer")
local tls = require("amesh.upstream_tls")

local _M = {}

local routes, profiles = nil, {}

local function load(path)
    if routes then
        return routes
    end
    local f = assert(io.open(path, "rb"))
    routes = assert(cjson.decode(f:read("*a")))
    f:close()
    return routes
end

local function read(path)
    if not path then
        return nil
    end
    local data, err = tls.read_file(path)
    if not data then
        error(err)
    end
    return data
end

local function profile_of(name, spec)
    local p = profiles[name]
    if p then
        return p
    end
    local err
    p, err = tls.new_profile({
        sni = spec.sni, auto_sni = spec.auto_sni, alpn = spec.alpn,
        cert_pem = read(spec.cert_file), key_pem = read(spec.key_file),
        ca_pem = read(spec.ca_file), crl_pem = read(spec.crl_file),
        sans = spec.sans, auto_san = spec.auto_san,
        min_version = spec.min_version, max_version = spec.max_version,
    })
    if not p then
        return nil, err
    end
    profiles[name] = p
    return p
end

-- node_for attaches what the node needs: the route's profile when it speaks TLS.
local function node_for(ctx, node)
    local p, err
    if node.tls then
        p, err = profile_of(ctx.route, ctx.spec.profile)
        if not p then
            return nil, err
        end
    end
    local ok, uerr = tls.use(p)
    if not ok then
        return nil, uerr
    end
    return true
end

function _M.access(path)
    local name = ngx.var.uri:match("^/([^/]+)")
    local spec = name and load(path)[name]
    if not spec then
        return ngx.exit(404)
    end
    local ctx = {route = name, spec = spec, try = 1}
    ngx.ctx.upstreamtls = ctx
    local node = spec.nodes[1]
    local ok, err = node_for(ctx, node)
    if not ok then
        ngx.log(ngx.ERR, "upstreamtlscheck: ", err)
        return ngx.exit(502)
    end
    ngx.var.upstream_scheme = node.tls and "https" or "http"
end

function _M.balancer()
    local ctx = ngx.ctx.upstreamtls
    local nodes = ctx.spec.nodes
    if ctx.try == 1 and #nodes > 1 then
        balancer.set_more_tries(#nodes - 1)
    end
    local node = nodes[ctx.try]
    if ctx.try > 1 then
        local ok, err = node_for(ctx, node)
        if not ok then
            ngx.log(ngx.ERR, "upstreamtlscheck: ", err)
            return ngx.exit(502)
        end
    end
    ctx.try = ctx.try + 1
    assert(balancer.set_current_peer(node.addr, node.port))
end

return _M

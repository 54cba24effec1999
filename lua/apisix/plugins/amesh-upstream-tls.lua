-- amesh-upstream-tls: upstream TLS as Envoy's UpstreamTlsContext makes it (Istio mTLS
-- and DestinationRule TLS origination): the SNI of the cluster (not the Host), the
-- ALPN Istio's filters set, the workload's or the DestinationRule's client
-- certificate, the server's certificate verified against the cluster's roots and
-- subject alt names (SPIFFE identities), the cluster's TLS versions and ciphers. amesh
-- adds it to the routes of clusters that speak TLS (internal/translate/upstream/tls.go)
-- with the settings of each upstream the route uses; it must be in config.yaml's
-- `plugins` (the chart's APISIX config lists it), and nginx must load
-- ngx_http_amesh_upstream_tls_module with
--
--     proxy_ssl_server_name on;
--     proxy_ssl_name $amesh_upstream_ssl_name;
--
-- (nginx/upstream_tls/README.md).
--
-- It runs before each attempt of a request (before_proxy: in the access phase for the
-- first node, in the balancer phase for a retry). A node speaks TLS as its upstream's
-- scheme says, unless its metadata says otherwise ({"amesh_tls": true|false}: Envoy
-- picks the transport socket per endpoint, and a cluster's endpoints may differ). For a
-- TLS node the plugin attaches the upstream's profile to the request and keeps the
-- connection out of other profiles' keep-alive pools; for a plaintext one it attaches
-- none. What it cannot do (no settings, a certificate it cannot read) fails the request
-- (502): the node is never reached in plaintext or with less TLS.
--
-- The schema below is also internal/apisix/schema/schemas/plugins/amesh-upstream-tls.json
-- (with APISIX's injected _meta), against which amesh's tests validate what the
-- translator emits; a test checks that the two agree.
local core = require("apisix.core")
local tls = require("amesh.upstream_tls")

local ipairs = ipairs
local pcall = pcall
local require = require
local type = type
local tostring = tostring
local setmetatable = setmetatable

local plugin_name = "amesh-upstream-tls"

local schema = core.json.decode([==[
{
  "type": "object",
  "properties": {
    "upstreams": {
      "type": "object",
      "minProperties": 1,
      "additionalProperties": {"$ref": "#/definitions/tls"}
    }
  },
  "required": ["upstreams"],
  "additionalProperties": false,
  "definitions": {
    "file": {"type": "string", "minLength": 1, "maxLength": 4096},
    "tls": {
      "type": "object",
      "properties": {
        "sni": {"type": "string", "minLength": 1, "maxLength": 255},
        "auto_sni": {"type": "boolean"},
        "alpn": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 255}},
        "cert": {
          "type": "object",
          "properties": {
            "ssl_id": {"type": "string", "minLength": 1, "maxLength": 64},
            "cert_file": {"$ref": "#/definitions/file"},
            "key_file": {"$ref": "#/definitions/file"}
          },
          "oneOf": [{"required": ["ssl_id"]}, {"required": ["cert_file", "key_file"]}],
          "additionalProperties": false
        },
        "ca": {
          "type": "object",
          "properties": {
            "file": {"$ref": "#/definitions/file"},
            "system": {"type": "boolean", "enum": [true]},
            "pem": {"type": "string", "minLength": 1, "maxLength": 1048576}
          },
          "oneOf": [{"required": ["file"]}, {"required": ["system"]}, {"required": ["pem"]}],
          "additionalProperties": false
        },
        "sans": {
          "type": "array",
          "items": {
            "type": "object",
            "properties": {
              "type": {"type": "string", "enum": ["dns", "uri", "email", "ip"]},
              "match": {"type": "string", "enum": ["exact", "prefix", "suffix", "contains"]},
              "value": {"type": "string", "maxLength": 65535},
              "ignore_case": {"type": "boolean"}
            },
            "required": ["match", "value"],
            "additionalProperties": false
          }
        },
        "auto_san": {"type": "boolean"},
        "crl_file": {"$ref": "#/definitions/file"},
        "crl_leaf_only": {"type": "boolean"},
        "min_version": {"type": "string", "enum": ["TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3"]},
        "max_version": {"type": "string", "enum": ["TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3"]},
        "ciphers": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "curves": {"type": "array", "items": {"type": "string", "minLength": 1}}
      },
      "additionalProperties": false
    }
  }
}
]==])

local _M = {
    version = 0.1,
    priority = 964,
    name = plugin_name,
    schema = schema,
}


function _M.check_schema(conf)
    return core.schema.check(schema, conf)
end


local NODE_TLS = "amesh_tls"
local NODE_SNI = "amesh_sni"

-- node_index: the nodes of an upstream by "host:port" (the balancer's server key),
-- once per nodes table.
local node_index = setmetatable({}, {__mode = "k"})

local function node_of(up, server)
    local nodes = up.nodes
    if type(nodes) ~= "table" or not server then
        return nil
    end
    local idx = node_index[nodes]
    if not idx then
        idx = {}
        for _, n in ipairs(nodes) do
            if n.host and n.port then
                idx[n.host .. ":" .. n.port] = n
            end
        end
        node_index[nodes] = idx
    end
    return idx[server]
end


-- Certificate material: a /ssls object (type "client") or files, with a version that
-- changes when the material does.
local function ssl_object(id)
    local ssls = core.config.fetch_created_obj("/ssls")
    local obj = ssls and ssls:get(tostring(id))
    if not obj or not obj.value then
        return nil, "no /ssls object " .. tostring(id)
    end
    local v = obj.value
    if v.type ~= "client" or type(v.cert) ~= "string" or type(v.key) ~= "string" then
        return nil, "/ssls object " .. tostring(id) .. " is not a client certificate with its key"
    end
    local key = v.key
    local ok, apisix_ssl = pcall(require, "apisix.ssl")
    if ok and apisix_ssl.aes_decrypt_pkey then
        local err
        key, err = apisix_ssl.aes_decrypt_pkey(key)
        if not key then
            return nil, "cannot decrypt the key of /ssls object " .. tostring(id) .. ": " .. tostring(err)
        end
    end
    return v.cert, key, "ssl:" .. tostring(id) .. ":" .. tostring(obj.modifiedIndex)
end

local function client_cert(c)
    if not c then
        return nil, nil, ""
    end
    if c.ssl_id then
        return ssl_object(c.ssl_id)
    end
    local cert, cv = tls.read_file(c.cert_file)
    if not cert then
        return nil, cv
    end
    local key, kv = tls.read_file(c.key_file)
    if not key then
        return nil, kv
    end
    return cert, key, "file:" .. cv .. ":" .. kv
end

local function roots(ca)
    if not ca then
        return nil, ""
    end
    local data, v
    if ca.pem then
        -- Inline CA certificates (an SDS validation context's, which are public). A new
        -- PEM comes in a new settings table, which profiles are cached by: the version
        -- need not tell PEMs apart (and hashing one per request would cost).
        return ca.pem, "pem"
    elseif ca.system then
        data, v = tls.read_system_roots()
    else
        data, v = tls.read_file(ca.file)
    end
    if not data then
        return nil, v
    end
    return data, tostring(v)
end


-- profiles: per upstream settings table and SNI, the profile made from the current
-- material, with the serial of the keep-alive pool its connections go to.
local profiles = setmetatable({}, {__mode = "k"})
local serial = 0

local function profile_of(conf, sni)
    local cert, key, cert_v = client_cert(conf.cert)
    if cert == nil and conf.cert then
        return nil, key
    end
    local ca, ca_v = roots(conf.ca)
    if ca == nil and conf.ca then
        return nil, ca_v
    end
    local crl, crl_v = nil, ""
    if conf.crl_file then
        local v
        crl, v = tls.read_file(conf.crl_file)
        if not crl then
            return nil, v
        end
        crl_v = tostring(v)
    end
    local version = cert_v .. "|" .. ca_v .. "|" .. crl_v

    local by_sni = profiles[conf]
    if not by_sni then
        by_sni = {}
        profiles[conf] = by_sni
    end
    local k = sni or ""
    local p = by_sni[k]
    if p and p.version == version then
        return p
    end
    local handle, err = tls.new_profile({
        sni = sni, auto_sni = conf.auto_sni, alpn = conf.alpn,
        cert_pem = cert, key_pem = key, ca_pem = ca, crl_pem = crl,
        crl_leaf_only = conf.crl_leaf_only, sans = conf.sans, auto_san = conf.auto_san,
        min_version = conf.min_version, max_version = conf.max_version,
        ciphers = conf.ciphers, curves = conf.curves,
    })
    if not handle then
        return nil, err
    end
    serial = serial + 1
    p = {version = version, handle = handle, pool = "amesh-tls-" .. serial}
    by_sni[k] = p
    return p
end


-- node_tls tells whether the picked node (server: "host:port") of upstream up speaks
-- TLS, as its scheme and, per node, its metadata say, and returns the node's metadata.
local function node_tls(up, server)
    local node = node_of(up, server)
    local meta = node and node.metadata
    local use_tls = up.scheme == "https"
    if meta and type(meta[NODE_TLS]) == "boolean" then
        use_tls = meta[NODE_TLS]
    end
    return use_tls, meta
end


-- attach attaches to the request or session the profile of the route's settings for
-- upstream matched, with the node's SNI where its metadata has one; it returns the
-- profile, or nil and why.
local function attach(conf, matched, server, meta)
    local settings = conf.upstreams[tostring(matched.id)]
    if not settings then
        return nil, "node " .. tostring(server) .. " of upstream " .. tostring(matched.id)
                    .. " speaks TLS, and the route has no TLS settings for it"
    end
    local sni = settings.sni
    if meta and type(meta[NODE_SNI]) == "string" then
        sni = meta[NODE_SNI]
    end
    local p, err = profile_of(settings, sni)
    if not p then
        return nil, "upstream " .. tostring(matched.id) .. ": " .. err
    end
    local ok, uerr = tls.use(p.handle)
    if not ok then
        return nil, "upstream " .. tostring(matched.id) .. ": " .. uerr
    end
    return p
end


-- settle attaches to the request or session what the picked node needs: its profile
-- when it speaks TLS, none when it does not. It returns the profile, false for a
-- plaintext node, or nil and why. The stream plugin of the same name
-- (lua/apisix/stream/plugins) decides with it too.
local function settle(conf, ctx, up, matched)
    local use_tls, meta = node_tls(up, ctx.balancer_server)
    if not use_tls then
        if ctx.amesh_tls_attached then
            local ok, err = tls.use(nil)
            if not ok then
                return nil, err
            end
            ctx.amesh_tls_attached = nil
        end
        return false
    end
    local p, err = attach(conf, matched, ctx.balancer_server, meta)
    if not p then
        return nil, err
    end
    ctx.amesh_tls_attached = true
    return p
end
_M.settle = settle


-- pooled_conf is the request's upstream settings with a scheme and, for TLS, a
-- client_cert_id that only names the keep-alive pool: APISIX's balancer names pools by
-- scheme, node, Host and client_cert_id, so connections made with one profile are
-- never reused by a request with another (Envoy's pools are per cluster).
local function pooled_conf(up, scheme, pool)
    local c = core.table.clone(up)
    c.scheme = scheme
    c.tls = pool and {client_cert_id = pool} or nil
    return c
end


function _M.before_proxy(conf, ctx)
    local up = ctx.amesh_tls_upstream_conf or ctx.upstream_conf
    local matched = ctx.matched_upstream
    if not up or not matched then
        return
    end
    ctx.amesh_tls_upstream_conf = up

    local p, err = settle(conf, ctx, up, matched)
    if p == nil then
        core.log.error(plugin_name, ": ", err)
        return 502
    end
    if not p then
        if up.scheme == "https" or ctx.upstream_conf ~= up then
            ctx.upstream_conf = pooled_conf(up, "http")
            ctx.upstream_scheme = "http"
            ctx.var.upstream_scheme = "http"
        end
        return
    end
    ctx.upstream_conf = pooled_conf(up, "https", p.pool)
    ctx.upstream_scheme = "https"
    ctx.var.upstream_scheme = "https"
end


return _M

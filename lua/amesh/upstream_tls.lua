-- amesh.upstream_tls: per-request TLS settings for upstream connections, through
-- nginx/upstream_tls's modules (ngx_http_amesh_upstream_tls_module,
-- ngx_stream_amesh_upstream_tls_module). A profile holds what Envoy's
-- UpstreamTlsContext sets (SNI, ALPN, client certificate and key, trusted roots, CRLs,
-- expected subject alt names, protocol versions, ciphers, curves); use() attaches one to
-- the current request or stream session (or none), and every TLS connection nginx opens
-- for it from then on is made with it. In http, nginx must name the module's variable:
--
--     proxy_ssl_server_name on;
--     proxy_ssl_name $amesh_upstream_ssl_name;
--
-- in stream, one server must be the module's template (amesh_upstream_tls_template,
-- nginx/upstream_tls/README.md). use() refuses a profile (returns nil and the reason)
-- when nginx is not set up so, rather than letting the connection go out without it.
--
-- verify_client applies a profile's checks to the client certificate of the current
-- downstream handshake instead (the ssl_certificate phase), as Envoy's inbound listener
-- applies its validation context.
--
-- Private keys are parsed here and handed to nginx; neither they nor the PEM they come
-- from are ever logged or returned in an error.
local ffi = require("ffi")
local base = require("resty.core.base")
local ssl = require("ngx.ssl")

local C = ffi.C
local ffi_gc = ffi.gc
local ffi_str = ffi.string
local get_request = base.get_request
local io_open = io.open
local concat = table.concat
local char = string.char
local floor = math.floor
local ngx_now = ngx.now
local pcall = pcall
local ipairs = ipairs
local tostring = tostring
local ngx_var = ngx.var
local stream = ngx.config.subsystem == "stream"

ffi.cdef[[
void *amesh_upstream_tls_profile_new(const unsigned char *sni, size_t sni_len,
    int flags, const unsigned char *alpn, size_t alpn_len, void *cert_chain,
    void *pkey, void *ca_chain, const unsigned char *crl, size_t crl_len,
    const unsigned char *sans, size_t sans_len, int min_version, int max_version,
    const char *ciphers, const char *curves, char *err, size_t err_len);
void amesh_upstream_tls_profile_free(void *p);
int amesh_upstream_tls_set(void *r, void *profile, char *err, size_t err_len);
uint64_t amesh_stream_upstream_tls_register(void *profile);
void amesh_stream_upstream_tls_unregister(uint64_t key);
int amesh_tls_verify_client(void *ssl, void *profile, char *err, size_t err_len);
]]

local _M = {}

-- module_loaded: the C module is in this nginx (ffi.C resolves its symbols).
local module_loaded
local module_name = "ngx_http_amesh_upstream_tls_module"
if stream then
    module_name = "ngx_stream_amesh_upstream_tls_module"
    module_loaded = pcall(function() return C.amesh_stream_upstream_tls_register end)
else
    module_loaded = pcall(function() return C.amesh_upstream_tls_set end)
end
_M.available = module_loaded

-- get_req_ssl returns the SSL object of the current downstream connection. Some
-- lua-resty-core releases (Debian 12's 0.1.25) have the C function without its Lua
-- wrapper.
local get_req_ssl = ssl.get_req_ssl_pointer
if not get_req_ssl and not stream then
    ffi.cdef[[
    void *ngx_http_lua_ffi_get_req_ssl_pointer(void *r, const char **err);
    ]]
    local errp = ffi.new("const char *[1]")
    get_req_ssl = function()
        local r = get_request()
        if not r then
            return nil, "no request"
        end
        local p = C.ngx_http_lua_ffi_get_req_ssl_pointer(r, errp)
        if p == nil then
            return nil, ffi_str(errp[0])
        end
        return p
    end
end

local ERR_LEN = 256
local errbuf = ffi.new("char[?]", ERR_LEN)

local AUTO_SNI, AUTO_SAN, VERIFY, CRL_LEAF_ONLY = 0x01, 0x02, 0x04, 0x08

local san_types = {dns = 0x01, uri = 0x02, email = 0x04, ip = 0x08}
local ANY_SAN = 0x0f
local match_kinds = {exact = 0, prefix = 1, suffix = 2, contains = 3}

local versions = {
    TLSv1_0 = 0x0301, TLSv1_1 = 0x0302, TLSv1_2 = 0x0303, TLSv1_3 = 0x0304,
}


-- alpn_wire encodes a list of protocol names as TLS sends them.
local function alpn_wire(list)
    local out = {}
    for i, p in ipairs(list or {}) do
        if #p == 0 or #p > 255 then
            return nil, "ALPN protocol name of " .. #p .. " bytes"
        end
        out[i] = char(#p) .. p
    end
    return concat(out)
end
_M.alpn_wire = alpn_wire


-- sans_wire encodes subject alt name matchers as the module reads them:
-- [types][kind][ignore_case][length: 2 bytes][value].
local function sans_wire(sans)
    local out = {}
    for i, m in ipairs(sans or {}) do
        local types = ANY_SAN
        if m.type ~= nil then
            types = san_types[m.type]
        end
        local kind = match_kinds[m.match or "exact"]
        local v = m.value or ""
        if not types or not kind then
            return nil, "unknown subject alt name matcher " .. tostring(m.type) .. "/"
                        .. tostring(m.match)
        end
        if #v > 65535 then
            return nil, "subject alt name of " .. #v .. " bytes"
        end
        out[i] = char(types, kind, m.ignore_case and 1 or 0, floor(#v / 256), #v % 256) .. v
    end
    return concat(out)
end


-- new_profile makes a profile from spec; nil and the reason when it cannot.
--   sni, auto_sni       the SNI, or the request's $upstream_host
--   alpn                list of protocol names
--   cert_pem, key_pem   client certificate chain and private key (PEM)
--   ca_pem              trusted roots (PEM); without it the chain is not verified
--   crl_pem, crl_leaf_only
--   sans                {type = "uri"|"dns"|"email"|"ip"|nil (any), match =
--                       "exact"|"prefix"|"suffix"|"contains", value, ignore_case}
--   auto_san            verify the certificate against the SNI
--   min_version, max_version   "TLSv1_2", ...
--   ciphers, curves     lists of names
function _M.new_profile(spec)
    if not module_loaded then
        return nil, module_name .. " is not loaded"
    end

    local flags = 0
    if spec.auto_sni then
        flags = flags + AUTO_SNI
    end
    if spec.auto_san then
        flags = flags + AUTO_SAN
    end
    if spec.crl_leaf_only then
        flags = flags + CRL_LEAF_ONLY
    end

    local chain, pkey, ca, err
    if spec.cert_pem or spec.key_pem then
        if not (spec.cert_pem and spec.key_pem) then
            return nil, "a client certificate needs its private key"
        end
        chain, err = ssl.parse_pem_cert(spec.cert_pem)
        if not chain then
            return nil, "cannot parse the client certificate: " .. tostring(err)
        end
        pkey = ssl.parse_pem_priv_key(spec.key_pem)
        if not pkey then
            -- the parser's message could quote the input: not passed on
            return nil, "cannot parse the client private key"
        end
    end
    if spec.ca_pem then
        flags = flags + VERIFY
        ca, err = ssl.parse_pem_cert(spec.ca_pem)
        if not ca then
            return nil, "cannot parse the trusted certificates: " .. tostring(err)
        end
    end

    local alpn, aerr = alpn_wire(spec.alpn)
    if not alpn then
        return nil, aerr
    end
    local sans, serr = sans_wire(spec.sans)
    if not sans then
        return nil, serr
    end
    local minv = spec.min_version and versions[spec.min_version] or 0
    local maxv = spec.max_version and versions[spec.max_version] or 0
    local ciphers = spec.ciphers and #spec.ciphers > 0 and concat(spec.ciphers, ":") or nil
    local curves = spec.curves and #spec.curves > 0 and concat(spec.curves, ":") or nil
    local sni = spec.sni or ""
    local crl = spec.crl_pem or ""

    local p = C.amesh_upstream_tls_profile_new(sni, #sni, flags, alpn, #alpn, chain,
                                               pkey, ca, crl, #crl, sans, #sans, minv,
                                               maxv, ciphers, curves, errbuf, ERR_LEN)
    if p == nil then
        return nil, ffi_str(errbuf)
    end
    return ffi_gc(p, C.amesh_upstream_tls_profile_free)
end


-- stream_keys: the number the stream module registered each profile under, kept while
-- the profile's handle lives (weak keys); collecting the entry's box unregisters it,
-- which drops the module's reference.
local stream_keys = setmetatable({}, {__mode = "k"})

local function stream_key(profile)
    local e = stream_keys[profile]
    if e then
        return e.key
    end
    local n = C.amesh_stream_upstream_tls_register(profile)
    if n == 0 then
        return nil
    end
    local box = ffi_gc(ffi.new("char[1]"), function()
        C.amesh_stream_upstream_tls_unregister(n)
    end)
    -- tostring of a uint64_t cdata is "<digits>ULL"
    e = {key = (tostring(n):gsub("ULL$", "")), box = box}
    stream_keys[profile] = e
    return e.key
end


-- use_stream hands the stream module the profile's number through its variable, and
-- reads back whether the session took it.
local function use_stream(profile)
    local v = ""
    if profile ~= nil then
        v = stream_key(profile)
        if not v then
            return nil, "no memory"
        end
    end
    local ok = pcall(function() ngx_var.amesh_upstream_tls = v end)
    if not ok then
        if profile == nil then
            return true
        end
        return nil, module_name .. " is not loaded"
    end
    if profile == nil then
        return true
    end
    local state = ngx_var.amesh_upstream_tls
    if state ~= "on" then
        return nil, (tostring(state):gsub("^error: ", ""))
    end
    return true
end


-- use attaches profile (nil: none) to the current request or stream session. Called
-- again in the balancer phase (a retry), it also switches the next connection to TLS
-- or plaintext.
function _M.use(profile)
    if not module_loaded then
        if profile == nil then
            return true
        end
        return nil, module_name .. " is not loaded"
    end
    if stream then
        return use_stream(profile)
    end
    local r = get_request()
    if not r then
        return nil, "no request"
    end
    if C.amesh_upstream_tls_set(r, profile, errbuf, ERR_LEN) ~= 0 then
        return nil, ffi_str(errbuf)
    end
    return true
end


-- verify_client makes the handshake of the current downstream TLS connection (in the
-- ssl_certificate phase) fail unless the client presents a certificate that chains to
-- the profile's roots (without any: the roots already set for the connection, as
-- ngx.ssl.verify_client sets them) and meets the profile's subject alt name matchers.
function _M.verify_client(profile)
    if not module_loaded then
        return nil, module_name .. " is not loaded"
    end
    if not get_req_ssl then
        return nil, "this lua-resty-core has no ngx.ssl.get_req_ssl_pointer"
    end
    local p, err = get_req_ssl()
    if not p then
        return nil, "no TLS connection: " .. tostring(err)
    end
    if C.amesh_tls_verify_client(p, profile, errbuf, ERR_LEN) ~= 0 then
        return nil, ffi_str(errbuf)
    end
    return true
end


-- Files (certificates and roots that DestinationRules and the sidecar name by path)
-- are read again once they are older than this, so that a rotated file is used for
-- new connections within that time.
local FILE_TTL = 5

local files = {}

-- read_file returns the content of path and a version that changes when the content
-- does, or nil and the reason (which never quotes the content). A file that cannot be
-- read is tried again after the same time.
function _M.read_file(path)
    local now = ngx_now()
    local f = files[path]
    if f and now - f.at < FILE_TTL then
        if not f.data then
            return nil, f.err
        end
        return f.data, f.version
    end
    local data, err
    local fh, oerr = io_open(path, "rb")
    if fh then
        data = fh:read("*a")
        fh:close()
        if not data then
            err = "cannot read " .. path
        end
    else
        err = "cannot read " .. path .. ": " .. tostring(oerr)
    end
    if not data then
        files[path] = {at = now, err = err, version = f and f.version or 0}
        return nil, err
    end
    if f and f.data == data then
        f.at = now
        return f.data, f.version
    end
    local version = (f and f.version or 0) + 1
    files[path] = {data = data, at = now, version = version}
    return data, version
end


-- System roots: the files Istio's agent looks for (pkg/security GetOSRootFilePath), in
-- its order; the first that exists.
local system_roots = {
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/etc/ssl/cert.pem",
    "/etc/ssl/certs/ca-certificates",
}

function _M.read_system_roots()
    for _, path in ipairs(system_roots) do
        local data, version = _M.read_file(path)
        if data then
            return data, version, path
        end
    end
    return nil, "no system root certificates (" .. concat(system_roots, ", ") .. ")"
end


return _M

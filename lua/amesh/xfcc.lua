-- amesh.xfcc: rewrites x-forwarded-client-cert as Envoy's HTTP connection manager
-- does before any HTTP filter (ConnectionManagerUtility::mutateXfccRequestHeader), in
-- the form amesh's translator writes (internal/translate/xfcc.go). It needs nothing
-- from APISIX: the amesh-xfcc plugin calls it in APISIX, test/nginx in stock nginx.
--
-- mutate(conf), conf.mode being forward_client_cert_details:
--   ALWAYS_FORWARD_ONLY  the header is left as it is;
--   SANITIZE             it is removed;
--   otherwise, on a connection without a verified client certificate (plaintext, or
--                        TLS without one), it is removed;
--   FORWARD_ONLY         it is left as it is;
--   APPEND_FORWARD       this hop's element is appended with ",";
--   SANITIZE_SET         it becomes this hop's element.
-- The element is By=<local URI SAN> for each URI SAN of nginx's own certificate,
-- Hash=<SHA-256 of the peer's DER, hex>, then with conf.subject Subject="<RFC 2253>",
-- with conf.uri URI=<SAN> for each of the peer's URI SANs ("URI=" without one), with
-- conf.dns DNS=<SAN> for each DNS SAN, joined with ";". Repeated headers count as one,
-- their values joined with "," (Envoy's header map does so).
--
-- It returns nil, or an error when the connection's TLS peer cannot be read (nginx
-- without nginx/original_dst's module): the caller must not forward the request then.
local tls_peer = require("amesh.tls_peer")
local ngx = ngx
local concat = table.concat
local type, ipairs = type, ipairs

local _M = {}

local HEADER = "x-forwarded-client-cert"

local function current()
    local v = ngx.req.get_headers(0)[HEADER]
    if type(v) == "table" then
        return concat(v, ",")
    end
    return v
end

local function element(conf, p)
    local parts = {}
    for _, u in ipairs(p.local_uris) do
        parts[#parts + 1] = "By=" .. u
    end
    if p.hash ~= "" then
        parts[#parts + 1] = "Hash=" .. p.hash
    end
    if conf.subject then
        parts[#parts + 1] = 'Subject="' .. p.subject .. '"'
    end
    if conf.uri then
        if #p.uris == 0 then
            parts[#parts + 1] = "URI="
        end
        for _, u in ipairs(p.uris) do
            parts[#parts + 1] = "URI=" .. u
        end
    end
    if conf.dns then
        for _, d in ipairs(p.dns) do
            parts[#parts + 1] = "DNS=" .. d
        end
    end
    return concat(parts, ";")
end

function _M.mutate(conf)
    local mode = conf.mode
    if mode == "ALWAYS_FORWARD_ONLY" then
        return nil
    end
    if mode == "SANITIZE" then
        ngx.req.clear_header(HEADER)
        return nil
    end
    local p = tls_peer.get()
    if p == false then
        return "the TLS peer cannot be read: nginx/original_dst's http module is not loaded"
    end
    if not p or not p.verified then
        ngx.req.clear_header(HEADER)
        return nil
    end
    if mode == "FORWARD_ONLY" then
        return nil
    end
    local el = element(conf, p)
    if mode == "APPEND_FORWARD" then
        local cur = current()
        if cur and cur ~= "" then
            el = cur .. "," .. el
        end
    end
    ngx.req.set_header(HEADER, el)
    return nil
end

return _M

-- amesh.tls_peer: the downstream TLS peer of the current request's connection (in
-- the stream subsystem: of the session), as Envoy's connection (Ssl::ConnectionInfo)
-- has it, read from the variables of nginx/original_dst's http and stream modules
-- (ngx_amesh_tls_peer.h), which read them once per connection. It needs nothing from
-- APISIX: amesh.rbac and amesh.xfcc use it in APISIX and in stock nginx alike.
--
-- get() returns
--   nil    on a plaintext connection ($https is not "on"; in stream, $ssl_protocol is
--          empty): Envoy's connection has no ssl(), so no principal is authenticated
--          and XFCC is removed;
--   false  on a TLS connection whose peer this nginx cannot read (the module is not
--          loaded): the caller decides as it would for what it cannot evaluate;
--   a table otherwise: verified (a certificate was presented and verified), uris and
--          dns (the peer certificate's URI and DNS SANs, in certificate order), subject
--          (RFC 2253), hash (SHA-256 of the DER, lower-case hex), local_uris (the URI
--          SANs of the certificate nginx presented). Without a verified certificate the
--          peer's lists are empty and its strings "", as Envoy's are without one.
local ngx_var = ngx.var
local stream = ngx.config.subsystem == "stream"
local char, tonumber, gsub = string.char, tonumber, string.gsub

local _M = {}

local function unescape(h)
    return char(tonumber(h, 16))
end

-- split reads one of the module's lists: values joined with ",", with "%", "," and
-- bytes outside "!".."~" percent-encoded in each.
local function split(s)
    local out = {}
    if not s or s == "" then
        return out
    end
    for v in (s .. ","):gmatch("([^,]*),") do
        out[#out + 1] = gsub(v, "%%(%x%x)", unescape)
    end
    return out
end
_M.split = split

local none = {}

function _M.get()
    if stream then
        local proto = ngx_var.ssl_protocol
        if proto == nil or proto == "" then
            return nil
        end
    elseif ngx_var.https ~= "on" then
        return nil
    end
    local verified = ngx_var.amesh_peer_verified
    if verified == nil then
        return false
    end
    local p = {
        verified = verified == "1",
        local_uris = split(ngx_var.amesh_local_uri_sans),
        uris = none, dns = none, subject = "", hash = "",
    }
    if p.verified then
        p.uris = split(ngx_var.amesh_peer_uri_sans)
        p.dns = split(ngx_var.amesh_peer_dns_sans)
        p.subject = ngx_var.amesh_peer_subject or ""
        p.hash = ngx_var.amesh_peer_cert_sha256 or ""
    end
    return p
end

return _M

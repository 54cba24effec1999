-- amesh_sni: APISIX's SSL router for the sidecar (config.yaml apisix.router.ssl), which
-- is APISIX's radixtree_sni but for one lookup.
--
-- APISIX refuses (400) an HTTPS request whose client certificate was verified when the
-- Host header names another server than the SNI did, so that a client cannot present a
-- certificate for one name and reach another (verify_https_client: it looks up the
-- Host among the ssl objects in the access phase). The sidecar's only server ssl object
-- is amesh's istio-mtls-server, which serves every name: Istio's mTLS peers send the SNI
-- of their cluster (outbound_.9080_._.productpage.default.svc.cluster.local) and the
-- service's host in Host, never the same. Envoy's inbound chains do not compare them,
-- and the routes decide by Host as for plaintext. So the Host lookup finds no ssl
-- object here, and that check does not apply; the handshake (certificate, client
-- verification against the mesh's roots) is radixtree_sni's.
--
-- To that, set (what APISIX's ssl_certificate phase calls with the ssl object its
-- client hello phase matched) adds amesh.peer_handshake's check for istio-mtls-server:
-- a client certificate that does not chain to the mesh's roots, or whose URI SANs meet
-- none of the inbound chains' matchers, fails the handshake, as with Envoy.
--
-- APISIX's stream subsystem takes radixtree_sni whatever config.yaml says
-- (apisix/router.lua stream_init_worker), so amesh's stream router calls
-- install_stream(), which puts this set in radixtree_sni's place there.
local sni = require("apisix.ssl.router.radixtree_sni")
local handshake = require("amesh.peer_handshake")
local ngx = ngx
local setmetatable = setmetatable

local _M = setmetatable({}, {__index = sni})

local sni_set = sni.set

function _M.set(matched_ssl, server_name)
    local ok, err = sni_set(matched_ssl, server_name)
    if not ok then
        return ok, err
    end
    return handshake.check(matched_ssl)
end

function _M.install_stream()
    sni.set = _M.set
end

function _M.match_and_set(api_ctx, match_only, alt_sni)
    if alt_sni ~= nil and ngx.get_phase() == "access" then
        return false
    end
    return sni.match_and_set(api_ctx, match_only, alt_sni)
end

return _M

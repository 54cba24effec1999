-- amesh-mtls-peer (stream): on the route that takes the plaintext of Istio mTLS the
-- stream server's TLS socket terminated (amesh-protocol "mtls"), closes the connection
-- unless the client certificate verified and one of its URI SANs meets the filter
-- chain's match_subject_alt_names (istiod: the prefix spiffe://<trust domain>/): the
-- mesh's roots sign certificates of other trust domains too. uri_sans is the PCRE the
-- translator makes of the matchers (internal/translate/streamauthz.go) for the list
-- $amesh_peer_uri_sans of nginx/original_dst's stream module, as the HTTP routes of TLS
-- chains check it in a route var. Envoy accepts a certificate any of whose SANs (of any
-- type) meets a matcher; only URI SANs are looked at, which refuses more, never less.
-- Envoy fails such a handshake; here the union of every chain's matchers is checked in
-- the handshake (amesh.peer_handshake, from this plugin's metadata), and each chain's own
-- here, where the connection is closed before it is sent on.
--
-- The schema below is also internal/apisix/schema/schemas/stream_plugins/
-- amesh-mtls-peer.json (with APISIX's injected _meta). It must be in config.yaml's
-- stream_plugins (the chart's APISIX config lists it).
local core = require("apisix.core")
local handshake = require("amesh.peer_handshake")
local ngx = ngx
local re_find = ngx.re.find

local plugin_name = "amesh-mtls-peer"

local schema = {
    type = "object",
    properties = {
        uri_sans = {type = "string", minLength = 1},
    },
    required = {"uri_sans"},
    additionalProperties = false,
}

local _M = {
    version = 0.1,
    -- before every other plugin of the route: nothing is done for a refused peer
    priority = 12000,
    name = plugin_name,
    schema = schema,
    -- the handshake's matchers (amesh.peer_handshake), which it reads itself
    metadata_schema = handshake.metadata_schema,
}


function _M.check_schema(conf, schema_type)
    if schema_type == core.schema.TYPE_METADATA then
        return core.schema.check(handshake.metadata_schema, conf)
    end
    return core.schema.check(schema, conf)
end


function _M.preread(conf, ctx)
    local var = ngx.var
    if var.amesh_peer_verified ~= "1" then
        core.log.warn(plugin_name, ": no verified client certificate (is ",
                      "ngx_stream_amesh_original_dst_module loaded?): closed")
        return 403
    end
    local uris = var.amesh_peer_uri_sans or ""
    local from, _, err = re_find(uris, conf.uri_sans, "jo")
    if err then
        core.log.error(plugin_name, ": ", err, ": closed")
        return 403
    end
    if not from then
        core.log.warn(plugin_name, ": client certificate URI SANs \"", uris,
                      "\" meet none of the filter chain's subject alt names: closed")
        return 403
    end
end


return _M

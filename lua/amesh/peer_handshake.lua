-- amesh.peer_handshake: the client certificate check of inbound Istio mTLS in the TLS
-- handshake, as Envoy's inbound listener does it. Envoy's certificate validator fails
-- the handshake (a TLS alert) for a client certificate that does not chain to the
-- mesh's roots or has no subject alt name meeting the filter chain's
-- match_subject_alt_names (istiod: the prefix spiffe://<trust domain>/). nginx's and
-- ngx.ssl's verification leave the result for later, and APISIX's sockets cannot know
-- the filter chain in the handshake: the chain is chosen by the original destination
-- before the connection reaches the TLS socket, which terminates every chain with one
-- ssl object (istio-mtls-server).
--
-- So the handshake checks what every chain has in common: the mesh's roots (the ssl
-- object's client.ca, which APISIX's ssl router has just set for the connection) and
-- the union of the chains' URI SAN matchers, which amesh's translation writes as the
-- plugin metadata of amesh-mtls-peer (handshake_uri_sans; no object when some chain
-- accepts any SAN, or no chain terminates mTLS: then only the roots are checked). Each
-- chain's own matchers are still checked after the handshake (its HTTP routes' var on
-- $amesh_peer_uri_sans, the stream plugin amesh-mtls-peer). Under Istio every chain has
-- the same matchers, so the handshake refuses all that Envoy's does.
--
-- Only URI SANs are looked at, as the per-chain checks do: a certificate that meets a
-- matcher with a DNS SAN only, which Envoy accepts, is refused.
local core = require("apisix.core")
local upstream_tls = require("amesh.upstream_tls")
local tostring = tostring
local ipairs = ipairs

local _M = {}

-- The ssl object whose handshakes are checked (internal/translate ServerSSLID).
_M.server_ssl_id = "istio-mtls-server"
-- The plugin whose metadata holds the matchers.
_M.metadata_plugin = "amesh-mtls-peer"

-- The plugin metadata's schema, also internal/apisix/schema/schemas/plugin_metadata/
-- amesh-mtls-peer.json (TestPluginSchemasMatchLua checks that the two agree).
_M.metadata_schema = core.json.decode([==[
{
  "properties": {
    "handshake_uri_sans": {
      "items": {
        "additionalProperties": false,
        "properties": {
          "ignore_case": {"type": "boolean"},
          "match": {"enum": ["exact", "prefix", "suffix", "contains"], "type": "string"},
          "value": {"maxLength": 65535, "type": "string"}
        },
        "required": ["match", "value"],
        "type": "object"
      },
      "minItems": 1,
      "type": "array"
    },
    "id": {"type": "string"}
  },
  "required": ["handshake_uri_sans"],
  "type": "object"
}
]==])

-- The profile of the metadata value last seen (the provider makes a new table for
-- each change), or why it could not be made.
local cache = {}

local function profile_of(value)
    if cache.made and cache.value == value then
        return cache.profile, cache.err
    end
    local spec = {}
    local err
    if value ~= nil then
        local ok, serr = core.schema.check(_M.metadata_schema, value)
        if not ok then
            err = "plugin metadata of " .. _M.metadata_plugin .. ": " .. tostring(serr)
        else
            spec.sans = {}
            for i, m in ipairs(value.handshake_uri_sans) do
                spec.sans[i] = {type = "uri", match = m.match, value = m.value,
                                ignore_case = m.ignore_case}
            end
        end
    end
    local profile
    if not err then
        profile, err = upstream_tls.new_profile(spec)
    end
    cache = {made = true, value = value, profile = profile, err = err}
    return profile, err
end

local function metadata()
    local plugin = require("apisix.plugin")
    if not plugin.plugin_metadatas then
        return nil
    end
    local item = plugin.plugin_metadata(_M.metadata_plugin)
    return item and item.value
end

-- check applies the check to the current handshake when matched_ssl (the ssl object
-- APISIX's ssl router chose) is istio-mtls-server; true, or nil and why it could not,
-- and then the handshake must fail.
function _M.check(matched_ssl)
    local value = matched_ssl and matched_ssl.value
    if not value or value.id ~= _M.server_ssl_id then
        return true
    end
    local profile, err = profile_of(metadata())
    if not profile then
        return nil, "amesh: no client certificate check for " .. _M.server_ssl_id .. ": "
                    .. tostring(err)
    end
    local ok, verr = upstream_tls.verify_client(profile)
    if not ok then
        return nil, "amesh: no client certificate check for " .. _M.server_ssl_id .. ": "
                    .. tostring(verr)
    end
    return true
end

return _M

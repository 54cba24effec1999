-- amesh-ext-authz: enforces Envoy's external authorization filters
-- (envoy.filters.http.ext_authz with an HTTP service: Istio's AuthorizationPolicy
-- action CUSTOM) on a route, with the RBAC shadow rules that enable them, as the
-- translator emits them (internal/translate/extauthz.go). The evaluation and the call
-- are amesh.ext_authz (cosockets; no lua-resty-http). amesh adds it to the routes the
-- filters guard; it must be in config.yaml's `plugins` (the chart's APISIX config
-- lists it).
--
-- It runs in the rewrite phase with a priority above amesh-rbac's (11500): istiod puts
-- the CUSTOM filters in front of the DENY and ALLOW RBAC filters, and the translator
-- fails closed a route whose ext_authz filter comes after RBAC rules amesh-rbac
-- enforces. The authorization server is reached through the APISIX upstream of the
-- filter's cluster (server_uri.cluster), which the translator references.
--
-- APISIX's forward-auth plugin does not do what Envoy does: it sends a fixed URI with
-- X-Forwarded-* headers instead of the original method and path_prefix + :path, takes
-- any status below 300 as allowed and passes a 5xx on to the client, clears configured
-- upstream headers the answer lacks, names headers exactly instead of by Envoy's
-- string matchers, resolves a host name instead of a cluster's endpoints, runs after
-- amesh-rbac (access phase) and needs lua-resty-http, which Debian's nginx lacks.
--
-- The schema below is also internal/apisix/schema/schemas/plugins/amesh-ext-authz.json
-- (with APISIX's injected _meta); a test checks that the two agree. A shadow step's
-- filter is checked against amesh-rbac's schema.
local core = require("apisix.core")
local ext_authz = require("amesh.ext_authz")
local rbac_plugin = require("apisix.plugins.amesh-rbac")

local ipairs = ipairs
local tostring = tostring

local plugin_name = "amesh-ext-authz"

local schema = core.json.decode([==[
{
  "type": "object",
  "properties": {
    "port_var": {"type": "string", "minLength": 1},
    "normalize_path": {"type": "boolean"},
    "merge_slashes": {"type": "boolean"},
    "pct_unknown": {"type": "boolean"},
    "remote_from": {"type": "string", "enum": ["peer", "xff"]},
    "xff_hops": {"type": "integer", "minimum": 0},
    "steps": {
      "type": "array",
      "items": {
        "type": "object",
        "properties": {
          "shadow": {
            "type": "object",
            "properties": {
              "key": {"type": "string", "minLength": 1},
              "filter": {"type": "object"}
            },
            "required": ["key", "filter"],
            "additionalProperties": false
          },
          "ext_authz": {
            "type": "object",
            "properties": {
              "name": {"type": "string"},
              "cluster": {"type": "string", "minLength": 1},
              "upstream_id": {"type": "string", "minLength": 1},
              "path_prefix": {"type": "string"},
              "timeout": {"type": "number", "minimum": 0.001},
              "allowed_headers": {"type": "array", "items": {"$ref": "#/definitions/string_matcher"}},
              "headers_to_add": {
                "type": "array",
                "items": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2}
              },
              "upstream_headers": {"type": "array", "items": {"$ref": "#/definitions/string_matcher"}},
              "client_headers": {"type": "array", "items": {"$ref": "#/definitions/string_matcher"}},
              "status_on_error": {"type": "integer", "minimum": 100, "maximum": 599},
              "failure_mode_allow": {"type": "boolean"},
              "failure_mode_allow_header_add": {"type": "boolean"},
              "enabled_by": {
                "type": "object",
                "properties": {
                  "key": {"type": "string", "minLength": 1},
                  "str": {"$ref": "#/definitions/string_matcher"},
                  "invert": {"type": "boolean"}
                },
                "required": ["key", "str"],
                "additionalProperties": false
              }
            },
            "required": ["name", "cluster", "timeout", "allowed_headers", "status_on_error"],
            "additionalProperties": false
          }
        },
        "maxProperties": 1,
        "minProperties": 1,
        "additionalProperties": false
      }
    }
  },
  "required": ["port_var", "steps"],
  "additionalProperties": false,
  "definitions": {
    "string_matcher": {
      "type": "object",
      "properties": {
        "op": {"type": "string", "enum": ["exact", "prefix", "suffix", "contains", "regex"]},
        "v": {"type": "string"},
        "icase": {"type": "boolean"}
      },
      "required": ["op", "v"],
      "additionalProperties": false
    }
  }
}
]==])

local _M = {
    version = 0.1,
    priority = 11510,
    name = plugin_name,
    schema = schema,
}


function _M.check_schema(conf)
    local ok, err = core.schema.check(schema, conf)
    if not ok then
        return ok, err
    end
    for _, step in ipairs(conf.steps) do
        if step.shadow then
            ok, err = rbac_plugin.check_schema({port_var = conf.port_var, filters = {step.shadow.filter}})
            if not ok then
                return ok, "shadow rules: " .. err
            end
        end
    end
    return true
end


local function upstream_of(id)
    local ups = core.config.fetch_created_obj("/upstreams")
    local up = ups and ups:get(tostring(id))
    return up and up.value
end


function _M.rewrite(conf, ctx)
    local res, filter = ext_authz.run(conf, upstream_of)
    if not res then
        return
    end
    core.log.info(plugin_name, ": filter ", filter, " answered ", res.status)
    return ext_authz.respond(res)
end


return _M

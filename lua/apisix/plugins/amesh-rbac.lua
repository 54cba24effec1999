-- amesh-rbac: enforces Envoy's RBAC filters (envoy.filters.http.rbac, actions ALLOW
-- and DENY: Istio's AuthorizationPolicy) on a route, as the translator emits them
-- (internal/translate/rbacrules.go): the filters in HTTP filter order, each with its
-- policies. The first filter that denies the request answers 403 "RBAC: access
-- denied", Envoy's answer. amesh adds it to the routes the filters guard; it must be in
-- config.yaml's `plugins` (the chart's APISIX config lists it).
--
-- It runs in the rewrite phase with a priority above every plugin amesh sets on a
-- route (fault-injection's abort, 11000, answers in the same phase), as Envoy's RBAC
-- filters run before the router acts on the route. The evaluation is amesh.rbac,
-- which needs nothing from APISIX.
--
-- The schema below is also internal/apisix/schema/schemas/plugins/amesh-rbac.json
-- (with APISIX's injected _meta), against which amesh's tests validate what the
-- translator emits; a test checks that the two agree.
local core = require("apisix.core")
local rbac = require("amesh.rbac")

local plugin_name = "amesh-rbac"

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
    "filters": {
      "type": "array",
      "items": {
        "type": "object",
        "properties": {
          "name": {"type": "string"},
          "action": {"type": "string", "enum": ["ALLOW", "DENY"]},
          "policies": {
            "type": "array",
            "items": {
              "type": "object",
              "properties": {
                "name": {"type": "string"},
                "permissions": {"type": "array", "items": {"$ref": "#/definitions/node"}},
                "principals": {"type": "array", "items": {"$ref": "#/definitions/node"}}
              },
              "required": ["name"],
              "additionalProperties": false
            }
          }
        },
        "required": ["name", "action"],
        "additionalProperties": false
      }
    }
  },
  "required": ["port_var", "filters"],
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
    },
    "node": {
      "type": "object",
      "properties": {
        "const": {"type": "boolean"},
        "any": {"type": "boolean"},
        "and": {"type": "array", "items": {"$ref": "#/definitions/node"}},
        "or": {"type": "array", "items": {"$ref": "#/definitions/node"}},
        "not": {"$ref": "#/definitions/node"},
        "path": {"$ref": "#/definitions/string_matcher"},
        "header": {
          "type": "object",
          "properties": {
            "name": {"type": "string", "minLength": 1},
            "miss": {"type": "boolean"},
            "pres": {"type": "boolean"},
            "str": {"$ref": "#/definitions/string_matcher"},
            "range": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
            "invert": {"type": "boolean"}
          },
          "required": ["name"],
          "additionalProperties": false
        },
        "ports": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 65536}, "minItems": 2, "maxItems": 2},
        "ip": {
          "type": "object",
          "properties": {
            "src": {"type": "string", "enum": ["direct", "remote", "source"]},
            "addr": {"type": "string", "minLength": 2, "maxLength": 45},
            "len": {"type": "integer", "minimum": 0, "maximum": 128}
          },
          "required": ["src", "addr", "len"],
          "additionalProperties": false
        },
        "auth": {
          "type": "object",
          "properties": {"n": {"$ref": "#/definitions/string_matcher"}},
          "additionalProperties": false
        },
        "u": {"type": "boolean"}
      },
      "additionalProperties": false,
      "maxProperties": 2
    }
  }
}
]==])

local _M = {
    version = 0.1,
    priority = 11500,
    name = plugin_name,
    schema = schema,
}


function _M.check_schema(conf)
    return core.schema.check(schema, conf)
end


function _M.rewrite(conf, ctx)
    local filter, policy = rbac.decide(conf)
    if filter then
        core.log.info(plugin_name, ": filter ", filter, " denied the request",
                      policy and (" (policy " .. policy .. ")") or "")
        return 403, rbac.deny_body
    end
end


return _M

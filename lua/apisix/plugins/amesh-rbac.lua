-- amesh-rbac: enforces Envoy's RBAC filters (envoy.filters.http.rbac, actions ALLOW
-- and DENY: Istio's AuthorizationPolicy), jwt_authn filters (action JWT: Istio's
-- RequestAuthentication, internal/translate/jwt.go, lua/amesh/jwt.lua) and ext_authz
-- filters with the RBAC shadow rules that enable them (actions SHADOW and EXT_AUTHZ:
-- Istio's action CUSTOM, internal/translate/extauthz.go, lua/amesh/ext_authz.lua) on a
-- route, as the translator emits them (internal/translate/rbacrules.go): one list of
-- steps in HTTP filter order, run on one request state, so that each sees what the
-- steps before it did (a JWT step's payload, a shadow step's policy id, the headers
-- an allowed check set). The first RBAC filter that denies the request answers 403
-- "RBAC: access denied", Envoy's answer; a JWT failure answers as Envoy's jwt_authn
-- (401 or 403 with its status text and www-authenticate); an ext_authz check answers
-- with the authorization server's denial or its status_on_error. amesh adds it to the
-- routes the filters guard; it must be in config.yaml's `plugins` (the chart's APISIX
-- config lists it).
--
-- It runs in the rewrite phase with a priority above every plugin amesh sets on a
-- route (fault-injection's abort, 11000, answers in the same phase), as Envoy's RBAC
-- filters run before the router acts on the route. The evaluation is amesh.rbac,
-- which needs nothing from APISIX; an ext_authz step reaches the authorization server
-- through the APISIX upstream of the filter's cluster (server_uri.cluster), which the
-- translator references, with a cosocket.
--
-- APISIX's forward-auth plugin does not do what Envoy's ext_authz does: it sends a fixed
-- URI with X-Forwarded-* headers instead of the original method and path_prefix +
-- :path, takes any status below 300 as allowed and passes a 5xx on to the client,
-- clears configured upstream headers the answer lacks, names headers exactly instead of
-- by Envoy's string matchers, resolves a host name instead of a cluster's endpoints,
-- runs in the access phase, after this plugin, and needs lua-resty-http, which Debian's
-- nginx lacks.
--
-- The schema below is also internal/apisix/schema/schemas/plugins/amesh-rbac.json
-- (with APISIX's injected _meta), against which amesh's tests validate what the
-- translator emits; a test checks that the two agree.
local core = require("apisix.core")
local rbac = require("amesh.rbac")
local ext_authz = require("amesh.ext_authz")

local tostring = tostring

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
          "action": {"type": "string", "enum": ["ALLOW", "DENY", "JWT", "SHADOW", "EXT_AUTHZ"]},
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
          },
          "jwt": {"$ref": "#/definitions/jwt"},
          "key": {"type": "string", "minLength": 1},
          "ext_authz": {"$ref": "#/definitions/ext_authz"}
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
            "src": {"type": "string", "enum": ["direct", "remote", "source", "dest"]},
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
        "meta": {
          "type": "object",
          "properties": {
            "f": {"type": "string", "minLength": 1},
            "path": {"type": "array", "items": {"type": "string"}},
            "v": {"$ref": "#/definitions/value_matcher"},
            "inv": {"type": "boolean"}
          },
          "required": ["f", "path", "v"],
          "additionalProperties": false
        },
        "u": {"type": "boolean"}
      },
      "additionalProperties": false,
      "maxProperties": 2
    },
    "value_matcher": {
      "type": "object",
      "properties": {
        "null": {"type": "boolean"},
        "num": {
          "type": "object",
          "properties": {
            "range": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
            "exact": {"type": "number"}
          },
          "additionalProperties": false,
          "maxProperties": 1,
          "minProperties": 1
        },
        "str": {"$ref": "#/definitions/string_matcher"},
        "bool": {"type": "boolean"},
        "present": {"type": "boolean"},
        "list": {"$ref": "#/definitions/value_matcher"},
        "or": {"type": "array", "items": {"$ref": "#/definitions/value_matcher"}}
      },
      "additionalProperties": false,
      "maxProperties": 1
    },
    "jwt": {
      "type": "object",
      "properties": {
        "providers": {"type": "object", "additionalProperties": {"$ref": "#/definitions/jwt_provider"}},
        "requires": {"$ref": "#/definitions/jwt_requirement"},
        "bypass_cors": {"type": "boolean"},
        "strip": {"type": "boolean"}
      },
      "required": ["providers", "requires"],
      "additionalProperties": false
    },
    "jwt_provider": {
      "type": "object",
      "properties": {
        "iss": {"type": "string"},
        "aud": {"type": "array", "items": {"type": "string"}},
        "keys": {
          "type": "array",
          "items": {
            "type": "object",
            "properties": {
              "kid": {"type": "string"},
              "alg": {"type": "string"},
              "kty": {"type": "string", "enum": ["RSA", "EC", "OKP"]},
              "crv": {"type": "string"},
              "pem": {"type": "string", "minLength": 1}
            },
            "required": ["kty", "pem"],
            "additionalProperties": false
          }
        },
        "jwks_fetch_failed": {"type": "boolean"},
        "headers": {
          "type": "array",
          "items": {
            "type": "object",
            "properties": {"name": {"type": "string", "minLength": 1}, "prefix": {"type": "string"}},
            "required": ["name"],
            "additionalProperties": false
          }
        },
        "cookies": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "params": {"type": "array", "items": {"type": "string"}},
        "forward": {"type": "boolean"},
        "payload_header": {"type": "string", "minLength": 1},
        "pad": {"type": "boolean"},
        "payload_meta": {"type": "string", "minLength": 1},
        "header_meta": {"type": "string", "minLength": 1},
        "space_claims": {"type": "array", "items": {"type": "string"}},
        "skew": {"type": "integer", "minimum": 0},
        "claim_headers": {
          "type": "array",
          "items": {
            "type": "object",
            "properties": {"header": {"type": "string", "minLength": 1}, "claim": {"type": "string"}},
            "required": ["header", "claim"],
            "additionalProperties": false
          }
        }
      },
      "required": ["keys", "skew"],
      "additionalProperties": false
    },
    "ext_authz": {
      "type": "object",
      "properties": {
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
      "required": ["cluster", "timeout", "allowed_headers", "status_on_error"],
      "additionalProperties": false
    },
    "jwt_requirement": {
      "type": "object",
      "properties": {
        "k": {"type": "string", "enum": ["provider", "any", "all", "missing", "failed", "ok"]},
        "p": {"type": "string"},
        "aud": {"type": "array", "items": {"type": "string"}},
        "of": {"type": "array", "items": {"$ref": "#/definitions/jwt_requirement"}},
        "providers": {"type": "array", "items": {"type": "string"}}
      },
      "required": ["k"],
      "additionalProperties": false
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


-- ops changes the request for jwt_authn steps through APISIX, whose request
-- functions keep its cached headers and arguments current.
local function ops_for(ctx)
    return {
        set = function(name, value)
            core.request.set_header(ctx, name, value)
        end,
        add = function(name, value)
            core.request.add_header(ctx, name, value)
        end,
        set_args = function(args)
            core.request.set_uri_args(ctx, args)
        end,
    }
end


local function upstream_of(id)
    local ups = core.config.fetch_created_obj("/upstreams")
    local up = ups and ups:get(tostring(id))
    return up and up.value
end


function _M.rewrite(conf, ctx)
    local filter, policy, resp = rbac.decide(conf, ops_for(ctx), upstream_of)
    if resp and resp.headers then
        -- An ext_authz answer: the server's status, body and headers, or an error's
        -- status without a body (not nginx's error page).
        core.log.info(plugin_name, ": filter ", filter, " answered ", resp.status)
        return ext_authz.respond(resp)
    end
    if resp then
        -- Envoy's jwt_authn answer; the status text names no token or key.
        core.log.info(plugin_name, ": filter ", filter, " refused the request: ", resp.body)
        if resp.www_authenticate then
            core.response.set_header("www-authenticate", resp.www_authenticate)
        end
        return resp.status, resp.body
    end
    if filter then
        core.log.info(plugin_name, ": filter ", filter, " denied the request",
                      policy and (" (policy " .. policy .. ")") or "")
        return 403, rbac.deny_body
    end
end


return _M

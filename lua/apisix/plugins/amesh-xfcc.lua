-- amesh-xfcc: rewrites x-forwarded-client-cert on every route of an Envoy HTTP
-- connection manager as that connection manager does (forward_client_cert_details,
-- set_current_client_cert_details), as the translator emits it
-- (internal/translate/xfcc.go). amesh puts it on every route of every connection
-- manager, since Envoy's default (SANITIZE) removes a header a client sent; it must
-- be in config.yaml's `plugins` (the chart's APISIX config lists it), and the peer's
-- identity needs nginx/original_dst's http module loaded.
--
-- It runs in the rewrite phase with the highest priority of amesh's plugins, above
-- amesh-rbac (11500): Envoy rewrites the header before any HTTP filter, so RBAC rules
-- on it see the rewritten header. The rewrite is amesh.xfcc, which needs nothing from
-- APISIX.
--
-- The schema below is also internal/apisix/schema/schemas/plugins/amesh-xfcc.json
-- (with APISIX's injected _meta); a test checks that the two agree.
local core = require("apisix.core")
local xfcc = require("amesh.xfcc")

local plugin_name = "amesh-xfcc"

local schema = core.json.decode([==[
{
  "type": "object",
  "properties": {
    "mode": {"type": "string", "enum": ["SANITIZE", "FORWARD_ONLY", "APPEND_FORWARD", "SANITIZE_SET", "ALWAYS_FORWARD_ONLY"]},
    "subject": {"type": "boolean"},
    "uri": {"type": "boolean"},
    "dns": {"type": "boolean"}
  },
  "required": ["mode"],
  "additionalProperties": false
}
]==])

local _M = {
    version = 0.1,
    priority = 11520,
    name = plugin_name,
    schema = schema,
}


function _M.check_schema(conf)
    return core.schema.check(schema, conf)
end


function _M.rewrite(conf, ctx)
    local err = xfcc.mutate(conf)
    if err then
        core.log.error(plugin_name, ": ", err)
        return 500, "amesh: " .. err .. "\n"
    end
end


return _M

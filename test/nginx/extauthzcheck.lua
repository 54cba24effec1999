-- extauthzcheck: runs amesh.ext_authz (lua/amesh/ext_authz.lua) and then amesh.rbac in
-- stock nginx for extauthz_lua_test.go, as APISIX runs amesh-ext-authz before
-- amesh-rbac. The request names its case in x-case; <dir>/<case>.json holds the
-- translator's configs {"ext_authz": ..., "rbac": ..., "upstreams": {id: upstream}}.
-- A request the authorization answers gets its answer; one RBAC denies gets 403 "RBAC:
-- access denied" and x-rbac-filter.
local cjson = require("cjson.safe")
local ext_authz = require("amesh.ext_authz")
local rbac = require("amesh.rbac")

local _M = {}

function _M.run(dir)
    local conf = require("rbaccheck").case_conf(dir, "http_x_case")
    local res = ext_authz.run(conf.ext_authz, function(id) return conf.upstreams[id] end)
    if res then
        return ext_authz.respond(res)
    end
    local filter = conf.rbac and rbac.decide(conf.rbac)
    if filter then
        ngx.status = 403
        ngx.header["x-rbac-filter"] = filter
        ngx.print(rbac.deny_body)
        return ngx.exit(403)
    end
end

-- echo answers with the request's headers as the application sees them (JSON).
function _M.echo()
    ngx.header["content-type"] = "application/json"
    ngx.print(cjson.encode(ngx.req.get_headers(0)))
end

return _M

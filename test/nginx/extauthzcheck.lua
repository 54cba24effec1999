-- extauthzcheck: runs amesh.rbac (lua/amesh/rbac.lua) with its JWT, shadow and
-- ext_authz steps (amesh.jwt, amesh.ext_authz) in stock nginx for extauthz_lua_test.go
-- and jwt_extauthz_test.go, as the amesh-rbac plugin runs them in APISIX. The request
-- names its case in x-case; <dir>/<case>.json holds the translator's amesh-rbac config
-- and the upstreams its ext_authz steps name: {"rbac": ..., "upstreams": {id: upstream}}.
-- An ext_authz step's answer is the client's; a refused JWT gets jwt_authn's answer
-- (status, body, www-authenticate); a request RBAC denies gets 403 "RBAC: access denied";
-- each with the step that answered in x-rbac-filter.
local cjson = require("cjson.safe")
local ext_authz = require("amesh.ext_authz")
local rbac = require("amesh.rbac")

local _M = {}

function _M.run(dir)
    local conf = require("rbaccheck").case_conf(dir, "http_x_case")
    local filter, _, resp = rbac.decide(conf.rbac, nil, function(id) return conf.upstreams[id] end)
    if filter then
        ngx.header["x-rbac-filter"] = filter
    end
    if resp and resp.headers then
        return ext_authz.respond(resp)
    end
    if resp then
        ngx.status = resp.status
        if resp.www_authenticate then
            ngx.header["www-authenticate"] = resp.www_authenticate
        end
        ngx.print(resp.body)
        return ngx.exit(resp.status)
    end
    if filter then
        ngx.status = 403
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

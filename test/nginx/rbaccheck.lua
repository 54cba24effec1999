-- rbaccheck: runs amesh.rbac (lua/amesh/rbac.lua) in stock nginx for rbac_lua_test.go.
-- The request names its case in x-rbac-case; the case's amesh-rbac config (what the
-- translator emitted) is <dir>/<case>.json. A denied request gets the plugin's answer
-- (403, "RBAC: access denied") and the denying filter in x-rbac-filter; a refused
-- JWT gets jwt_authn's answer (status, body, www-authenticate).
local cjson = require("cjson.safe")
local rbac = require("amesh.rbac")

local _M = {}
local confs = {}

-- case_conf returns the config <dir>/<case>.json of the case the request names in
-- header (an nginx variable name), or answers the request itself when there is none.
function _M.case_conf(dir, header)
    local case = ngx.var[header]
    if not case or not case:match("^[%w-]+$") then
        ngx.status = 400
        ngx.print("no case")
        return ngx.exit(400)
    end
    local conf = confs[case]
    if not conf then
        local f = io.open(dir .. "/" .. case .. ".json")
        if not f then
            ngx.status = 500
            ngx.print("no config for case ", case)
            return ngx.exit(500)
        end
        conf = cjson.decode(f:read("*a"))
        f:close()
        confs[case] = conf
    end
    return conf
end

function _M.run(dir)
    local conf = _M.case_conf(dir, "http_x_rbac_case")
    local filter, _, resp = rbac.decide(conf)
    if resp then
        ngx.status = resp.status
        ngx.header["x-rbac-filter"] = filter
        if resp.www_authenticate then
            ngx.header["www-authenticate"] = resp.www_authenticate
        end
        ngx.print(resp.body)
        return ngx.exit(resp.status)
    end
    if filter then
        ngx.status = 403
        ngx.header["x-rbac-filter"] = filter
        ngx.print(rbac.deny_body)
        return ngx.exit(403)
    end
end

return _M

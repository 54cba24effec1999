-- peercheck: runs amesh.xfcc and then amesh.rbac (lua/amesh) in stock nginx for
-- tls_peer_test.go, in the order APISIX runs amesh-xfcc and amesh-rbac. The request
-- names its case in x-peer-case; <dir>/<case>.json holds the route's plugin configs as
-- the translator emitted them ({"amesh-xfcc": ..., "amesh-rbac": ...}). A denied
-- request gets 403 "RBAC: access denied"; a failed rewrite 500.
local cjson = require("cjson.safe")
local rbac = require("amesh.rbac")
local xfcc = require("amesh.xfcc")

local _M = {}
local confs = {}

function _M.run(dir)
    local case = ngx.var.http_x_peer_case
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
    local err = xfcc.mutate(conf["amesh-xfcc"])
    if err then
        ngx.status = 500
        ngx.print(err)
        return ngx.exit(500)
    end
    if conf["amesh-rbac"] and rbac.decide(conf["amesh-rbac"]) then
        ngx.status = 403
        ngx.print(rbac.deny_body)
        return ngx.exit(403)
    end
end

return _M

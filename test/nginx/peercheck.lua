-- peercheck: runs amesh.xfcc and then amesh.rbac (lua/amesh) in stock nginx for
-- tls_peer_test.go, in the order APISIX runs amesh-xfcc and amesh-rbac. The request
-- names its case in x-peer-case; <dir>/<case>.json holds the route's plugin configs as
-- the translator emitted them ({"amesh-xfcc": ..., "amesh-rbac": ...}). A denied
-- request gets 403 "RBAC: access denied"; a failed rewrite 500.
local rbac = require("amesh.rbac")
local xfcc = require("amesh.xfcc")
local rbaccheck = require("rbaccheck")

local _M = {}

function _M.run(dir)
    local conf = rbaccheck.case_conf(dir, "http_x_peer_case")
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

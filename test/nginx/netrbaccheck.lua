-- netrbaccheck: runs amesh.rbac's decide_connection (what the stream plugin
-- amesh-network-rbac runs per connection) in stock nginx for netrbac_test.go, whose
-- Debian nginx has no stream Lua: an HTTP request over the connection stands for it.
-- The TLS peer is the connection's (amesh.tls_peer over nginx/original_dst's module);
-- the client address and the original destination port, which the stream plugin
-- reads from the connection or its PROXY header, come from x-remote and x-port, as a
-- test on 127.0.0.1 has only one client address. <file> holds the plugin's config as
-- the translator emitted it. The answer is "allowed" or "denied <filter> [<policy>]".
local cjson = require("cjson.safe")
local rbac = require("amesh.rbac")

local _M = {}
local conf

function _M.run(file)
    if not conf then
        local f = assert(io.open(file))
        conf = cjson.decode(f:read("*a"))
        f:close()
    end
    local filter, policy = rbac.decide_connection(conf, {
        remote = ngx.var.http_x_remote,
        dest = "192.0.2.10",
        port = tonumber(ngx.var.http_x_port),
    })
    if filter then
        ngx.say("denied ", filter, policy and (" " .. policy) or "")
        return
    end
    ngx.say("allowed")
end

return _M

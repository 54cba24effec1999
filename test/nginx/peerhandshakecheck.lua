-- The ssl_certificate phase of peer_handshake_test.go's servers: amesh.upstream_tls's
-- verify_client with a profile of the server's own, made once per worker.
local upstream_tls = require("amesh.upstream_tls")

local _M = {}

local profiles = {}

-- run applies profile name (spec: amesh.upstream_tls.new_profile's; ca_file read into
-- ca_pem) to the handshake, and fails it when that cannot be done.
function _M.run(name, spec)
    local p = profiles[name]
    if not p then
        if spec.ca_file then
            local f = assert(io.open(spec.ca_file))
            spec.ca_pem = f:read("*a")
            f:close()
            spec.ca_file = nil
        end
        local err
        p, err = upstream_tls.new_profile(spec)
        if not p then
            ngx.log(ngx.ERR, "peerhandshakecheck: ", err)
            return ngx.exit(ngx.ERROR)
        end
        profiles[name] = p
    end
    local ok, err = upstream_tls.verify_client(p)
    if not ok then
        ngx.log(ngx.ERR, "peerhandshakecheck: ", err)
        return ngx.exit(ngx.ERROR)
    end
end

return _M

-- streamcheck: runs amesh's stream route index (lua/amesh/stream/index.lua) and protocol
-- classification (lua/amesh/stream/sniff.lua) in stock nginx for stream_lua_test.go.
-- The request body is JSON:
--   {"sets": [{"routes": [route, ...], "conns": [{"listen", "addr", "port", "protocol"}]}],
--    "bytes": [base64, ...]}
-- and the answer, in the same order:
--   {"sets": [{"selected": [id or "", ...], "detected": [calls, ...], "problems": "id,..."}],
--    "classes": [class, ...]}
-- (Debian's cjson writes an empty table as {}: empty lists are left out, problems is a
-- string.)
-- where a connection's protocol (and for "tls" its "alpn" list) is what its detection
-- returns, and class is classify's answer ("MORE" and "CLOSE" for its markers, "" for
-- none, "tls alpn=a,b sni=host" for a ClientHello).
local cjson = require("cjson.safe")
local index = require("amesh.stream.index")
local sniff = require("amesh.stream.sniff")

local _M = {}

function _M.run()
    ngx.req.read_body()
    local req = cjson.decode(ngx.req.get_body_data() or "")
    if type(req) ~= "table" then
        ngx.status = 400
        ngx.print("bad request")
        return ngx.exit(400)
    end
    local out = {sets = {}, classes = {}}
    for _, set in ipairs(req.sets or {}) do
        local entries = {}
        for _, r in ipairs(set.routes) do
            entries[#entries + 1] = {id = r.id, route = r}
        end
        local idx, problems = index.build(entries)
        local ids = {}
        for _, p in ipairs(problems) do
            ids[#ids + 1] = p.id
        end
        local res = {selected = {}, detected = {}, problems = table.concat(ids, ",")}
        for i, c in ipairs(set.conns) do
            local calls = 0
            local protocol = c.protocol
            if protocol == cjson.null or protocol == "" then
                protocol = nil
            end
            local alpn = type(c.alpn) == "table" and c.alpn or nil
            local e = idx:select(c.listen, c.addr, c.port ~= cjson.null and c.port or nil,
                                 function()
                                     calls = calls + 1
                                     return protocol, alpn
                                 end, type(c.only) == "string" and c.only or nil)
            res.selected[i] = e and e.id or ""
            res.detected[i] = calls
        end
        out.sets[#out.sets + 1] = res
    end
    for i, b in ipairs(req.bytes or {}) do
        local c, hello = sniff.classify(ngx.decode_base64(b))
        if c == "tls" then
            c = "tls alpn=" .. table.concat(hello.alpn, ",") .. " sni=" .. (hello.sni or "")
        elseif c == sniff.MORE then
            c = "MORE"
        elseif c == sniff.CLOSE then
            c = "CLOSE"
        end
        out.classes[i] = c or ""
    end
    if #out.sets == 0 then
        out.sets = nil
    end
    if #out.classes == 0 then
        out.classes = nil
    end
    ngx.header["Content-Type"] = "application/json"
    ngx.print(cjson.encode(out))
end

return _M

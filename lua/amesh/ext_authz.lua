-- amesh.ext_authz: Envoy's external authorization filter (envoy.filters.http.ext_authz
-- with an HTTP service: Istio's AuthorizationPolicy action CUSTOM) in the form amesh's
-- translator writes (internal/translate/extauthz.go), for the current request. It
-- needs nothing from APISIX and no lua-resty-http: the call is an nginx cosocket
-- (allowed in the rewrite phase), so amesh.rbac runs it as a step (action EXT_AUTHZ)
-- of amesh-rbac's ordered list in APISIX, and test/nginx in stock nginx.
--
-- check(chk, r, upstream_of, ops) is one ext_authz step on amesh.rbac's request state
-- r (respond(res) answers with its result):
--   enabled    when enabled_by is absent or the value of its key under the RBAC
--              filters' metadata (the shadow steps before it wrote it) matches (a
--              missing value does not; invert flips), it asks the authorization server:
--                request  the original method, path_prefix .. the :path (normalised as
--                         the connection manager does, query included; as the steps
--                         before it left the request), no body
--                         (content-length: 0), the request headers allowed_headers
--                         selects (Envoy's defaults are in the list: authorization,
--                         :method, :path, :authority as Host; repeated headers joined
--                         with ","), then headers_to_add; one endpoint of the cluster's
--                         upstream (upstream_of(id)), the whole call within timeout.
--                200      the request goes on, with the answer's headers that
--                         upstream_headers selects set on it and those named in
--                         x-envoy-auth-headers-to-remove removed (through ops, so
--                         that the steps after it read them).
--                5xx, no answer, no such upstream
--                         an error: status_on_error with no body, unless
--                         failure_mode_allow (then the request goes on).
--                other    denied: the client gets that status, the answer's body and
--                         its headers client_headers selects (all but Host without it).
-- It returns nil to let the request go on, or {status, body, headers} to answer it.
local rbac = require("amesh.rbac")
local jwt = require("amesh.jwt")
local ngx = ngx
local ngx_var = ngx.var
local tcp = ngx.socket.tcp
local find, lower, byte = string.find, string.lower, string.byte
local concat = table.concat
local ipairs, pairs, type, tonumber, tostring = ipairs, pairs, type, tonumber, tostring
local random = math.random

local _M = {}

-- rbac_ns is the dynamic metadata namespace of Envoy's RBAC filters, where a shadow
-- step writes its effective policy id.
_M.rbac_ns = "envoy.filters.http.rbac"

local function any_match(list, name)
    for _, m in ipairs(list or {}) do
        if rbac.str_match(m, name) then
            return true
        end
    end
    return false
end

local function fail_closed(why)
    return {status = 403, body = "amesh: " .. why .. "\n", headers = {}}
end

-- pick chooses an endpoint of the upstream: among the nodes of the highest priority
-- with a weight, one at random by weight.
local function pick(up)
    local nodes = up.nodes
    if type(nodes) ~= "table" then
        return nil
    end
    local best, total, cands = nil, 0, {}
    for _, n in ipairs(nodes) do
        local w = tonumber(n.weight) or 1
        local p = tonumber(n.priority) or 0
        if w > 0 then
            if best == nil or p > best then
                best, total, cands = p, 0, {}
            end
            if p == best then
                cands[#cands + 1] = n
                total = total + w
            end
        end
    end
    if #cands == 0 then
        return nil
    end
    local r = random() * total
    for _, n in ipairs(cands) do
        r = r - (tonumber(n.weight) or 1)
        if r < 0 then
            return n
        end
    end
    return cands[#cands]
end

-- check_request returns the authorization request, as Envoy's HTTP client builds it
-- from the request as the steps before it left it.
local function check_request(r, chk)
    local path, query = r:path()
    if not path then
        return nil
    end
    local hs = {}
    local order = {}
    local function put(name, value)
        if hs[name] == nil then
            order[#order + 1] = name
            hs[name] = value
        else
            hs[name] = hs[name] .. "," .. value
        end
    end
    local pseudo = {
        {":authority", ngx_var.http_host},
        {":path", path .. query},
        {":method", ngx.req.get_method()},
        {":scheme", ngx_var.scheme},
    }
    for _, kv in ipairs(pseudo) do
        if kv[2] and any_match(chk.allowed_headers, kv[1]) then
            put(kv[1], kv[2])
        end
    end
    for name, v in pairs(ngx.req.get_headers(0)) do
        if name ~= "host" and name ~= "content-length" and name ~= "x-envoy-auth-partial-body"
                and any_match(chk.allowed_headers, name) then
            if type(v) == "table" then
                v = concat(v, ",")
            end
            put(name, v)
        end
    end
    for _, kv in ipairs(chk.headers_to_add or {}) do
        if hs[kv[1]] == nil then
            order[#order + 1] = kv[1]
        end
        hs[kv[1]] = kv[2]
    end
    local method = hs[":method"] or "GET"
    local target = (chk.path_prefix or "") .. (hs[":path"] or "/")
    local lines = {method .. " " .. target .. " HTTP/1.1"}
    if hs[":authority"] then
        lines[#lines + 1] = "host: " .. hs[":authority"]
    end
    lines[#lines + 1] = "content-length: 0"
    for _, name in ipairs(order) do
        if byte(name, 1) ~= 58 then -- pseudo-headers are the request line and Host
            lines[#lines + 1] = name .. ": " .. hs[name]
        end
    end
    lines[#lines + 1] = ""
    lines[#lines + 1] = ""
    return concat(lines, "\r\n")
end

local function remaining(deadline)
    ngx.update_time()
    return (deadline - ngx.now()) * 1000
end

-- read_body reads a response body framed by content-length, chunked encoding or
-- the end of the connection; keep says whether the connection may be reused.
local function read_body(sock, status, hdr, deadline)
    if status < 200 or status == 204 or status == 304 then
        return "", true
    end
    local te = hdr["transfer-encoding"]
    if te and find(lower(te), "chunked", 1, true) then
        local parts = {}
        while true do
            sock:settimeout(remaining(deadline))
            local line, err = sock:receive("*l")
            if not line then
                return nil, err
            end
            local size = tonumber(line:match("^%s*(%x+)"), 16)
            if not size then
                return nil, "bad chunk size"
            end
            if size == 0 then
                repeat
                    line, err = sock:receive("*l")
                    if not line then
                        return nil, err
                    end
                until line == ""
                return concat(parts), true
            end
            sock:settimeout(remaining(deadline))
            local data
            data, err = sock:receive(size)
            if not data then
                return nil, err
            end
            parts[#parts + 1] = data
            sock:receive("*l")
        end
    end
    local cl = hdr["content-length"]
    if cl then
        local n = tonumber(cl)
        if not n or n < 0 then
            return nil, "bad content-length"
        end
        if n == 0 then
            return "", true
        end
        sock:settimeout(remaining(deadline))
        local data, err = sock:receive(n)
        if not data then
            return nil, err
        end
        return data, true
    end
    sock:settimeout(remaining(deadline))
    local data, err = sock:receive("*a")
    if not data then
        return nil, err
    end
    return data, false
end

-- call sends the authorization request to node and returns the status, the headers
-- (a list of {name, value}, names lowercase) and the body, or nil and an error.
local function call(node, up, req, deadline)
    local sock = tcp()
    local connect = remaining(deadline)
    local ct = up.timeout and tonumber(up.timeout.connect)
    if ct and ct * 1000 < connect then
        connect = ct * 1000
    end
    if connect <= 0 then
        return nil, "timeout"
    end
    sock:settimeout(connect)
    local ok, err = sock:connect(node.host, tonumber(node.port))
    if not ok then
        return nil, "connect: " .. tostring(err)
    end
    sock:settimeout(remaining(deadline))
    ok, err = sock:send(req)
    if not ok then
        sock:close()
        return nil, "send: " .. tostring(err)
    end
    local status, list, hdr
    repeat
        sock:settimeout(remaining(deadline))
        local line
        line, err = sock:receive("*l")
        if not line then
            sock:close()
            return nil, "status line: " .. tostring(err)
        end
        status = tonumber(line:match("^HTTP/1%.[01] (%d%d%d)"))
        if not status then
            sock:close()
            return nil, "bad status line"
        end
        list, hdr = {}, {}
        while true do
            line, err = sock:receive("*l")
            if not line then
                sock:close()
                return nil, "headers: " .. tostring(err)
            end
            if line == "" then
                break
            end
            local name, value = line:match("^([^:%s]+):%s*(.-)%s*$")
            if name then
                name = lower(name)
                list[#list + 1] = {name, value}
                hdr[name] = hdr[name] and (hdr[name] .. "," .. value) or value
            end
        end
    until status >= 200 or status == 101
    local body, keep = read_body(sock, status, hdr, deadline)
    if not body then
        sock:close()
        return nil, "body: " .. tostring(keep)
    end
    if keep and not (hdr.connection and find(lower(hdr.connection), "close", 1, true)) then
        sock:setkeepalive(60000, 16)
    else
        sock:close()
    end
    return status, list, body
end

-- Headers nginx frames a response with itself.
local hop = {
    ["connection"] = true, ["keep-alive"] = true, ["transfer-encoding"] = true,
    ["content-length"] = true, ["proxy-connection"] = true, ["upgrade"] = true,
    ["te"] = true, ["trailer"] = true,
}

local function on_error(chk, why, ops)
    ngx.log(ngx.WARN, "amesh ext_authz to cluster ", chk.cluster, ": ", why)
    if chk.failure_mode_allow then
        if chk.failure_mode_allow_header_add then
            ops.set("x-envoy-auth-failure-mode-allowed", "true")
        end
        return nil
    end
    return {status = chk.status_on_error or 403, body = "", headers = {}}
end

local function call_server(r, chk, upstream_of, ops)
    local req = check_request(r, chk)
    if not req then
        return fail_closed("the request's path cannot be normalised as Envoy's connection manager does")
    end
    local deadline = ngx.now() + (chk.timeout or 0)
    local up = chk.upstream_id and upstream_of and upstream_of(chk.upstream_id)
    if not up then
        return on_error(chk, "no upstream", ops)
    end
    if up.scheme and up.scheme ~= "http" then
        return fail_closed("the authorization service's upstream is not plaintext HTTP")
    end
    local node = pick(up)
    if not node then
        return on_error(chk, "no endpoint", ops)
    end
    if type(node.metadata) == "table" and node.metadata.amesh_tls then
        return fail_closed("the authorization service's endpoint needs TLS")
    end
    local status, list, body = call(node, up, req, deadline)
    if not status then
        return on_error(chk, list, ops)
    end
    if status >= 500 and status <= 599 then
        return on_error(chk, "status " .. status, ops)
    end
    if status == 200 then
        local remove
        for _, kv in ipairs(list) do
            if kv[1] == "x-envoy-auth-headers-to-remove" then
                remove = remove or {}
                for n in kv[2]:gmatch("[^,]+") do
                    n = n:match("^%s*(.-)%s*$")
                    if n ~= "" then
                        remove[#remove + 1] = lower(n)
                    end
                end
            elseif any_match(chk.upstream_headers, kv[1]) then
                ops.set(kv[1], kv[2])
            end
        end
        for _, n in ipairs(remove or {}) do
            ops.set(n, nil)
        end
        return nil
    end
    local headers = {}
    if body ~= "" then
        headers[#headers + 1] = {"content-type", "text/plain"}
    end
    for _, kv in ipairs(list) do
        local n = kv[1]
        local allowed
        if chk.client_headers then
            allowed = any_match(chk.client_headers, n)
        else
            allowed = n ~= "host"
        end
        if allowed and not hop[n] then
            headers[#headers + 1] = kv
        end
    end
    return {status = status, body = body, headers = headers}
end

function _M.check(chk, r, upstream_of, ops)
    local e = chk.enabled_by
    if e then
        local md = r.meta[_M.rbac_ns]
        local v = md and md[e.key]
        local on = v ~= nil and rbac.str_match(e.str, v) == true
        if e.invert then
            on = not on
        end
        if not on then
            return nil
        end
    end
    ops = ops or jwt.nginx_ops
    local res = call_server(r, chk, upstream_of, ops)
    r:headers_changed()
    return res
end

-- respond answers the request with res (a run result). A header the answer repeats
-- keeps its last value, as Envoy sets each in turn on its local reply; an empty body
-- is empty (not nginx's error page), as Envoy's local reply.
function _M.respond(res)
    ngx.status = res.status
    for _, kv in ipairs(res.headers) do
        ngx.header[kv[1]] = kv[2]
    end
    if res.body == "" then
        ngx.header["content-length"] = 0
        ngx.send_headers()
    else
        ngx.print(res.body)
    end
    return ngx.exit(res.status)
end

return _M

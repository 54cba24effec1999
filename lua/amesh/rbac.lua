-- amesh.rbac: evaluates Envoy RBAC rules (envoy.filters.http.rbac, action ALLOW or
-- DENY) in the form amesh's translator writes (internal/translate/rbacrules.go) for
-- the current request. It needs nothing from APISIX: the amesh-rbac plugin calls it
-- in APISIX, and test/nginx calls it in stock nginx.
--
-- decide(conf) runs the filters in order, as Envoy runs its RBAC filters in HTTP
-- filter order, and returns the name of the first filter that denies the request
-- (and the policy that matched, for DENY), or nil when every filter lets it through.
-- The other filters Envoy runs in that order are steps of the same list, on the same
-- request state: a jwt_authn filter (action JWT) runs amesh.jwt, whose verified
-- payloads are the dynamic metadata that the "meta" conditions of the steps after it
-- read (Istio's requestPrincipals and request.auth.claims); an RBAC filter's shadow
-- rules (action SHADOW) write the name of the first policy that matches as the RBAC
-- filters' metadata under their key; an ext_authz filter (action EXT_AUTHZ) runs
-- amesh.ext_authz, which reads that metadata and may ask the authorization server.
--
-- Request attributes, as Envoy's RBAC filter sees them:
--   url_path   the :path after the connection manager's normalisation, without query
--              and fragment. From $request_uri (the raw request target): with
--              normalize_path, dot segments are removed (RFC 3986 5.2.4); with
--              merge_slashes, repeated slashes are merged. A path with bytes Envoy's
--              normaliser would rewrite (percent-encoding, backslash, anything outside
--              RFC 3986's pchar set) is one the plugin does not know: the rule's node
--              then takes the value the translator put in its "u" field (what would
--              deny).
--   headers    repeated headers joined with "," (Envoy's header matchers); :method,
--              :authority (Host), :scheme, :path (the normalised path with the query).
--   ports      the connection's original destination port, from conf.port_var.
--   ip         "direct": the physical peer ($realip_remote_addr, else $remote_addr);
--              "source": the peer after PROXY protocol ($remote_addr, which nginx's
--              realip module sets from it); "remote": Envoy's remote address, that
--              same address with conf.remote_from "peer", and with "xff" the
--              x-forwarded-for entry Envoy takes (xff_remote). A realip set from a
--              request header would make "source" differ from Envoy's; amesh's APISIX
--              sets none.
--   peer       the downstream TLS peer (amesh.tls_peer): an "auth" node is Envoy's
--              authenticated principal. No TLS: no match. Without principal_name ("n"):
--              any TLS connection. Otherwise the name is matched against each URI SAN
--              of the peer certificate, then each DNS SAN, then its subject (RFC 2253),
--              as Envoy's AuthenticatedMatcher does; a connection without a verified
--              certificate has none of them and the subject "". A TLS connection whose
--              peer nginx cannot read (the module is not loaded) takes "u".
local ngx = ngx
local ngx_var = ngx.var
local tls_peer = require("amesh.tls_peer")
local re_find = ngx.re.find
local byte, sub, find, lower = string.byte, string.sub, string.find, string.lower
local concat = table.concat
local tonumber, type, ipairs = tonumber, type, ipairs
local setmetatable, next = setmetatable, next
local jwt = require("amesh.jwt")
-- amesh.ext_authz, which requires this module, is loaded when a step needs it.
local ext_authz

local _M = {}

-- IP addresses ---------------------------------------------------------------------

-- parse_ip returns the address as a table of bytes (4 or 16), or nil.
local function parse_ipv4(s, out, at)
    local n = 0
    for part in (s .. "."):gmatch("([^.]*)%.") do
        n = n + 1
        if n > 4 or not part:match("^%d%d?%d?$") then
            return nil
        end
        if #part > 1 and sub(part, 1, 1) == "0" then
            return nil
        end
        local v = tonumber(part)
        if v > 255 then
            return nil
        end
        out[at + n] = v
    end
    if n ~= 4 then
        return nil
    end
    return out
end

local function parse_ipv6(s)
    local zone = find(s, "%", 1, true)
    if zone then
        s = sub(s, 1, zone - 1)
    end
    local head, tail = s, nil
    local dc = find(s, "::", 1, true)
    if dc then
        head, tail = sub(s, 1, dc - 1), sub(s, dc + 2)
        if find(tail, "::", 1, true) then
            return nil
        end
    end
    local function groups(part)
        local g = {}
        if part == "" then
            return g
        end
        for x in (part .. ":"):gmatch("([^:]*):") do
            g[#g + 1] = x
        end
        return g
    end
    local hg, tg = groups(head), tail and groups(tail) or {}
    local words = {}
    local function push(list, allow_v4)
        for i, x in ipairs(list) do
            if allow_v4 and i == #list and find(x, ".", 1, true) then
                local b = parse_ipv4(x, {}, 0)
                if not b then
                    return false
                end
                words[#words + 1] = b[1] * 256 + b[2]
                words[#words + 1] = b[3] * 256 + b[4]
            else
                if not x:match("^%x%x?%x?%x?$") then
                    return false
                end
                words[#words + 1] = tonumber(x, 16)
            end
        end
        return true
    end
    if not push(hg, tail == nil) then
        return nil
    end
    local nh = #words
    local tw = {}
    if tail then
        local saved = words
        words = tw
        if not push(tg, true) then
            return nil
        end
        words = saved
        if nh + #tw > 7 then
            return nil
        end
        for _ = 1, 8 - nh - #tw do
            words[#words + 1] = 0
        end
        for _, w in ipairs(tw) do
            words[#words + 1] = w
        end
    end
    if #words ~= 8 then
        return nil
    end
    local out = {}
    for i, w in ipairs(words) do
        out[2 * i - 1] = (w - w % 256) / 256
        out[2 * i] = w % 256
    end
    return out
end

local function parse_ip(s)
    if type(s) ~= "string" or s == "" then
        return nil
    end
    if find(s, ":", 1, true) then
        return parse_ipv6(s)
    end
    return parse_ipv4(s, {}, 0)
end
_M.parse_ip = parse_ip

-- in_range: the first len bits of a and base agree (same family only, as Envoy's
-- CidrRange compares addresses of one version).
local function in_range(a, base, len)
    if #a ~= #base then
        return false
    end
    local i = 1
    while len >= 8 do
        if a[i] ~= base[i] then
            return false
        end
        i, len = i + 1, len - 8
    end
    if len > 0 then
        local m = 2 ^ (8 - len)
        if (a[i] - a[i] % m) ~= (base[i] - base[i] % m) then
            return false
        end
    end
    return true
end

-- Paths ----------------------------------------------------------------------------

-- pchar without pct-encoded (RFC 3986): unreserved, sub-delims, ":" and "@", and "/".
local function plain_path(p)
    return not find(p, "[^%w%-%._~!%$&'%(%)%*%+,;=:@/]")
end

local function remove_dots(p)
    local out = {}
    local trailing = false
    for seg in (sub(p, 2) .. "/"):gmatch("([^/]*)/") do
        trailing = false
        if seg == "." then
            trailing = true
        elseif seg == ".." then
            if #out > 0 then
                out[#out] = nil
            end
            trailing = true
        else
            out[#out + 1] = seg
        end
    end
    local r = "/" .. concat(out, "/")
    if trailing and r ~= "/" then
        r = r .. "/"
    end
    return r
end

-- request_path returns the normalised path and the query ("" or "?..."), or nil
-- when the plugin cannot normalise the path as Envoy does.
local function request_path(conf)
    local uri = ngx_var.request_uri
    if not uri then
        return nil
    end
    -- Envoy strips a fragment from the :path, query included.
    local frag = find(uri, "#", 1, true)
    if frag then
        uri = sub(uri, 1, frag - 1)
    end
    local q = find(uri, "?", 1, true)
    local path, query = uri, ""
    if q then
        path, query = sub(uri, 1, q - 1), sub(uri, q)
    end
    if byte(path, 1) ~= 47 then -- "/": an absolute-form target
        return nil
    end
    if conf.normalize_path or conf.merge_slashes or conf.pct_unknown then
        if not plain_path(path) then
            return nil
        end
    end
    if conf.normalize_path then
        path = remove_dots(path)
    end
    if conf.merge_slashes then
        path = path:gsub("//+", "/")
    end
    return path, query
end
_M.request_path = request_path

-- Rules ----------------------------------------------------------------------------

-- prepared holds, per string matcher, the lowercased value of an icase matcher, and
-- per CIDR node the parsed address; keyed weakly by the config's tables.
local lowered = setmetatable({}, {__mode = "k"})
local parsed = setmetatable({}, {__mode = "k"})

-- str_match: Envoy's StringMatcher on v; nil when a regex cannot run on v.
local function str_match(m, v)
    local pat = m.v
    if m.op == "regex" then
        local from, _, err = re_find(v, pat, "jo")
        if err then
            return nil
        end
        return from ~= nil
    end
    if m.icase then
        v = lower(v)
        local l = lowered[m]
        if not l then
            l = lower(pat)
            lowered[m] = l
        end
        pat = l
    end
    local op = m.op
    if op == "exact" then
        return v == pat
    elseif op == "prefix" then
        return sub(v, 1, #pat) == pat
    elseif op == "suffix" then
        return #pat == 0 or (#v >= #pat and sub(v, -#pat) == pat)
    elseif op == "contains" then
        return find(v, pat, 1, true) ~= nil
    end
    return nil
end

-- req is what one request's evaluation has read so far.
local req_mt = {}
req_mt.__index = req_mt

-- path returns the normalised path and the query; args, when a jwt_authn step has
-- removed a token from the query, is the query the steps after it see.
function req_mt:path()
    if self.path_read == nil then
        local p, q = request_path(self.conf)
        if p and self.args ~= nil then
            q = self.args ~= "" and "?" .. self.args or ""
        end
        self.path_read = p or false
        self.query = q
    end
    return self.path_read or nil, self.query
end

function req_mt:header(name)
    if name == ":method" then
        return ngx.req.get_method()
    elseif name == ":authority" then
        return ngx_var.http_host
    elseif name == ":scheme" then
        return ngx_var.scheme
    elseif name == ":path" then
        local p, q = self:path()
        if not p then
            return nil, true
        end
        return p .. q
    end
    local hs = self.headers
    if not hs then
        hs = ngx.req.get_headers(0)
        self.headers = hs
    end
    local v = hs[name]
    if type(v) == "table" then
        return concat(v, ",")
    end
    return v
end

-- raw_headers are the request's headers as nginx holds them (repeated ones as lists).
function req_mt:raw_headers()
    local hs = self.headers
    if not hs then
        hs = ngx.req.get_headers(0)
        self.headers = hs
    end
    return hs
end

-- headers_changed forgets what was read of headers and path (a jwt_authn step
-- changed them).
function req_mt:headers_changed()
    self.headers = nil
    self.path_read = nil
end

function req_mt:port()
    if self.port_read == nil then
        self.port_read = tonumber(ngx_var[self.conf.port_var or "server_port"]) or false
    end
    return self.port_read or nil
end

-- xff_remote is Envoy's remote address without use_remote_address: the entry of
-- x-forwarded-for (repeated headers joined with ",") conf.xff_hops from the right,
-- when it is an IP address, else the peer. nil when the entry looks like an address
-- the plugin may read differently from Envoy.
function req_mt:xff_remote()
    local xff = self:header("x-forwarded-for")
    if not xff then
        return ngx_var.remote_addr
    end
    for _ = 1, self.conf.xff_hops or 0 do
        local c = find(xff, ",[^,]*$")
        if not c then
            return ngx_var.remote_addr
        end
        xff = sub(xff, 1, c - 1)
    end
    local c = find(xff, ",[^,]*$")
    if c and c < #xff then
        xff = sub(xff, c + 1)
    end
    xff = xff:match("^%s*(.-)%s*$")
    if parse_ip(xff) and not find(xff, "%", 1, true) then
        return xff
    end
    if find(xff, "^[%x:.%%]+$") then
        return nil
    end
    return ngx_var.remote_addr
end

-- addr returns the parsed address src names; false when it is not known.
function req_mt:addr(src)
    local a = self.addrs[src]
    if a ~= nil then
        return a
    end
    local s
    if src == "direct" then
        s = ngx_var.realip_remote_addr or ngx_var.remote_addr
    elseif src == "source" then
        s = ngx_var.remote_addr
    elseif src == "remote" then
        local from = self.conf.remote_from
        if from == "peer" then
            s = ngx_var.remote_addr
        elseif from == "xff" then
            s = self:xff_remote()
        end
    end
    if s == nil then
        a = false
    else
        a = parse_ip(s) or "none" -- not an IP (a unix socket): no range holds it
    end
    self.addrs[src] = a
    return a
end

-- peer returns the connection's TLS peer (see amesh.tls_peer.get).
function req_mt:peer()
    local p = self.peer_read
    if p == nil then
        p = tls_peer.get()
        if p == nil then
            p = "plaintext"
        end
        self.peer_read = p
    end
    if p == "plaintext" then
        return nil
    end
    return p
end

local eval

-- eval_auth is Envoy's AuthenticatedMatcher.
local function eval_auth(a, r, n)
    local p = r:peer()
    if p == nil then
        return false
    end
    if p == false then
        return n.u == true
    end
    local m = a.n
    if not m then
        return true
    end
    for _, list in ipairs({p.uris, p.dns}) do
        for _, v in ipairs(list) do
            local res = str_match(m, v)
            if res == nil then
                return n.u == true
            end
            if res then
                return true
            end
        end
    end
    local res = str_match(m, p.subject)
    if res == nil then
        return n.u == true
    end
    return res
end

local function is_list(t)
    return t[1] ~= nil or next(t) == nil
end

-- value_match is Envoy's ValueMatcher on v (nil when absent); nil when it cannot run.
local function value_match(m, v)
    if m.null then
        return v == ngx.null
    elseif m.num then
        if type(v) ~= "number" then
            return false
        end
        if m.num.exact then
            return v == m.num.exact
        end
        return v >= m.num.range[1] and v < m.num.range[2]
    elseif m.str then
        if type(v) ~= "string" then
            return false
        end
        return str_match(m.str, v)
    elseif m.bool ~= nil then
        return v == m.bool
    elseif m.present ~= nil then
        return m.present and v ~= nil
    end
    local list = m["or"]
    if m.list then
        if type(v) ~= "table" or not is_list(v) then
            return false
        end
        list = v
    end
    if not list then
        return false
    end
    local unknown = false
    for _, x in ipairs(list) do
        local res
        if m.list then
            res = value_match(m.list, x)
        else
            res = value_match(x, v)
        end
        if res then
            return true
        end
        unknown = unknown or res == nil
    end
    if unknown then
        return nil
    end
    return false
end

-- eval_meta is Envoy's MetadataMatcher on the request's dynamic metadata.
local function eval_meta(m, r, n)
    local v = r.meta[m.f]
    for _, k in ipairs(m.path) do
        if type(v) ~= "table" or is_list(v) and next(v) ~= nil then
            v = nil
            break
        end
        v = v[k]
    end
    local res = value_match(m.v, v)
    if res == nil then
        return n.u == true
    end
    if m.inv then
        return not res
    end
    return res
end

local function eval_header(h, r, n)
    local v, unknown = r:header(h.name)
    if unknown then
        return n.u == true
    end
    if v == nil then
        return h.miss == true
    end
    local res
    if h.str then
        res = str_match(h.str, v)
        if res == nil then
            return n.u == true
        end
    elseif h.range then
        -- absl::SimpleAtoi: optional ASCII whitespace around an optional sign and digits.
        local s = v:match("^[ \t\n\v\f\r]*([+-]?%d+)[ \t\n\v\f\r]*$")
        if not s then
            res = false
        else
            local digits = s:gsub("^[+-]", "")
            if #digits > 15 then
                return n.u == true -- beyond a double's exact integers
            end
            local x = tonumber(s)
            res = x >= h.range[1] and x < h.range[2]
        end
    else
        return h.pres == true
    end
    if h.invert then
        return not res
    end
    return res
end

local function any_of(list, r)
    if not list then
        return false
    end
    for _, x in ipairs(list) do
        if eval(x, r) then
            return true
        end
    end
    return false
end

eval = function(n, r)
    local c = n.const
    if c ~= nil then
        return c
    end
    if n.any then
        return true
    end
    local set = n["and"]
    if set then
        for _, x in ipairs(set) do
            if not eval(x, r) then
                return false
            end
        end
        return true
    end
    set = n["or"]
    if set then
        return any_of(set, r)
    end
    if n["not"] then
        return not eval(n["not"], r)
    end
    if n.path then
        local p = r:path()
        if not p then
            return n.u == true
        end
        local res = str_match(n.path, p)
        if res == nil then
            return n.u == true
        end
        return res
    end
    if n.header then
        return eval_header(n.header, r, n)
    end
    if n.auth then
        return eval_auth(n.auth, r, n)
    end
    if n.ports then
        local port = r:port()
        if not port then
            return n.u == true
        end
        return port >= n.ports[1] and port < n.ports[2]
    end
    if n.meta then
        return eval_meta(n.meta, r, n)
    end
    local ip = n.ip
    if ip then
        local a = r:addr(ip.src)
        if a == false then
            return n.u == true
        end
        if a == "none" then
            return false
        end
        local base = parsed[ip]
        if not base then
            base = parse_ip(ip.addr)
            parsed[ip] = base
        end
        if not base then
            return n.u == true
        end
        return in_range(a, base, ip.len)
    end
    return false
end

-- matched returns the name of the first of f's policies (sorted by name) that
-- matches, or nil.
local function matched(f, r)
    for _, p in ipairs(f.policies or {}) do
        if any_of(p.permissions, r) and any_of(p.principals, r) then
            return p.name
        end
    end
    return nil
end

-- denies runs an RBAC filter f (action ALLOW or DENY; another action denies) on r:
-- whether it denies, and for DENY the policy that matched.
local function denies(f, r)
    if f.action ~= "ALLOW" and f.action ~= "DENY" then
        return true
    end
    local policy = matched(f, r)
    if f.action == "DENY" then
        return policy ~= nil, policy
    end
    return policy == nil
end

-- decide runs the steps; a jwt_authn step ("JWT") that refuses the request returns
-- its name, nil and Envoy's response (amesh.jwt: {status, body, www_authenticate}),
-- an ext_authz step ("EXT_AUTHZ") that answers it its name, nil and the answer
-- (amesh.ext_authz: {status, body, headers}). ops changes the request for those steps
-- (nginx's API by default); upstream_of(id) returns the APISIX upstream an ext_authz
-- step names.
function _M.decide(conf, ops, upstream_of)
    local r = setmetatable({conf = conf, addrs = {}, meta = {}}, req_mt)
    for _, f in ipairs(conf.filters or {}) do
        local action = f.action
        if action == "JWT" then
            local resp = jwt.run(f, r, ops or jwt.nginx_ops)
            if resp then
                return f.name, nil, resp
            end
        elseif action == "SHADOW" then
            local id = matched(f, r)
            if id then
                ext_authz = ext_authz or require("amesh.ext_authz")
                local md = r.meta[ext_authz.rbac_ns]
                if not md then
                    md = {}
                    r.meta[ext_authz.rbac_ns] = md
                end
                md[f.key] = id
            end
        elseif action == "EXT_AUTHZ" then
            ext_authz = ext_authz or require("amesh.ext_authz")
            local resp = ext_authz.check(f.ext_authz, r, upstream_of, ops)
            if resp then
                return f.name, nil, resp
            end
        else
            local deny, policy = denies(f, r)
            if deny then
                return f.name, policy
            end
        end
    end
    return nil
end

-- Connections -----------------------------------------------------------------------

-- conn_mt reads a connection as Envoy's network RBAC filter (envoy.filters.network.rbac)
-- sees it: no request, so no header is present and no path matches (the translator
-- compiles those to constants; these answer the same), no dynamic metadata; every
-- address source but "dest" is the client (conn.remote), "dest" the original
-- destination (conn.dest), the port that of the original destination (conn.port); the
-- TLS peer is the connection's (amesh.tls_peer, in the http and the stream subsystem).
local conn_mt = setmetatable({}, {__index = req_mt})
conn_mt.__index = conn_mt

function conn_mt.header()
    return nil
end

function conn_mt.path()
    return nil
end

function conn_mt:port()
    return self.conn.port
end

function conn_mt:addr(src)
    local key = src == "dest" and "dest" or "remote"
    local a = self.addrs[key]
    if a == nil then
        local s = self.conn[key]
        if s == nil then
            a = false
        else
            a = parse_ip(s) or "none"
        end
        self.addrs[key] = a
    end
    return a
end

--- decide_connection runs the network RBAC filters of conf.filters (actions ALLOW and
-- DENY; anything else denies) in order for the connection conn = {remote = client
-- address, dest = original destination address, port = its port} and returns the
-- name of the first that denies it (and the policy that matched, for DENY), or nil.
function _M.decide_connection(conf, conn)
    local r = setmetatable({conf = conf, conn = conn, addrs = {}, meta = {}}, conn_mt)
    for _, f in ipairs(conf.filters or {}) do
        local deny, policy = denies(f, r)
        if deny then
            return f.name, policy
        end
    end
    return nil
end

-- str_match is Envoy's StringMatcher (the translator's form) on v; nil when a regex
-- cannot run on v.
_M.str_match = str_match

-- deny_body is what Envoy's RBAC filter answers a request it denies (status 403).
_M.deny_body = "RBAC: access denied"

return _M

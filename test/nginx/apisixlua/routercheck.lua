-- GET /routercheck inside real APISIX: the amesh_host_uri router and APISIX's
-- radixtree_host_uri, over the same routes (a collection of amesh's provider, with
-- APISIX's own route filter), choose the same route for random requests after each of
-- many random route changes. radixtree_host_uri rebuilds everything on every change;
-- amesh_host_uri only what the change log names. Answers "ok <n> requests, <m>
-- matched" or the differences.
local core = require("apisix.core")
local collection = require("amesh.config.collection")

local _M = {}

-- fresh loads a private copy of a router module (its state lives in upvalues), so
-- the APISIX serving this request keeps its own.
local function fresh(name)
    local saved = package.loaded[name]
    package.loaded[name] = nil
    local m = require(name)
    package.loaded[name] = saved
    return m
end

local host_pool = {"a.com", "b.com", "*.b.com", "*.com", "c.org", "A.Org", "x.*.net", "*"}
local uri_pool = {"/", "/x", "/x/*", "/x/y", "/*", "/y/*", "/x/y/*"}
local req_hosts = {"a.com", "b.com", "x.b.com", "y.z.b.com", "com", "c.org", "a.org", "x.q.net", "d.net"}
local req_uris = {"/", "/x", "/x/y", "/x/z", "/y/q", "/z", "/x/y/z"}

local function pick(t)
    return t[math.random(1, #t)]
end

local function random_route()
    local r = {}
    local h = math.random(1, 6)
    if h == 1 then
        r.host = pick(host_pool)
    elseif h > 2 then
        r.hosts = {}
        for _ = 1, math.random(1, 2) do
            r.hosts[#r.hosts + 1] = pick(host_pool)
        end
    end
    if math.random(1, 4) == 1 then
        r.uris = {pick(uri_pool), pick(uri_pool)}
    else
        r.uri = pick(uri_pool)
    end
    if math.random(1, 2) == 1 then
        r.priority = math.random(0, 2)
    end
    if math.random(1, 4) == 1 then
        r.methods = {pick({"GET", "POST"})}
    end
    if math.random(1, 4) == 1 then
        r.vars = {{"arg_k", "==", tostring(math.random(1, 2))}}
    end
    if math.random(1, 12) == 1 then
        r.status = 0
    end
    r.upstream = {type = "roundrobin", nodes = {["127.0.0.1:1"] = 1}}
    return core.json.encode(r)
end

local function describe(ok, ctx)
    if not ok then
        return "no match"
    end
    local m = ctx.curr_req_matched or {}
    return ctx.matched_route.value.id .. " path=" .. tostring(m._path) .. " host=" .. tostring(m._host)
end

function _M.run()
    local seed = tonumber(ngx.var.arg_seed) or ngx.now() * 1000
    math.randomseed(seed)
    local stock = fresh("apisix.http.router.radixtree_host_uri")
    local amesh = fresh("apisix.http.router.amesh_host_uri")
    local routes = collection.new("/routes", {
        decode = core.json.decode,
        filter = require("apisix.router").filter_test,
    })
    stock.user_routes = routes
    amesh.user_routes = routes
    local failures, requests, matched = {}, 0, 0
    for step = 1, tonumber(ngx.var.arg_steps) or 300 do
        for _ = 1, math.random(1, 3) do
            local key = "/routes/r" .. math.random(1, 40)
            routes:apply(key, math.random(1, 5) > 1 and random_route() or nil)
        end
        routes:commit_round()
        for _ = 1, 20 do
            local var = {host = pick(req_hosts), uri = pick(req_uris),
                         request_method = pick({"GET", "POST"}), remote_addr = "127.0.0.1",
                         arg_k = tostring(math.random(1, 2))}
            local a, b = {var = var}, {var = var}
            local got_stock = describe(stock.match(a), a)
            local got_amesh = describe(amesh.match(b), b)
            requests = requests + 1
            if got_stock ~= "no match" then
                matched = matched + 1
            end
            if got_stock ~= got_amesh and #failures < 20 then
                failures[#failures + 1] = "seed " .. seed .. " step " .. step .. ": " .. var.request_method
                    .. " " .. var.host .. var.uri .. "?k=" .. var.arg_k .. ": radixtree_host_uri "
                    .. got_stock .. ", amesh_host_uri " .. got_amesh
            end
        end
    end
    if #failures > 0 then
        ngx.say(table.concat(failures, "\n"))
        return
    end
    ngx.say("ok ", requests, " requests, ", matched, " matched")
end

return _M

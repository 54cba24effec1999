-- amesh_host_uri: APISIX's radixtree_host_uri router, kept up to date route by route.
-- Select it with `apisix.router.http: amesh_host_uri` (this file must be on APISIX's
-- Lua path: amesh's lua/ directory in `apisix.extra_lua_path`).
--
-- It matches exactly as radixtree_host_uri does: the routes of the request's host
-- (one URI radixtree per host), then those of the wildcard hosts, longest first, then
-- the routes without hosts. radixtree_host_uri rebuilds every tree whenever the routes'
-- conf_version changes; with amesh's config provider, which logs the ids each
-- conf_version changed (changes_since), this router rebuilds only the trees of the
-- hosts those routes had or have. With another provider, or when the log does not
-- reach back far enough, or when the services changed (a route may take its hosts
-- from its service), it rebuilds everything, like radixtree_host_uri.
local require = require
local router = require("apisix.utils.router")
local core = require("apisix.core")
local event = require("apisix.core.event")
local get_services = require("apisix.http.service").services
local service_fetch = require("apisix.http.service").get
local hosts_index = require("amesh.router.hosts")
local ipairs = ipairs
local pairs = pairs
local type = type
local loadstring = loadstring

local _M = {version = 0.1}

local cached_router_version
local cached_service_version
local index
-- The router over the wildcard hosts (nil when there is none).
local wild_router


-- entry returns the radixtree entry of a route and its hosts, as radixtree_host_uri
-- builds them; nil for a route that is disabled or whose filter_func does not load.
local function entry(route)
    if type(route) ~= "table" then
        return nil
    end
    local status = core.table.try_read_attr(route, "value", "status")
    if status and status ~= 1 then
        return nil
    end

    local filter_fun, err
    if route.value.filter_func then
        filter_fun, err = loadstring("return " .. route.value.filter_func,
                                     "router#" .. route.value.id)
        if not filter_fun then
            core.log.error("failed to load filter function: ", err,
                           " route id: ", route.value.id)
            return nil
        end
        filter_fun = filter_fun()
    end

    local hosts = route.value.hosts
    if not hosts then
        if route.value.host then
            hosts = {route.value.host}
        elseif route.value.service_id then
            local service = service_fetch(route.value.service_id)
            if not service then
                core.log.error("failed to fetch service configuration by ",
                               "id: ", route.value.service_id)
            else
                hosts = service.value.hosts
            end
        end
    end

    return {
        paths = route.value.uris or route.value.uri,
        methods = route.value.methods,
        priority = route.value.priority,
        remote_addrs = route.value.remote_addrs or route.value.remote_addr,
        vars = route.value.vars,
        filter_fun = filter_fun,
        handler = function (api_ctx, match_opts)
            api_ctx.matched_params = nil
            api_ctx.matched_route = route
            api_ctx.curr_req_matched = match_opts.matched
            api_ctx.real_curr_req_matched_path = match_opts.matched._path
        end
    }, hosts
end


local function new_index()
    return hosts_index.new({
        entry = entry,
        build = router.new,
        order = function(id)
            return _M.user_routes.values_hash[id] or 0
        end,
    })
end


local function build_wild_router()
    local entries = {}
    for host_rev in pairs(index.wild) do
        entries[#entries + 1] = {
            paths = host_rev,
            filter_fun = function(vars, opts, ...)
                local sub = index.wild[host_rev]
                return sub and sub:dispatch(vars.uri, opts, ...)
            end,
            handler = function (api_ctx, match_opts)
                api_ctx.real_curr_req_matched_host = match_opts.matched._path
            end
        }
    end
    wild_router = #entries > 0 and router.new(entries) or nil
end


-- update brings the index up to date with the routes; ids lists the routes that
-- changed, nil means all of them.
local function update(user_routes, ids)
    if not ids then
        index = new_index()
        for _, route in ipairs(user_routes.values or {}) do
            if type(route) == "table" then
                index:set(route.value.id, route)
            end
        end
    else
        for _, id in ipairs(ids) do
            index:set(id, user_routes:get(id))
        end
    end
    if index:flush() then
        build_wild_router()
    end
    event.push(event.CONST.BUILD_ROUTER, user_routes.values)
end


function _M.match(api_ctx)
    local user_routes = _M.user_routes
    local _, service_version = get_services()
    if not cached_router_version or cached_router_version ~= user_routes.conf_version
        or not cached_service_version or cached_service_version ~= service_version
    then
        local ids
        if index and cached_service_version == service_version and user_routes.changes_since then
            ids = user_routes:changes_since(cached_router_version)
        end
        update(user_routes, ids)
        cached_router_version = user_routes.conf_version
        cached_service_version = service_version
    end

    return _M.matching(api_ctx)
end


function _M.matching(api_ctx)
    core.log.info("route match mode: amesh_host_uri")

    local match_opts = core.tablepool.fetch("route_match_opts", 0, 16)
    match_opts.method = api_ctx.var.request_method
    match_opts.remote_addr = api_ctx.var.remote_addr
    match_opts.vars = api_ctx.var
    match_opts.host = api_ctx.var.host
    match_opts.matched = core.tablepool.fetch("matched_route_record", 0, 4)

    local host_rev = api_ctx.var.host:reverse()
    local ok
    local sub = index.exact[host_rev]
    if sub then
        ok = sub:dispatch(api_ctx.var.uri, match_opts, api_ctx, match_opts)
        if ok then
            api_ctx.real_curr_req_matched_host = host_rev
        end
    end
    if not ok and wild_router then
        ok = wild_router:dispatch(host_rev, match_opts, api_ctx, match_opts)
    end
    if ok then
        if api_ctx.real_curr_req_matched_path then
            api_ctx.curr_req_matched._path = api_ctx.real_curr_req_matched_path
            api_ctx.real_curr_req_matched_path = nil
        end
        if api_ctx.real_curr_req_matched_host then
            api_ctx.curr_req_matched._host = api_ctx.real_curr_req_matched_host:reverse()
            api_ctx.real_curr_req_matched_host = nil
        end
        core.tablepool.release("route_match_opts", match_opts)
        return true
    end

    ok = index.only:dispatch(api_ctx.var.uri, match_opts, api_ctx, match_opts)
    core.tablepool.release("route_match_opts", match_opts)
    return ok
end


return _M

-- An index of routes by host, kept up to date route by route, for a router shaped like
-- APISIX's radixtree_host_uri: one URI router per host (keyed by the reversed host,
-- as that router keys them), a router over the hosts, and one URI router for the
-- routes without hosts. A change of one route rebuilds only the URI routers of the
-- hosts it had or has; the router over the hosts is rebuilt only when the set of
-- wildcard hosts changes (exact hosts are looked up in a table).
--
-- A host with a "*" anywhere is a wildcard: APISIX's radixtree keeps every path
-- without "*" in an exact-match table that it tries before its prefix tree, so exact
-- hosts looked up in a table first and wildcard hosts in a tree afterwards match the
-- same requests in the same order.
--
-- Nothing here needs APISIX: how a route becomes a radixtree entry, which hosts it
-- has, how a URI router is built and in which order routes are inserted are passed in.
local pairs = pairs
local next = next
local ipairs = ipairs
local setmetatable = setmetatable
local str_find = string.find
local tab_sort = table.sort

local _M = {}
local mt = {__index = _M}

--- new returns an empty index. opts:
--   entry(item)  -> the radixtree entry of a route, and its hosts (an array, or nil
--                   for a route without hosts); nil if the route is not routed
--   build(list)  -> a URI router over an array of entries
--   order(id)    -> a number: entries of a host are inserted in this order (APISIX
--                   inserts them in the order of its values array)
function _M.new(opts)
    local self = setmetatable({
        entry = opts.entry,
        build = opts.build,
        order = opts.order,
    }, mt)
    self:reset()
    return self
end

--- reset forgets every route (the routers are rebuilt on the next flush).
function _M.reset(self)
    -- id -> {item, entry, hosts (reversed) or nil}
    self.routes = {}
    -- reversed host -> {id = true}
    self.host_ids = {}
    -- reversed host -> URI router, for exact and wildcard hosts
    self.exact = {}
    self.wild = {}
    -- ids of the routes without hosts, and their router
    self.only_ids = {}
    self.only = nil
    self.dirty = {}
    self.only_dirty = true
    self.wild_changed = true
end

local function is_wild(host_rev)
    return str_find(host_rev, "*", 1, true) ~= nil
end
_M.is_wild = is_wild

--- set makes id route item (nil: the route is gone). An item that is the same table as
-- before changes nothing.
function _M.set(self, id, item)
    local old = self.routes[id]
    if old and old.item == item then
        return
    end
    if old then
        if old.hosts then
            for _, h in ipairs(old.hosts) do
                self.host_ids[h][id] = nil
                self.dirty[h] = true
            end
        elseif old.entry then
            self.only_ids[id] = nil
            self.only_dirty = true
        end
        self.routes[id] = nil
    end
    if not item then
        return
    end
    local entry, hosts = self.entry(item)
    local r = {item = item, entry = entry}
    self.routes[id] = r
    if not entry then
        return
    end
    if not hosts then
        self.only_ids[id] = true
        self.only_dirty = true
        return
    end
    local revs = {}
    for i, host in ipairs(hosts) do
        local h = host:reverse()
        revs[i] = h
        local ids = self.host_ids[h]
        if not ids then
            ids = {}
            self.host_ids[h] = ids
        end
        ids[id] = true
        self.dirty[h] = true
    end
    r.hosts = revs
end

-- entries returns the entries of ids, in insertion order.
local function entries(self, ids)
    local list = {}
    for id in pairs(ids) do
        list[#list + 1] = id
    end
    local order = self.order
    tab_sort(list, function(a, b)
        local oa, ob = order(a), order(b)
        if oa ~= ob then
            return oa < ob
        end
        return a < b
    end)
    for i, id in ipairs(list) do
        list[i] = self.routes[id].entry
    end
    return list
end

--- flush rebuilds the URI routers of the hosts that changed (and of the routes
-- without hosts if they changed). It returns true when the set of wildcard hosts
-- changed, so that the caller rebuilds its router over them.
function _M.flush(self)
    local wild_changed = self.wild_changed
    for h in pairs(self.dirty) do
        local ids = self.host_ids[h]
        local table_of = is_wild(h) and self.wild or self.exact
        if not ids or next(ids) == nil then
            self.host_ids[h] = nil
            if table_of[h] and table_of == self.wild then
                wild_changed = true
            end
            table_of[h] = nil
        else
            if table_of == self.wild and not table_of[h] then
                wild_changed = true
            end
            table_of[h] = self.build(entries(self, ids))
        end
    end
    self.dirty = {}
    if self.only_dirty then
        self.only = self.build(entries(self, self.only_ids))
        self.only_dirty = false
    end
    self.wild_changed = false
    return wild_changed
end

return _M

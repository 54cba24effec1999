-- One worker's follower of the shared dicts libxds.so writes: it polls the version,
-- reads the journal (amesh.config.journal) and applies only the changed keys to the
-- collections (amesh.config.collection) of their kinds; a kind is re-read whole only
-- when the journal says so or the worker fell behind it. Nothing here needs APISIX.
local journal = require("amesh.config.journal")

local ngx = ngx
local pairs = pairs
local ipairs = ipairs
local pcall = pcall
local str_find = string.find
local str_sub = string.sub
local next = next

local _M = {}

local config_dict, reader
local log = function() end
local block_sleep

-- kind ("/routes") -> array of collections; kind_list: the kinds held.
local kinds = {}
local kind_list = {}
-- Keys listed once for the collections created at the same version (APISIX creates
-- a dozen in init_worker); dropped at the first poll.
local listed

local stats = {polls = 0, applied = 0, keys = 0, resyncs = 0, version = nil}

--- configure sets the dicts and hooks:
--   log(level, ...)       ngx.log-like
--   block_sleep(seconds)  a sleep usable where ngx.sleep is not (init_worker)
function _M.configure(config, version, opts)
    config_dict = config
    reader = journal.new(version)
    opts = opts or {}
    log = opts.log or log
    block_sleep = opts.block_sleep
end

-- kind_of returns the kind of a key: "/routes/1" -> "/routes", "/plugins" -> "/plugins".
local function kind_of(key)
    local slash = str_find(key, "/", 2, true)
    if slash then
        return str_sub(key, 1, slash - 1)
    end
    return key
end
_M.kind_of = kind_of

local function get(key)
    return (config_dict:get(key))
end

-- list returns {kind = {key = true}} of every key in the config dict.
local function list()
    local by_kind = {}
    for _, key in ipairs(config_dict:get_keys(0)) do
        local kind = kind_of(key)
        local set = by_kind[kind]
        if not set then
            set = {}
            by_kind[kind] = set
        end
        set[key] = true
    end
    return by_kind
end

local empty = {}

--- add loads coll with the dict's objects of its kind and from then on keeps it up to
-- date. The first call blocks until libxds.so has written a first version (as
-- APISIX's stock provider does), sleeping with block_sleep. If loading fails, the
-- error is logged and the next poll loads the kind again.
function _M.add(coll)
    if reader.version == nil then
        local v = reader:current()
        while v == nil do
            block_sleep(0.001)
            v = reader:current()
        end
        -- The version first, then the keys: whatever a later version changes is in
        -- its journal entry, even if the keys read here already show it.
        reader:commit(v)
    end
    local kind = coll.key
    if not kinds[kind] then
        kinds[kind] = {}
        kind_list[#kind_list + 1] = kind
    end
    local colls = kinds[kind]
    colls[#colls + 1] = coll
    stats.version = reader.version
    local ok, err = pcall(function()
        if not listed or listed.version ~= reader.version then
            listed = {version = reader.version, by_kind = list()}
        end
        coll:resync(listed.by_kind[kind] or empty, get)
    end)
    coll:commit_round()
    if not ok then
        coll.reload = true
        log(ngx.ERR, "amesh: failed to load ", kind, ", will retry: ", err)
    end
end

local function prune()
    for _, kind in ipairs(kind_list) do
        local colls = kinds[kind]
        for i = #colls, 1, -1 do
            if not colls[i].running then
                table.remove(colls, i)
            end
        end
    end
end

--- poll applies what changed since the last poll; it returns true if a new version
-- was applied.
function _M.poll()
    listed = nil
    stats.polls = stats.polls + 1
    if #kind_list == 0 then
        return false
    end
    local ch = reader:changes(kind_list)
    local reload
    for _, kind in ipairs(kind_list) do
        for _, coll in ipairs(kinds[kind]) do
            if coll.reload then
                reload = reload or {}
                reload[kind] = true
            end
        end
    end
    if not ch and not reload then
        return false
    end
    ch = ch or {version = reader.version, kinds = {}, keys = empty}
    prune()
    local whole = ch.kinds
    if ch.all then
        whole = {}
        for _, kind in ipairs(kind_list) do
            whole[kind] = true
        end
    end
    for kind in pairs(reload or empty) do
        whole[kind] = true
    end
    local touched = {}
    if next(whole) then
        local by_kind = list()
        for kind in pairs(whole) do
            local colls = kinds[kind]
            if colls then
                for _, coll in ipairs(colls) do
                    coll:resync(by_kind[kind] or empty, get)
                    coll.reload = nil
                end
                touched[kind] = true
                stats.resyncs = stats.resyncs + 1
            end
        end
    end
    local seen = {}
    local n = 0
    for _, key in ipairs(ch.keys or empty) do
        if not seen[key] then
            seen[key] = true
            local kind = kind_of(key)
            local colls = kinds[kind]
            if colls and not whole[kind] then
                local str = get(key)
                for _, coll in ipairs(colls) do
                    coll:apply(key, str)
                end
                touched[kind] = true
                n = n + 1
            end
        end
    end
    for kind in pairs(touched) do
        for _, coll in ipairs(kinds[kind]) do
            coll:commit_round()
        end
    end
    reader:commit(ch.version)
    stats.applied = stats.applied + 1
    stats.keys = stats.keys + n
    stats.version = ch.version
    log(ngx.INFO, "amesh: applied config version ", ch.version, ": ", n, " keys",
        ch.behind and ", behind the journal" or "", next(whole) and ", kinds re-read" or "")
    return true
end

local function loop(premature, interval)
    if premature then
        return
    end
    -- A fresh timer now and then, so that one coroutine does not live forever.
    for _ = 1, 10000 do
        if ngx.worker.exiting() then
            return
        end
        local ok, err = pcall(_M.poll)
        if not ok then
            log(ngx.ERR, "amesh: failed to apply the configuration: ", err)
        end
        ngx.sleep(interval)
    end
    local ok, err = ngx.timer.at(0, loop, interval)
    if not ok then
        log(ngx.ERR, "amesh: failed to restart the config timer: ", err)
    end
end

--- start polls every interval seconds in a timer of this worker.
function _M.start(interval)
    local ok, err = ngx.timer.at(0, loop, interval)
    if not ok then
        return nil, err
    end
    return true
end

--- stats returns counters: polls, applied (versions), keys (applied one by one),
-- resyncs (kinds re-read whole), version (the version applied).
function _M.stats()
    return stats
end

return _M

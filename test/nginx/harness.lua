-- Test harness for libxds.so, modelled on APISIX's apisix/core/config_xds.lua: it loads
-- the library in one process and passes it the zones of the shared dicts
-- "xds-config" and "xds-config-version". Every worker follows the dict with one of
-- these readers and records what it saw, so the Go tests can check that all workers
-- converge on the same state:
--   full   re-reads all keys on every version change (what the stock provider reads)
--   stock  the stock provider's work per version change: for each of the kinds APISIX
--          creates config objects for, list all keys, read and decode that kind's
--          (the benchmark's "old provider")
--   amesh  amesh's provider core (lua/amesh/config): the journal, only changed keys
--
-- Stock Debian nginx has no privileged agent (an OpenResty patch), so worker 0 loads
-- the library instead.
local ffi = require("ffi")
local cjson = require("cjson.safe")

local C = ffi.C
local config = ngx.shared["xds-config"]
local conf_ver = ngx.shared["xds-config-version"]
local state = ngx.shared["harness"]

ffi.cdef[[
extern void initial(void *config_zone, void *version_zone);
]]
-- resty.core declares ngx_http_lua_ffi_shdict_udata_to_zone; declare it only if not.
if not pcall(function() return C.ngx_http_lua_ffi_shdict_udata_to_zone end) then
    ffi.cdef[[void *ngx_http_lua_ffi_shdict_udata_to_zone(void *zone_udata);]]
end

local _M = {}

-- A Go c-shared library can never be unloaded: keep a reference for the life of
-- the process so that the GC does not dlclose it.
local libxds

local seen_version

-- digest is the md5 of "key=value" lines in key order: the Go tests compute the
-- same over /dump to compare every worker's view with the dict.
local function digest(keys)
    table.sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do
        parts[i] = k .. "=" .. (config:get(k) or "")
    end
    return ngx.md5(table.concat(parts, "\n"))
end

_M.digest = digest

local function sync(premature)
    if premature then
        return
    end
    local v = conf_ver:get("version")
    if v == nil or v == seen_version then
        return
    end
    local keys = config:get_keys(0)
    seen_version = v
    state:set("worker:" .. ngx.worker.id(), cjson.encode({
        version = tostring(v), digest = digest(keys), keys = #keys, pid = ngx.worker.pid(),
    }))
end

local function load(lib_path)
    libxds = libxds or ffi.load(lib_path)
    local config_zone = C.ngx_http_lua_ffi_shdict_udata_to_zone(config[1])
    local version_zone = C.ngx_http_lua_ffi_shdict_udata_to_zone(conf_ver[1])
    libxds.initial(ffi.cast("void *", config_zone), ffi.cast("void *", version_zone))
    state:set("loader_pid", ngx.worker.pid())
    state:incr("loads", 1, 0)
    ngx.log(ngx.NOTICE, "harness: libxds.so initial() called by worker 0, pid ", ngx.worker.pid())
end

local reinit_requested

-- The loader's generation. After an nginx reload the master waits about 100 ms before
-- it tells the old workers to quit; in that window the old worker 0 still runs its
-- timers and must not take a reinit request, or the recorded loader would be a
-- process that is about to exit.
local generation

local function current()
    return generation ~= nil and generation == state:get("generation")
        and not ngx.worker.exiting()
end

function _M.init_worker(lib_path, poll, reader, view)
    if ngx.worker.id() == 0 then
        generation = state:incr("generation", 1, 0)
        load(lib_path)
        ngx.timer.every(0.01, reinit_requested, lib_path)
    end
    local ok, err
    if reader == "amesh" then
        ok, err = require("provider").start(poll, view)
    elseif reader == "stock" then
        ok, err = require("stockmodel").start(poll)
    else
        ok, err = ngx.timer.every(poll, sync)
    end
    if not ok then
        ngx.log(ngx.ERR, "harness: reader: ", err)
    end
end

-- GET /reinit: call initial() again in the process that loaded the library, as a
-- second load by APISIX would. Another worker asks the loader through the harness
-- dict and waits for it.
function _M.reinit(lib_path)
    -- A worker of the previous generation (nginx reload) still answers requests on its
    -- keepalive connections; it must not become the loader just before it exits.
    if libxds and current() then
        load(lib_path)
        ngx.say("ok")
        return
    end
    local loads = state:get("loads") or 0
    state:set("reinit", true)
    for _ = 1, 500 do
        ngx.sleep(0.01)
        if (state:get("loads") or 0) > loads then
            ngx.say("ok")
            return
        end
    end
    ngx.status = 504
    ngx.say("the loader did not call initial() again")
end

reinit_requested = function(premature, lib_path)
    if not premature and current() and state:get("reinit") then
        state:delete("reinit")
        load(lib_path)
    end
end

-- GET /version: the current version, empty if none.
function _M.version()
    ngx.say(tostring(conf_ver:get("version") or ""))
end

-- GET /readers: the version and what the stock and amesh readers published (a /dump
-- without the keys, for large dicts).
function _M.readers()
    local readers = {}
    for _, k in ipairs(state:get_keys(0)) do
        local id = k:match("^reader:(%d+)$")
        if id then
            readers[id] = cjson.decode(state:get(k))
        end
    end
    local v = conf_ver:get("version")
    ngx.header["Content-Type"] = "application/json"
    ngx.say(cjson.encode({version = v and tostring(v) or cjson.null, readers = readers}))
end

-- GET /dump: everything the Go tests assert on.
function _M.dump()
    local keys = config:get_keys(0)
    local kv = {}
    for _, k in ipairs(keys) do
        kv[k] = config:get(k)
    end
    local workers, readers, views = {}, {}, {}
    for _, k in ipairs(state:get_keys(0)) do
        local id = k:match("^worker:(%d+)$")
        if id then
            workers[id] = cjson.decode(state:get(k))
        end
        id = k:match("^reader:(%d+)$")
        if id then
            readers[id] = cjson.decode(state:get(k))
        end
        id = k:match("^view:(%d+)$")
        if id then
            views[id] = cjson.decode(state:get(k))
        end
    end
    local v = conf_ver:get("version")
    ngx.header["Content-Type"] = "application/json"
    ngx.say(cjson.encode({
        version = v and tostring(v) or cjson.null,
        keys = kv,
        digest = digest(keys),
        loader_pid = state:get("loader_pid"),
        loads = state:get("loads") or 0,
        workers = workers,
        readers = readers,
        views = views,
        free_space = config:free_space(),
    }))
end

return _M

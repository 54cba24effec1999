-- Test harness for libxds.so, modelled on APISIX's apisix/core/config_xds.lua: it loads
-- the library in one process and passes it the zones of the shared dicts
-- "xds-config" and "xds-config-version"; every worker polls the version and, when it
-- changes, re-reads all keys (as APISIX does) and records what it saw, so the Go
-- tests can check that all workers converge on the same state.
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

function _M.init_worker(lib_path, poll)
    local ok, err = ngx.timer.every(poll, sync)
    if not ok then
        ngx.log(ngx.ERR, "harness: timer: ", err)
    end
    if ngx.worker.id() == 0 then
        load(lib_path)
    end
end

-- POST /reinit: call initial() again in the process that loaded the library (only
-- meaningful with one worker), as a second load by APISIX would.
function _M.reinit(lib_path)
    if not libxds then
        ngx.status = 409
        ngx.say("library not loaded in this worker")
        return
    end
    load(lib_path)
    ngx.say("ok")
end

-- GET /version: the current version, empty if none.
function _M.version()
    ngx.say(tostring(conf_ver:get("version") or ""))
end

-- GET /dump: everything the Go tests assert on.
function _M.dump()
    local keys = config:get_keys(0)
    local kv = {}
    for _, k in ipairs(keys) do
        kv[k] = config:get(k)
    end
    local workers = {}
    for _, k in ipairs(state:get_keys(0)) do
        local id = k:match("^worker:(%d+)$")
        if id then
            workers[id] = cjson.decode(state:get(k))
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
        free_space = config:free_space(),
    }))
end

return _M

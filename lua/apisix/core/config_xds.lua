-- amesh's config provider for APISIX's xds mode (deployment.role_data_plane.
-- config_provider: xds). With amesh's lua/ directory in `apisix.extra_lua_path`,
-- APISIX loads this file in place of its own apisix/core/config_xds.lua (the extra
-- path comes first in lua_package_path) and its router, upstream and plugin code use
-- it unchanged: it presents the same module (new, fetch_created_obj, init,
-- init_worker, local_conf) and the same config objects (values, values_hash,
-- conf_version, get, getkey, close; items {value, modifiedIndex, key}).
--
-- What differs is the work per version: libxds.so journals which keys each version
-- changed (internal/sink/shdict/journal.go), and every worker polls the version every
-- 10 ms and decodes and checks only those keys (amesh.config.sync). Every other
-- object keeps its table and modifiedIndex, so balancers and health checkers survive
-- and a kind's conf_version moves only when that kind changed (an upstream change
-- never rebuilds the router). The privileged agent, which routes nothing, loads the
-- library and reads nothing. Stream workers (a Lua VM of their own in each nginx
-- worker) follow the dicts as http workers do; they see them only when nginx's top-level
-- lua {} block declares them (custom_lua_shared_dict is http only). Like the stock provider, workers wait in init_worker for
-- the first version, and an object that fails its schema or checker is left out with
-- an error log; unlike it, an object's value.id is always its key's id (as with etcd).
local config_local = require("apisix.core.config_local")
local log = require("apisix.core.log")
local json = require("apisix.core.json")
local os = require("apisix.core.os")
local check_schema = require("apisix.core.schema").check
local sync = require("amesh.config.sync")
local collection = require("amesh.config.collection")
local ffi = require("ffi")
local C = ffi.C
local ngx = ngx
local pcall = pcall
local pairs = pairs
local type = type
local require = require
local sub = string.sub
local error = error
local setmetatable = setmetatable
local tostring = tostring
local io_open = io.open
local package = package

local config_dict = ngx.shared["xds-config"]
local version_dict = ngx.shared["xds-config-version"]
local is_http = ngx.config.subsystem == "http"

-- How often a worker looks at the version, in seconds.
local poll_interval = 0.01

ffi.cdef[[
extern void initial(void* config_zone, void* version_zone);
]]

local _M = {
    version = 0.1,
    local_conf = config_local.local_conf,
    clear_local_cache = config_local.clear_cache,
}

-- Config objects are collections with this module's methods on top.
setmetatable(_M, {__index = collection})
local mt = {
    __index = _M,
    __tostring = function(self)
        return " xds key: " .. tostring(self.key)
    end,
}

local created_obj = {}
-- libxds.so, kept referenced: a Go shared library can never be unloaded.
local libxds

local function privileged_agent()
    if not is_http then
        return false
    end
    return require("ngx.process").type() == "privileged agent"
end

-- find_lib returns the path of name in a directory of package.cpath.
local function find_lib(name)
    local tried = {}
    for template in package.cpath:gmatch("[^;]+") do
        local dir = template:match("^(.*/)")
        if dir then
            local path = dir .. name
            local f = io_open(path)
            if f then
                f:close()
                return path
            end
            tried[#tried + 1] = path
        end
    end
    return nil, tried
end

local function udata_to_zone(dict)
    local ok, fn = pcall(function() return C.ngx_http_lua_ffi_shdict_udata_to_zone end)
    if not ok then
        fn = C.ngx_meta_lua_ffi_shdict_udata_to_zone
    end
    return ffi.cast("void*", fn(dict[1]))
end

local function load_libxds()
    local path, tried = find_lib("libxds.so")
    if not path then
        error("can not load xds library, tried paths: " .. table.concat(tried, ", "))
    end
    libxds = ffi.load(path)
    libxds.initial(udata_to_zone(config_dict), udata_to_zone(version_dict))
end

local configured
local function configure()
    if configured then
        return
    end
    sync.configure(config_dict, version_dict, {
        log = ngx.log,
        block_sleep = function(seconds) os.usleep(seconds * 1e6) end,
    })
    configured = true
end

-- own_plugin_missing returns the first of amesh's own plugins (lua/apisix/plugins,
-- "amesh-*") that value's plugins name and APISIX has not enabled (config.yaml's
-- `plugins`). APISIX's checker lets a data plane's object through with a plugin it
-- has not enabled, and runs it without: a route would lose its RBAC rules.
local function own_plugin_missing(value)
    local plugins = type(value) == "table" and value.plugins
    if type(plugins) ~= "table" then
        return nil
    end
    for name in pairs(plugins) do
        if type(name) == "string" and sub(name, 1, 6) == "amesh-"
           and not require("apisix.plugin").get(name) then
            return name
        end
    end
    return nil
end

-- check combines a kind's schema and checker, as APISIX's providers apply them. An
-- object naming one of amesh's plugins that APISIX has not enabled answers every
-- request itself instead (fault-injection's abort: 403 for amesh-rbac, which decides
-- who gets in, 500 for the others), so that it fails closed rather than runs without
-- the plugin. That applies to the kinds whose plugins run in the http subsystem, and
-- there only: a stream route's plugins are stream plugins, and amesh's stream router
-- closes the connections of a route whose amesh plugin is not enabled
-- (apisix/stream/router/ip_port.lua).
local function check_of(item_schema, checker, own_plugins)
    if not item_schema and not checker then
        return nil
    end
    local function check(value, key)
        if item_schema then
            local ok, err = check_schema(item_schema, value)
            if not ok then
                return false, err
            end
        end
        if checker then
            local ok, err = checker(value, key)
            if not ok then
                return false, err
            end
        end
        return true
    end
    return function(value, key)
        local ok, err = check(value, key)
        if not ok then
            return false, err
        end
        local missing = own_plugins and own_plugin_missing(value)
        if not missing then
            return true
        end
        log.error("[", key, "] needs plugin ", missing, ", which is not in config.yaml's ",
                  "plugins: it answers every request itself")
        if not require("apisix.plugin").get("fault-injection") then
            return false, "plugin " .. missing .. " is not enabled, nor fault-injection"
        end
        value.plugins = {["fault-injection"] = {abort = {
            http_status = missing == "amesh-rbac" and 403 or 500,
            body = "amesh: plugin " .. missing .. " is not enabled in APISIX\n",
        }}}
        return check(value, key)
    end
end

local function log_invalid(key, err)
    log.error("failed to check the conf of [", key, "] err: ", err)
end

--- new returns the config object of key ("/routes"); with opts.automatic it is
-- loaded now (waiting for libxds.so's first version) and kept up to date, except in
-- the privileged agent, where it stays empty.
function _M.new(key, opts)
    opts = opts or {}
    if not config_dict or not version_dict then
        return nil, "the shared dicts xds-config and xds-config-version are not declared "
                    .. "in the " .. ngx.config.subsystem .. " subsystem (declare them in "
                    .. "nginx_config.http.custom_lua_shared_dict for http only, in nginx's "
                    .. "top-level lua {} block for http and stream)"
    end
    local obj = collection.new(key, {
        single_item = opts.single_item,
        decode = json.decode,
        check = check_of(opts.item_schema, opts.checker,
                         is_http and key ~= "/stream_routes"),
        filter = opts.filter,
        log_invalid = log_invalid,
    })
    setmetatable(obj, mt)

    if opts.automatic then
        if not key then
            return nil, "missing `key` argument"
        end
        if not privileged_agent() then
            configure()
            sync.add(obj)
        end
    end
    if key then
        created_obj[key] = obj
    end
    return obj
end

--- getkey returns the object stored under a full key ("/routes/1") in the dict,
-- decoded, in the shape config_etcd.lua's getkey returns.
function _M.getkey(self, key)
    if not self.running then
        return nil, "stopped"
    end
    local str = config_dict:get(key)
    if str == nil then
        return {status = 404, body = {}}
    end
    local value, err = json.decode(str)
    if value == nil then
        return nil, err
    end
    return {status = 200, body = {node = {key = key, value = value}}}
end

function _M.server_version()
    return "xds " .. tostring(version_dict:get("version"))
end

function _M.fetch_created_obj(key)
    return created_obj[key]
end

function _M.init()
    return true
end

function _M.init_worker()
    if privileged_agent() then
        load_libxds()
        return true
    end
    configure()
    local ok, err = sync.start(poll_interval)
    if not ok then
        return nil, "failed to start the config timer: " .. tostring(err)
    end
    return true
end

return _M

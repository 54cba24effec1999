-- The "stock" reader of the harness: the work APISIX's stock config_xds.lua does in a
-- worker when the version changes, without APISIX's schema checks, filters and router
-- (so it is a lower bound of the old provider's cost): for each kind APISIX creates a
-- config object for, list every key of the dict, then read and decode the keys of
-- that kind into fresh values. Publishes reader:<worker id> = {version, keys, cpu_ms,
-- last_cpu_ms} in the harness dict.
local cjson = require("cjson.safe")
local provider = require("provider")

local config = ngx.shared["xds-config"]
local conf_ver = ngx.shared["xds-config-version"]
local state = ngx.shared["harness"]

local _M = {}

local objects = {}

local function read_kind(prefix, version)
    local keys = config:get_keys(0)
    local values, hash = {}, {}
    for _, key in ipairs(keys) do
        if key:sub(1, #prefix) == prefix then
            local conf = cjson.decode(config:get(key))
            if type(conf) == "table" then
                if not conf.id then
                    conf.id = key:sub(#prefix + 2)
                end
                values[#values + 1] = {value = conf, modifiedIndex = version, key = key}
                hash[conf.id] = #values
            end
        end
    end
    objects[prefix] = {values = values, values_hash = hash, conf_version = version}
    return #values
end

local seen

local function loop(premature, poll, cpu_ms)
    if premature then
        return
    end
    for _ = 1, 10000 do
        if ngx.worker.exiting() then
            return
        end
        local v = conf_ver:get("version")
        if v ~= nil and v ~= seen then
            local t0 = provider.cpu()
            local n = 0
            for _, kind in ipairs(provider.kinds) do
                n = n + read_kind(kind, v)
            end
            seen = v
            local dt = (provider.cpu() - t0) * 1000
            cpu_ms = cpu_ms + dt
            state:set("reader:" .. ngx.worker.id(), cjson.encode({
                version = tostring(v), keys = n, pid = ngx.worker.pid(),
                cpu_ms = cpu_ms, last_cpu_ms = dt,
            }))
        end
        ngx.sleep(poll)
    end
    ngx.timer.at(0, loop, poll, cpu_ms)
end

function _M.start(poll)
    return ngx.timer.at(0, loop, poll, 0)
end

return _M

-- The "amesh" reader of the harness: amesh's provider core (lua/amesh/config) in
-- every worker, with cjson for decoding and a check that stands for APISIX's schema.
-- After each applied version the worker publishes, in the harness dict:
--   reader:<worker id>  {version, digest, keys, pid, conf_versions, stats, cpu_ms, last_cpu_ms}
--                       digest is harness.digest's over the objects the worker holds,
--                       each with the exact text it was decoded from
--   view:<worker id>    {key = modifiedIndex} of every object (only with view)
-- A worker does not poll while the harness dict has pause:<worker id> (GET
-- /pause?worker=N&on=1), as if its timers were starved.
local ffi = require("ffi")
local cjson = require("cjson.safe")
local sync = require("amesh.config.sync")
local collection = require("amesh.config.collection")

local state = ngx.shared["harness"]

pcall(ffi.cdef, [[
int usleep(unsigned int usec);
typedef struct { long tv_sec; long tv_nsec; } amesh_timespec;
int clock_gettime(int clk_id, amesh_timespec *tp);
]])

local _M = {}

-- The kinds APISIX creates config objects for (amesh writes the first six).
_M.kinds = {"/upstreams", "/plugin_configs", "/services", "/global_rules", "/routes",
            "/stream_routes", "/ssls", "/consumers", "/consumer_groups", "/plugin_metadata",
            "/protos", "/secrets"}

local ts = ffi.new("amesh_timespec")
-- cpu returns this thread's CPU time in seconds (CLOCK_THREAD_CPUTIME_ID): worker 0
-- also runs the library's Go threads, which this leaves out.
function _M.cpu()
    ffi.C.clock_gettime(3, ts)
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

-- raw_of maps each decoded value to the text it was decoded from.
local raw_of = setmetatable({}, {__mode = "k"})

local colls = {}

local function decode(str)
    local v, err = cjson.decode(str)
    if type(v) == "table" then
        raw_of[v] = str
    end
    return v, err
end

local filtered = 0

local function publish(view, cpu_ms, last_cpu_ms)
    local keys, texts, modified = {}, {}, {}
    local conf_versions = {}
    for _, c in ipairs(colls) do
        conf_versions[c.key] = c.conf_version
        for _, item in ipairs(c.values) do
            if type(item) == "table" then
                keys[#keys + 1] = item.key
                texts[item.key] = raw_of[item.value] or "?"
                modified[item.key] = item.modifiedIndex
            end
        end
    end
    table.sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do
        parts[i] = k .. "=" .. texts[k]
    end
    local st = sync.stats()
    local id = ngx.worker.id()
    state:set("reader-pid:" .. id, ngx.worker.pid())
    state:set("reader:" .. id, cjson.encode({
        version = st.version, digest = ngx.md5(table.concat(parts, "\n")), keys = #keys,
        pid = ngx.worker.pid(), conf_versions = conf_versions, cpu_ms = cpu_ms,
        last_cpu_ms = last_cpu_ms, filtered = filtered,
        stats = {polls = st.polls, applied = st.applied, keys = st.keys, resyncs = st.resyncs},
    }))
    if view then
        state:set("view:" .. id, cjson.encode(modified))
    end
end

local function loop(premature, poll, view, cpu_ms)
    if premature then
        return
    end
    for _ = 1, 10000 do
        if ngx.worker.exiting() then
            return
        end
        if state:get("pause:" .. ngx.worker.id()) then
            goto sleep
        end
        do
        local t0 = _M.cpu()
        local ok, applied = pcall(sync.poll)
        if not ok then
            ngx.log(ngx.ERR, "harness: provider poll: ", applied)
        elseif applied then
            local dt = (_M.cpu() - t0) * 1000
            cpu_ms = cpu_ms + dt
            publish(view, cpu_ms, dt)
        elseif state:get("reader-pid:" .. ngx.worker.id()) ~= ngx.worker.pid() then
            -- A worker of the previous generation (nginx reload) published after this
            -- one and has exited since: its entry would stand for this worker's id
            -- until the next version.
            publish(view, cpu_ms, 0)
        end
        end
        ::sleep::
        ngx.sleep(poll)
    end
    ngx.timer.at(0, loop, poll, view, cpu_ms)
end

-- GET /pause?worker=N&on=1|0
function _M.pause()
    local args = ngx.req.get_uri_args()
    if args.on == "1" then
        state:set("pause:" .. args.worker, true)
    else
        state:delete("pause:" .. args.worker)
    end
    ngx.say("ok")
end

function _M.start(poll, view)
    sync.configure(ngx.shared["xds-config"], ngx.shared["xds-config-version"], {
        log = ngx.log,
        block_sleep = function(s) ffi.C.usleep(s * 1e6) end,
    })
    local t0 = _M.cpu()
    for _, kind in ipairs(_M.kinds) do
        local c = collection.new(kind, {
            decode = decode,
            check = function(value)
                return type(value.id) == "string", "id is not a string"
            end,
            filter = function() filtered = filtered + 1 end,
            log_invalid = function(key, err)
                ngx.log(ngx.ERR, "harness: invalid ", key, ": ", err)
            end,
        })
        sync.add(c)
        colls[#colls + 1] = c
    end
    local dt = (_M.cpu() - t0) * 1000
    publish(view, dt, dt)
    return ngx.timer.at(0, loop, poll, view, dt)
end

return _M

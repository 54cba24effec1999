-- The objects of one kind ("/routes", "/upstreams", ...) as APISIX's config objects
-- present them: `values` (an array of items {value, modifiedIndex, key}, with `false`
-- where an item was deleted, as config_etcd.lua leaves them; iterate with ipairs
-- and skip non-tables, or with core.config_util.iterate_values), `values_hash` (id ->
-- index in values), `conf_version` (changes whenever an item was added, replaced or
-- removed, and only then), and get(id).
--
-- An object is applied from its JSON only when its text changed (an MD5 of each key's
-- text is kept): every other item stays the same Lua table with the same
-- modifiedIndex, so APISIX keeps its balancer and health checker and the router is not
-- rebuilt. An object that does not decode or fails its check is left out (with an
-- error log), as APISIX's stock config_xds.lua does.
--
-- No APISIX module is needed: decoding, checking and filtering are passed in.
local ngx = ngx
local md5_bin = ngx.md5_bin
local type = type
local pcall = pcall
local ipairs = ipairs
local pairs = pairs
local setmetatable = setmetatable
local str_sub = string.sub
local tostring = tostring

local _M = {}
local mt = {__index = _M}

-- Deleted items leave `false` in values; past this many the array is compacted.
local max_tombstones = 100
-- The change log (for incremental routers) keeps at most this many entries.
local max_log = 4096

-- modifiedIndex of the next applied object, shared by every kind of this worker so
-- that an index is never reused within the process (APISIX builds cache keys from
-- several kinds' indexes).
local next_index = 0

--- new returns an empty collection.
-- prefix: "/routes"; opts:
--   single_item  the kind is one object stored under the prefix itself ("/plugins")
--   decode(str)  -> value or nil, err
--   check(value, key) -> true or false/nil, err   (schema and checker; optional)
--   filter(item)       called on every applied item, after it is in values
--   log_invalid(key, err, str)   reports an object left out
function _M.new(prefix, opts)
    opts = opts or {}
    return setmetatable({
        key = prefix,
        single_item = opts.single_item,
        decode = opts.decode,
        check = opts.check,
        filter = opts.filter,
        log_invalid = opts.log_invalid,
        values = {},
        values_hash = {},
        conf_version = 0,
        running = true,
        -- key -> MD5 of the text last applied (valid or not)
        digests = {},
        tombstones = 0,
        -- ids changed since the last commit_round
        round = {},
        -- change log: log_ver[i] is the conf_version whose change touched log_id[i];
        -- changes after log_base are complete.
        log_ver = {},
        log_id = {},
        log_base = 0,
    }, mt)
end

-- id_of returns the id a key is stored under, or nil if the key is not one of this
-- collection's objects.
function _M.id_of(self, key)
    local prefix = self.key
    if self.single_item then
        if key == prefix then
            return str_sub(prefix, 2)
        end
        return nil
    end
    if #key > #prefix + 1 and str_sub(key, 1, #prefix + 1) == prefix .. "/" then
        return str_sub(key, #prefix + 2)
    end
    return nil
end

local function remove(self, id)
    local idx = self.values_hash[id]
    if not idx then
        return false
    end
    self.values[idx] = false
    self.values_hash[id] = nil
    self.tombstones = self.tombstones + 1
    return true
end

local function compact(self)
    local values, hash = self.values, self.values_hash
    local n = 0
    for i = 1, #values do
        local item = values[i]
        if item then
            n = n + 1
            values[n] = item
        end
    end
    for i = #values, n + 1, -1 do
        values[i] = nil
    end
    for id in pairs(hash) do
        hash[id] = nil
    end
    for i = 1, n do
        hash[self:id_of(values[i].key)] = i
    end
    self.tombstones = 0
end

local function invalid(self, key, err, str)
    if self.log_invalid then
        self.log_invalid(key, err, str)
    end
end

-- build decodes and checks str; it returns the value or nil.
local function build(self, key, id, str)
    local value, err = self.decode(str)
    if value == nil then
        invalid(self, key, "failed to decode: " .. tostring(err), str)
        return nil
    end
    if not self.single_item then
        if type(value) ~= "table" then
            invalid(self, key, "it should be an object", str)
            return nil
        end
        value.id = id
    end
    if self.check then
        local ok, res, cerr = pcall(self.check, value, key)
        if not ok then
            invalid(self, key, res, str)
            return nil
        end
        if not res then
            invalid(self, key, cerr, str)
            return nil
        end
    end
    return value
end

--- apply brings one key up to date with its text in the dict (nil: the key is gone).
-- It returns true when values changed.
function _M.apply(self, key, str)
    local id = self:id_of(key)
    if not id then
        return false
    end
    local d = str and md5_bin(str)
    if d == self.digests[key] then
        return false
    end
    self.digests[key] = d
    local changed
    local value = str and build(self, key, id, str)
    if value == nil then
        changed = remove(self, id)
    else
        next_index = next_index + 1
        local item = {value = value, modifiedIndex = next_index, key = key}
        local idx = self.values_hash[id]
        if idx then
            self.values[idx] = item
        else
            idx = #self.values + 1
            self.values[idx] = item
            self.values_hash[id] = idx
        end
        if self.filter then
            local ok, err = pcall(self.filter, item)
            if not ok then
                invalid(self, key, "filter failed: " .. tostring(err), str)
                remove(self, id)
            end
        end
        changed = true
    end
    if changed then
        local round = self.round
        round[#round + 1] = id
    end
    if self.tombstones > max_tombstones then
        compact(self)
    end
    return changed
end

--- resync brings the whole kind up to date: present is a set {key = true} of this
-- kind's keys in the dict, get(key) returns a key's text. Keys not in present are
-- removed.
function _M.resync(self, present, get)
    local changed = false
    for key in pairs(present) do
        if self:apply(key, get(key)) then
            changed = true
        end
    end
    local gone
    for key in pairs(self.digests) do
        if not present[key] then
            gone = gone or {}
            gone[#gone + 1] = key
        end
    end
    if gone then
        for _, key in ipairs(gone) do
            if self:apply(key, nil) then
                changed = true
            end
        end
    end
    return changed
end

--- commit_round ends one round of apply/resync calls: if any changed values,
-- conf_version moves on (once per round, however many objects changed) and the
-- changed ids are logged. It returns true if conf_version moved.
function _M.commit_round(self)
    local round = self.round
    local n = #round
    if n == 0 then
        return false
    end
    local ver = self.conf_version + 1
    self.conf_version = ver
    local log_ver, log_id = self.log_ver, self.log_id
    local m = #log_ver
    if m + n > max_log then
        local half = max_log / 2
        -- Keep the newest entries up to half the log (none if this round alone
        -- fills that); changes after log_base stay complete.
        local keep = n < half and math.min(m, half - n) or 0
        local drop = m - keep
        if drop > 0 then
            self.log_base = log_ver[drop]
            for i = 1, keep do
                log_ver[i] = log_ver[drop + i]
                log_id[i] = log_id[drop + i]
            end
            for i = m, keep + 1, -1 do
                log_ver[i] = nil
                log_id[i] = nil
            end
            m = keep
        end
        if n >= half then
            self.log_base = ver
            n = 0
        end
    end
    for i = 1, n do
        log_ver[m + i] = ver
        log_id[m + i] = round[i]
    end
    self.round = {}
    return true
end

--- changes_since returns the ids changed after conf_version v (possibly repeated),
-- or nil when the log no longer reaches back that far.
function _M.changes_since(self, v)
    if type(v) ~= "number" or v < self.log_base or v > self.conf_version then
        return nil
    end
    local out = {}
    local log_ver, log_id = self.log_ver, self.log_id
    for i = #log_ver, 1, -1 do
        if log_ver[i] <= v then
            break
        end
        out[#out + 1] = log_id[i]
    end
    return out
end

function _M.get(self, id)
    local idx = self.values_hash[tostring(id)]
    if not idx then
        return nil
    end
    return self.values[idx]
end

function _M.close(self)
    self.running = false
end

return _M

-- Reads the change journal libxds.so writes into the version dict
-- (internal/sink/shdict/journal.go): which keys each version changed, so that a
-- worker re-reads only those.
--
--   version                 the newest version (decimal string)
--   journal:<v>             keys version v put or deleted, one per line; "*" stands
--                           for every key, "*/<kind>" for every key of a kind
--   version:/<kind>         the newest version that changed a key of that kind
--
-- Versions are uint64 values written as decimal strings; they exceed a Lua number's
-- 53 bits, so they are compared and incremented as strings. Within one writer they
-- are consecutive; a missing entry means the reader fell behind the journal (or the
-- writer restarted, whose first version jumps), and the reader then re-reads every
-- kind whose kind version is newer than its own version.
local str_byte = string.byte
local str_sub = string.sub
local str_find = string.find
local str_rep = string.rep
local tostring = tostring
local ipairs = ipairs
local setmetatable = setmetatable

local _M = {}
local mt = {__index = _M}

-- A reader never walks more entries than the writer keeps.
local max_walk = 1024

-- gt reports whether version a is newer than version b.
local function gt(a, b)
    if #a ~= #b then
        return #a > #b
    end
    return a > b
end
_M.gt = gt

-- incr returns the decimal string v + 1.
local function incr(v)
    local i = #v
    while i > 0 and str_byte(v, i) == 57 do -- '9'
        i = i - 1
    end
    if i == 0 then
        return "1" .. str_rep("0", #v)
    end
    return str_sub(v, 1, i - 1) .. string.char(str_byte(v, i) + 1) .. str_rep("0", #v - i)
end
_M.incr = incr

function _M.new(dict)
    return setmetatable({dict = dict, version = nil}, mt)
end

-- current returns the dict's version, or nil before the first one.
function _M.current(self)
    local v = self.dict:get("version")
    if v == nil then
        return nil
    end
    return tostring(v)
end

-- parse adds the lines of one entry to ch; it returns false for "*".
local function parse(entry, ch)
    local pos, n = 1, #entry
    while pos <= n do
        local nl = str_find(entry, "\n", pos, true) or n + 1
        if nl > pos then
            if str_byte(entry, pos) == 42 then -- '*'
                if nl == pos + 1 then
                    return false
                end
                ch.kinds[str_sub(entry, pos + 1, nl - 1)] = true
            else
                local keys = ch.keys
                keys[#keys + 1] = str_sub(entry, pos, nl - 1)
            end
        end
        pos = nl + 1
    end
    return true
end

-- changes returns what changed since the reader's version, or nil when nothing did:
--   {version = v, all = true}            re-read everything (first read, or "*")
--   {version = v, kinds = {[kind] = true}, keys = {key, ...}}
-- kinds lists the kinds to re-read whole; keys the keys to re-read (put or deleted),
-- possibly with repeats. kinds_of_interest (an array of "/<kind>") is what the caller
-- holds: when the reader fell behind the journal, each of them whose kind version is
-- newer than the reader's (or unknown) is re-read whole. The reader's version moves
-- only with commit(v), after the caller applied the changes.
function _M.changes(self, kinds_of_interest)
    local cur = self:current()
    local from = self.version
    if cur == nil or cur == from then
        return nil
    end
    if from == nil then
        return {version = cur, all = true}
    end
    if not gt(cur, from) then
        -- The version went back: the version dict was recreated (a reload that
        -- resized it); nothing in it relates to what the reader holds.
        return {version = cur, all = true}
    end
    local ch = {version = cur, kinds = {}, keys = {}}
    local dict = self.dict
    local v, walked = from, 0
    local behind = false
    while not behind and v ~= cur do
        v = incr(v)
        walked = walked + 1
        local entry = walked <= max_walk and dict:get("journal:" .. v)
        if not entry then
            behind = true
        elseif not parse(entry, ch) then
            return {version = cur, all = true}
        end
    end
    if behind then
        ch.keys = {}
        ch.kinds = {}
        ch.behind = true
        for _, kind in ipairs(kinds_of_interest) do
            local kv = dict:get("version:" .. kind)
            if kv == nil or gt(tostring(kv), from) then
                ch.kinds[kind] = true
            end
        end
    end
    return ch
end

function _M.commit(self, v)
    self.version = v
end

return _M

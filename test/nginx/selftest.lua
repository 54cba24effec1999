-- GET /selftest: drives amesh's provider core (lua/amesh/config) against two scratch
-- dicts this file writes as libxds.so would, for what the library does not produce on
-- demand: markers, a reader behind the journal, a version going back, invalid
-- objects, filters that fail, many deletes, a change log that overflows. Answers "ok"
-- or the failures, one per line.
local cjson = require("cjson.safe")
local journal = require("amesh.config.journal")
local collection = require("amesh.config.collection")
local hosts_index = require("amesh.router.hosts")

local _M = {}

local failures

local function check(cond, ...)
    if not cond then
        local parts = {}
        for i = 1, select("#", ...) do
            parts[i] = tostring(select(i, ...))
        end
        failures[#failures + 1] = table.concat(parts)
    end
end

local function sorted(t)
    local out = {}
    for k in pairs(t) do
        out[#out + 1] = k
    end
    table.sort(out)
    return table.concat(out, ",")
end

local function ids(coll)
    local out = {}
    for _, item in ipairs(coll.values) do
        if type(item) == "table" then
            out[#out + 1] = item.value.id
            check(coll.values_hash[item.value.id] and coll.values[coll.values_hash[item.value.id]] == item,
                coll.key, ": values_hash does not point at ", item.value.id)
        end
    end
    table.sort(out)
    return table.concat(out, ",")
end

local function test_versions()
    check(journal.incr("9") == "10", "incr 9 = ", journal.incr("9"))
    check(journal.incr("1799") == "1800", "incr 1799 = ", journal.incr("1799"))
    check(journal.incr("1700000000000000000") == "1700000000000000001", "incr of a 19-digit version")
    check(journal.incr("18446744073709551615") == "18446744073709551616", "incr past uint64")
    check(journal.gt("10", "9") and not journal.gt("9", "10") and not journal.gt("5", "5"), "gt")
    check(journal.gt("1700000000000000001", "1700000000000000000"), "gt of 19 digits")
end

local function test_journal()
    local d = ngx.shared["selftest-version"]
    d:flush_all()
    local j = journal.new(d)
    check(j:changes({"/routes"}) == nil, "no version: no changes")
    d:set("version", "1700000000000000005")
    local ch = j:changes({"/routes"})
    check(ch and ch.all and ch.version == "1700000000000000005", "first read is everything")
    j:commit(ch.version)
    check(j:changes({"/routes"}) == nil, "unchanged version: no changes")

    d:set("journal:1700000000000000006", "/routes/a\n/upstreams/u")
    d:set("journal:1700000000000000007", "/routes/b\n*/plugin_configs")
    d:set("version", "1700000000000000007")
    ch = j:changes({"/routes", "/upstreams", "/plugin_configs"})
    check(ch and not ch.all and not ch.behind, "two entries: keys")
    check(table.concat(ch.keys, ",") == "/routes/a,/upstreams/u,/routes/b", "keys ", table.concat(ch.keys, ","))
    check(sorted(ch.kinds) == "/plugin_configs", "kinds ", sorted(ch.kinds))
    -- not committed: the same again
    local again = j:changes({"/routes"})
    check(again and #again.keys == 3, "uncommitted changes are returned again")
    j:commit(ch.version)

    d:set("journal:1700000000000000008", "*")
    d:set("version", "1700000000000000008")
    ch = j:changes({"/routes"})
    check(ch and ch.all, "* means everything")
    j:commit(ch.version)

    -- Behind: entry 9 is gone; kinds changed after 8 are re-read, unknown kinds too.
    d:set("journal:1700000000000000010", "/routes/z")
    d:set("version", "1700000000000000010")
    d:set("version:/routes", "1700000000000000010")
    d:set("version:/upstreams", "1700000000000000003")
    ch = j:changes({"/routes", "/upstreams", "/ssls"})
    check(ch and ch.behind and #ch.keys == 0, "a missing entry means behind")
    check(sorted(ch.kinds) == "/routes,/ssls", "behind: kinds ", sorted(ch.kinds))
    j:commit(ch.version)

    -- A new writer jumps; its first entry is "*".
    d:set("journal:1800000000000000000", "*")
    d:set("version", "1800000000000000000")
    ch = j:changes({"/routes"})
    check(ch and (ch.all or ch.behind), "a jump is all or behind")
    j:commit(ch.version)

    -- The version going back (the dict was recreated) re-reads everything.
    d:set("version", "1700000000000000000")
    ch = j:changes({"/routes"})
    check(ch and ch.all, "a version going back is everything")
end

local function new_coll(prefix, log, opts)
    opts = opts or {}
    return collection.new(prefix, {
        single_item = opts.single_item,
        decode = cjson.decode,
        check = function(v, key)
            if v.bad then
                return false, "bad"
            end
            if v.boom then
                error("checker exploded")
            end
            return true
        end,
        filter = function(item)
            if item.value.filter_boom then
                error("filter exploded")
            end
            item.filtered = true
        end,
        log_invalid = function(key, err) log[#log + 1] = key .. ": " .. tostring(err) end,
    })
end

local function test_collection()
    local log = {}
    local c = new_coll("/routes", log)
    check(not c:apply("/upstreams/x", '{"id":"x"}'), "a key of another kind is ignored")
    check(not c:apply("/routes", '{}'), "the kind's own key is ignored")
    check(c:apply("/routes/a", '{"uri":"/a"}'), "a new key changes values")
    check(c:apply("/routes/b", '{"uri":"/b","id":"other"}'), "b")
    check(c:commit_round() and c.conf_version == 1, "one round, one conf_version")
    local a = c:get("a")
    check(a and a.value.id == "a" and a.filtered and a.key == "/routes/a", "item a")
    check(c:get("b").value.id == "b", "the key's id wins over the object's")
    check(not c:apply("/routes/a", '{"uri":"/a"}'), "the same text changes nothing")
    check(not c:commit_round() and c.conf_version == 1, "an empty round keeps conf_version")
    check(c:get("a") == a, "an unchanged object keeps its table")

    -- Invalid objects are left out, and what they replace is removed.
    check(c:apply("/routes/a", '{"uri":'), "undecodable a is removed")
    check(c:get("a") == nil, "undecodable a gone")
    check(not c:apply("/routes/n", '"just a string"'), "a non-object is left out (nothing to remove)")
    check(not c:apply("/routes/x", '{"bad":true}'), "a failing check is left out")
    check(not c:apply("/routes/y", '{"boom":true}'), "a checker error is left out")
    check(not c:apply("/routes/z", '{"filter_boom":true}') or c:get("z") == nil, "a filter error is left out")
    check(c:get("z") == nil, "z gone")
    check(#log == 5, "5 invalid logged, got ", #log, ": ", table.concat(log, "; "))
    check(not c:apply("/routes/x", '{"bad":true}'), "the same invalid text is not checked again")
    check(#log == 5, "the same invalid text is not logged again")
    check(c:apply("/routes/x", '{"uri":"/x"}'), "a fixed object comes in")
    check(ids(c) == "b,x", "ids ", ids(c))
    c:commit_round()
    local v = c.conf_version
    check(c:apply("/routes/x", nil), "a deleted key changes values")
    check(not c:apply("/routes/x", nil), "deleting twice changes nothing")
    c:commit_round()
    check(c.conf_version == v + 1, "delete: one conf_version")

    -- Many deletes: tombstones are compacted, values_hash stays right.
    for i = 1, 300 do
        c:apply("/routes/k" .. i, '{"uri":"/k' .. i .. '"}')
    end
    c:commit_round()
    local b = c:get("b")
    for i = 1, 300, 2 do
        c:apply("/routes/k" .. i, nil)
    end
    c:commit_round()
    check(#c.values < 300, "compacted: ", #c.values, " slots for 151 objects")
    check(c:get("b") == b and c:get("k2") and c:get("k3") == nil, "lookups after compaction")
    ids(c)

    -- resync: present keys applied, others removed; unchanged ones untouched.
    local present = {["/routes/b"] = true, ["/routes/k2"] = true, ["/routes/new"] = true}
    local texts = {["/routes/b"] = '{"uri":"/b","id":"other"}', ["/routes/k2"] = '{"uri":"/k2-changed"}',
                   ["/routes/new"] = '{"uri":"/new"}'}
    local k2 = c:get("k2")
    check(c:resync(present, function(k) return texts[k] end), "resync changes")
    c:commit_round()
    check(ids(c) == "b,k2,new", "after resync: ", ids(c))
    check(c:get("b") == b and c:get("k2") ~= k2, "resync keeps b, replaces k2")

    -- The change log.
    local base = c.conf_version
    c:apply("/routes/b", '{"uri":"/b2"}')
    c:commit_round()
    c:apply("/routes/new", nil)
    c:apply("/routes/k2", '{"uri":"/k2-3"}')
    c:commit_round()
    local since = c:changes_since(base)
    table.sort(since)
    check(table.concat(since, ",") == "b,k2,new", "changes_since ", table.concat(since, ","))
    check(#c:changes_since(c.conf_version) == 0, "nothing since now")
    check(c:changes_since(c.conf_version + 1) == nil, "the future is unknown")
    check(c:changes_since(nil) == nil, "nil is unknown")
    local old = c.conf_version
    for i = 1, 5000 do
        c:apply("/routes/m" .. i, '{"uri":"/m"}')
        c:commit_round()
    end
    check(c:changes_since(old) == nil, "the log forgot what is too old")
    local recent = c:changes_since(c.conf_version - 10)
    check(recent and #recent == 10, "the log keeps the recent changes")
    for i = 1, 5000 do
        c:apply("/routes/m" .. i, nil)
    end
    c:commit_round()
    check(c:changes_since(c.conf_version - 1) == nil or #c:changes_since(c.conf_version - 1) == 5000,
        "a round larger than the log is either complete or unknown")

    -- A single-item kind.
    local p = new_coll("/plugins", log, {single_item = true})
    check(p:apply("/plugins", '[{"name":"a"}]'), "single item")
    check(not p:apply("/plugins/x", '{}'), "single item ignores other keys")
    check(p:get("plugins") and p:get("plugins").value[1].name == "a", "single item is stored under its name")
end

-- The host index kept route by route holds the same URI routers as one built from
-- scratch, after any sequence of route changes; a change rebuilds only the routers
-- of the hosts it touches.
local function test_router_index()
    local order = {}      -- id -> position in "values"
    local next_pos = 0
    local builds = 0
    local function new_index()
        return hosts_index.new({
            entry = function(item)
                if item.disabled then
                    return nil
                end
                return {id = item.id, rev = item.rev}, item.hosts
            end,
            build = function(list)
                builds = builds + 1
                local ids = {}
                for i, e in ipairs(list) do
                    ids[i] = e.id .. "@" .. e.rev
                end
                return table.concat(ids, " ")
            end,
            order = function(id) return order[id] end,
        })
    end
    local function state(idx)
        local parts = {}
        for _, which in ipairs({"exact", "wild"}) do
            local keys = {}
            for h in pairs(idx[which]) do
                keys[#keys + 1] = h
            end
            table.sort(keys)
            for _, h in ipairs(keys) do
                parts[#parts + 1] = which .. " " .. h .. ": " .. idx[which][h]
            end
        end
        parts[#parts + 1] = "only: " .. tostring(idx.only)
        return table.concat(parts, "\n")
    end

    local host_pool = {"a.com", "b.com", "*.b.com", "*.com", "c.org", "x.*.org", "*"}
    math.randomseed(7)
    local items = {}
    local inc = new_index()
    for step = 1, 400 do
        local id = "r" .. math.random(1, 25)
        local item
        if math.random(1, 6) > 1 then
            local hosts
            local pick = math.random(1, 5)
            if pick == 1 then
                hosts = nil
            elseif pick == 2 then
                hosts = {}
            else
                hosts = {}
                for _ = 1, math.random(1, 3) do
                    hosts[#hosts + 1] = host_pool[math.random(1, #host_pool)]
                end
            end
            item = {id = id, rev = step, hosts = hosts, disabled = math.random(1, 10) == 1}
            if not order[id] then
                next_pos = next_pos + 1
                order[id] = next_pos
            end
        else
            order[id] = nil
        end
        items[id] = item
        local before = builds
        inc:set(id, item)
        inc:flush()
        check(builds - before <= 8, "step ", step, ": one route change built ", builds - before, " routers")

        if step % 20 == 0 then
            local full = new_index()
            for rid, it in pairs(items) do
                full:set(rid, it)
            end
            full:flush()
            local a, b = state(inc), state(full)
            check(a == b, "step ", step, ": incremental\n", a, "\nfrom scratch\n", b)
        end
    end
    check(hosts_index.is_wild("moc.*") and hosts_index.is_wild("*") and not hosts_index.is_wild("moc.a"), "is_wild")

    -- The same item again changes nothing.
    local it = {id = "same", rev = 1, hosts = {"a.com"}}
    order.same = 1000
    inc:set("same", it)
    inc:flush()
    local before = builds
    inc:set("same", it)
    inc:flush()
    check(builds == before, "setting the same item rebuilt ", builds - before, " routers")
end

function _M.run()
    failures = {}
    local ok, err = pcall(function()
        test_versions()
        test_journal()
        test_collection()
        test_router_index()
    end)
    if not ok then
        failures[#failures + 1] = "error: " .. tostring(err)
    end
    if #failures == 0 then
        ngx.say("ok")
    else
        ngx.say(table.concat(failures, "\n"))
    end
end

return _M

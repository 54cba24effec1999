-- The stream routes of a sidecar, indexed for amesh's stream router
-- (apisix/stream/router/ip_port.lua): which route a connection captured on a listen
-- port gets, from its original destination (address and port) and, only where routes
-- differ in it, the protocol of its first bytes.
--
-- A route (translated from one Envoy filter chain, internal/translate) carries:
--   labels["amesh-listen"]    the capture port it is for ("15001", "15006"); required
--   server_port               the destination port (absent: any)
--   server_addr               the destination address or CIDR (absent: any)
--   labels["amesh-protocol"]  "http" or "tls": only for connections of that protocol
--   labels["amesh-alpn"]      with "tls": only for ClientHellos whose ALPN names one of
--                             these protocols (comma-separated)
-- Of the routes a connection satisfies, one with a server_port beats one without; then
-- the longest server_addr prefix (none counts as /0); then one whose amesh-protocol
-- holds beats one without, and for TLS one with amesh-alpn beats one without: the one
-- naming the first of the client's protocols that a route of the place names. That is Envoy's filter chain match order (destination port,
-- destination address, transport and application protocol) over the routes of the
-- listeners a connection may be handed to (an address:port listener, a 0.0.0.0:port
-- listener, the virtual listener); the translation never emits two routes that tie.
--
-- Lookups are table reads: routes are grouped by listen port, then destination port
-- (or none), then prefix length, keyed by the masked address bytes. A connection costs
-- one address parse and one lookup per distinct prefix length of its groups.
--
-- Nothing here needs APISIX or a request; addresses are parsed with inet_pton.
local ffi = require("ffi")
local C = ffi.C
local bit = require("bit")
local band, lshift = bit.band, bit.lshift
local str_byte = string.byte
local str_char = string.char
local str_sub = string.sub
local str_find = string.find
local str_gmatch = string.gmatch
local type = type
local tonumber = tonumber
local tostring = tostring
local ipairs = ipairs
local pairs = pairs
local setmetatable = setmetatable
local tab_sort = table.sort
local math_floor = math.floor

pcall(ffi.cdef, "int inet_pton(int af, const char *src, void *dst);")

local AF_INET, AF_INET6 = 2, 10

local _M = {}
local mt = {__index = _M}

-- The protocols a route may require, and what the first bytes must be for each
-- (amesh.stream.sniff decides).
_M.protocols = {http = true, tls = true, mtls = true}

local addr_buf = ffi.new("unsigned char[16]")
local v4_mapped = string.rep("\0", 10) .. "\255\255"

-- parse_addr returns the bytes of an IPv4 (4) or IPv6 (16) address in text form, or nil.
local function parse_addr(s)
    if type(s) ~= "string" or s == "" then
        return nil
    end
    if str_find(s, ":", 1, true) then
        if C.inet_pton(AF_INET6, s, addr_buf) ~= 1 then
            return nil
        end
        local b = ffi.string(addr_buf, 16)
        -- An IPv4 client of a dual-stack socket (::ffff:a.b.c.d) is an IPv4 address.
        if str_sub(b, 1, 12) == v4_mapped then
            return str_sub(b, 13)
        end
        return b
    end
    if C.inet_pton(AF_INET, s, addr_buf) == 1 then
        return ffi.string(addr_buf, 4)
    end
    return nil
end
_M.parse_addr = parse_addr

-- prefix_key returns the lookup key of the first len bits of the address bytes b: the
-- family (address length), the prefix length and the masked bytes.
local function prefix_key(b, len)
    local full = math_floor(len / 8)
    local rem = len - full * 8
    local key = str_char(#b, len) .. str_sub(b, 1, full)
    if rem > 0 then
        key = key .. str_char(band(str_byte(b, full + 1), band(lshift(0xff, 8 - rem), 0xff)))
    end
    return key
end

-- parse_prefix returns the address bytes and prefix length of "addr" or "addr/len".
local function parse_prefix(s)
    if type(s) ~= "string" then
        return nil, "server_addr is not a string"
    end
    local addr, len = s, nil
    local slash = str_find(s, "/", 1, true)
    if slash then
        addr, len = str_sub(s, 1, slash - 1), tonumber(str_sub(s, slash + 1))
    end
    local b = parse_addr(addr)
    if not b then
        return nil, "server_addr " .. s .. " is not an address or CIDR"
    end
    local bits = #b * 8
    if slash and (not len or len < 0 or len > bits or len ~= math_floor(len)) then
        return nil, "server_addr " .. s .. " has an invalid prefix length"
    end
    return b, len or bits
end

local function new_group()
    -- lens[4] / lens[16]: the prefix lengths of the group's IPv4 / IPv6 prefixes, longest
    -- first; slots: prefix key -> slot; any: the slot of the routes without server_addr.
    return {lens = {[4] = {}, [16] = {}}, slots = {}, any = nil}
end

local function new_slot()
    -- plain: the route without amesh-protocol; by_protocol: protocol -> route; by_alpn:
    -- an ALPN protocol -> the TLS route that names it.
    return {plain = nil, by_protocol = nil, by_alpn = nil}
end

-- add puts one entry into its slot; a second entry for the same place (which the
-- translation never emits) loses to the one added first.
local function add(slot, entry, protocol, alpn)
    if alpn then
        slot.by_alpn = slot.by_alpn or {}
        local names = {}
        for a in str_gmatch(alpn, "[^,]+") do
            if slot.by_alpn[a] then
                return false
            end
            names[#names + 1] = a
        end
        for _, a in ipairs(names) do
            slot.by_alpn[a] = entry
        end
        return #names > 0
    end
    if protocol then
        slot.by_protocol = slot.by_protocol or {}
        if slot.by_protocol[protocol] then
            return false
        end
        slot.by_protocol[protocol] = entry
        return true
    end
    if slot.plain then
        return false
    end
    slot.plain = entry
    return true
end

--- build returns the index of entries {id = route id, route = route value, ...}: the
-- caller's table is what select returns. Entries added first win ties, so the caller
-- passes them in a stable order. It also returns a list of problems ({id, err}):
-- routes left out (no or invalid amesh-listen, invalid server_addr) and routes that tie.
function _M.build(entries)
    local by_listen = {}
    local problems = {}
    local function problem(entry, err)
        problems[#problems + 1] = {id = entry.id, err = err}
    end
    for _, entry in ipairs(entries) do
        local route = entry.route
        local labels = type(route.labels) == "table" and route.labels or {}
        local listen = tonumber(labels["amesh-listen"])
        local protocol = labels["amesh-protocol"]
        local alpn = labels["amesh-alpn"]
        local port = route.server_port
        local b, len
        if route.server_addr ~= nil then
            b, len = parse_prefix(route.server_addr)
            if not b then
                problem(entry, len)
                goto continue
            end
        end
        if not listen then
            problem(entry, "no amesh-listen label: the route is for no capture port")
            goto continue
        end
        if protocol ~= nil and not _M.protocols[protocol] then
            problem(entry, "amesh-protocol " .. tostring(protocol) .. " is not one amesh "
                           .. "detects: the route never matches")
            goto continue
        end
        if alpn ~= nil and (protocol ~= "tls" or type(alpn) ~= "string") then
            problem(entry, "amesh-alpn without amesh-protocol tls: the route never matches")
            goto continue
        end
        if port ~= nil and type(port) ~= "number" then
            problem(entry, "server_port " .. tostring(port) .. " is not a number")
            goto continue
        end
        do
            local ports = by_listen[listen]
            if not ports then
                ports = {by_port = {}, any = new_group()}
                by_listen[listen] = ports
            end
            local group = ports.any
            if port then
                group = ports.by_port[port]
                if not group then
                    group = new_group()
                    ports.by_port[port] = group
                end
            end
            local slot
            if b then
                local key = prefix_key(b, len)
                slot = group.slots[key]
                if not slot then
                    slot = new_slot()
                    group.slots[key] = slot
                    local lens = group.lens[#b]
                    local seen = false
                    for _, l in ipairs(lens) do
                        if l == len then
                            seen = true
                            break
                        end
                    end
                    if not seen then
                        lens[#lens + 1] = len
                    end
                end
            else
                slot = group.any
                if not slot then
                    slot = new_slot()
                    group.any = slot
                end
            end
            if not add(slot, entry, protocol, alpn) then
                problem(entry, "ties with another route (same amesh-listen, server_port, "
                               .. "server_addr, amesh-protocol and amesh-alpn): left out")
            end
        end
        ::continue::
    end
    for _, ports in pairs(by_listen) do
        local groups = {ports.any}
        for _, g in pairs(ports.by_port) do
            groups[#groups + 1] = g
        end
        for _, g in ipairs(groups) do
            for _, lens in pairs(g.lens) do
                tab_sort(lens, function(a, c) return a > c end)
            end
        end
    end
    return setmetatable({by_listen = by_listen}, mt), problems
end

-- pick returns the slot's entry for the connection: the route of its protocol if the
-- slot has routes by protocol (asking detect only then; for TLS first the route of the
-- first of the ClientHello's ALPN protocols a route names), else the plain route.
local function pick(slot, detect)
    if slot.by_protocol or slot.by_alpn then
        local protocol, alpn = detect()
        if protocol == "tls" and slot.by_alpn and alpn then
            for _, a in ipairs(alpn) do
                local entry = slot.by_alpn[a]
                if entry then
                    return entry
                end
            end
        end
        local entry = protocol and slot.by_protocol and slot.by_protocol[protocol]
        if entry then
            return entry
        end
    end
    return slot.plain
end

-- pick_only returns the slot's route for protocol only, nil without one.
local function pick_only(slot, only)
    return slot.by_protocol and slot.by_protocol[only]
end

local function select_in(group, b, detect, only)
    local pick = only and pick_only or pick
    local arg = only or detect
    if b then
        for _, len in ipairs(group.lens[#b]) do
            local slot = group.slots[prefix_key(b, len)]
            if slot then
                local entry = pick(slot, arg)
                if entry then
                    return entry
                end
            end
        end
    end
    if group.any then
        return pick(group.any, arg)
    end
    return nil
end

--- select returns the entry of the route a connection gets, or nil: listen is the
-- capture port it arrived on, addr and port its original destination (addr in text
-- form; an unparsable address matches only routes without server_addr). detect() is
-- called only when routes the connection could get differ in protocol, at most once,
-- and returns the connection's protocol ("http", "tls") or nil, and for "tls" the
-- ClientHello's ALPN protocols (a list). With only (a protocol: "mtls" for what the
-- stream server's TLS socket terminated), only routes that require it are looked at,
-- in the same order, and detect is not used.
function _M.select(self, listen, addr, port, detect, only)
    local ports = self.by_listen[listen]
    if not ports then
        return nil
    end
    local detected, protocol, alpn = false, nil, nil
    local function detect_once()
        if not detected then
            detected = true
            protocol, alpn = detect()
        end
        return protocol, alpn
    end
    local b = parse_addr(addr)
    local group = port and ports.by_port[port]
    if group then
        local entry = select_in(group, b, detect_once, only)
        if entry then
            return entry
        end
    end
    return select_in(ports.any, b, detect_once, only)
end

return _M

-- The protocol of a captured connection, from its first bytes, for stream routes that
-- apply to one protocol only (labels["amesh-protocol"], amesh.stream.index).
--
-- "http" is what Envoy's http_inspector reports and Istio's HTTP filter chains accept
-- (application_protocols [http/1.1, h2c]): the HTTP/2 connection preface, or a request
-- line of HTTP/1.1. A request line of another version (HTTP/1.0) is http/1.0 to Envoy,
-- which those chains do not accept, so it is not "http" here either. "tls" is a TLS
-- ClientHello, as Envoy's tls_inspector finds it, with its application protocols (ALPN)
-- and server name: the stream routes of Istio mTLS chains ask for Istio's ALPN. Bytes
-- that start like a TLS record but are no ClientHello have no protocol (tls_inspector
-- leaves the transport protocol raw_buffer).
--
-- The bytes are read with recv(MSG_PEEK) on the connection's socket: nothing is
-- consumed, and nginx's proxy later reads them all. A client that sends nothing
-- (server-first protocols: MySQL, SMTP, ...) must not hang, so detection gives up after
-- timeout seconds and the connection has no protocol, as Envoy's listener filters do on
-- their timeout with continue_on_listener_filters_timeout (istiod sets that; its
-- timeout, protocolDetectionTimeout, is 0 by default, which in Envoy means waiting
-- forever).
local ffi = require("ffi")
local C = ffi.C
local str_byte = string.byte
local str_sub = string.sub
local str_find = string.find
local str_match = string.match
local math_min = math.min
local ipairs = ipairs
local tonumber = tonumber
local tostring = tostring

pcall(ffi.cdef, [[
long recv(int sockfd, void *buf, size_t len, int flags);
void *memchr(const void *s, int c, size_t n);
]])

local MSG_PEEK, MSG_DONTWAIT = 0x2, 0x40
local EINTR, EAGAIN = 4, 11

local _M = {}

-- MORE: the bytes so far are the start of what may still become HTTP or TLS.
local MORE = {}
_M.MORE = MORE
-- CLOSE: as many bytes as Envoy's http_inspector reads (64 KiB) without the end of a
-- request line; Envoy closes such a connection.
local CLOSE = {}
_M.CLOSE = CLOSE

local max_inspect = 64 * 1024

local preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

-- A request line: method (RFC 9110 token), SP, request target (no whitespace or control
-- characters), SP, HTTP version, CRLF or LF.
local tchar = "[!#$%%&'*+%-.^_`|~%w]"
local request_line = "^" .. tchar .. "+ [^%s%c]+ HTTP/(%d)%.(%d)\r?$"
-- The starts of a request line without its end: method, target, version.
local partial = {
    "^" .. tchar .. "+$",
    "^" .. tchar .. "+ [^%s%c]*$",
}
local version = "HTTP/0.0\r"

local function partial_version(rest)
    -- rest is what follows "METHOD TARGET ": a start of "HTTP/d.d\r".
    local n = #rest
    if n > #version then
        return false
    end
    for i = 1, n do
        local want, got = str_byte(version, i), str_byte(rest, i)
        if want == 48 then -- '0': any digit
            if got < 48 or got > 57 then
                return false
            end
        elseif want ~= got then
            return false
        end
    end
    return true
end

local function u16(s, i)
    return str_byte(s, i) * 256 + str_byte(s, i + 1)
end

-- client_hello reads the ClientHello in the first TLS record of s (whose header is
-- there): MORE until the record is, nil when it is no ClientHello, else {alpn = the
-- protocols in the client's order, sni = the host name or nil}. A ClientHello longer
-- than its first record has its extensions in the next ones, which are not read: it
-- counts as one without ALPN or server name.
local function client_hello(s)
    local n = #s
    if n < 5 then
        return MORE
    end
    local total = 5 + u16(s, 4)
    if n < total then
        return n < max_inspect and MORE or nil
    end
    if total < 9 or str_byte(s, 6) ~= 1 then
        return nil -- not a ClientHello handshake message
    end
    local hello = {alpn = {}}
    local stop = 10 + str_byte(s, 7) * 65536 + u16(s, 8) -- one past the message
    if stop > total + 1 then
        return hello
    end
    local p = 10 + 2 + 32 -- version, random
    if p >= stop then
        return nil
    end
    p = p + 1 + str_byte(s, p) -- session id
    if p + 1 >= stop then
        return nil
    end
    p = p + 2 + u16(s, p) -- cipher suites
    if p >= stop then
        return nil
    end
    p = p + 1 + str_byte(s, p) -- compression methods
    if p == stop then
        return hello -- no extensions
    end
    if p + 1 >= stop then
        return nil
    end
    local ext_end = p + 2 + u16(s, p)
    if ext_end > stop then
        return nil
    end
    p = p + 2
    while p + 3 < ext_end do
        local typ, len = u16(s, p), u16(s, p + 2)
        local d, e = p + 4, p + 4 + len -- the extension's data: [d, e)
        if e > ext_end then
            return nil
        end
        if typ == 16 and len >= 2 then -- application_layer_protocol_negotiation
            local q, lend = d + 2, d + 2 + u16(s, d)
            if lend > e then
                return nil
            end
            while q < lend do
                local l = str_byte(s, q)
                if l == 0 or q + 1 + l > lend then
                    return nil
                end
                hello.alpn[#hello.alpn + 1] = str_sub(s, q + 1, q + l)
                q = q + 1 + l
            end
        elseif typ == 0 and len >= 5 and str_byte(s, d + 2) == 0 then -- server_name
            local l = u16(s, d + 3)
            if d + 5 + l > e then
                return nil
            end
            hello.sni = str_sub(s, d + 5, d + 4 + l)
        end
        p = e
    end
    return hello
end
_M.client_hello = client_hello

--- classify returns what the first bytes s (at least one) of a connection are: "h2c",
-- "http/1.1", "http/1.0", "tls" (and the ClientHello, see client_hello), nil (none of
-- these), MORE (a start of one of them) or CLOSE (see above).
function _M.classify(s)
    local n = #s
    local m = math_min(n, #preface)
    if str_sub(s, 1, m) == str_sub(preface, 1, m) then
        return n < #preface and MORE or "h2c"
    end
    local b1 = str_byte(s, 1)
    if b1 == 0x16 then
        -- TLS record: content type handshake, protocol version 3.x.
        if n < 3 then
            return n < 2 and MORE or (str_byte(s, 2) == 3 and MORE or nil)
        end
        if str_byte(s, 2) ~= 3 or str_byte(s, 3) > 4 then
            return nil
        end
        local hello = client_hello(s)
        if hello == MORE or hello == nil then
            return hello
        end
        return "tls", hello
    end
    if b1 == 13 or b1 == 10 then
        return nil
    end
    local lf = str_find(s, "\n", 1, true)
    if lf then
        local major, minor = str_match(str_sub(s, 1, lf - 1), request_line)
        if not major then
            return nil
        end
        if major == "1" and minor == "1" then
            return "http/1.1"
        end
        return "http/1.0"
    end
    if n >= max_inspect then
        return CLOSE
    end
    for _, p in ipairs(partial) do
        if str_find(s, p) then
            return MORE
        end
    end
    local sp = str_match(s, "^" .. tchar .. "+ [^%s%c]+ ()")
    if sp and partial_version(str_sub(s, sp)) then
        return MORE
    end
    return nil
end

-- label is the amesh-protocol a classification satisfies.
local label = {h2c = "http", ["http/1.1"] = "http", tls = "tls"}

local buf

-- peek returns the bytes waiting on fd without consuming them (at most max_inspect),
-- "" at end of stream, or nil and whether the error is only that nothing is there yet.
local function peek(fd)
    if not buf then
        buf = ffi.new("unsigned char[?]", max_inspect)
    end
    local n = tonumber(C.recv(fd, buf, max_inspect, MSG_PEEK + MSG_DONTWAIT))
    if n < 0 then
        local errno = ffi.errno()
        return nil, errno == EAGAIN or errno == EINTR
    end
    if n == 0 then
        return ""
    end
    -- A request line ends at the first LF: the rest is not needed (a TLS record is
    -- read whole).
    local lf = buf[0] ~= 0x16 and C.memchr(buf, 10, n)
    if lf and lf ~= nil then
        n = tonumber(ffi.cast("unsigned char *", lf) - buf) + 1
    end
    return ffi.string(buf, n)
end

--- detect returns the amesh-protocol ("http", "tls") of the connection of the current
-- stream session (preread phase), nil when it has none or said nothing within timeout
-- seconds, or false when it must be closed (see CLOSE); a reason for the log; and for
-- "tls" the ClientHello (client_hello). It sleeps (ngx.sleep) while waiting, polling
-- the socket with growing intervals.
function _M.detect(timeout)
    -- Without the socket nothing can be detected: an error, not a connection without a
    -- protocol.
    local sock, err = ngx.req.socket()
    if not sock then
        err = "no downstream socket: " .. tostring(err)
        ngx.log(ngx.ERR, "amesh: protocol detection failed: ", err)
        return nil, err
    end
    local fd, ferr = sock:getfd()
    if not fd then
        err = "no downstream fd: " .. tostring(ferr)
        ngx.log(ngx.ERR, "amesh: protocol detection failed: ", err)
        return nil, err
    end
    ngx.update_time()
    local deadline = ngx.now() + timeout
    local wait = 0.001
    while true do
        local s, again = peek(fd)
        if s == "" then
            return nil, "the client closed before it sent a byte"
        end
        if s then
            local c, hello = _M.classify(s)
            if c == CLOSE then
                return false, "no end of the request line in " .. max_inspect .. " bytes"
            end
            if c ~= MORE then
                return c and label[c], c, hello
            end
        elseif not again then
            return nil, "recv failed: errno " .. ffi.errno()
        end
        ngx.update_time()
        local left = deadline - ngx.now()
        if left <= 0 then
            return nil, "no protocol within " .. timeout .. " s"
        end
        ngx.sleep(math_min(wait, left))
        wait = math_min(wait * 2, 0.05)
    end
end

return _M

-- amesh.jwt: Envoy's jwt_authn filter (envoy.filters.http.jwt_authn, Istio's
-- RequestAuthentication) for one request, in the form amesh's translator writes
-- (internal/translate/jwt.go). It needs nothing from APISIX: amesh.rbac runs it as a
-- step of amesh-rbac's ordered list, and test/nginx runs it in stock nginx.
--
-- run(step, r, ops) verifies what the step's requirement asks, as Envoy's verifier
-- tree does, and returns nil when the request may go on, or the response Envoy sends:
-- {status, body, www_authenticate}. Verified payloads go to r.meta, the filter's
-- dynamic metadata, for the RBAC steps after it. ops changes the request's headers and
-- query as Envoy's filter does (forward_payload_header, claim_to_headers, removing a
-- token that is not forwarded); amesh.rbac passes nginx's, the APISIX plugin its own.
--
-- Signatures are verified through LuaJIT's FFI with the libcrypto nginx links
-- (OpenSSL 1.1.1 or 3): RS256/384/512, PS256/384/512, ES256/384/512 (JOSE r||s
-- turned into DER) and EdDSA (Ed25519). Keys arrive as PEM SubjectPublicKeyInfo.
local ffi = require("ffi")
local cjson = require("cjson.safe")

local C = ffi.C
local ngx = ngx
local byte, sub, find, gsub, gmatch, char = string.byte, string.sub, string.find, string.gsub, string.gmatch, string.char
local concat, insert, sort = table.concat, table.insert, table.sort
local type, ipairs, pairs, floor = type, ipairs, pairs, math.floor
local setmetatable = setmetatable

local _M = {}

pcall(ffi.cdef, [[
typedef struct evp_pkey_st EVP_PKEY;
typedef struct evp_md_ctx_st EVP_MD_CTX;
typedef struct evp_md_st EVP_MD;
typedef struct evp_pkey_ctx_st EVP_PKEY_CTX;
typedef struct engine_st ENGINE;
EVP_PKEY *d2i_PUBKEY(EVP_PKEY **a, const unsigned char **pp, long length);
void EVP_PKEY_free(EVP_PKEY *pkey);
EVP_MD_CTX *EVP_MD_CTX_new(void);
void EVP_MD_CTX_free(EVP_MD_CTX *ctx);
int EVP_DigestVerifyInit(EVP_MD_CTX *ctx, EVP_PKEY_CTX **pctx, const EVP_MD *type,
                         ENGINE *e, EVP_PKEY *pkey);
int EVP_DigestVerify(EVP_MD_CTX *ctx, const unsigned char *sig, size_t siglen,
                     const unsigned char *tbs, size_t tbslen);
int EVP_PKEY_CTX_ctrl(EVP_PKEY_CTX *ctx, int keytype, int optype, int cmd, int p1, void *p2);
const EVP_MD *EVP_sha256(void);
const EVP_MD *EVP_sha384(void);
const EVP_MD *EVP_sha512(void);
void ERR_clear_error(void);
]])

-- OpenSSL's constants for PSS padding (rsa.h, evp.h; the same in 1.1.1 and 3; the
-- operation -1 is any, as the operation bits differ between them).
local EVP_PKEY_RSA = 6
local EVP_PKEY_CTRL_RSA_PADDING = 0x1000 + 1
local EVP_PKEY_CTRL_RSA_MGF1_MD = 0x1000 + 5
local RSA_PKCS1_PSS_PADDING = 6

-- Crypto ---------------------------------------------------------------------------

-- pkeys holds the EVP_PKEY of each key table of a config (weakly: a config that is
-- replaced takes its keys with it).
local pkeys = setmetatable({}, {__mode = "k"})

local function pkey_of(key)
    local p = pkeys[key]
    if p ~= nil then
        return p or nil
    end
    local b64 = key.pem:gsub("%-%-%-%-%-[^%-]+%-%-%-%-%-", ""):gsub("%s", "")
    local der = ngx.decode_base64(b64)
    p = false
    if der then
        local buf = ffi.new("const unsigned char *[1]")
        local keep = ffi.new("unsigned char[?]", #der)
        ffi.copy(keep, der, #der)
        buf[0] = keep
        local k = C.d2i_PUBKEY(nil, buf, #der)
        if k ~= nil then
            p = ffi.gc(k, C.EVP_PKEY_free)
        else
            C.ERR_clear_error()
        end
    end
    pkeys[key] = p
    return p or nil
end

local function md_of(alg)
    local bits = sub(alg, 3)
    if bits == "384" then
        return C.EVP_sha384()
    elseif bits == "512" then
        return C.EVP_sha512()
    end
    return C.EVP_sha256()
end

-- der_int is a DER INTEGER of the unsigned big-endian bytes s.
local function der_int(s)
    local i = 1
    while i < #s and byte(s, i) == 0 do
        i = i + 1
    end
    s = sub(s, i)
    if byte(s, 1) >= 0x80 then
        s = "\0" .. s
    end
    return "\2" .. char(#s) .. s
end

local function der_seq(body)
    local n = #body
    if n < 128 then
        return "\48" .. char(n) .. body
    end
    return "\48\129" .. char(n) .. body
end

-- digest_verify runs EVP_DigestVerify with md (nil for EdDSA), PSS padding when pss.
local function digest_verify(pkey, md, pss, sig, data)
    local ctx = C.EVP_MD_CTX_new()
    if ctx == nil then
        return false
    end
    local pctx = ffi.new("EVP_PKEY_CTX *[1]")
    local ok = C.EVP_DigestVerifyInit(ctx, pctx, md, nil, pkey) == 1
    if ok and pss then
        ok = C.EVP_PKEY_CTX_ctrl(pctx[0], EVP_PKEY_RSA, -1, EVP_PKEY_CTRL_RSA_PADDING, RSA_PKCS1_PSS_PADDING, nil) > 0
            and C.EVP_PKEY_CTX_ctrl(pctx[0], EVP_PKEY_RSA, -1, EVP_PKEY_CTRL_RSA_MGF1_MD, 0,
                ffi.cast("void *", md)) > 0
    end
    ok = ok and C.EVP_DigestVerify(ctx, sig, #sig, data, #data) == 1
    C.EVP_MD_CTX_free(ctx)
    C.ERR_clear_error()
    return ok
end

-- verify_with checks one key as jwt_verify_lib does (verifyJwtWithoutTimeChecking):
-- the key's kty decides how, the token's alg the digest.
local function verify_with(key, jwt)
    local alg, kty = jwt.alg, key.kty
    local pkey = pkey_of(key)
    if not pkey then
        return false
    end
    local p2 = sub(alg, 1, 2)
    if kty == "EC" then
        local sig = jwt.sig
        local half = floor(#sig / 2)
        if half == 0 or half > 66 then
            return false
        end
        local der = der_seq(der_int(sub(sig, 1, half)) .. der_int(sub(sig, half + 1, 2 * half)))
        return digest_verify(pkey, md_of(alg), false, der, jwt.signed)
    elseif kty == "RSA" then
        if p2 == "RS" then
            return digest_verify(pkey, md_of(alg), false, jwt.sig, jwt.signed)
        elseif p2 == "PS" then
            return digest_verify(pkey, md_of(alg), true, jwt.sig, jwt.signed)
        end
        return false
    elseif kty == "OKP" then
        if #jwt.sig ~= 64 then
            return false, "Jwt ED25519 signature is wrong length"
        end
        return digest_verify(pkey, nil, false, jwt.sig, jwt.signed)
    end
    return false
end

-- verify_keys is jwt_verify_lib's key loop: keys whose kid (when both have one) and
-- alg (when the key has one) agree with the token's are tried in order.
local function verify_keys(keys, jwt)
    local matched = false
    for _, key in ipairs(keys) do
        if not (jwt.kid and key.kid and key.kid ~= "" and key.kid ~= jwt.kid)
                and not (key.alg and key.alg ~= "" and key.alg ~= jwt.alg) then
            matched = true
            local ok, status = verify_with(key, jwt)
            if ok then
                return nil
            end
            if status then
                return status
            end
        end
    end
    if matched then
        return "Jwt verification fails"
    end
    return "Jwks doesn't have key to match kid or alg from Jwt"
end
_M.verify_keys = verify_keys

-- Tokens ---------------------------------------------------------------------------

local function b64url_decode(s)
    if find(s, "[^%w%-_=]") then
        return nil
    end
    s = gsub(gsub(s, "=+$", ""), "[-_]", {["-"] = "+", ["_"] = "/"})
    local r = #s % 4
    if r == 1 then
        return nil
    elseif r > 0 then
        s = s .. string.rep("=", 4 - r)
    end
    return ngx.decode_base64(s)
end

local function json_object(s)
    if not s or not find(s, "^%s*{") then
        return nil
    end
    local v = cjson.decode(s)
    if type(v) ~= "table" then
        return nil
    end
    return v
end

local implemented = {ES256 = true, ES384 = true, ES512 = true, HS256 = true, HS384 = true, HS512 = true,
    RS256 = true, RS384 = true, RS512 = true, PS256 = true, PS384 = true, PS512 = true, EdDSA = true}

-- uint64 reads an optional integer claim; nil, status on a bad one.
local function uint_claim(p, name)
    local v = p[name]
    if v == nil then
        return 0
    end
    if type(v) ~= "number" then
        return nil, "Jwt payload [" .. name .. "] field is not an integer"
    end
    if v < 0 or v ~= floor(v) or v >= 2 ^ 64 then
        return nil, "Jwt payload [" .. name .. "] field is not a positive 64 bit integer"
    end
    return v
end

-- parse is jwt_verify_lib's Jwt::parseFromString: the token or the failure status.
local function parse(token)
    local _, dots = gsub(token, "%.", "")
    if dots ~= 2 then
        return nil, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    end
    local h64, p64, s64 = token:match("^([^.]+)%.([^.]+)%.([^.]+)$")
    if not h64 then
        return nil, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    end
    local hs = b64url_decode(h64)
    if not hs then
        return nil, "Jwt header is an invalid Base64url encoded"
    end
    local header = json_object(hs)
    if not header then
        return nil, "Jwt header is an invalid JSON"
    end
    local alg = header.alg
    if type(alg) ~= "string" then
        return nil, "Jwt header [alg] field is required and must be a string"
    end
    if not implemented[alg] then
        return nil, "Jwt header [alg] is not supported"
    end
    local kid = header.kid
    if kid ~= nil and type(kid) ~= "string" then
        return nil, "Jwt header [kid] field is not a string"
    end
    local ps = b64url_decode(p64)
    if not ps then
        return nil, "Jwt payload is an invalid Base64url encoded"
    end
    local payload = json_object(ps)
    if not payload then
        return nil, "Jwt payload is an invalid JSON"
    end
    for _, f in ipairs({"iss", "sub"}) do
        if payload[f] ~= nil and type(payload[f]) ~= "string" then
            return nil, "Jwt payload [" .. f .. "] field is not a string"
        end
    end
    local jwt = {header = header, payload = payload, alg = alg, kid = kid, iss = payload.iss or "",
        p64 = p64, signed = h64 .. "." .. p64}
    local err
    for _, f in ipairs({"iat", "nbf", "exp"}) do
        jwt[f], err = uint_claim(payload, f)
        if err then
            return nil, err
        end
    end
    if payload.jti ~= nil and type(payload.jti) ~= "string" then
        return nil, "Jwt payload [jti] field is not a string"
    end
    local aud = payload.aud
    if type(aud) == "string" then
        jwt.aud = {aud}
    elseif aud == nil then
        jwt.aud = {}
    elseif type(aud) == "table" then
        for _, a in ipairs(aud) do
            if type(a) ~= "string" then
                return nil, "Jwt payload [aud] field is not a string or string list"
            end
        end
        jwt.aud = aud
    else
        return nil, "Jwt payload [aud] field is not a string or string list"
    end
    jwt.sig = b64url_decode(s64)
    if not jwt.sig then
        return nil, "Jwt signature is an invalid Base64url encoded"
    end
    return jwt
end
_M.parse = parse

-- audience_ok is jwt_verify_lib's CheckAudience: no configured audience allows any;
-- otherwise one of the token's must be configured, both without "http(s)://" and a
-- trailing "/".
local function sanitize_aud(a)
    a = gsub(gsub(a, "^https?://", ""), "/$", "")
    return a
end

local function audience_ok(allowed, aud)
    if not allowed or #allowed == 0 then
        return true
    end
    for _, a in ipairs(aud) do
        local s = sanitize_aud(a)
        for _, b in ipairs(allowed) do
            if sanitize_aud(b) == s then
                return true
            end
        end
    end
    return false
end

-- Extraction -----------------------------------------------------------------------

-- The Base64url alphabet and the dot: after a header's value prefix, the token starts
-- at the first of them (Envoy's extractJWT).
local function after_prefix(v, prefix)
    if prefix == nil or prefix == "" then
        return v
    end
    local at = find(v, prefix, 1, true)
    if not at then
        return nil
    end
    local from = find(v, "[%w%-_%.]", at + #prefix)
    if not from then
        return v
    end
    return sub(v, from)
end

local function query_of(uri)
    local frag = find(uri, "#", 1, true)
    if frag then
        uri = sub(uri, 1, frag - 1)
    end
    local q = find(uri, "?", 1, true)
    if not q then
        return nil
    end
    return sub(uri, q + 1)
end

-- locations returns the token locations of providers names, as Envoy's extractor
-- groups them: header locations by name and prefix, then query parameters, each in
-- sorted order, with the issuers that use them ("" allows every issuer).
local loc_cache = setmetatable({}, {__mode = "k"})

local function locations(conf, names)
    local per = loc_cache[names]
    if per then
        return per
    end
    local hs, ps, cs = {}, {}, {}
    for _, n in ipairs(names) do
        local p = conf.providers[n]
        for _, h in ipairs(p.headers or {}) do
            local k = h.name .. (h.prefix or "")
            local l = hs[k]
            if not l then
                l = {key = k, name = h.name, prefix = h.prefix, issuers = {}}
                hs[k] = l
            end
            l.issuers[p.iss or ""] = true
        end
        for _, q in ipairs(p.params or {}) do
            local l = ps[q]
            if not l then
                l = {key = q, param = q, issuers = {}}
                ps[q] = l
            end
            l.issuers[p.iss or ""] = true
        end
        for _, c in ipairs(p.cookies or {}) do
            local l = cs[c]
            if not l then
                l = {key = c, cookie = c, issuers = {}}
                cs[c] = l
            end
            l.issuers[p.iss or ""] = true
        end
    end
    local function sorted(m)
        local out = {}
        for _, l in pairs(m) do
            out[#out + 1] = l
        end
        sort(out, function(a, b) return a.key < b.key end)
        return out
    end
    per = {headers = sorted(hs), params = sorted(ps), cookies = sorted(cs)}
    loc_cache[names] = per
    return per
end

-- cookies returns the values of the request's cookies named in want, as Envoy's
-- Http::Utility::parseCookies reads them: every Cookie header split at ";", a part
-- without "=" skipped, the name from its first non-space character to the "=", the
-- value after it without surrounding double quotes, the first of a name kept.
local function cookies(r, want)
    local v = r:raw_headers()["cookie"]
    if v == nil then
        return {}
    end
    if type(v) ~= "table" then
        v = {v}
    end
    local out = {}
    for _, h in ipairs(v) do
        for part in gmatch(h, "[^;]+") do
            local eq = find(part, "=", 1, true)
            if eq then
                local first = find(part, "[^ ]") or eq
                local k = sub(part, first, eq - 1)
                if want[k] and out[k] == nil then
                    local val = sub(part, eq + 1)
                    if #val >= 2 and byte(val, 1) == 34 and byte(val, -1) == 34 then
                        val = sub(val, 2, -2)
                    end
                    out[k] = val
                end
            end
        end
    end
    return out
end

-- extract returns the tokens of the request at the locations, in Envoy's order.
local function extract(conf, names, r)
    local loc = locations(conf, names)
    local tokens = {}
    if #loc.headers > 0 then
        local hs = r:raw_headers()
        for _, l in ipairs(loc.headers) do
            local v = hs[l.name]
            if type(v) ~= "table" then
                v = {v}
            end
            for _, x in ipairs(v) do
                local t = after_prefix(x, l.prefix)
                if t then
                    tokens[#tokens + 1] = {token = t, loc = l}
                end
            end
        end
    end
    if #loc.params > 0 then
        local q = query_of(ngx.var.request_uri or "")
        if q then
            local args = ngx.decode_args(q, 0)
            for _, l in ipairs(loc.params) do
                local v = args[l.param]
                if type(v) == "table" then
                    v = v[1]
                end
                if v == true then
                    v = ""
                end
                if v then
                    tokens[#tokens + 1] = {token = v, loc = l}
                end
            end
        end
    end
    if #loc.cookies > 0 then
        local want = {}
        for _, l in ipairs(loc.cookies) do
            want[l.cookie] = true
        end
        local jar = cookies(r, want)
        for _, l in ipairs(loc.cookies) do
            if jar[l.cookie] then
                tokens[#tokens + 1] = {token = jar[l.cookie], loc = l}
            end
        end
    end
    return tokens
end

local function issuer_allowed(loc, iss)
    return loc.issuers[""] or loc.issuers[iss] or false
end

-- by_issuer is the provider a token without a named provider is verified with: the
-- first (by name) whose issuer is the token's, else the first without an issuer.
local sorted_of = setmetatable({}, {__mode = "k"})

local function by_issuer(conf, iss)
    local names = sorted_of[conf]
    if not names then
        names = {}
        for n in pairs(conf.providers) do
            names[#names + 1] = n
        end
        sort(names)
        sorted_of[conf] = names
    end
    local fallback
    for _, n in ipairs(names) do
        local p = conf.providers[n]
        if (p.iss or "") == iss and iss ~= "" then
            return p
        end
        if (p.iss or "") == "" and not fallback then
            fallback = p
        end
    end
    return fallback
end

-- Requests -------------------------------------------------------------------------

local function remove_param(q, param)
    local out = {}
    for part in (q .. "&"):gmatch("([^&]*)&") do
        local k = part:match("^([^=]*)")
        if part ~= "" and ngx.unescape_uri(k) ~= param then
            out[#out + 1] = part
        end
    end
    return concat(out, "&")
end

-- claim_string is a claim as Envoy copies it to a header: strings as they are,
-- integral numbers without a fraction, booleans; nil for anything else.
local function claim_string(v)
    local t = type(v)
    if t == "string" then
        return v ~= "" and v or nil
    elseif t == "boolean" then
        return v and "true" or "false"
    elseif t == "number" then
        if v >= 0 and v == floor(v) and v < 2 ^ 64 then
            return string.format("%.0f", v)
        end
        return string.format("%f", v)
    end
    return nil
end

local function claim_at(payload, path)
    local v = payload
    for part in (path .. "."):gmatch("([^.]*)%.") do
        if type(v) ~= "table" then
            return nil
        end
        v = v[part]
    end
    return v
end

-- good applies what Envoy does with a verified token of provider p (handleGoodJwt).
local function good(r, ops, p, jwt, tok)
    if p.payload_header then
        local v = jwt.p64
        if p.pad then
            local m = #v % 4
            if m > 0 then
                v = v .. string.rep("=", 4 - m)
            end
        end
        ops.add(p.payload_header, v)
    end
    for _, ch in ipairs(p.claim_headers or {}) do
        local v = claim_string(claim_at(jwt.payload, ch.claim))
        if v then
            ops.add(ch.header, v)
        end
    end
    -- Envoy leaves a token in a cookie where it was (JwtCookieLocation::removeJwt).
    if not p.forward and not tok.loc.cookie then
        if tok.loc.name then
            ops.set(tok.loc.name, nil)
        else
            local q = r.args or query_of(ngx.var.request_uri or "") or ""
            r.args = remove_param(q, tok.loc.param)
            ops.set_args(r.args)
        end
    end
    r:headers_changed()
    local meta = r.meta[_M.metadata_key]
    if not meta then
        meta = {}
        r.meta[_M.metadata_key] = meta
    end
    if p.payload_meta then
        local payload = jwt.payload
        if p.space_claims then
            local copy = {}
            for k, v in pairs(payload) do
                copy[k] = v
            end
            for _, c in ipairs(p.space_claims) do
                if type(copy[c]) == "string" then
                    local list = {}
                    for w in copy[c]:gmatch("[^ ]+") do
                        list[#list + 1] = w
                    end
                    copy[c] = list
                end
            end
            payload = copy
        end
        meta[p.payload_meta] = payload
    end
    if p.header_meta then
        meta[p.header_meta] = jwt.header
    end
end

-- sanitize removes the headers providers names would set (Envoy's extractor does so
-- before it looks for tokens).
local function sanitize(conf, names, ops)
    for _, n in ipairs(names) do
        local p = conf.providers[n]
        if p.payload_header then
            ops.set(p.payload_header, nil)
        end
        for _, ch in ipairs(p.claim_headers or {}) do
            ops.set(ch.header, nil)
        end
    end
end

-- authenticate is Envoy's AuthenticatorImpl: provider is nil for the bypass
-- verifiers, which take the provider from the token's issuer. It returns nil when
-- the result is OK, else the status text.
local function authenticate(conf, r, ops, names, provider, aud, allow_failed, allow_missing)
    sanitize(conf, names, ops)
    r:headers_changed()
    local tokens = extract(conf, names, r)
    local status
    if #tokens == 0 then
        status = "Jwt is missing"
    end
    while #tokens > 0 do
        local tok = tokens[#tokens]
        tokens[#tokens] = nil
        local jwt
        jwt, status = parse(tok.token)
        local p
        if not status then
            if not issuer_allowed(tok.loc, jwt.iss) then
                status = "Jwt issuer is not configured"
            else
                p = provider or by_issuer(conf, jwt.iss)
                if not p then
                    status = "Jwt issuer is not configured"
                end
            end
        end
        if not status then
            local now = ngx.time()
            local skew = p.skew or 60
            if now + skew < jwt.nbf then
                status = "Jwt not yet valid"
            elseif jwt.exp ~= 0 and now > jwt.exp + skew then
                status = "Jwt is expired"
            elseif not audience_ok(aud or p.aud, jwt.aud) then
                status = "Audiences in Jwt are not allowed"
            elseif p.jwks_fetch_failed then
                -- Envoy fetches a remote JWKS here; amesh's fetch is done or failed.
                status = "Jwks remote fetch is failed"
            else
                status = verify_keys(p.keys, jwt)
            end
        end
        if not status then
            good(r, ops, p, jwt, tok)
        end
        if (status and not allow_failed and not allow_missing) or #tokens == 0 then
            break
        end
    end
    if allow_failed then
        return nil
    end
    if allow_missing and status == "Jwt is missing" then
        return nil
    end
    return status
end

-- names_of holds the one-provider list of each provider requirement, so its token
-- locations are computed once (the config itself stays as validated).
local names_of = setmetatable({}, {__mode = "k"})

-- check evaluates a requirement (Envoy's verifier tree, run to completion in order).
local function check(conf, req, r, ops)
    local k = req.k
    if k == "ok" then
        return nil
    elseif k == "provider" then
        local p = conf.providers[req.p]
        local names = names_of[req]
        if not names then
            names = {req.p}
            names_of[req] = names
        end
        return authenticate(conf, r, ops, names, p, req.aud, false, false)
    elseif k == "missing" or k == "failed" then
        return authenticate(conf, r, ops, req.providers or {}, nil, nil, k == "failed", true)
    elseif k == "any" then
        local status = "Jwt is missing"
        for _, x in ipairs(req.of or {}) do
            status = check(conf, x, r, ops)
            if not status then
                return nil
            end
        end
        return status
    elseif k == "all" then
        for _, x in ipairs(req.of or {}) do
            local status = check(conf, x, r, ops)
            if status then
                return status
            end
        end
        return nil
    end
    return "Jwt verification fails"
end

_M.metadata_key = "envoy.filters.http.jwt_authn"

-- cors_preflight: OPTIONS with Origin and Access-Control-Request-Method.
local function cors_preflight(r)
    if ngx.req.get_method() ~= "OPTIONS" then
        return false
    end
    local o, m = r:header("origin"), r:header("access-control-request-method")
    return o ~= nil and o ~= "" and m ~= nil and m ~= ""
end

-- realm is Envoy's original URI: x-forwarded-proto (the connection's scheme where the
-- connection manager overwrites it), "://", the host and the first 256 bytes of :path.
local function realm(r)
    local scheme = ngx.var.scheme
    if r.conf.remote_from ~= "peer" then
        scheme = r:header("x-forwarded-proto") or scheme
    end
    local p, q = r:path()
    local path = p and (p .. q) or (ngx.var.request_uri or "")
    return scheme .. "://" .. (ngx.var.http_host or "") .. sub(path, 1, 256)
end

function _M.run(step, r, ops)
    local conf = step.jwt
    if conf.bypass_cors and cors_preflight(r) then
        return nil
    end
    local status = check(conf, conf.requires, r, ops)
    if not status then
        return nil
    end
    local code = status == "Audiences in Jwt are not allowed" and 403 or 401
    if conf.strip then
        return {status = code, body = ""}
    end
    local www = 'Bearer realm="' .. realm(r) .. '"'
    if status ~= "Jwt is missing" then
        www = www .. ', error="invalid_token"'
    end
    return {status = code, body = status, www_authenticate = www}
end

-- nginx_ops changes the request with nginx's API (stock nginx).
_M.nginx_ops = {
    set = function(name, value)
        ngx.req.set_header(name, value)
    end,
    add = function(name, value)
        local cur = ngx.req.get_headers(0)[name]
        if cur == nil then
            ngx.req.set_header(name, value)
            return
        end
        if type(cur) ~= "table" then
            cur = {cur}
        end
        insert(cur, value)
        ngx.req.set_header(name, cur)
    end,
    set_args = function(args)
        ngx.req.set_uri_args(args)
    end,
}

return _M

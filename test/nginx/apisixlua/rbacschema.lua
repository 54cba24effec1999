-- resty rbacschema.lua PLUGIN CONF...: validates each amesh-rbac config file CONF with
-- APISIX's own JSON schema validator (api7/jsonschema, as core.schema.check does)
-- against the schema amesh-rbac.lua holds. Prints one line per file: "ok" or
-- "invalid: <reason>".
local cjson = require("cjson.safe")
local jsonschema = require("jsonschema")

local function read(path)
    local f = assert(io.open(path))
    local s = f:read("*a")
    f:close()
    return s
end

local text = read(arg[1]):match("%[==%[(.-)%]==%]")
local validator = jsonschema.generate_validator(assert(cjson.decode(text)))
for i = 2, #arg do
    local conf, err = cjson.decode(read(arg[i]))
    if not conf then
        print("invalid: " .. err)
    else
        local ok, why = validator(conf)
        print(ok and "ok" or ("invalid: " .. tostring(why)))
    end
end

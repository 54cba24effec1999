-- Readiness of an APISIX sidecar, served on the port the kubelet probes (15021, where Envoy
-- answers in an Istio sidecar):
--
--   server {
--       listen 15021;
--       location = /healthz/ready { content_by_lua_block { require("amesh.ready").check("/_amesh_agent_ready") } }
--       location = /_amesh_agent_ready { internal; proxy_pass http://127.0.0.1:15020/healthz/ready; }
--   }
--
-- Ready means: this nginx answers (its workers run), amesh has written its first complete
-- configuration (the version key of the "xds-config-version" dict exists: amesh writes it
-- after the objects of its first consistent snapshot), and istio-agent reports itself ready on
-- its status port. Until then the pod gets no traffic, as with Envoy, which is not ready before
-- its first configuration. In APISIX the workers do not answer at all before that version
-- (APISIX's xds providers wait for it in init_worker), so the probe times out instead; the
-- version check covers an nginx whose workers serve without waiting.
local _M = {}

local function fail(reason)
    ngx.status = ngx.HTTP_SERVICE_UNAVAILABLE
    ngx.header["Content-Type"] = "text/plain"
    ngx.say(reason)
    return ngx.exit(ngx.HTTP_SERVICE_UNAVAILABLE)
end

-- check answers the probe; agent_location is an internal location proxying to istio-agent's
-- /healthz/ready (nil skips the agent, for a sidecar without one).
function _M.check(agent_location)
    local versions = ngx.shared["xds-config-version"]
    if versions == nil then
        return fail("not ready: no shared dict xds-config-version (declare it in nginx_config.http.custom_lua_shared_dict)")
    end
    if versions:get("version") == nil then
        return fail("not ready: amesh has not written a configuration yet")
    end
    if agent_location then
        local res = ngx.location.capture(agent_location)
        if res.status ~= ngx.HTTP_OK then
            return fail("not ready: istio-agent answered " .. tostring(res.status))
        end
    end
    ngx.header["Content-Type"] = "text/plain"
    ngx.say("ready")
end

return _M

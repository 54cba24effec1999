{{/*
amesh.apisixConfig: APISIX's conf/config.yaml for the sidecar, as a dict. The injection
template hands it to the apisix container as AMESH_APISIX_CONFIG (JSON, which is YAML), and the
image's entrypoint writes it to conf/config.yaml before `apisix init`. Paths match
docker/sidecar/Dockerfile.
*/}}
{{- define "amesh.apisixConfig" -}}
{{- $envs := list "AMESH_XDS_ADDRESS" "AMESH_XDS_PROTOCOL" "AMESH_LOG_LEVEL" "AMESH_LOG_FILE"
  "AMESH_CONFIG_FILE" "AMESH_LABELS_FILE" "AMESH_ORIGINAL_DST_VAR" "AMESH_COALESCE_WINDOW"
  "AMESH_STATUS_ADDR" "AMESH_CONTROLLER_ADDRESS" "AMESH_CONTROLLER_TOKEN_FILE"
  "AMESH_CONTROLLER_TLS" "AMESH_CONTROLLER_CA_FILE" "AMESH_CONTROLLER_SERVER_NAME"
  "POD_NAME" "POD_NAMESPACE" "INSTANCE_IP" "SERVICE_ACCOUNT" "NODE_NAME" "CLUSTER_ID"
  "CLUSTER_DOMAIN" "PROXY_CONFIG" "ISTIO_VERSION" "ISTIO_META_APP_CONTAINERS" "GOMAXPROCS" -}}
{{- $envs = concat $envs .Values.apisix.extraEnvs | uniq -}}
{{- $plugins := list "traffic-split" "redirect" "mocking" "fault-injection" "cors" "proxy-mirror"
  "proxy-rewrite" "response-rewrite" "amesh-original-dst" "amesh-rbac" "amesh-upstream-tls" -}}
{{- $plugins = concat $plugins .Values.apisix.extraPlugins | uniq -}}
apisix:
  node_listen:
  - port: 15001
  - port: 15006
  enable_ipv6: {{ .Values.apisix.enableIPv6 }}
  # The sidecar listens only on the ports Istio reserves for its proxy (15001, 15006, 15021):
  # no admin, control or HTTPS listener (APISIX's 9443 by default) takes a port from the
  # application in the pod's network namespace.
  enable_admin: false
  enable_control: false
  ssl:
    enable: false
  proxy_mode: http
  # amesh's config provider (apisix/core/config_xds.lua there comes before APISIX's own)
  # and router, and the readiness check.
  extra_lua_path: /usr/local/amesh/lua/?.lua
  extra_lua_cpath: /usr/local/amesh/lib/?.so
  router:
    http: amesh_host_uri
deployment:
  role: data_plane
  role_data_plane:
    config_provider: xds
nginx_config:
  worker_processes: {{ .Values.apisix.workerProcesses | quote }}
  error_log: /dev/stderr
  error_log_level: {{ .Values.apisix.errorLogLevel }}
  envs:
  {{- range $envs }}
  - {{ . }}
  {{- end }}
  main_configuration_snippet: |
    load_module /usr/local/openresty/nginx/modules/ngx_http_amesh_original_dst_module.so;
    load_module /usr/local/openresty/nginx/modules/ngx_stream_amesh_original_dst_module.so;
    load_module /usr/local/openresty/nginx/modules/ngx_http_amesh_upstream_tls_module.so;
  # amesh-original-dst (lua/apisix/plugins) binds upstream connections to the source
  # address of the cluster (127.0.0.6 for inbound delivery) through this variable.
  # amesh-upstream-tls (Istio mTLS, DestinationRule TLS) gives each upstream TLS connection
  # its cluster's settings through the upstream TLS module's variable, which replaces
  # APISIX's proxy_ssl_name (http.proxy_ssl_server_name: false below) and names
  # $upstream_host for every other request.
  http_server_configuration_snippet: |
    set $amesh_upstream_bind '';
    proxy_bind $amesh_upstream_bind;
    proxy_ssl_server_name on;
    proxy_ssl_name $amesh_upstream_ssl_name;
  http:
    proxy_ssl_server_name: false
    custom_lua_shared_dict:
      xds-config: {{ .Values.apisix.xdsConfigSize }}
      xds-config-version: {{ .Values.apisix.xdsConfigVersionSize }}
  http_end_configuration_snippet: |
    server {
        listen 15021;
    {{- if .Values.apisix.enableIPv6 }}
        listen [::]:15021;
    {{- end }}
        access_log off;
        location = /healthz/ready {
            content_by_lua_block { require("amesh.ready").check("/_amesh_agent_ready") }
        }
        location = /_amesh_agent_ready {
            internal;
            proxy_pass http://127.0.0.1:15020/healthz/ready;
        }
    }
plugins:
{{- range $plugins }}
- {{ . }}
{{- end }}
stream_plugins: []
{{- end }}

{{/*
amesh.controllerAddress: the controller address sidecars use.
*/}}
{{- define "amesh.controllerAddress" -}}
{{- if .Values.sidecar.controllerAddress -}}
{{ .Values.sidecar.controllerAddress }}
{{- else if .Values.controller.enabled -}}
amesh-controller.{{ .Values.controller.namespace }}.svc:15090
{{- end -}}
{{- end }}

{{/*
amesh.injectionTemplate: files/injection-template.yaml with this chart's values in place of its
@AMESH_...@ markers. Each value is written as one JSON/YAML scalar or flow collection, so its
place in the template's indentation does not matter. "{{" would start an action when istiod
evaluates the template, so it is escaped in the values.
*/}}
{{- define "amesh.injectionTemplate" -}}
{{- $cfg := include "amesh.apisixConfig" . | fromYaml | toJson | replace "{{" "{{`{{`}}" -}}
{{- $env := "" -}}
{{- if .Values.sidecar.env }}{{ $env = printf "%s\n" (toYaml .Values.sidecar.env | indent 4 | replace "{{" "{{`{{`}}") }}{{ end -}}
{{- .Files.Get "files/injection-template.yaml"
  | replace "@AMESH_IMAGE@" (.Values.sidecar.image | quote)
  | replace "@AMESH_PULL_POLICY@" (.Values.sidecar.imagePullPolicy | quote)
  | replace "@AMESH_APISIX_CONFIG@" ($cfg | quote)
  | replace "@AMESH_LOG_LEVEL@" (.Values.sidecar.logLevel | quote)
  | replace "@AMESH_CONTROLLER_ADDRESS@" (include "amesh.controllerAddress" . | quote)
  | replace "@AMESH_DRAIN_SECONDS@" (.Values.sidecar.drainSeconds | toString)
  | replace "@AMESH_RESOURCES@" (.Values.sidecar.resources | toJson)
  | replace "    @AMESH_EXTRA_ENV@\n" $env -}}
{{- end }}

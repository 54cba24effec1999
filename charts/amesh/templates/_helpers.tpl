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
  "proxy-rewrite" "response-rewrite" "amesh-original-dst" "amesh-rbac" "amesh-upstream-tls" "amesh-xfcc" -}}
{{- $plugins = concat $plugins .Values.apisix.extraPlugins | uniq -}}
{{- $sockets := include "amesh.socketDir" . -}}
{{- $dicts := printf "lua_shared_dict xds-config %s;\n    lua_shared_dict xds-config-version %s" .Values.apisix.xdsConfigSize .Values.apisix.xdsConfigVersionSize -}}
apisix:
  # The capture ports are nginx stream listeners: amesh's stream router picks a route by the
  # connection's original destination; HTTP chains go on to the HTTP server below, over a unix
  # socket per capture port. HTTP listens on nothing else (node_listen), so the sidecar listens
  # only on the ports Istio reserves for its proxy (15001, 15006, 15021): no admin, control or
  # HTTPS listener (APISIX's 9443 by default) takes a port from the application in the pod's
  # network namespace.
  node_listen: []
  proxy_mode: http&stream
  stream_proxy:
    tcp:
    {{- range list 15001 15006 }}
    - addr: "0.0.0.0:{{ . }}"
    {{- if $.Values.apisix.enableIPv6 }}
    - addr: "[::]:{{ . }}"
    {{- end }}
    {{- end }}
    # Inbound Istio mTLS in front of TCP (amesh-mtls): terminated here, then routed again.
    - addr: "unix:{{ $sockets }}/15006.mtls.sock"
      tls: true
      proxy_protocol: true
  enable_ipv6: {{ .Values.apisix.enableIPv6 }}
  # APISIX's reuseport is per stream server, and a unix socket (the mTLS one above) has
  # none: nginx would not start. The workers share each listening socket instead.
  enable_reuseport: false
  enable_admin: false
  enable_control: false
  # TLS only on the HTTP server's socket for Istio mTLS (below), with the ssl object
  # istio-mtls-server amesh writes for any server name; no TLS port (listen: []).
  # fallback_sni: a client without SNI gets it too, as Envoy's mTLS chains do not ask
  # for one.
  ssl:
    enable: true
    listen: []
    fallback_sni: istio-mtls.amesh.invalid
  # amesh's config provider (apisix/core/config_xds.lua there comes before APISIX's own),
  # its http and stream routers, and the readiness check.
  extra_lua_path: /usr/local/amesh/lua/?.lua
  extra_lua_cpath: /usr/local/amesh/lib/?.so
  router:
    http: amesh_host_uri
    # APISIX's radixtree_sni without its Host check on mTLS (lua/apisix/ssl/router).
    ssl: amesh_sni
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
    load_module /usr/local/openresty/nginx/modules/ngx_stream_amesh_upstream_tls_module.so;
  # The dicts amesh writes are read by the http and the stream workers: only nginx's
  # top-level lua {} block (APISIX's runtime) declares a dict both see, and APISIX 3.18
  # writes that block itself with fixed names and sizes only, so the declarations follow
  # the size of one of them (APISIX puts the value in as it is). A second lua {} block
  # would be a duplicate.
  meta:
    lua_shared_dict:
      upstream-healthcheck: {{ printf "10m;\n    %s" $dicts | quote }}
  # The stream side of the capture ports: the local address of each connection becomes its
  # original destination ($server_addr, $server_port; ngx_stream_amesh_original_dst_module),
  # and amesh-original-dst binds through $amesh_upstream_bind (127.0.0.6 for inbound
  # delivery; map, because APISIX's stream server has no snippet for `set`).
  # The template server holds the stream proxy's TLS settings that amesh-upstream-tls
  # switches a session to for an upstream it reaches with TLS (Istio mTLS to a TCP
  # service): never listened on, it inherits the settings above as APISIX's stream server
  # does, and names the same upstream (nginx/upstream_tls/README.md).
  stream_configuration_snippet: |
    amesh_original_dst_local on;
    map $server_port $amesh_upstream_bind { default ""; }
    proxy_bind $amesh_upstream_bind;
    server {
        amesh_upstream_tls_template;
        proxy_pass apisix_backend;
    }
  # The HTTP server listens on the stream front's unix sockets, one per capture port (and
  # one with TLS for inbound Istio mTLS, amesh-http's "tls"), where
  # each connection starts with a PROXY header (client and original destination): the
  # module gives the HTTP side the client as $remote_addr, the capture port as
  # $server_port and the original destination, as when it listened on the capture port.
  # amesh-original-dst (lua/apisix/plugins) binds through $amesh_upstream_bind.
  # amesh-upstream-tls (Istio mTLS, DestinationRule TLS) gives each upstream TLS connection
  # its cluster's settings through the upstream TLS module's variable, which replaces
  # APISIX's proxy_ssl_name (http.proxy_ssl_server_name: false below) and names
  # $upstream_host for every other request.
  http_server_configuration_snippet: |
    {{- range list 15001 15006 }}
    listen unix:{{ $sockets }}/{{ . }}.sock proxy_protocol;
    amesh_capture_listener unix:{{ $sockets }}/{{ . }}.sock {{ . }};
    {{- end }}
    listen unix:{{ $sockets }}/15006.tls.sock ssl proxy_protocol;
    amesh_capture_listener unix:{{ $sockets }}/15006.tls.sock 15006;
    # A peer that treats the port as TCP offers ALPN istio-peer-exchange, istio only:
    # Envoy goes on without ALPN and serves HTTP/1.1, nginx would fail the handshake.
    amesh_ssl_alpn_optional on;
    set $amesh_upstream_bind '';
    proxy_bind $amesh_upstream_bind;
    proxy_ssl_server_name on;
    proxy_ssl_name $amesh_upstream_ssl_name;
  http:
    # No peer is trusted to name the client in a header (APISIX trusts X-Real-IP from
    # 127.0.0.1 and unix: sockets by default): the client is the PROXY header's source.
    real_ip_from: []
    proxy_ssl_server_name: false
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
stream_plugins:
- amesh-http
- amesh-mtls
- amesh-mtls-peer
- amesh-network-rbac
- amesh-original-dst
- amesh-upstream-tls
plugin_attr:
  amesh-http:
    socket_dir: {{ $sockets }}
{{- end }}

{{/*
amesh.socketDir: where the HTTP server's unix sockets for the stream front are (an emptyDir of
the apisix container's own, owned by nothing else in the pod).
*/}}
{{- define "amesh.socketDir" -}}
/var/run/amesh
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
  | replace "@AMESH_SOCKET_DIR@" (include "amesh.socketDir" . | quote)
  | replace "    @AMESH_EXTRA_ENV@\n" $env -}}
{{- end }}

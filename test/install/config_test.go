package install_test

import (
	"bufio"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
)

var repoRoot = "../.."

// finalStage is the last stage of docker/sidecar/Dockerfile: the image the chart runs.
type finalStage struct {
	copies     map[string]string // destination -> source
	user       string
	entrypoint string
	stopSignal string
}

func sidecarImage(t *testing.T) finalStage {
	t.Helper()
	f, err := os.Open(path.Join(repoRoot, "docker", "sidecar", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st finalStage
	var line string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			line += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		line += l
		fields := strings.Fields(line)
		line = ""
		if len(fields) == 0 {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			st = finalStage{copies: map[string]string{}}
		case "COPY":
			args := slices.DeleteFunc(fields[1:], func(s string) bool { return strings.HasPrefix(s, "--") })
			st.copies[args[len(args)-1]] = args[0]
		case "USER":
			st.user = fields[1]
		case "STOPSIGNAL":
			st.stopSignal = fields[1]
		case "ENTRYPOINT":
			var ep []string
			if err := json.Unmarshal([]byte(strings.TrimSpace(strings.TrimPrefix(strings.Join(fields, " "), fields[0]))), &ep); err != nil {
				t.Fatalf("ENTRYPOINT: %v", err)
			}
			st.entrypoint = ep[0]
		}
	}
	return st
}

// has reports whether the image holds the file p: copied as a file, or from a directory of
// the repository copied whole.
func (st finalStage) has(p string) bool {
	if _, ok := st.copies[p]; ok {
		return true
	}
	for dst, src := range st.copies {
		rel, ok := strings.CutPrefix(p, dst+"/")
		if !ok || strings.HasPrefix(src, "/") {
			continue
		}
		if fi, err := os.Stat(path.Join(repoRoot, src, rel)); err == nil && !fi.IsDir() {
			return true
		}
	}
	return false
}

// luaModules lists the modules of the repository's lua/ tree as extra_lua_path's "?"
// stands for them ("amesh/config/sync").
func luaModules(t *testing.T) []string {
	t.Helper()
	root := path.Join(repoRoot, "lua")
	var mods []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".lua") {
			return err
		}
		rel, err := filepath.Rel(root, p)
		mods = append(mods, strings.TrimSuffix(filepath.ToSlash(rel), ".lua"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return mods
}

var (
	translatedOnce    sync.Once
	translatedPlugins map[string][]string
	translatedErr     error
)

// pluginsAmeshEmits are the plugins amesh's translation of real istiod output uses (`amesh
// translate` on testdata/istiod/sotw): the http plugins of its routes, services, plugin
// configs and global rules (stream false), or those of its stream routes (stream true).
func pluginsAmeshEmits(t *testing.T, stream bool) []string {
	t.Helper()
	translatedOnce.Do(func() {
		cmd := exec.Command("go", "run", "./cmd/amesh", "translate", "-dir", "testdata/istiod/sotw", "-format", "json")
		cmd.Dir = repoRoot
		out, err := cmd.Output()
		if err != nil {
			translatedErr = err
			return
		}
		var conf map[string][]map[string]any
		if err := json.Unmarshal(out, &conf); err != nil {
			translatedErr = err
			return
		}
		translatedPlugins = map[string][]string{}
		for _, kinds := range [][]string{{"routes", "services", "plugin_configs", "global_rules"}, {"stream_routes"}} {
			seen := map[string]bool{}
			for _, kind := range kinds {
				for _, o := range conf[kind] {
					p, _ := o["plugins"].(map[string]any)
					for name := range p {
						seen[name] = true
					}
				}
			}
			translatedPlugins[kinds[0]] = keys(seen)
		}
	})
	if translatedErr != nil {
		t.Fatalf("amesh translate: %v", translatedErr)
	}
	if stream {
		return translatedPlugins["stream_routes"]
	}
	return translatedPlugins["routes"]
}

// metaDicts returns the shared dicts declared in nginx's top-level lua {} block, name ->
// size: APISIX writes each value of nginx_config.meta.lua_shared_dict there as it is, so the
// sidecar's dicts come in behind one of them.
func metaDicts(cfg map[string]any) map[string]string {
	dicts := map[string]string{}
	m, _ := at(cfg, "nginx_config", "meta", "lua_shared_dict").(map[string]any)
	for name, v := range m {
		s, _ := v.(string)
		first, rest, _ := strings.Cut(s, ";")
		dicts[name] = strings.TrimSpace(first)
		for _, d := range dictDecl.FindAllStringSubmatch(rest, -1) {
			dicts[d[1]] = d[2]
		}
	}
	return dicts
}

var dictDecl = regexp.MustCompile(`lua_shared_dict\s+(\S+)\s+([^\s;]+)\s*;?`)

var loadModule = regexp.MustCompile(`load_module\s+(\S+);`)

// checkAPISIXConfig: the sidecar's config.yaml makes APISIX an xDS data plane that loads what
// the image holds where the image holds it, listens on the capture ports and enables every
// plugin amesh's translation emits.
func checkAPISIXConfig(t *testing.T, cfg map[string]any) {
	t.Helper()
	if at(cfg, "deployment", "role") != "data_plane" || at(cfg, "deployment", "role_data_plane", "config_provider") != "xds" {
		t.Errorf("deployment %v, want role data_plane with config_provider xds", cfg["deployment"])
	}
	// The dicts amesh writes are read by the http and the stream workers: declared in the
	// top-level lua {} block, not in http's custom_lua_shared_dict (nginx refuses a dict
	// declared twice). apisix.config_center: xds would declare them in http at a fixed size.
	dicts := metaDicts(cfg)
	if dicts["xds-config"] == "" || dicts["xds-config-version"] == "" {
		t.Errorf("the lua {} block declares %v, without xds-config and xds-config-version", dicts)
	}
	if d, _ := at(cfg, "nginx_config", "http", "custom_lua_shared_dict").(map[string]any); d["xds-config"] != nil || d["xds-config-version"] != nil {
		t.Errorf("custom_lua_shared_dict %v declares amesh's dicts in http only", d)
	}
	if at(cfg, "apisix", "config_center") != nil {
		t.Errorf("apisix.config_center set: APISIX would declare the xds dicts a second time")
	}
	// TLS is on for the Istio mTLS socket only: an absent ssl.listen would be APISIX's
	// 9443, a port of the application's network namespace.
	if l, ok := at(cfg, "apisix", "ssl", "listen").([]any); at(cfg, "apisix", "ssl", "enable") != false && (!ok || len(l) != 0) {
		t.Errorf("apisix.ssl.listen is %v with TLS enabled: APISIX would listen on a port of the application's network namespace (9443 by default)", at(cfg, "apisix", "ssl", "listen"))
	}
	if at(cfg, "apisix", "router", "ssl") != "amesh_sni" {
		t.Errorf("apisix.router.ssl is %v, not amesh_sni: APISIX refuses Istio's mTLS requests, whose Host is never their SNI", at(cfg, "apisix", "router", "ssl"))
	}
	// The capture ports are stream listeners (IPv4, and IPv6 with enable_ipv6); HTTP
	// listens on no TCP port, only on the stream front's unix sockets.
	if l, ok := at(cfg, "apisix", "node_listen").([]any); !ok || len(l) != 0 {
		t.Errorf("node_listen %v, want none: HTTP listens only behind the stream front", at(cfg, "apisix", "node_listen"))
	}
	if at(cfg, "apisix", "proxy_mode") != "http&stream" {
		t.Errorf("proxy_mode %v, want http&stream", at(cfg, "apisix", "proxy_mode"))
	}
	// And the stream server's TLS socket for Istio mTLS in front of TCP (amesh-mtls),
	// with TLS and the PROXY header amesh-mtls sends.
	var addrs []string
	mtlsSock := "unix:" + at(cfg, "plugin_attr", "amesh-http", "socket_dir").(string) + "/15006.mtls.sock"
	for _, l := range at(cfg, "apisix", "stream_proxy", "tcp").([]any) {
		item := l.(map[string]any)
		addrs = append(addrs, item["addr"].(string))
		if tls, pp := item["tls"] == true, item["proxy_protocol"] == true; (item["addr"] == mtlsSock) != (tls && pp) || (item["addr"] != mtlsSock) && (tls || pp) {
			t.Errorf("stream_proxy.tcp %v: TLS and the PROXY protocol belong to %s only", item, mtlsSock)
		}
	}
	if at(cfg, "apisix", "enable_reuseport") != false {
		t.Errorf("apisix.enable_reuseport is not false: nginx cannot start with reuseport on a unix socket")
	}
	wantAddrs := []string{"0.0.0.0:15001", "0.0.0.0:15006", mtlsSock}
	if at(cfg, "apisix", "enable_ipv6") == true {
		wantAddrs = append(wantAddrs, "[::]:15001", "[::]:15006")
	}
	slices.Sort(addrs)
	slices.Sort(wantAddrs)
	if !slices.Equal(addrs, wantAddrs) {
		t.Errorf("stream_proxy.tcp %v, want the capture ports and the mTLS socket %v", addrs, wantAddrs)
	}
	stream, _ := at(cfg, "nginx_config", "stream_configuration_snippet").(string)
	for _, want := range []string{"amesh_original_dst_local on;", "map $server_port $amesh_upstream_bind { default \"\"; }", "proxy_bind $amesh_upstream_bind;"} {
		if !strings.Contains(stream, want) {
			t.Errorf("stream_configuration_snippet lacks %q:\n%s", want, stream)
		}
	}
	// The HTTP server behind the stream front: a unix socket per capture port, in the
	// directory amesh-http sends connections to, with the PROXY header the stream front
	// writes, read by the module's amesh_capture_listener.
	server, _ := at(cfg, "nginx_config", "http_server_configuration_snippet").(string)
	sockets, _ := at(cfg, "plugin_attr", "amesh-http", "socket_dir").(string)
	if sockets == "" {
		t.Errorf("plugin_attr.amesh-http.socket_dir is not set")
	}
	for _, port := range []string{"15001", "15006"} {
		sock := "unix:" + sockets + "/" + port + ".sock"
		for _, want := range []string{"listen " + sock + " proxy_protocol;", "amesh_capture_listener " + sock + " " + port + ";"} {
			if !strings.Contains(server, want) {
				t.Errorf("http_server_configuration_snippet lacks %q:\n%s", want, server)
			}
		}
	}
	// Inbound Istio mTLS: the TLS socket amesh-http's "tls" hands connections to, whose
	// handshakes go on without ALPN when a peer offers only Istio's TCP ALPN, as Envoy's do.
	tlsSock := "unix:" + sockets + "/15006.tls.sock"
	for _, want := range []string{"listen " + tlsSock + " ssl proxy_protocol;", "amesh_capture_listener " + tlsSock + " 15006;", "amesh_ssl_alpn_optional on;"} {
		if !strings.Contains(server, want) {
			t.Errorf("http_server_configuration_snippet lacks %q:\n%s", want, server)
		}
	}
	// No peer may name the client in a header: the client is the PROXY header's source.
	if l, ok := at(cfg, "nginx_config", "http", "real_ip_from").([]any); !ok || len(l) != 0 {
		t.Errorf("nginx_config.http.real_ip_from %v, want none (APISIX trusts X-Real-IP from unix: sockets by default)", at(cfg, "nginx_config", "http", "real_ip_from"))
	}
	plugins := toStrings(cfg["plugins"])
	for _, p := range pluginsAmeshEmits(t, false) {
		if !slices.Contains(plugins, p) {
			t.Errorf("plugin %q, which amesh's translation emits, is not enabled (plugins %v)", p, plugins)
		}
	}
	streamPlugins := toStrings(cfg["stream_plugins"])
	// amesh-upstream-tls: emitted with a workload identity, which the capture translated here lacks.
	for _, p := range append(pluginsAmeshEmits(t, true), "amesh-http", "amesh-original-dst", "amesh-upstream-tls") {
		if !slices.Contains(streamPlugins, p) {
			t.Errorf("stream plugin %q, which amesh's translation emits, is not enabled (stream_plugins %v)", p, streamPlugins)
		}
	}

	img := sidecarImage(t)
	inImage := img.has
	cpath, _ := at(cfg, "apisix", "extra_lua_cpath").(string)
	if lib := strings.Replace(cpath, "?", "libxds", 1); !inImage(lib) {
		t.Errorf("extra_lua_cpath %q: the image has no %s (it copies %v)", cpath, lib, keys(img.copies))
	}
	// amesh's Lua tree: every module of the repository's lua/ where extra_lua_path finds it,
	// among them amesh's config provider (apisix/core/config_xds.lua, found there before
	// APISIX's own), the router that router.http names, its stream router (in place of
	// APISIX's only one) and the readiness check.
	lpath, _ := at(cfg, "apisix", "extra_lua_path").(string)
	mods := luaModules(t)
	router, _ := at(cfg, "apisix", "router", "http").(string)
	if router != "amesh_host_uri" {
		t.Errorf("apisix.router.http %q, want amesh's amesh_host_uri", router)
	}
	for _, m := range []string{"apisix/core/config_xds", "apisix/http/router/" + router, "apisix/stream/router/ip_port", "amesh/ready"} {
		if !slices.Contains(mods, m) {
			t.Errorf("lua/ has no module %s", m)
		}
	}
	// amesh's own plugins are APISIX plugin modules in lua/.
	for _, p := range plugins {
		if strings.HasPrefix(p, "amesh-") && !slices.Contains(mods, "apisix/plugins/"+p) {
			t.Errorf("plugin %s is enabled, but lua/ has no module apisix/plugins/%s", p, p)
		}
	}
	for _, p := range streamPlugins {
		if strings.HasPrefix(p, "amesh-") && !slices.Contains(mods, "apisix/stream/plugins/"+p) {
			t.Errorf("stream plugin %s is enabled, but lua/ has no module apisix/stream/plugins/%s", p, p)
		}
	}
	// amesh-original-dst binds inbound deliveries to 127.0.0.6 through this variable, and
	// amesh-upstream-tls's module hooks upstream TLS connections through proxy_ssl_name
	// (which APISIX then leaves to the snippet).
	for _, want := range []string{"set $amesh_upstream_bind '';", "proxy_bind $amesh_upstream_bind;",
		"proxy_ssl_server_name on;", "proxy_ssl_name $amesh_upstream_ssl_name;"} {
		if !strings.Contains(server, want) {
			t.Errorf("http_server_configuration_snippet lacks %q:\n%s", want, server)
		}
	}
	for _, m := range mods {
		if f := strings.Replace(lpath, "?", m, 1); !inImage(f) {
			t.Errorf("extra_lua_path %q: the image has no %s (lua/%s.lua)", lpath, f, m)
		}
	}
	snippet, _ := at(cfg, "nginx_config", "main_configuration_snippet").(string)
	if on, _ := at(cfg, "nginx_config", "http", "proxy_ssl_server_name").(bool); on {
		t.Error("nginx_config.http.proxy_ssl_server_name is on: APISIX's proxy_ssl_name would clash with the snippet's")
	}
	loads := loadModule.FindAllStringSubmatch(snippet, -1)
	if len(loads) != 4 {
		t.Errorf("main_configuration_snippet loads %d modules, want the http and stream original-destination and upstream TLS modules", len(loads))
	}
	// The stream upstream TLS module's template: the session's proxy settings for TLS
	// upstreams, naming APISIX's stream upstream.
	streamSnippet, _ := at(cfg, "nginx_config", "stream_configuration_snippet").(string)
	if !regexp.MustCompile(`(?s)server \{\s*amesh_upstream_tls_template;\s*proxy_pass apisix_backend;\s*\}`).MatchString(streamSnippet) {
		t.Errorf("stream_configuration_snippet has no template server for amesh_upstream_tls_template:\n%s", streamSnippet)
	}
	for _, m := range loads {
		if !inImage(m[1]) {
			t.Errorf("load_module %s: not in the image", m[1])
		}
	}
	http, _ := at(cfg, "nginx_config", "http_end_configuration_snippet").(string)
	for _, want := range []string{"listen 15021;", `require("amesh.ready").check(`, "proxy_pass http://127.0.0.1:15020/healthz/ready;"} {
		if !strings.Contains(http, want) {
			t.Errorf("http_end_configuration_snippet lacks %q:\n%s", want, http)
		}
	}
}

// TestSidecarImage: the Dockerfile copies files that exist, builds the modules nginx/original_dst
// declares, and runs as the UID the template and the capture rules expect, with a graceful stop.
func TestSidecarImage(t *testing.T) {
	img := sidecarImage(t)
	for dst, src := range img.copies {
		if strings.HasPrefix(src, "/") {
			continue // from a build stage
		}
		if _, err := os.Stat(path.Join(repoRoot, src)); err != nil {
			t.Errorf("COPY %s %s: %v", src, dst, err)
		}
	}
	for _, dir := range []string{"original_dst", "upstream_tls"} {
		conf, err := os.ReadFile(path.Join(repoRoot, "nginx", dir, "config"))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`ngx_module_name=(\S+)`).FindAllStringSubmatch(string(conf), -1) {
			want := "/usr/local/openresty/nginx/modules/" + m[1] + ".so"
			if src, ok := img.copies[want]; !ok || path.Base(src) != m[1]+".so" {
				t.Errorf("the image does not install module %s at %s", m[1], want)
			}
		}
	}
	if img.user != "1337:1337" {
		t.Errorf("USER %q, want 1337:1337 (Istio's proxy UID, exempt from capture)", img.user)
	}
	if img.stopSignal != "SIGQUIT" {
		t.Errorf("STOPSIGNAL %q, want SIGQUIT (nginx's graceful shutdown)", img.stopSignal)
	}
	if _, ok := img.copies[img.entrypoint]; !ok {
		t.Errorf("ENTRYPOINT %s is not in the image", img.entrypoint)
	}
}

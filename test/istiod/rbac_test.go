package istiod_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/amesh-dev/amesh/internal/apisix/schema"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/test/istiod/harness"
)

// sidecarEnvAs is sidecarEnv for another pod of the scenario.
func sidecarEnvAs(t *testing.T, addr string, proto client.Protocol, pod, ip, serviceAccount, labels string) []string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "labels-"+pod)
	if err := os.WriteFile(file, []byte(labels), 0o644); err != nil {
		t.Fatal(err)
	}
	environ := sidecarEnv(t, addr, proto)
	for i, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "POD_NAME":
			environ[i] = k + "=" + pod
		case "INSTANCE_IP":
			environ[i] = k + "=" + ip
		case "SERVICE_ACCOUNT":
			environ[i] = k + "=" + serviceAccount
		case "AMESH_LABELS_FILE":
			environ[i] = k + "=" + file
		}
	}
	return environ
}

// authorizationPolicy selects the pods labelled app=<app>; without rules it allows
// nothing (Istio's allow-nothing policy).
func authorizationPolicy(name, app string, spec map[string]any) harness.Object {
	spec["selector"] = map[string]any{"matchLabels": map[string]any{"app": app}}
	return harness.Object{
		"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
		"metadata": map[string]any{"name": name, "namespace": namespace},
		"spec":     spec,
	}
}

// inboundAnswers returns, for each inbound route (the workload's own ports, served
// through virtualInbound), the status it answers itself and the start of its body, or
// "delivers from <source address>" for a route to the connection's original destination
// (the application); after "rbac <action:policy,...> then " when amesh-rbac enforces
// RBAC rules first.
func inboundAnswers(t *testing.T, objs map[string][]byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range objs {
		if !strings.HasPrefix(k, "/routes/in-") {
			continue
		}
		var r struct {
			UpstreamID string `json:"upstream_id"`
			Plugins    struct {
				OriginalDst *struct {
					Bind string `json:"bind"`
				} `json:"amesh-original-dst"`
				Fault *struct {
					Abort struct {
						Status int    `json:"http_status"`
						Body   string `json:"body"`
					} `json:"abort"`
				} `json:"fault-injection"`
				RBAC *struct {
					Filters []struct {
						Action   string `json:"action"`
						Policies []struct {
							Name string `json:"name"`
						} `json:"policies"`
					} `json:"filters"`
				} `json:"amesh-rbac"`
			} `json:"plugins"`
		}
		if err := json.Unmarshal(v, &r); err != nil {
			t.Fatal(err)
		}
		switch {
		case r.Plugins.Fault == nil && r.Plugins.OriginalDst != nil:
			out[k] = "delivers from " + r.Plugins.OriginalDst.Bind
		case r.Plugins.Fault == nil:
			out[k] = "forwards to " + r.UpstreamID
		default:
			body, _, _ := strings.Cut(r.Plugins.Fault.Abort.Body, ":")
			out[k] = jsonInt(r.Plugins.Fault.Abort.Status) + " " + body
		}
		if r.Plugins.RBAC != nil {
			var fs []string
			for _, f := range r.Plugins.RBAC.Filters {
				var ps []string
				for _, p := range f.Policies {
					ps = append(ps, p.Name)
				}
				fs = append(fs, f.Action+":"+strings.Join(ps, ","))
			}
			out[k] = "rbac " + strings.Join(fs, " ") + " then " + out[k]
		}
	}
	return out
}

func jsonInt(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// allAnswer reports whether there are inbound routes and every one answers want
// ("403 RBAC").
func allAnswer(t *testing.T, objs map[string][]byte, want string) bool {
	in := inboundAnswers(t, objs)
	for _, a := range in {
		if a != want {
			return false
		}
	}
	return len(in) > 0
}

func outboundRoutes(objs map[string][]byte) map[string]string {
	out := map[string]string{}
	for k, v := range objs {
		if strings.HasPrefix(k, "/routes/out-") {
			out[k] = string(v)
		}
	}
	return out
}

// hasEntry reports whether the report has an entry on virtualInbound's RBAC filter
// whose message holds every part.
func hasEntry(es []report.Entry, sev report.Severity, parts ...string) bool {
	for _, e := range es {
		if e.Resource != "virtualInbound" || !strings.Contains(e.Field, "http_filters[envoy.filters.http.rbac]") || e.Severity != sev {
			continue
		}
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(e.Message, p)
		}
		if ok {
			return true
		}
	}
	return false
}

// TestAuthorizationPolicy: istiod turns an AuthorizationPolicy into RBAC filters in the
// inbound filter chains of the workloads it selects. amesh as productpage gets a DENY
// for one path, which depends on the request: every inbound route carries it for
// amesh-rbac to enforce per request, in front of what the route does without it;
// amesh as reviews-v1 gets an allow-nothing policy, which denies every request: every
// inbound route answers 403 "RBAC: access denied", as Envoy. Without a policy the inbound
// routes deliver to the application (their original-destination cluster, from 127.0.0.6);
// the report names the RBAC filter and the policy; the outbound routes, which the policies
// do not concern, do not change. Deleting the policies brings the deliveries back.
func TestAuthorizationPolicy(t *testing.T) {
	requireEnv(t)
	for _, proto := range protocols {
		t.Run(string(proto), func(t *testing.T) {
			pp := startAmesh(t, sidecarEnv(t, env.istiod.GRPCAddr, proto))
			rv := startAmesh(t, sidecarEnvAs(t, env.istiod.GRPCAddr, proto, "reviews-v1", "192.0.2.21", "reviews", "app=\"reviews\"\nversion=\"v1\"\n"))
			unguarded := "delivers from 127.0.0.6"
			ppBefore := pp.waitFor(t, "productpage's inbound routes", func(o map[string][]byte) bool { return allAnswer(t, o, unguarded) })
			rv.waitFor(t, "reviews' inbound routes", func(o map[string][]byte) bool { return allAnswer(t, o, unguarded) })

			deny := authorizationPolicy("deny-admin", "productpage", map[string]any{
				"action": "DENY",
				"rules":  []any{map[string]any{"to": []any{map[string]any{"operation": map[string]any{"paths": []any{"/admin"}}}}}},
			})
			allowNothing := authorizationPolicy("allow-nothing", "reviews", map[string]any{})
			apply(t, deny)
			apply(t, allowNothing)
			t.Cleanup(func() {
				for _, o := range []harness.Object{deny, allowNothing} {
					if err := env.kube.Client.Delete(context.Background(), o); err != nil {
						t.Error(err)
					}
				}
				pp.waitFor(t, "productpage's inbound routes without the policy", func(o map[string][]byte) bool { return allAnswer(t, o, unguarded) })
				rv.waitFor(t, "reviews' inbound routes without the policy", func(o map[string][]byte) bool { return allAnswer(t, o, unguarded) })
			})

			ppAfter := pp.waitFor(t, "productpage's inbound routes enforce the DENY policy", func(o map[string][]byte) bool {
				return allAnswer(t, o, "rbac DENY:ns[default]-policy[deny-admin]-rule[0] then "+unguarded)
			})
			rv.waitFor(t, "reviews' inbound routes answer 403 RBAC: access denied", func(o map[string][]byte) bool {
				return allAnswer(t, o, "403 RBAC")
			})
			if !maps.Equal(outboundRoutes(ppAfter), outboundRoutes(ppBefore)) {
				t.Error("productpage's outbound routes changed; the policies concern inbound traffic only")
			}

			if rep := pp.ag.Report(); !hasEntry(rep, report.Approximated, "ns[default]-policy[deny-admin]", "enforced per request by amesh-rbac") {
				t.Errorf("productpage's report does not name the RBAC filter and the policy:\n%v", entriesOf(rep, "virtualInbound"))
			}
			if rep := rv.ag.Report(); !hasEntry(rep, report.Approximated, "ns[default]-policy[allow-nothing]", "denies every request", "RBAC: access denied") {
				t.Errorf("reviews' report does not name the RBAC filter:\n%v", entriesOf(rep, "virtualInbound"))
			}
		})
	}
}

func entriesOf(es []report.Entry, resource string) []report.Entry {
	var out []report.Entry
	for _, e := range es {
		if e.Resource == resource {
			out = append(out, e)
		}
	}
	return out
}

var updateRBAC = flag.Bool("update-rbac", false, "rewrite internal/translate/testdata/istiod/rbac-allow-rich.json and test/nginx/testdata/istiod-rbac-allow.json from istiod's RBAC filter")

// rbacGolden is where the amesh-rbac config of istiod's policy is kept for
// test/nginx's TestRBACLuaDecisions, which runs it in nginx against Envoy's decisions;
// rbacFilterGolden is istiod's RBAC filter itself, for internal/translate's
// TestIstiodRBACFilter.
const (
	rbacGolden       = "../nginx/testdata/istiod-rbac-allow.json"
	rbacFilterGolden = "../../internal/translate/testdata/istiod/rbac-allow-rich.json"
)

// istiodRBACFilter waits for the RBAC filter istiod gives productpage's inbound
// chains with policy in it and returns it as indented JSON.
func istiodRBACFilter(t *testing.T, policy string) string {
	t.Helper()
	sc := startSidecar(t, sidecarEnv(t, env.istiod.GRPCAddr, client.Delta))
	var out string
	sc.waitFor(t, "istiod's RBAC filter with "+policy, func(s *resource.State) bool {
		l := s.Listeners["virtualInbound"]
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				h, err := resource.HCMOf(f)
				if err != nil || h == nil {
					continue
				}
				for _, hf := range h.GetHttpFilters() {
					if hf.GetName() != "envoy.filters.http.rbac" {
						continue
					}
					c := &rbachttpv3.RBAC{}
					if err := resource.UnpackFilterConfig(hf.GetTypedConfig(), c); err != nil {
						t.Fatal(err)
					}
					if c.GetRules().GetPolicies()[policy] == nil {
						continue
					}
					b, err := protojson.Marshal(c)
					if err != nil {
						t.Fatal(err)
					}
					var pretty bytes.Buffer
					if err := json.Indent(&pretty, b, "", "  "); err != nil {
						t.Fatal(err)
					}
					out = pretty.String() + "\n"
					return true
				}
			}
		}
		return false
	})
	return out
}

// TestAuthorizationPolicyRules: an ALLOW AuthorizationPolicy with principals, IP
// blocks (ipBlocks, notRemoteIpBlocks), methods, paths and notPaths, a header
// condition and a JWT claim, as istiod turns it into an RBAC filter, becomes the
// amesh-rbac config of productpage's inbound routes: it validates against the plugin's
// schema; what needs the mTLS peer (principals on a plaintext connection, never
// authenticated) is decided here, and the JWT claim becomes a matcher on jwt_authn's
// metadata, which the plugin evaluates (absent without a RequestAuthentication, as in
// Envoy); the rest stays for the plugin. The config is kept as a golden file for
// test/nginx (-update-rbac rewrites it).
func TestAuthorizationPolicyRules(t *testing.T) {
	requireEnv(t)
	pp := startAmesh(t, sidecarEnv(t, env.istiod.GRPCAddr, client.Delta))
	unguarded := "delivers from 127.0.0.6"
	pp.waitFor(t, "productpage's inbound routes", func(o map[string][]byte) bool { return allAnswer(t, o, unguarded) })
	allow := authorizationPolicy("allow-rich", "productpage", map[string]any{
		"action": "ALLOW",
		"rules": []any{
			map[string]any{
				"from": []any{map[string]any{"source": map[string]any{"principals": []any{"cluster.local/ns/default/sa/sleep"}}}},
				"to":   []any{map[string]any{"operation": map[string]any{"methods": []any{"GET"}, "paths": []any{"/api/*"}}}},
			},
			map[string]any{
				"from": []any{map[string]any{"source": map[string]any{
					"ipBlocks": []any{"127.0.0.0/8", "2001:db8::/32"}, "notRemoteIpBlocks": []any{"127.0.0.9"}}}},
				"to":   []any{map[string]any{"operation": map[string]any{"methods": []any{"GET", "HEAD"}, "notPaths": []any{"/private*"}}}},
				"when": []any{map[string]any{"key": "request.headers[x-team]", "values": []any{"blue*"}}},
			},
			map[string]any{
				"to":   []any{map[string]any{"operation": map[string]any{"paths": []any{"/health"}}}},
				"when": []any{map[string]any{"key": "request.auth.claims[group]", "values": []any{"admin"}}},
			},
		},
	})
	apply(t, allow)
	t.Cleanup(func() {
		if err := env.kube.Client.Delete(context.Background(), allow); err != nil {
			t.Error(err)
		}
		// The tests after this one start from istiod's configuration without it.
		pp.waitFor(t, "productpage's inbound routes without the policy", func(o map[string][]byte) bool { return allAnswer(t, o, unguarded) })
	})
	want := "rbac ALLOW:ns[default]-policy[allow-rich]-rule[0],ns[default]-policy[allow-rich]-rule[1],ns[default]-policy[allow-rich]-rule[2] then " + unguarded
	objs := pp.waitFor(t, "productpage's inbound routes carry the ALLOW policy", func(o map[string][]byte) bool { return allAnswer(t, o, want) })

	var conf json.RawMessage
	for k, v := range objs {
		if !strings.HasPrefix(k, "/routes/in-") {
			continue
		}
		var r struct {
			Plugins map[string]json.RawMessage `json:"plugins"`
		}
		if err := json.Unmarshal(v, &r); err != nil {
			t.Fatal(err)
		}
		c := r.Plugins["amesh-rbac"]
		if err := schema.ValidatePlugin("amesh-rbac", c); err != nil {
			t.Errorf("%s: amesh-rbac config does not validate: %v", k, err)
		}
		if conf == nil {
			conf = c
		} else if !bytes.Equal(conf, c) {
			t.Errorf("%s: amesh-rbac config differs from another inbound route's", k)
		}
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, conf, "", "  "); err != nil {
		t.Fatal(err)
	}
	pretty.WriteByte('\n')
	text := pretty.String()
	// The principal is the mTLS peer's identity, the claim reads jwt_authn's metadata;
	// the IP blocks, methods, paths and header stay.
	for _, part := range []string{
		`"auth": {`, `"v": "spiffe://cluster.local/ns/default/sa/sleep"`, `"f": "envoy.filters.http.jwt_authn"`, `"group"`, `"src": "direct"`, `"addr": "2001:db8::"`, `"src": "remote"`, `"name": ":method"`,
		`"op": "prefix"`, `"v": "/api/"`, `"v": "/private"`, `"name": "x-team"`, `"v": "blue"`, `"normalize_path": true`,
	} {
		if !strings.Contains(text, part) {
			t.Errorf("amesh-rbac config lacks %s:\n%s", part, text)
		}
	}
	raw := istiodRBACFilter(t, "ns[default]-policy[allow-rich]-rule[0]")
	if *updateRBAC {
		if err := os.WriteFile(rbacGolden, pretty.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(rbacFilterGolden, []byte(raw), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if golden, err := os.ReadFile(rbacFilterGolden); err != nil || !sameJSON(golden, []byte(raw)) {
		t.Errorf("istiod's RBAC filter is not %s (%v; run with -update-rbac):\n%s", rbacFilterGolden, err, raw)
	}
	golden, err := os.ReadFile(rbacGolden)
	if err != nil {
		t.Fatal(err)
	}
	if string(golden) != text {
		t.Errorf("istiod's policy translates to something else than %s (run with -update-rbac and check TestRBACLuaDecisions):\n%s", rbacGolden, text)
	}
	if rep := pp.ag.Report(); !hasEntry(rep, report.Approximated, "ns[default]-policy[allow-rich]", "enforced per request by amesh-rbac") {
		t.Errorf("the report does not say the policy is enforced per request:\n%v", entriesOf(rep, "virtualInbound"))
	}
}

// sameJSON reports whether a and b hold the same JSON value.
func sameJSON(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return bytes.Equal(ja, jb)
}

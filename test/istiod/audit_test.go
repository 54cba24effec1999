package istiod_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/test/istiod/harness"
)

var updateAudit = flag.Bool("update-audit", false, "rewrite internal/translate/testdata/istiod/rbac-audit.json and test/nginx/testdata/istiod-rbac-audit.json from istiod's RBAC filters")

// auditFiltersGolden is istiod's HTTP RBAC filters of productpage's inbound HTTP chains
// under an AUDIT and an ALLOW policy, in chain order, for internal/translate's
// TestIstiodRBACAudit; auditGolden is their amesh-rbac config, for test/nginx's
// TestRBACLuaDecisions.
const (
	auditFiltersGolden = "../../internal/translate/testdata/istiod/rbac-audit.json"
	auditGolden        = "../nginx/testdata/istiod-rbac-audit.json"
)

const auditPolicy = "ns[default]-policy[audit-paths]-rule[0]"

// inboundRBAC is what istiod gives productpage's virtualInbound for RBAC: the HTTP RBAC
// filters of the first HTTP chain that has any, in order, and the network RBAC filters
// of the TCP chains.
type inboundRBAC struct {
	http    []*hcmv3.HttpFilter
	network []*rbacnetv3.RBAC
}

func inboundRBACOf(t *testing.T, s *resource.State) inboundRBAC {
	t.Helper()
	var out inboundRBAC
	for _, fc := range s.Listeners["virtualInbound"].GetFilterChains() {
		for _, f := range fc.GetFilters() {
			if f.GetName() == "envoy.filters.network.rbac" {
				c := &rbacnetv3.RBAC{}
				if err := resource.UnpackFilterConfig(f.GetTypedConfig(), c); err != nil {
					t.Fatal(err)
				}
				out.network = append(out.network, c)
				continue
			}
			h, err := resource.HCMOf(f)
			if err != nil || h == nil || out.http != nil {
				continue
			}
			for _, hf := range h.GetHttpFilters() {
				if hf.GetName() == "envoy.filters.http.rbac" {
					out.http = append(out.http, hf)
				}
			}
		}
	}
	return out
}

// policiesOf names the policies of an RBAC filter's rules with their action.
func policiesOf(t *testing.T, hf *hcmv3.HttpFilter) (rbacv3.RBAC_Action, []string) {
	t.Helper()
	c := &rbachttpv3.RBAC{}
	if err := resource.UnpackFilterConfig(hf.GetTypedConfig(), c); err != nil {
		t.Fatal(err)
	}
	return c.GetRules().GetAction(), keysSorted(c.GetRules().GetPolicies())
}

func keysSorted[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// hasAuditPolicy reports whether any RBAC filter of the inbound listener names the AUDIT
// policy.
func hasAuditPolicy(r inboundRBAC) bool {
	for _, hf := range r.http {
		c := &rbachttpv3.RBAC{}
		if resource.UnpackFilterConfig(hf.GetTypedConfig(), c) == nil && c.GetRules().GetPolicies()[auditPolicy] != nil {
			return true
		}
	}
	for _, c := range r.network {
		if c.GetRules().GetPolicies()[auditPolicy] != nil {
			return true
		}
	}
	return false
}

// TestAuthorizationPolicyAudit: an AuthorizationPolicy with action AUDIT (paths
// /audited*) on productpage, next to an ALLOW policy (paths /public*, /audited/ok).
// istiod turns AUDIT into an RBAC filter with action LOG in front of the ALLOW policy's
// (pilot/pkg/security/authz/builder: AUDIT, then DENY, then ALLOW), and into a network
// RBAC filter with action LOG on the TCP chains. In Envoy a LOG filter never denies; it
// only sets the access_log_hint metadata for access loggers. amesh enforces nothing for
// it: productpage's inbound routes are byte for byte those of the ALLOW policy alone, and
// the report says the filter refuses no request. istiod's HTTP RBAC filters and their
// amesh-rbac config are kept for internal/translate and test/nginx (-update-audit
// rewrites them).
func TestAuthorizationPolicyAudit(t *testing.T) {
	requireEnv(t)
	pp := startAmesh(t, sidecarEnv(t, env.istiod.GRPCAddr, client.Delta))
	raw := startSidecar(t, sidecarEnv(t, env.istiod.GRPCAddr, client.Delta))
	unguarded := "delivers from 127.0.0.6"
	pp.waitFor(t, "productpage's inbound routes", func(o map[string][]byte) bool { return allAnswer(t, o, unguarded) })

	allow := authorizationPolicy("allow-public", "productpage", map[string]any{
		"action": "ALLOW",
		"rules":  []any{map[string]any{"to": []any{map[string]any{"operation": map[string]any{"paths": []any{"/public*", "/audited/ok"}}}}}},
	})
	audit := authorizationPolicy("audit-paths", "productpage", map[string]any{
		"action": "AUDIT",
		"rules":  []any{map[string]any{"to": []any{map[string]any{"operation": map[string]any{"paths": []any{"/audited*"}}}}}},
	})
	apply(t, allow)
	t.Cleanup(func() {
		for _, o := range []harness.Object{audit, allow} {
			if err := env.kube.Client.Delete(context.Background(), o); err != nil {
				t.Error(err)
			}
		}
		// The tests after this one start from istiod's configuration without them.
		raw.waitFor(t, "istiod's xDS no longer has the AUDIT policy", func(s *resource.State) bool {
			r := inboundRBACOf(t, s)
			return len(r.http) == 0 && !hasAuditPolicy(r)
		})
		pp.waitFor(t, "productpage's inbound routes without the policies", func(o map[string][]byte) bool { return allAnswer(t, o, unguarded) })
	})
	want := "rbac ALLOW:ns[default]-policy[allow-public]-rule[0] then " + unguarded
	allowOnly := pp.waitFor(t, "productpage's inbound routes carry the ALLOW policy", func(o map[string][]byte) bool { return allAnswer(t, o, want) })

	apply(t, audit)
	st := raw.waitFor(t, "istiod's RBAC filter with the AUDIT policy", func(s *resource.State) bool { return hasAuditPolicy(inboundRBACOf(t, s)) })
	r := inboundRBACOf(t, st)
	// What istiod sends: on the HTTP chains the LOG filter, then the ALLOW one.
	var shape []string
	for _, hf := range r.http {
		act, ps := policiesOf(t, hf)
		shape = append(shape, act.String()+":"+strings.Join(ps, ","))
	}
	if got, want := strings.Join(shape, " "), "LOG:"+auditPolicy+" ALLOW:ns[default]-policy[allow-public]-rule[0]"; got != want {
		t.Errorf("istiod's HTTP RBAC filters: %s, want %s", got, want)
	}
	var netShape []string
	for _, c := range r.network {
		netShape = append(netShape, c.GetRules().GetAction().String()+":"+strings.Join(keysSorted(c.GetRules().GetPolicies()), ","))
	}
	t.Logf("istiod's network RBAC filters on the TCP chains: %v", netShape)
	if !strings.Contains(strings.Join(netShape, " "), "LOG:"+auditPolicy) {
		t.Errorf("istiod's TCP chains have no network RBAC filter LOG with %s: %v", auditPolicy, netShape)
	}

	// amesh has translated the LOG filter once its report names it; what it writes has
	// not changed (the LOG filter adds nothing to enforce).
	deadline := time.Now().Add(mustHappen)
	for !hasEntry(pp.ag.Report(), report.Ignored, "refuses no request", "action LOG never denies", "policy[audit-paths]") {
		if time.Now().After(deadline) {
			t.Fatalf("the report does not say the LOG filter never denies:\n%v", entriesOf(pp.ag.Report(), "virtualInbound"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	objs, _, _ := pp.sink.state()
	in := func(o map[string][]byte) map[string]string {
		out := map[string]string{}
		for k, v := range o {
			if strings.HasPrefix(k, "/routes/in-") {
				out[k] = string(v)
			}
		}
		return out
	}
	if !maps.Equal(in(objs), in(allowOnly)) {
		t.Errorf("the AUDIT policy changed productpage's inbound routes:\n%v\nwithout it:\n%v", inboundAnswers(t, objs), inboundAnswers(t, allowOnly))
	}

	// The captures: istiod's HTTP RBAC filters, and the amesh-rbac config of the routes.
	var filters []json.RawMessage
	for _, hf := range r.http {
		b, err := protojson.Marshal(hf)
		if err != nil {
			t.Fatal(err)
		}
		filters = append(filters, b)
	}
	capture, err := json.MarshalIndent(filters, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	capture = append(capture, '\n')
	var conf json.RawMessage
	for k, v := range in(objs) {
		var rt struct {
			Plugins map[string]json.RawMessage `json:"plugins"`
		}
		if err := json.Unmarshal([]byte(v), &rt); err != nil {
			t.Fatal(err)
		}
		if conf == nil {
			conf = rt.Plugins["amesh-rbac"]
		} else if !bytes.Equal(conf, rt.Plugins["amesh-rbac"]) {
			t.Errorf("%s: amesh-rbac config differs from another inbound route's", k)
		}
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, conf, "", "  "); err != nil {
		t.Fatal(err)
	}
	pretty.WriteByte('\n')
	if *updateAudit {
		if err := os.WriteFile(auditFiltersGolden, capture, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(auditGolden, pretty.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if golden, err := os.ReadFile(auditFiltersGolden); err != nil || !sameJSON(golden, capture) {
		t.Errorf("istiod's RBAC filters are not %s (%v; run with -update-audit):\n%s", auditFiltersGolden, err, capture)
	}
	if golden, err := os.ReadFile(auditGolden); err != nil || string(golden) != pretty.String() {
		t.Errorf("the amesh-rbac config is not %s (%v; run with -update-audit and check TestRBACLuaDecisions):\n%s", auditGolden, err, pretty.String())
	}
}

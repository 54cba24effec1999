package istiod_test

import (
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/amesh-dev/amesh/internal/xds/bootstrap"
	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/test/istiod/harness"
)

var updatePeerAuth = flag.Bool("update-peerauth", false, "rewrite testdata/istiod/peerauth (virtualInbound under each PeerAuthentication)")

// peerAuthGolden is where istiod's virtualInbound under each PeerAuthentication mode is
// kept, for the translation's tests.
var peerAuthGolden = filepath.Join("..", "..", "testdata", "istiod", "peerauth")

// peerAuthentication is a PeerAuthentication in the scenario's namespace; selected:
// for productpage's pods only (port-level modes need a selector).
func peerAuthentication(name string, selected bool, spec map[string]any) harness.Object {
	if selected {
		spec["selector"] = map[string]any{"matchLabels": map[string]any{"app": "productpage"}}
	}
	return harness.Object{
		"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
		"metadata": map[string]any{"name": name, "namespace": namespace},
		"spec":     spec,
	}
}

// inboundChains lists virtualInbound's chains as "port transport" (port 0: any), the
// shape each mode must reach before it is kept.
func inboundChains(l *listenerv3.Listener) map[string]bool {
	out := map[string]bool{}
	for _, fc := range l.GetFilterChains() {
		m := fc.GetFilterChainMatch()
		tp := m.GetTransportProtocol()
		if tp == "" {
			tp = "any"
		}
		out[formatPort(m.GetDestinationPort().GetValue())+" "+tp] = true
	}
	return out
}

func formatPort(p uint32) string {
	if p == 0 {
		return "any"
	}
	return strconv.FormatUint(uint64(p), 10)
}

// TestInboundPeerAuthentication: the virtualInbound listener istiod sends productpage's
// sidecar (an HTTP port 19080 and a TCP port 19306) under PERMISSIVE (no policy), a
// namespace-wide STRICT, and PERMISSIVE with port 19080 STRICT is what the translation's
// tests read from testdata/istiod/peerauth/<mode> (-update-peerauth rewrites it).
func TestInboundPeerAuthentication(t *testing.T) {
	requireEnv(t)
	objs, err := readObjects("peerauth.yaml")
	if err != nil {
		t.Fatal(err)
	}
	apply(t, objs...)
	b, err := bootstrap.FromEnviron(sidecarEnv(t, env.istiod.GRPCAddr, client.SotW))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		deleteAll(t, objs)
		// The tests after this one start from istiod's configuration without it.
		waitRaw(t, b.Node, "productpage's xDS without the scenario", func(x rawXDS) bool {
			l, _ := x[typeListener]["virtualInbound"].(*listenerv3.Listener)
			got := inboundChains(l)
			return x[typeCluster]["outbound|3306||productpage-db.default.svc.cluster.local"] == nil &&
				!got["19306 raw_buffer"] && !got["19306 tls"] && got["19080 raw_buffer"]
		})
	})
	modes := []struct {
		name   string
		policy harness.Object
		// want and not are chains virtualInbound must and must not have.
		want, not []string
		// authz are AuthorizationPolicies applied with the mode; rbac the number of
		// network RBAC filters the TCP port's TLS chain must have then.
		authz []harness.Object
		rbac  int
	}{
		{"permissive", nil,
			[]string{"19080 tls", "19080 raw_buffer", "19306 tls", "19306 raw_buffer", "any tls", "any raw_buffer"}, nil, nil, 0},
		{"strict", peerAuthentication("strict", false, map[string]any{"mtls": map[string]any{"mode": "STRICT"}}),
			[]string{"19080 tls", "19306 tls", "any tls"}, []string{"19080 raw_buffer", "19306 raw_buffer", "any raw_buffer"}, nil, 0},
		{"port-strict", peerAuthentication("port-strict", true, map[string]any{
			"mtls":          map[string]any{"mode": "PERMISSIVE"},
			"portLevelMtls": map[string]any{"19080": map[string]any{"mode": "STRICT"}}}),
			[]string{"19080 tls", "19306 tls", "19306 raw_buffer", "any raw_buffer"}, []string{"19080 raw_buffer"}, nil, 0},
		// Istio's AuthorizationPolicy on the TCP port: peers of two SPIFFE principals
		// allowed to it, one of them denied, and a source address denied.
		{"strict-tcp-authz", peerAuthentication("strict", false, map[string]any{"mtls": map[string]any{"mode": "STRICT"}}),
			[]string{"19080 tls", "19306 tls", "any tls"}, []string{"19080 raw_buffer", "19306 raw_buffer", "any raw_buffer"},
			[]harness.Object{
				authorizationPolicy("tcp-allow", "productpage", map[string]any{"action": "ALLOW", "rules": []any{map[string]any{
					"from": []any{map[string]any{"source": map[string]any{"principals": []any{"cluster.local/ns/default/sa/reviews", "cluster.local/ns/default/sa/ratings"}}}},
					"to":   []any{map[string]any{"operation": map[string]any{"ports": []any{"19306"}}}},
				}}}),
				authorizationPolicy("tcp-deny", "productpage", map[string]any{"action": "DENY", "rules": []any{
					map[string]any{"from": []any{map[string]any{"source": map[string]any{"principals": []any{"cluster.local/ns/default/sa/ratings"}}}}},
					map[string]any{"from": []any{map[string]any{"source": map[string]any{"ipBlocks": []any{"192.0.2.2/32"}}}}},
				}}),
			}, 2},
	}
	for _, m := range modes {
		if m.policy != nil {
			apply(t, m.policy)
		}
		apply(t, m.authz...)
		raw := waitRaw(t, b.Node, "virtualInbound under "+m.name, func(x rawXDS) bool {
			l, _ := x[typeListener]["virtualInbound"].(*listenerv3.Listener)
			if networkRBACFilters(l, 19306) != m.rbac {
				return false
			}
			got := inboundChains(l)
			for _, c := range m.want {
				if !got[c] {
					return false
				}
			}
			for _, c := range m.not {
				if got[c] {
					return false
				}
			}
			return true
		})
		path := filepath.Join(peerAuthGolden, m.name, "virtualInbound.json")
		got := marshalIndent(t, raw[typeListener]["virtualInbound"])
		if *updatePeerAuth {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
		} else if golden, err := os.ReadFile(path); err != nil || !sameJSON(golden, got) {
			t.Errorf("istiod's virtualInbound under %s is not %s (%v; run with -update-peerauth):\n%s", m.name, path, err, got)
		}
		if m.policy != nil {
			deleteAll(t, []harness.Object{m.policy})
		}
		deleteAll(t, m.authz)
	}
}

// networkRBACFilters counts the network RBAC filters of virtualInbound's TLS chain for
// port.
func networkRBACFilters(l *listenerv3.Listener, port uint32) int {
	n := 0
	for _, fc := range l.GetFilterChains() {
		m := fc.GetFilterChainMatch()
		if m.GetDestinationPort().GetValue() != port || m.GetTransportProtocol() != "tls" {
			continue
		}
		for _, f := range fc.GetFilters() {
			if f.GetName() == "envoy.filters.network.rbac" {
				n++
			}
		}
	}
	return n
}

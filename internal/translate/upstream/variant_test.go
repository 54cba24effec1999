package upstream

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/amesh-dev/amesh/internal/apisix"
)

func f64(f float64) *float64 { return &f }

func hashingBase(t *testing.T) *apisix.Upstream {
	c := edsCluster("outbound|9080||reviews.default.svc.cluster.local")
	c.LbPolicy = clusterv3.Cluster_RING_HASH
	u, _ := Build(c.GetName(), c, cla(c.Name, group(0, 0, ep("10.0.0.1", 80, 0, 0), ep("10.0.0.2", 80, 0, 0))))
	mustValid(t, u)
	return u
}

var validIDRE = regexp.MustCompile(`^[a-zA-Z0-9-_.]{1,64}$`)

func TestVariantKeyAndID(t *testing.T) {
	const cl = "outbound|9080||reviews.default.svc.cluster.local"
	if (Variant{}).Key() != "" || VariantID(cl, Variant{}) != ID(cl) {
		t.Errorf("empty variant: key %q id %q", Variant{}.Key(), VariantID(cl, Variant{}))
	}
	a := Variant{Retries: intPtr(2), ReadTimeout: f64(0.5), HashOn: "header", HashKey: "x-user"}
	b := Variant{Retries: intPtr(2), ReadTimeout: f64(0.5), HashOn: "header", HashKey: "x-user"}
	if a.Key() != b.Key() || VariantID(cl, a) != VariantID(cl, b) {
		t.Errorf("equal variants differ: %q %q", a.Key(), b.Key())
	}
	ids := map[string]string{}
	for _, v := range []Variant{
		{}, {Retries: intPtr(0)}, {Retries: intPtr(2)}, {RetryTimeout: f64(2)}, {ReadTimeout: f64(2)},
		{HashOn: "header", HashKey: "x-user"}, {HashOn: "cookie", HashKey: "x-user"}, a,
	} {
		id := VariantID(cl, v)
		if !validIDRE.MatchString(id) {
			t.Errorf("invalid id %q", id)
		}
		if prev, dup := ids[id]; dup {
			t.Errorf("variants %q and %q share id %s", prev, v.Key(), id)
		}
		ids[id] = v.Key()
	}
	long := strings.Repeat("x", 100)
	if id := VariantID(long, a); len(id) > 64 || !validIDRE.MatchString(id) || id == VariantID(long, Variant{Retries: intPtr(1)}) {
		t.Errorf("long cluster name: id %q", id)
	}
}

func TestVariantApply(t *testing.T) {
	base := hashingBase(t)
	before := string(mustValid(t, base))
	v := Variant{Retries: intPtr(2), RetryTimeout: f64(1.5), ReadTimeout: f64(0.25), HashOn: "header", HashKey: "x-user"}
	u := v.Apply(base)
	mustValid(t, u)
	if string(mustValid(t, base)) != before {
		t.Fatal("Apply modified the base upstream")
	}
	if u.ID != VariantID(base.Name, v) || u.ID == base.ID {
		t.Errorf("id %s, want %s", u.ID, VariantID(base.Name, v))
	}
	if *u.Retries != 2 || *u.RetryTimeout != 1.5 || u.Timeout.Read != 0.25 || u.Timeout.Send != 0.25 ||
		u.Timeout.Connect != base.Timeout.Connect || u.Type != "chash" || u.HashOn != "header" || u.Key != "x-user" {
		t.Errorf("variant %+v", u)
	}
	// Hash policies are ignored by Envoy on non-hashing clusters: no hash, and the
	// variant id is the one of the remaining settings.
	c := edsCluster("c")
	rr, _ := Build(c.GetName(), c, nil)
	hv := Variant{Retries: intPtr(1), HashOn: "header", HashKey: "x-user"}
	got := hv.Apply(rr)
	if got.Type != "roundrobin" || got.HashOn != "" || got.ID != VariantID("c", Variant{Retries: intPtr(1)}) {
		t.Errorf("hash on round robin: %+v", got)
	}
	// A variant equal to the base is the base.
	if e := (Variant{Retries: intPtr(0)}).Effective(rr); e.Key() != "" {
		t.Errorf("Effective kept %q", e.Key())
	}
}

func TestHashFromPolicy(t *testing.T) {
	hp := func(p *routev3.RouteAction_HashPolicy) []*routev3.RouteAction_HashPolicy {
		return []*routev3.RouteAction_HashPolicy{p}
	}
	header := func(n string) *routev3.RouteAction_HashPolicy {
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: n}}}
	}
	for _, tc := range []struct {
		name        string
		in          []*routev3.RouteAction_HashPolicy
		on, key     string
		problemWith string
	}{
		{"none", nil, "", "", ""},
		{"header", hp(header("X-User")), "header", "x-user", ""},
		{"authority", hp(header(":authority")), "vars", "host", ""},
		{"bad header", hp(header(":path")), "", "", "cannot be"},
		{"cookie", hp(&routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: "session"}}}), "cookie", "session", ""},
		{"cookie ttl", hp(&routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: "s", Ttl: durationpb.New(1e9)}}}), "cookie", "s", "generate"},
		{"source ip", hp(&routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}}), "vars", "remote_addr", ""},
		{"query", hp(&routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: "user"}}}), "vars", "arg_user", ""},
		{"filter state", hp(&routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_FilterState_{FilterState: &routev3.RouteAction_HashPolicy_FilterState{Key: "k"}}}), "", "", "filter_state"},
		{"two", []*routev3.RouteAction_HashPolicy{header("a"), header("b")}, "header", "a", "only the first"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			on, key, problems := HashFromPolicy(tc.in)
			if on != tc.on || key != tc.key {
				t.Errorf("got %q %q, want %q %q", on, key, tc.on, tc.key)
			}
			joined := strings.Join(problems, "; ")
			if (tc.problemWith == "") != (joined == "") || !strings.Contains(joined, tc.problemWith) {
				t.Errorf("problems %q, want one mentioning %q", joined, tc.problemWith)
			}
			if on != "" {
				// The result must be accepted by APISIX on a hashing upstream.
				mustValid(t, Variant{HashOn: on, HashKey: key}.Apply(hashingBase(t)))
			}
		})
	}
}

// The buffer-built key and id are the plain definitions: ids already stored in APISIX
// must not change.
func TestVariantIDDefinition(t *testing.T) {
	rt, rd := 0.25, 3.0
	for _, v := range []Variant{
		{Retries: intPtr(2)},
		{Retries: intPtr(-1), RetryTimeout: &rt, ReadTimeout: &rd, HashOn: "header", HashKey: "x-user"},
		{ReadTimeout: &rt},
		{HashOn: "vars", HashKey: "remote_addr"},
	} {
		var parts []string
		if v.Retries != nil {
			parts = append(parts, fmt.Sprintf("retries=%d", *v.Retries))
		}
		if v.RetryTimeout != nil {
			parts = append(parts, fmt.Sprintf("retry_timeout=%v", *v.RetryTimeout))
		}
		if v.ReadTimeout != nil {
			parts = append(parts, fmt.Sprintf("read_timeout=%v", *v.ReadTimeout))
		}
		if v.HashOn != "" {
			parts = append(parts, "hash="+v.HashOn+":"+v.HashKey)
		}
		key := strings.Join(parts, ",")
		if v.Key() != key {
			t.Errorf("Key() = %q, want %q", v.Key(), key)
		}
		for _, cluster := range []string{"outbound|9080|v1|reviews.default.svc.cluster.local", "short"} {
			base := ID(cluster)
			sum := sha256.Sum256([]byte(base + "\x00" + key))
			suffix := "-v" + hex.EncodeToString(sum[:])[:variantHashLen]
			want := base
			if len(want) > 64-len(suffix) {
				want = want[:64-len(suffix)]
			}
			want += suffix
			if got := VariantID(cluster, v); got != want {
				t.Errorf("VariantID(%q, %q) = %q, want %q", cluster, key, got, want)
			}
		}
	}
}

// ApplyAs is Apply under another id.
func TestVariantApplyAs(t *testing.T) {
	base := hashingBase(t)
	v := Variant{Retries: intPtr(2), HashOn: "cookie", HashKey: "session"}
	want := v.Apply(base)
	got := v.ApplyAs(base, "asked-for")
	if got.ID != "asked-for" {
		t.Errorf("id %q, want asked-for", got.ID)
	}
	got.ID = want.ID
	if a, b := string(mustValid(t, got)), string(mustValid(t, want)); a != b {
		t.Errorf("ApplyAs gives\n%s\nApply gives\n%s", a, b)
	}
}

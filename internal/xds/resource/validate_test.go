package resource

import (
	"math"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// typedTypes are the types validate_route.go walks with typed code.
var typedTypes = map[protoreflect.FullName]bool{
	"envoy.config.route.v3.VirtualHost":                   true,
	"envoy.config.route.v3.Route":                         true,
	"envoy.config.route.v3.RouteMatch":                    true,
	"envoy.config.route.v3.RouteAction":                   true,
	"envoy.config.route.v3.RouteAction.MaxStreamDuration": true,
	"envoy.config.route.v3.RetryPolicy":                   true,
	"envoy.config.route.v3.HeaderMatcher":                 true,
	"envoy.config.route.v3.QueryParameterMatcher":         true,
	"envoy.type.matcher.v3.StringMatcher":                 true,
}

// A field the typed walks forget is found: for every field the descriptors say can
// hold a checked message, below every type walked by typed code, a virtual host with
// one failing message there fails the typed walk with the place the reflective walk
// names.
func TestTypedWalksMatchReflection(t *testing.T) {
	vhType := (&routev3.VirtualHost{}).ProtoReflect().Descriptor()
	nodeOf(vhType)
	paths := 0
	var visit func(path []protoreflect.FieldDescriptor, md protoreflect.MessageDescriptor)
	visit = func(path []protoreflect.FieldDescriptor, md protoreflect.MessageDescriptor) {
		if !typedTypes[md.FullName()] {
			return
		}
		for _, fd := range reflectEdges(md) {
			p := append(append([]protoreflect.FieldDescriptor{}, path...), fd)
			paths++
			vh := &routev3.VirtualHost{Name: "vh"}
			buildFailing(vh.ProtoReflect(), p)
			typed := walkVirtualHost(vh)
			reflective := walkReflectively(vh.ProtoReflect())
			if typed == nil || reflective == nil || typed.Error() != reflective.Error() {
				t.Errorf("field %s: typed walk %v, reflective walk %v", pathString(p), typed, reflective)
			}
			visit(p, target(fd))
		}
	}
	visit(nil, vhType)
	if paths < 40 {
		t.Fatalf("only %d fields tried: the test tests little", paths)
	}
}

// reflectEdges lists the fields of md the reflective walk takes (oneof members
// included).
func reflectEdges(md protoreflect.MessageDescriptor) []protoreflect.FieldDescriptor {
	var out []protoreflect.FieldDescriptor
	for _, e := range nodeOf(md).edges {
		if e.oneof == nil {
			out = append(out, e.fd)
		}
		for _, m := range e.members {
			out = append(out, m.fd)
		}
	}
	return out
}

// walkReflectively is walk without the typed walks.
func walkReflectively(m protoreflect.Message) *validationError {
	var all func(protoreflect.Message, *node) *validationError
	all = func(m protoreflect.Message, n *node) *validationError { return walkFields(m, n, all) }
	return all(m, nodeOf(m.Descriptor()))
}

// buildFailing sets the fields of path in m (one element for lists, key "k" for
// maps) and makes the message at its end fail the checks the shortest way.
func buildFailing(m protoreflect.Message, path []protoreflect.FieldDescriptor) {
	for _, fd := range path {
		m = child(m, fd)
	}
	for !checked(m.Descriptor().FullName()) {
		m = child(m, shortestToCheck(m.Descriptor()))
	}
	switch m.Descriptor().FullName() {
	case durationType:
		m.Set(m.Descriptor().Fields().ByName("seconds"), protoreflect.ValueOfInt64(-1))
	case weightedType:
		// No clusters: the weights add up to 0.
	default:
		m.Set(m.Descriptor().Fields().ByName("regex"), protoreflect.ValueOfString("("))
	}
}

func child(m protoreflect.Message, fd protoreflect.FieldDescriptor) protoreflect.Message {
	switch {
	case fd.IsMap():
		v := m.Mutable(fd).Map().Mutable(protoreflect.ValueOfString("k").MapKey())
		return v.Message()
	case fd.IsList():
		l := m.Mutable(fd).List()
		e := l.NewElement()
		l.Append(e)
		return e.Message()
	}
	return m.Mutable(fd).Message()
}

// shortestToCheck is the field of md that leads to a checked message in the fewest
// steps.
func shortestToCheck(md protoreflect.MessageDescriptor) protoreflect.FieldDescriptor {
	best, bestDepth := protoreflect.FieldDescriptor(nil), math.MaxInt
	for _, fd := range reflectEdges(md) {
		if d := depthToCheck(target(fd), map[protoreflect.FullName]bool{md.FullName(): true}); d < bestDepth {
			best, bestDepth = fd, d
		}
	}
	return best
}

func depthToCheck(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool) int {
	if checked(md.FullName()) {
		return 0
	}
	if seen[md.FullName()] {
		return math.MaxInt
	}
	seen[md.FullName()] = true
	defer delete(seen, md.FullName())
	best := math.MaxInt
	for _, fd := range reflectEdges(md) {
		if d := depthToCheck(target(fd), seen); d < math.MaxInt && d+1 < best {
			best = d + 1
		}
	}
	return best
}

func pathString(p []protoreflect.FieldDescriptor) string {
	var s []string
	for _, fd := range p {
		s = append(s, string(fd.Name()))
	}
	return strings.Join(s, ".")
}

func TestValidateRouteConfig(t *testing.T) {
	route := func(name string, a *routev3.RouteAction, m *routev3.RouteMatch) *routev3.Route {
		if m == nil {
			m = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
		}
		return &routev3.Route{Name: name, Match: m, Action: &routev3.Route_Route{Route: a}}
	}
	toC := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}}
	rc := func(vhs ...*routev3.VirtualHost) *routev3.RouteConfiguration {
		return &routev3.RouteConfiguration{Name: "80", VirtualHosts: vhs}
	}
	vh := func(name string, domains []string, routes ...*routev3.Route) *routev3.VirtualHost {
		return &routev3.VirtualHost{Name: name, Domains: domains, Routes: routes}
	}
	regex := func(re string) *routev3.RouteMatch {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
	}
	timeout := func(d *durationpb.Duration) *routev3.RouteAction {
		return &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}, Timeout: d}
	}
	weighted := func(ws ...uint32) *routev3.RouteAction {
		wc := &routev3.WeightedCluster{}
		for i, w := range ws {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: string(rune('a' + i)), Weight: wrapperspb.UInt32(w)})
		}
		return &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}}
	}
	for _, tc := range []struct {
		name string
		rc   *routev3.RouteConfiguration
		want string // "" for valid
	}{
		{"valid", rc(vh("a", []string{"a", "*.a", "a.*", "*"}, route("r", toC, regex(`/api/v[0-9]+/.*`))), vh("b", []string{"b", "B:80"})), ""},
		{"RE2-only syntax", rc(vh("a", []string{"a"}, route("r", toC, regex(`/a\C+\p{Old_Italic}(?P<名>x)`)))), ""},
		{"unclosed group", rc(vh("a", []string{"a"}, route("r", toC, regex(`/api/(unclosed`)))),
			`virtual_hosts["a"].routes["r"].match.safe_regex: regex "/api/(unclosed" does not compile in RE2: error parsing regexp: missing closing )`},
		{"repeat count", rc(vh("a", []string{"a"}, route("r", toC, &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			Headers: []*routev3.HeaderMatcher{{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `a{1001}`}}}}}}}))),
			`virtual_hosts["a"].routes["r"].match.headers["x"].string_match.safe_regex: regex "a{1001}" does not compile in RE2: error parsing regexp: invalid repeat count`},
		{"Go-only class name", rc(vh("a", []string{"a"}, route("r", toC, regex(`\p{greek}`)))), "invalid character class range: `\\p{greek}`"},
		{"negative timeout", rc(vh("a", []string{"a"}, route("r", timeout(&durationpb.Duration{Seconds: -1}), nil))),
			`virtual_hosts["a"].routes["r"].route.timeout: invalid duration (seconds: -1, nanos: 0): expected a positive duration`},
		{"bad nanos", rc(vh("a", []string{"a"}, route("r", timeout(&durationpb.Duration{Seconds: 3, Nanos: 1_000_000_000}), nil))),
			`route.timeout: invalid duration (seconds: 3, nanos: 1000000000): out of range`},
		{"2^62 s", rc(vh("a", []string{"a"}, route("r", timeout(&durationpb.Duration{Seconds: 1 << 62}), nil))),
			`route.timeout: invalid duration (seconds: 4611686018427387904, nanos: 0): out of range`},
		{"largest accepted", rc(vh("a", []string{"a"}, route("r", timeout(&durationpb.Duration{Seconds: maxDurationSeconds, Nanos: 999_999_999}), nil))), ""},
		{"one second more", rc(vh("a", []string{"a"}, route("r", timeout(&durationpb.Duration{Seconds: maxDurationSeconds + 1}), nil))), "out of range"},
		{"retry per-try timeout", rc(vh("a", []string{"a"}, route("r", &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"},
			RetryPolicy: &routev3.RetryPolicy{PerTryTimeout: &durationpb.Duration{Nanos: -5}}}, nil))),
			`route.retry_policy.per_try_timeout: invalid duration (seconds: 0, nanos: -5)`},
		{"weights overflow", rc(vh("a", []string{"a"}, route("r", weighted(math.MaxUint32, 1), nil))),
			`route.weighted_clusters: the sum of the weights of the weighted clusters (4294967296) exceeds 4294967295`},
		{"weights at the limit", rc(vh("a", []string{"a"}, route("r", weighted(math.MaxUint32-1, 1), nil))), ""},
		{"weights all 0", rc(vh("a", []string{"a"}, route("r", weighted(0, 0), nil))), "must be greater than 0"},
		{"duplicate domain", rc(vh("a", []string{"a"}), vh("b", []string{"x", "A"})),
			`only unique values for domains are permitted: duplicate entry of domain a in route 80 (virtual host "b")`},
		{"duplicate in one virtual host", rc(vh("a", []string{"a", "a"})), "duplicate entry of domain a"},
		{"duplicate suffix wildcard", rc(vh("a", []string{"*.a"}), vh("b", []string{"*.A"})), "duplicate entry of domain *.a"},
		{"duplicate prefix wildcard", rc(vh("a", []string{"a.*"}), vh("b", []string{"a.*"})), "duplicate entry of domain a.*"},
		{"two stars", rc(vh("a", []string{"*"}), vh("b", []string{"*"})), `only a single wildcard domain is permitted in route 80 (virtual host "b")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.rc)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("rejected: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
			// The decoder rejects it the same way, serially and in parallel.
			b, merr := proto.Marshal(tc.rc)
			if merr != nil {
				t.Fatal(merr)
			}
			for _, min := range []int{1 << 62, 1} {
				_, derr := DecodeBytes(RouteConfigType, b, "", DecodeOptions{ParallelRDSMin: min})
				if (derr == nil) != (tc.want == "") || derr != nil && !strings.Contains(derr.Error(), tc.want) {
					t.Errorf("decode (parallel from %d bytes): %v, want %q", min, derr, tc.want)
				}
			}
		})
	}
}

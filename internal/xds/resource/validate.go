package resource

// Envoy checks more than the protos' validation rules (ValidateAll) when it accepts a
// resource, and NACKs what fails:
//
//   - every google.protobuf.Duration of the resource (MessageUtil::validateDurationFields,
//     not inside Any): seconds and nanos not negative, nanos below 10^9, seconds at most
//     9223372035 (so that the duration in nanoseconds fits an int64);
//   - every regex of a route configuration compiles in RE2 (package re2);
//   - the weights of a weighted_clusters add up to more than 0 and at most 2^32-1;
//   - no domain appears twice among the virtual hosts of a route configuration
//     (compared in lower case, wildcards with wildcards of the same kind), and "*" at
//     most once.
//
// The checks walk only the fields whose type can hold a Duration, a RegexMatcher or a
// WeightedCluster (found once per message type from the descriptors), so a route
// configuration costs a few field reads per route.

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/amesh-dev/amesh/internal/re2"
)

// maxDurationSeconds is the largest seconds value Envoy accepts in a Duration:
// (2^63-1 - 999999999) / 10^9.
const maxDurationSeconds = (math.MaxInt64 - 999_999_999) / 1_000_000_000

var (
	durationType = (&durationpb.Duration{}).ProtoReflect().Descriptor().FullName()
	anyType      = (&anypb.Any{}).ProtoReflect().Descriptor().FullName()
	weightedType = (&routev3.WeightedCluster{}).ProtoReflect().Descriptor().FullName()
)

// regexTypes are the messages whose "regex" field Envoy compiles with RE2.
var regexTypes = map[protoreflect.FullName]bool{
	"envoy.type.matcher.v3.RegexMatcher": true,
	"xds.type.matcher.v3.RegexMatcher":   true,
}

// checked reports whether messages of type n are checked themselves.
func checked(n protoreflect.FullName) bool {
	return n == durationType || n == weightedType || regexTypes[n]
}

// Validate checks what Envoy checks beyond ValidateAll (see above) in a Listener,
// RouteConfiguration (inline in an HttpConnectionManager too), VirtualHost, Cluster or
// ClusterLoadAssignment. It does not look
// inside Any fields: the typed configs in them are checked where they are read.
func Validate(m proto.Message) error {
	if err := walk(m.ProtoReflect()); err != nil {
		return err
	}
	switch m := m.(type) {
	case *routev3.RouteConfiguration:
		return checkDomains(m)
	case *hcmv3.HttpConnectionManager:
		if rc := m.GetRouteConfig(); rc != nil {
			if err := checkDomains(rc); err != nil {
				return fmt.Errorf("route_config: %w", err)
			}
		}
	}
	return nil
}

// validationError is a failed check and where it happened.
type validationError struct {
	path []string // innermost last, built while unwinding
	msg  string
}

func (e *validationError) Error() string {
	if len(e.path) == 0 {
		return e.msg
	}
	var b strings.Builder
	for i := len(e.path) - 1; i >= 0; i-- {
		if i < len(e.path)-1 && !strings.HasPrefix(e.path[i], "[") {
			b.WriteByte('.')
		}
		b.WriteString(e.path[i])
	}
	return b.String() + ": " + e.msg
}

func (e *validationError) in(seg string) *validationError {
	e.path = append(e.path, seg)
	return e
}

// walk checks m and every message below it that the checks concern.
func walk(m protoreflect.Message) *validationError {
	return walkNode(m, nodeOf(m.Descriptor()))
}

func walkNode(m protoreflect.Message, n *node) *validationError {
	if n.typed != nil {
		return n.typed(m)
	}
	return walkFields(m, n, walkNode)
}

// walkFields checks m (of n's type) and walks its fields with next.
func walkFields(m protoreflect.Message, n *node, next func(protoreflect.Message, *node) *validationError) *validationError {
	if n.checked {
		if err := check(m.Descriptor().FullName(), m); err != nil {
			return err
		}
	}
	for i := range n.edges {
		e := &n.edges[i]
		fd := e.fd
		if e.oneof != nil {
			// One read for the whole oneof instead of one per member.
			fd = m.WhichOneof(e.oneof)
			if fd == nil {
				continue
			}
			var child *node
			for _, o := range e.members {
				if o.fd == fd {
					child = o.node
				}
			}
			if child == nil {
				continue
			}
			if err := next(m.Get(fd).Message(), child); err != nil {
				return err.in(string(fd.Name()))
			}
			continue
		}
		switch {
		case fd.IsMap():
			var err *validationError
			m.Get(fd).Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
				if err = next(v.Message(), e.node); err != nil {
					err.in("[" + strconv.Quote(k.String()) + "]").in(string(fd.Name()))
				}
				return err == nil
			})
			if err != nil {
				return err
			}
		case fd.IsList():
			l := m.Get(fd).List()
			for i := 0; i < l.Len(); i++ {
				el := l.Get(i).Message()
				if err := next(el, e.node); err != nil {
					return err.in(elementSegment(el, i)).in(string(fd.Name()))
				}
			}
		case m.Has(fd):
			if err := next(m.Get(fd).Message(), e.node); err != nil {
				return err.in(string(fd.Name()))
			}
		}
	}
	return nil
}

// elementSegment names a list element by its name field when it has one, else by
// its index.
func elementSegment(m protoreflect.Message, i int) string {
	name := ""
	if fd := m.Descriptor().Fields().ByName("name"); fd != nil && fd.Kind() == protoreflect.StringKind && !fd.IsList() {
		name = m.Get(fd).String()
	}
	return listSegment(name, i)
}

func listSegment(name string, i int) string {
	if name != "" {
		return "[" + strconv.Quote(name) + "]"
	}
	return "[" + strconv.Itoa(i) + "]"
}

func check(name protoreflect.FullName, m protoreflect.Message) *validationError {
	switch {
	case name == durationType:
		fields := m.Descriptor().Fields()
		return checkDuration(m.Get(fields.ByName("seconds")).Int(), m.Get(fields.ByName("nanos")).Int())
	case name == weightedType:
		return checkWeights(m.Interface().(*routev3.WeightedCluster))
	}
	return checkRegex(m.Get(m.Descriptor().Fields().ByName("regex")).String())
}

func checkDuration(s, n int64) *validationError {
	switch {
	case s < 0 || n < 0:
		return &validationError{msg: fmt.Sprintf("invalid duration (seconds: %d, nanos: %d): expected a positive duration", s, n)}
	case n > 999_999_999 || s > maxDurationSeconds:
		return &validationError{msg: fmt.Sprintf("invalid duration (seconds: %d, nanos: %d): out of range (seconds at most %d, nanos at most 999999999)", s, n, maxDurationSeconds)}
	}
	return nil
}

func checkWeights(wc *routev3.WeightedCluster) *validationError {
	var sum uint64
	for _, c := range wc.GetClusters() {
		sum += uint64(c.GetWeight().GetValue())
	}
	switch {
	case sum > math.MaxUint32:
		return &validationError{msg: fmt.Sprintf("the sum of the weights of the weighted clusters (%d) exceeds %d", sum, uint64(math.MaxUint32))}
	case sum == 0:
		return &validationError{msg: "the sum of the weights of the weighted clusters must be greater than 0"}
	}
	return nil
}

func checkRegex(re string) *validationError {
	if err := re2.Check(re); err != nil {
		return &validationError{msg: fmt.Sprintf("regex %q does not compile in RE2: %v", re, err)}
	}
	return nil
}

// checkDomains applies Envoy's rule on the domains of a route configuration's
// virtual hosts (RouteMatcher): unique after lowering their case, exact names,
// suffix wildcards ("*x") and prefix wildcards ("x*") each among their kind; one "*".
func checkDomains(rc *routev3.RouteConfiguration) error {
	n := 0
	for _, vh := range rc.GetVirtualHosts() {
		n += len(vh.GetDomains())
	}
	type domain struct {
		kind byte // 'e'xact, 's'uffix or 'p'refix wildcard
		name string
	}
	seen := make(map[domain]struct{}, n)
	star := false
	for _, vh := range rc.GetVirtualHosts() {
		for _, d := range vh.GetDomains() {
			d = strings.ToLower(d)
			k := domain{'e', d}
			switch {
			case d == "*":
				if star {
					return fmt.Errorf("only a single wildcard domain is permitted in route %s (virtual host %q)", rc.GetName(), vh.GetName())
				}
				star = true
				continue
			case strings.HasPrefix(d, "*"):
				k.kind = 's'
			case strings.HasSuffix(d, "*"):
				k.kind = 'p'
			}
			if _, dup := seen[k]; dup {
				return fmt.Errorf("only unique values for domains are permitted: duplicate entry of domain %s in route %s (virtual host %q)", d, rc.GetName(), vh.GetName())
			}
			seen[k] = struct{}{}
		}
	}
	return nil
}

// node is what walk does with messages of one type: check them (checked) and walk
// the fields that can lead to a checked message (edges). Nodes form a graph built
// once from the descriptors of a resource type, so that a walk reads no table.
type node struct {
	checked bool
	edges   []edge
	// typed, when set, walks messages of the type instead (validate_route.go).
	typed func(protoreflect.Message) *validationError
}

// edge is a field to walk, or a oneof whose members to walk (members).
type edge struct {
	fd      protoreflect.FieldDescriptor
	node    *node
	oneof   protoreflect.OneofDescriptor
	members []edge
}

var nodes struct {
	sync.Mutex // held while building
	byType     map[protoreflect.FullName]*node
	// built is byType's nodes once complete, read without the lock.
	built sync.Map // protoreflect.FullName -> *node
}

// nodeOf returns the node of message type d.
func nodeOf(d protoreflect.MessageDescriptor) *node {
	if n, ok := nodes.built.Load(d.FullName()); ok {
		return n.(*node)
	}
	nodes.Lock()
	defer nodes.Unlock()
	if n := nodes.byType[d.FullName()]; n != nil {
		return n
	}
	if nodes.byType == nil {
		nodes.byType = map[protoreflect.FullName]*node{}
	}
	buildNodes(d)
	for name, n := range nodes.byType {
		nodes.built.LoadOrStore(name, n)
	}
	return nodes.byType[d.FullName()]
}

// buildNodes adds the nodes of every message type reachable from d: a type leads to
// a checked message when it is one or one of its message fields' types leads to one,
// solved as a fixed point (types can be recursive).
func buildNodes(d protoreflect.MessageDescriptor) {
	types := map[protoreflect.FullName]protoreflect.MessageDescriptor{}
	var collect func(protoreflect.MessageDescriptor)
	collect = func(md protoreflect.MessageDescriptor) {
		if _, ok := types[md.FullName()]; ok || md.FullName() == anyType || nodes.byType[md.FullName()] != nil {
			return
		}
		types[md.FullName()] = md
		for _, fd := range messageFields(md) {
			collect(target(fd))
		}
	}
	collect(d)
	leads := func(n protoreflect.FullName) bool {
		if b := nodes.byType[n]; b != nil {
			return b.checked || len(b.edges) > 0
		}
		return checked(n)
	}
	lead := map[protoreflect.FullName]bool{}
	for n := range types {
		lead[n] = leads(n)
	}
	for changed := true; changed; {
		changed = false
		for n, md := range types {
			if lead[n] {
				continue
			}
			for _, fd := range messageFields(md) {
				if t := target(fd).FullName(); lead[t] || leads(t) {
					lead[n], changed = true, true
					break
				}
			}
		}
	}
	for n := range types {
		nodes.byType[n] = &node{checked: checked(n), typed: typedWalks[n]}
	}
	for n, md := range types {
		nd := nodes.byType[n]
		oneofs := map[protoreflect.FullName]int{} // oneof -> index in nd.edges
		for _, fd := range messageFields(md) {
			t := target(fd).FullName()
			if !lead[t] && !leads(t) {
				continue
			}
			e := edge{fd: fd, node: nodes.byType[t]}
			if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
				i, ok := oneofs[od.FullName()]
				if !ok {
					i = len(nd.edges)
					oneofs[od.FullName()] = i
					nd.edges = append(nd.edges, edge{oneof: od})
				}
				nd.edges[i].members = append(nd.edges[i].members, e)
				continue
			}
			nd.edges = append(nd.edges, e)
		}
	}
}

// messageFields lists the fields of md that hold messages (or maps with message
// values), not counting Any.
func messageFields(md protoreflect.MessageDescriptor) []protoreflect.FieldDescriptor {
	var out []protoreflect.FieldDescriptor
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if t := target(fd); t != nil && t.FullName() != anyType {
			out = append(out, fd)
		}
	}
	return out
}

// target is the message type a field holds (a map's value type), nil for scalars.
func target(fd protoreflect.FieldDescriptor) protoreflect.MessageDescriptor {
	if fd.IsMap() {
		fd = fd.MapValue()
	}
	if k := fd.Kind(); k == protoreflect.MessageKind || k == protoreflect.GroupKind {
		return fd.Message()
	}
	return nil
}

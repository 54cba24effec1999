package plugins

import (
	"fmt"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/report"
)

// Envoy evaluates header mutations level by level (one HeaderParser per level): a
// weighted cluster's first, then route, virtual host and route configuration, or the
// reverse of the last three with most_specific_header_mutations_wins. Within one level
// it removes first, then evaluates every append_action against the headers as they are
// after the removals, then overwrites, then appends. APISIX applies one flat set of
// add/set/remove operations, so the levels are composed here symbolically: for each
// header name the outcome is either "whatever the request had, followed by these
// values" or "exactly these values". Conditional actions (ADD_IF_ABSENT,
// OVERWRITE_IF_EXISTS) are only expressible when the header's presence is already
// decided by an earlier operation.

// headerLevel is one HeaderParser's worth of mutations.
type headerLevel struct {
	field  string // proto path of the add list, e.g. "virtual_host.request_headers_to_add"
	add    []*corev3.HeaderValueOption
	remove []string
}

// headerState is what is known about one header after some mutations.
type headerState struct {
	known bool     // true: the header is exactly vals; false: the request's values, then vals
	vals  []string // values, in order
}

type presence int

const (
	absent presence = iota
	present
	unknownPresence
)

func (s *headerState) presence() presence {
	switch {
	case len(s.vals) > 0:
		return present
	case s.known:
		return absent
	}
	return unknownPresence
}

// headerPlan is the composed outcome: header name -> state, plus the names in the
// order they were first touched (for deterministic reporting).
type headerPlan struct {
	states map[string]*headerState
}

func (p *headerPlan) state(name string) *headerState {
	s := p.states[name]
	if s == nil {
		s = &headerState{}
		p.states[name] = s
	}
	return s
}

func (p *headerPlan) sortedNames() []string {
	names := make([]string, 0, len(p.states))
	for n := range p.states {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// levels returns the header levels in Envoy's evaluation order.
func (b *builder) levels(response bool) []headerLevel {
	rc, vh, r := b.in.RouteConfig, b.in.VirtualHost, b.in.Route
	pick := func(prefix string, addReq, addResp []*corev3.HeaderValueOption, remReq, remResp []string) headerLevel {
		if response {
			return headerLevel{field: prefix + ".response_headers_to_add", add: addResp, remove: remResp}
		}
		return headerLevel{field: prefix + ".request_headers_to_add", add: addReq, remove: remReq}
	}
	route := pick("route", r.GetRequestHeadersToAdd(), r.GetResponseHeadersToAdd(), r.GetRequestHeadersToRemove(), r.GetResponseHeadersToRemove())
	vhost := pick("virtual_host", vh.GetRequestHeadersToAdd(), vh.GetResponseHeadersToAdd(), vh.GetRequestHeadersToRemove(), vh.GetResponseHeadersToRemove())
	global := pick("route_config", rc.GetRequestHeadersToAdd(), rc.GetResponseHeadersToAdd(), rc.GetRequestHeadersToRemove(), rc.GetResponseHeadersToRemove())
	var out []headerLevel
	if cw := b.shared; cw != nil {
		out = append(out, pick("route.weighted_clusters.clusters", cw.GetRequestHeadersToAdd(), cw.GetResponseHeadersToAdd(), cw.GetRequestHeadersToRemove(), cw.GetResponseHeadersToRemove()))
	}
	if rc.GetMostSpecificHeaderMutationsWins() {
		return append(out, global, vhost, route)
	}
	return append(out, route, vhost, global)
}

// hasHeaderOps reports whether any level mutates headers, so that the common route
// without mutations costs nothing.
func (b *builder) hasHeaderOps(response bool) bool {
	rc, vh, r, cw := b.in.RouteConfig, b.in.VirtualHost, b.in.Route, b.shared
	if response {
		return len(r.GetResponseHeadersToAdd())+len(r.GetResponseHeadersToRemove())+
			len(vh.GetResponseHeadersToAdd())+len(vh.GetResponseHeadersToRemove())+
			len(rc.GetResponseHeadersToAdd())+len(rc.GetResponseHeadersToRemove())+
			len(cw.GetResponseHeadersToAdd())+len(cw.GetResponseHeadersToRemove()) > 0
	}
	return len(r.GetRequestHeadersToAdd())+len(r.GetRequestHeadersToRemove())+
		len(vh.GetRequestHeadersToAdd())+len(vh.GetRequestHeadersToRemove())+
		len(rc.GetRequestHeadersToAdd())+len(rc.GetRequestHeadersToRemove())+
		len(cw.GetRequestHeadersToAdd())+len(cw.GetRequestHeadersToRemove()) > 0
}

// compose evaluates the levels into a plan. ok is false when the route must fail.
func (b *builder) compose(levels []headerLevel) (*headerPlan, bool) {
	plan := &headerPlan{states: map[string]*headerState{}}
	ok := true
	type op struct{ name, value string }
	for _, lv := range levels {
		removeField := strings.TrimSuffix(lv.field, "_add") + "_remove"
		for _, name := range lv.remove {
			name = strings.ToLower(name)
			if name == "" || !modifiable(name) || !validHeaderName(name) {
				b.fail(removeField, report.Invalid, "header %q cannot be removed (Envoy rejects this configuration)", name)
				ok = false
				continue
			}
			s := plan.state(name)
			s.known, s.vals = true, nil
		}
		var overwrites, appends []op
		for _, hvo := range lv.add {
			name, value, action, keep, failed := b.headerOption(lv.field, hvo)
			if failed {
				ok = false
			}
			if !keep {
				continue
			}
			s := plan.state(name)
			switch action {
			case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
				appends = append(appends, op{name, value})
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
				overwrites = append(overwrites, op{name, value})
			case corev3.HeaderValueOption_ADD_IF_ABSENT, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
				switch s.presence() {
				case unknownPresence:
					b.fail(lv.field, report.Unsupported, "append_action %v on header %q depends on whether the request has it; APISIX cannot make a header mutation conditional", action, name)
					ok = false
				case absent:
					if action == corev3.HeaderValueOption_ADD_IF_ABSENT {
						appends = append(appends, op{name, value})
					}
				case present:
					if action == corev3.HeaderValueOption_OVERWRITE_IF_EXISTS {
						overwrites = append(overwrites, op{name, value})
					}
				}
			default:
				b.fail(lv.field, report.Invalid, "unknown append_action %v on header %q", action, name)
				ok = false
			}
		}
		for _, o := range overwrites {
			s := plan.state(o.name)
			s.known, s.vals = true, []string{o.value}
		}
		for _, o := range appends {
			s := plan.state(o.name)
			s.vals = append(s.vals, o.value)
		}
	}
	return plan, ok
}

// headerOption validates one HeaderValueOption. keep is false when the option has no
// effect (empty value) or cannot be carried (then the route is failed).
func (b *builder) headerOption(field string, hvo *corev3.HeaderValueOption) (name, value string, action corev3.HeaderValueOption_HeaderAppendAction, keep, failed bool) {
	h := hvo.GetHeader()
	name = strings.ToLower(h.GetKey())
	if name == "" || !modifiable(name) || !validHeaderName(name) {
		b.fail(field, report.Invalid, "header name %q cannot be added (Envoy rejects this configuration)", h.GetKey())
		return "", "", 0, false, true
	}
	raw := h.GetValue()
	if len(h.GetRawValue()) > 0 {
		raw = string(h.GetRawValue())
	}
	value, err := envoyHeaderValue(raw)
	if err != nil {
		b.fail(field, report.Unsupported, "header %q: %v", name, err)
		return "", "", 0, false, true
	}
	if err := checkAPISIXLiteral(value); err != nil {
		b.fail(field, report.Unsupported, "header %q: %v", name, err)
		return "", "", 0, false, true
	}
	if value == "" && !hvo.GetKeepEmptyValue() {
		// Envoy drops a header whose value is empty unless keep_empty_value is set.
		return "", "", 0, false, false
	}
	action = hvo.GetAppendAction()
	//lint:ignore SA1019 Envoy still honours the deprecated append field; so must amesh.
	if a := hvo.GetAppend(); a != nil {
		if action != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
			b.fail(field, report.Invalid, "header %q sets both append and append_action (Envoy rejects this configuration)", name)
			return "", "", 0, false, true
		}
		if !a.GetValue() {
			action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		}
	}
	return name, value, action, true, false
}

// modifiable mirrors Envoy's rule that pseudo-headers and host cannot be mutated
// through header lists.
func modifiable(name string) bool {
	return !strings.HasPrefix(name, ":") && name != "host"
}

// validHeaderName accepts RFC 7230 token characters, which APISIX's schemas accept
// too (they only exclude ':').
func validHeaderName(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// envoyHeaderValue resolves Envoy's substitution-format syntax in a header value.
// "%%" is a literal percent sign; any %COMMAND% depends on the request or connection
// and has no APISIX translation here.
func envoyHeaderValue(v string) (string, error) {
	if !strings.Contains(v, "%") {
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			b.WriteByte(v[i])
			continue
		}
		if i+1 < len(v) && v[i+1] == '%' {
			b.WriteByte('%')
			i++
			continue
		}
		return "", fmt.Errorf("value %q uses an Envoy substitution command, which is evaluated per request", v)
	}
	return b.String(), nil
}

// checkAPISIXLiteral rejects text that APISIX would not take literally: APISIX
// resolves "$name" and "${name}" as nginx variables (and "$1" as regex captures) in
// header values, mocking bodies and rewrite targets, and offers no escape for them.
func checkAPISIXLiteral(s string) error {
	for i := 0; i+1 < len(s); i++ {
		if s[i] != '$' {
			continue
		}
		c := s[i+1]
		if c == '{' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
			return fmt.Errorf("%q contains %q, which APISIX would substitute as a variable", s, s[i:i+2])
		}
	}
	return nil
}

// requestHeaders emits proxy-rewrite headers for the request mutations.
func (b *builder) requestHeaders() {
	if !b.hasHeaderOps(false) {
		return
	}
	plan, ok := b.compose(b.levels(false))
	if !ok {
		return
	}
	set, add := map[string]any{}, map[string]any{}
	var remove []any
	for _, name := range plan.sortedNames() {
		s := plan.states[name]
		switch {
		case s.known && len(s.vals) == 0:
			remove = append(remove, name)
		case s.known:
			set[name] = headerValues(s.vals)
		case len(s.vals) > 0:
			add[name] = headerValues(s.vals)
		}
	}
	headers := map[string]any{}
	if len(set) > 0 {
		headers["set"] = set
	}
	if len(add) > 0 {
		headers["add"] = add
	}
	if len(remove) > 0 {
		headers["remove"] = remove
	}
	if len(headers) > 0 {
		b.pluginConf(pluginProxyRewrite)["headers"] = headers
	}
}

// headerValues gives one value as a string and several as a list (APISIX adds or sets
// one header line per list element).
func headerValues(vals []string) any {
	if len(vals) == 1 {
		return vals[0]
	}
	out := make([]any, len(vals))
	for i, v := range vals {
		out[i] = v
	}
	return out
}

// responseHeaders emits response-rewrite headers for the response mutations.
// response-rewrite's "add" takes "name: value" strings whose value may not contain
// ':' or end in '/', and its "set" takes one value per header.
func (b *builder) responseHeaders() {
	if !b.hasHeaderOps(true) {
		return
	}
	levels := b.levels(true)
	plan, ok := b.compose(levels)
	if !ok {
		return
	}
	field := levels[0].field
	set := map[string]any{}
	var add, remove []any
	for _, name := range plan.sortedNames() {
		s := plan.states[name]
		switch {
		case s.known && len(s.vals) == 0:
			remove = append(remove, name)
		case s.known && len(s.vals) == 1:
			set[name] = s.vals[0]
		case s.known:
			b.fail(field, report.Unsupported, "response header %q must be replaced by %d values; response-rewrite sets one value per header", name, len(s.vals))
			return
		default:
			for _, v := range s.vals {
				if v == "" || strings.ContainsAny(v, ":") || strings.HasSuffix(v, "/") || v[0] == ' ' || v[0] == '\t' {
					b.fail(field, report.Unsupported, "response header %q value %q cannot be appended by response-rewrite (no ':', no trailing '/', no leading blank, not empty)", name, v)
					return
				}
				add = append(add, name+": "+v)
			}
		}
		if _, cors := b.plugins[pluginCORS]; cors && (strings.HasPrefix(name, "access-control-") || name == "vary") {
			b.note(field, report.Approximated, "response header %q is also written by the cors plugin; in APISIX the route's mutation wins, in Envoy the cors filter's", name)
		}
	}
	headers := map[string]any{}
	if len(set) > 0 {
		headers["set"] = set
	}
	if len(add) > 0 {
		headers["add"] = add
	}
	if len(remove) > 0 {
		headers["remove"] = remove
	}
	if len(headers) > 0 {
		b.pluginConf(pluginResponseRewrite)["headers"] = headers
	}
}

// sameClusterExtras reports whether two weighted clusters carry the same header
// mutations, host rewrite and per-filter configuration.
func sameClusterExtras(a, c *routev3.WeightedCluster_ClusterWeight) bool {
	strip := func(cw *routev3.WeightedCluster_ClusterWeight) *routev3.WeightedCluster_ClusterWeight {
		return &routev3.WeightedCluster_ClusterWeight{
			RequestHeadersToAdd:     cw.GetRequestHeadersToAdd(),
			RequestHeadersToRemove:  cw.GetRequestHeadersToRemove(),
			ResponseHeadersToAdd:    cw.GetResponseHeadersToAdd(),
			ResponseHeadersToRemove: cw.GetResponseHeadersToRemove(),
			HostRewriteSpecifier:    cw.GetHostRewriteSpecifier(),
			TypedPerFilterConfig:    cw.GetTypedPerFilterConfig(),
		}
	}
	return proto.Equal(strip(a), strip(c))
}

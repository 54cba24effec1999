package demo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
)

// The summary is for people: it reads the APISIX objects as JSON (what APISIX reads),
// not the translator's structs, so it shows exactly what was written.

type routeView struct {
	ID         string         `json:"id"`
	URI        string         `json:"uri"`
	URIs       []string       `json:"uris"`
	Hosts      []string       `json:"hosts"`
	Methods    []string       `json:"methods"`
	Vars       []any          `json:"vars"`
	Priority   int            `json:"priority"`
	UpstreamID string         `json:"upstream_id"`
	Plugins    map[string]any `json:"plugins"`

	weights []weightedTarget // from the traffic-split plugin
}

type weightedTarget struct {
	upstream string
	weight   float64
}

type upstreamView struct {
	ID    string        `json:"id"`
	Name  string        `json:"name"`
	Type  string        `json:"type"`
	Nodes []apisix.Node `json:"nodes"`
}

type streamRouteView struct {
	ID         string                     `json:"id"`
	ServerAddr string                     `json:"server_addr"`
	ServerPort int                        `json:"server_port"`
	Labels     map[string]string          `json:"labels"`
	UpstreamID string                     `json:"upstream_id"`
	Plugins    map[string]json.RawMessage `json:"plugins"`
}

// match is what the stream route takes: [capture port] address:port, and the protocol.
func (s streamRouteView) match() string {
	addr, port := s.ServerAddr, "*"
	if addr == "" {
		addr = "*"
	}
	if s.ServerPort != 0 {
		port = strconv.Itoa(s.ServerPort)
	}
	m := addr + ":" + port
	if l := s.Labels["amesh-listen"]; l != "" {
		m = "[" + l + "] " + m
	}
	if p := s.Labels["amesh-protocol"]; p != "" {
		m += " " + p
	}
	return m
}

// target is what the stream route does with a connection.
func (s streamRouteView) target(names map[string]string) string {
	switch _, odst := s.Plugins["amesh-original-dst"]; {
	case s.Plugins["amesh-http"] != nil:
		return "HTTP routes"
	case odst:
		return "original destination (" + names[s.UpstreamID] + ")"
	case s.UpstreamID != "":
		return names[s.UpstreamID]
	}
	return "closed"
}

// writeSummary prints routes grouped by their hosts, upstreams with their nodes, stream
// routes, and the translation report.
func writeSummary(w io.Writer, objects map[string][]byte, rep []report.Entry) {
	var routes []routeView
	var upstreams []upstreamView
	var streams []streamRouteView
	for _, key := range slices.Sorted(maps.Keys(objects)) {
		switch apisix.KindOf(key) {
		case apisix.KindRoutes:
			var r routeView
			if json.Unmarshal(objects[key], &r) == nil {
				r.weights = trafficSplit(r.Plugins)
				routes = append(routes, r)
			}
		case apisix.KindUpstreams:
			var u upstreamView
			if json.Unmarshal(objects[key], &u) == nil {
				upstreams = append(upstreams, u)
			}
		case apisix.KindStreamRoutes:
			var s streamRouteView
			if json.Unmarshal(objects[key], &s) == nil {
				streams = append(streams, s)
			}
		}
	}
	names := upstreamLabels(upstreams)

	// Routes per host set and listener (the port conditions every route of a listener
	// carries), in the order APISIX tries them: higher priority first.
	groups := map[string][]routeView{}
	for _, r := range routes {
		var port []string
		var rest []any
		for _, v := range r.Vars {
			if isPortCondition(v) {
				port = append(port, "["+exprString(v)+"]")
			} else {
				rest = append(rest, v)
			}
		}
		r.Vars = rest
		h := hostLabel(r.Hosts)
		if len(port) > 0 {
			h += "  " + strings.Join(port, " ")
		}
		groups[h] = append(groups[h], r)
	}
	fmt.Fprintf(w, "Routes (%d), by host:\n", len(routes))
	for _, h := range slices.Sorted(maps.Keys(groups)) {
		rs := groups[h]
		sort.SliceStable(rs, func(i, j int) bool {
			if rs[i].Priority != rs[j].Priority {
				return rs[i].Priority > rs[j].Priority
			}
			return rs[i].ID < rs[j].ID
		})
		fmt.Fprintf(w, "  %s\n", h)
		for _, r := range rs {
			fmt.Fprintf(w, "    %-44s -> %s\n", r.match(), r.target(names))
		}
	}
	fmt.Fprintf(w, "\n%s", legend)
	fmt.Fprintf(w, "\nUpstreams (%d):\n", len(upstreams))
	for _, u := range upstreams {
		fmt.Fprintf(w, "  %-52s %s\n", names[u.ID], nodeList(u.Nodes))
	}
	if len(streams) > 0 {
		fmt.Fprintf(w, "\nStream routes (%d):\n", len(streams))
		for _, s := range streams {
			fmt.Fprintf(w, "  %-44s -> %s\n", s.match(), s.target(names))
		}
	}
	fmt.Fprintln(w)
	writeReport(w, rep)
}

// writeReport lists what could not be translated faithfully.
func writeReport(w io.Writer, rep []report.Entry) {
	if len(rep) == 0 {
		fmt.Fprintln(w, "Translation report: everything was translated faithfully.")
		return
	}
	counts := map[report.Severity]int{}
	for _, e := range rep {
		counts[e.Severity]++
	}
	var parts []string
	for _, s := range []report.Severity{report.Invalid, report.Unsupported, report.Approximated, report.Ignored} {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	fmt.Fprintf(w, "Translation report (%s), one line per finding (all entries: /debug/report, amesh translate):\n", strings.Join(parts, ", "))
	// One line per severity, kind and field: the same finding about many clusters is
	// one finding for a reader.
	type group struct {
		first report.Entry
		n     int
	}
	var order []string
	groups := map[string]*group{}
	for _, e := range rep {
		k := string(e.Severity) + "\x00" + e.Kind + "\x00" + e.Field
		if g := groups[k]; g != nil {
			g.n++
			continue
		}
		groups[k] = &group{first: e, n: 1}
		order = append(order, k)
	}
	sort.SliceStable(order, func(i, j int) bool {
		return severityRank(groups[order[i]].first.Severity) < severityRank(groups[order[j]].first.Severity)
	})
	for _, k := range order {
		g := groups[k]
		where := g.first.Resource
		if g.n > 1 {
			where = fmt.Sprintf("%s and %d more", where, g.n-1)
		}
		what := g.first.Kind
		if g.first.Field != "" { // empty when the finding is about the whole resource
			what += " " + g.first.Field
		}
		fmt.Fprintf(w, "  %-12s %s (%s): %s\n", g.first.Severity, what, where, g.first.Message)
	}
}

func severityRank(s report.Severity) int {
	switch s {
	case report.Invalid:
		return 0
	case report.Unsupported:
		return 1
	case report.Approximated:
		return 2
	}
	return 3
}

// upstreamLabels names upstreams by their name (the Envoy cluster); per-route variants
// of one cluster share it, so those also show the last part of their id.
func upstreamLabels(us []upstreamView) map[string]string {
	count := map[string]int{}
	for _, u := range us {
		count[u.Name]++
	}
	out := map[string]string{}
	for _, u := range us {
		switch {
		case u.Name == "":
			out[u.ID] = u.ID
		case count[u.Name] > 1:
			suffix := u.ID
			if i := strings.LastIndexByte(u.ID, '-'); i >= 0 {
				suffix = u.ID[i+1:]
			}
			out[u.ID] = u.Name + " #" + suffix
		default:
			out[u.ID] = u.Name
		}
	}
	return out
}

// isPortCondition reports whether a route condition selects the listener (original
// destination or server port) rather than the request.
func isPortCondition(v any) bool {
	l, ok := v.([]any)
	if !ok || len(l) == 0 {
		return false
	}
	name, _ := l[0].(string)
	return name == "connection_original_dst" || name == "server_port"
}

// hostLabel names a host set by its first (longest, fully qualified) host.
func hostLabel(hosts []string) string {
	switch len(hosts) {
	case 0:
		return "(any host)"
	case 1:
		return hosts[0]
	}
	return fmt.Sprintf("%s (+%d aliases)", hosts[0], len(hosts)-1)
}

func (r routeView) match() string {
	var b strings.Builder
	switch {
	case r.URI != "":
		b.WriteString(r.URI)
	case len(r.URIs) > 0:
		b.WriteString(strings.Join(r.URIs, "|"))
	default:
		b.WriteString("/*")
	}
	if len(r.Methods) > 0 {
		b.WriteString(" " + strings.Join(r.Methods, ","))
	}
	for _, v := range r.Vars {
		b.WriteString(" [" + exprString(v) + "]")
	}
	return b.String()
}

func (r routeView) target(names map[string]string) string {
	var parts []string
	if len(r.weights) > 0 {
		var ws []string
		for _, t := range r.weights {
			n := names[t.upstream]
			if n == "" {
				n = t.upstream
			}
			ws = append(ws, fmt.Sprintf("%s %g", n, t.weight))
		}
		parts = append(parts, "split "+strings.Join(ws, " / "))
	} else if r.UpstreamID != "" {
		parts = append(parts, names[r.UpstreamID])
	}
	var plugins []string
	for _, p := range slices.Sorted(maps.Keys(r.Plugins)) {
		if p != "traffic-split" {
			plugins = append(plugins, p)
		}
	}
	if len(plugins) > 0 {
		parts = append(parts, "plugins: "+strings.Join(plugins, ", "))
	}
	if len(parts) == 0 {
		return "(no upstream)"
	}
	return strings.Join(parts, "; ")
}

// trafficSplit extracts the weighted targets of the first traffic-split rule; an entry
// without upstream_id is the route's own upstream (upstream "" here).
func trafficSplit(plugins map[string]any) []weightedTarget {
	ts, _ := plugins["traffic-split"].(map[string]any)
	rules, _ := ts["rules"].([]any)
	if len(rules) == 0 {
		return nil
	}
	rule, _ := rules[0].(map[string]any)
	wus, _ := rule["weighted_upstreams"].([]any)
	var out []weightedTarget
	for _, x := range wus {
		wu, _ := x.(map[string]any)
		id, _ := wu["upstream_id"].(string)
		w, _ := wu["weight"].(float64)
		out = append(out, weightedTarget{upstream: id, weight: w})
	}
	return out
}

// exprString renders a lua-resty-expr term compactly: ["http_x","==","a"] as
// http_x == "a", a negated term (["http_x","!","~~","a"], or "!" first) as
// !(http_x ~~ "a"), ["OR", t1, t2] as (t1 OR t2). Strings are quoted without escaping
// backslashes, so that a regex reads as APISIX's PCRE sees it.
func exprString(v any) string {
	l, ok := v.([]any)
	if !ok {
		return operand(v)
	}
	if len(l) > 0 {
		if s, _ := l[0].(string); s == "!" {
			return "!(" + exprString(l[1:]) + ")"
		} else if s == "OR" || s == "AND" {
			var parts []string
			for _, t := range l[1:] {
				parts = append(parts, exprString(t))
			}
			return "(" + strings.Join(parts, " "+s+" ") + ")"
		}
	}
	if len(l) > 2 {
		if s, _ := l[1].(string); s == "!" {
			return "!(" + exprString(append([]any{l[0]}, l[2:]...)) + ")"
		}
	}
	var parts []string
	for i, x := range l {
		if s, ok := x.(string); ok && i != 2 {
			parts = append(parts, s)
			continue
		}
		parts = append(parts, operand(x))
	}
	return strings.Join(parts, " ")
}

// operand renders a value: a string between quotes as it is (JSON when it holds a
// quote or a control character), anything else as JSON.
func operand(v any) string {
	if s, ok := v.(string); ok && !strings.ContainsFunc(s, func(r rune) bool { return r == '"' || r < 0x20 || r == 0x7f }) {
		return `"` + s + `"`
	}
	if l, ok := v.([]any); ok {
		parts := make([]string, len(l))
		for i, x := range l {
			parts[i] = operand(x)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// legend explains the notation of the routes once (docs/translate.md says the same).
const legend = `How to read the routes: "/a" is an exact path, "/a*" a prefix, "/*" any path; a route's
conditions [...] (APISIX's vars, lua-resty-expr over nginx variables) must all hold:
  x == "v"  equals     x ~= "v"  differs     x ~~ "re"  the PCRE regex finds a match
  (\A and \z anchor it at the start and end of the value, (*UTF) makes it match
  characters rather than bytes; x ~~ "\A": x is present)
  x in [..]  one of    !(...)  not (also true when x is absent)    (a OR b)  either
Variables: uri, host, http_<header>, arg_<query parameter>, server_port (APISIX's own
listening port), connection_original_dst (the port the client connected to).
`

func nodeList(nodes []apisix.Node) string {
	if len(nodes) == 0 {
		return "(no endpoints: answers 503)"
	}
	var parts []string
	for _, n := range nodes {
		s := fmt.Sprintf("%s:%d", n.Host, n.Port)
		if n.Weight != 1 {
			s += fmt.Sprintf(" w%d", n.Weight)
		}
		if n.Priority != 0 {
			s += fmt.Sprintf(" p%d", n.Priority)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// writeChanges prints what one applied batch changed, key by key, with the fields that
// differ (nodes as host:port lists).
func writeChanges(w io.Writer, before, after map[string][]byte) {
	var keys []string
	for k := range after {
		if !bytes.Equal(before[k], after[k]) {
			keys = append(keys, k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch {
		case before[k] == nil:
			fmt.Fprintf(w, "  + %s\n", k)
		case after[k] == nil:
			fmt.Fprintf(w, "  - %s\n", k)
		default:
			fmt.Fprintf(w, "  ~ %s\n", k)
			old, cur := flatten(before[k]), flatten(after[k])
			for _, p := range slices.Sorted(maps.Keys(union(old, cur))) {
				if old[p] == cur[p] {
					continue
				}
				fmt.Fprintf(w, "      %s: %s -> %s\n", p, orAbsent(old[p]), orAbsent(cur[p]))
			}
		}
	}
}

func orAbsent(s string) string {
	if s == "" {
		return "(absent)"
	}
	return s
}

// flatten maps the leaf paths of a JSON object to their JSON values; a "nodes" list is
// one leaf shown as host:port list.
func flatten(obj []byte) map[string]string {
	var v any
	if json.Unmarshal(obj, &v) != nil {
		return map[string]string{"": string(obj)}
	}
	out := map[string]string{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch t := v.(type) {
		case map[string]any:
			for k, x := range t {
				p := k
				if path != "" {
					p = path + "." + k
				}
				if k == "nodes" {
					var nodes []apisix.Node
					b, _ := json.Marshal(x)
					if json.Unmarshal(b, &nodes) == nil {
						out[p] = nodeList(nodes)
						continue
					}
				}
				walk(p, x)
			}
		case []any:
			for i, x := range t {
				walk(fmt.Sprintf("%s[%d]", path, i), x)
			}
		default:
			b, _ := json.Marshal(t)
			out[path] = string(b)
		}
	}
	walk("", v)
	return out
}

func union(a, b map[string]string) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

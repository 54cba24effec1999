package plugins

import (
	"regexp"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/amesh-dev/amesh/internal/report"
)

// forwarding translates what a forwarding route does to the request on its way
// upstream: path and host rewrites (proxy-rewrite) and mirroring (proxy-mirror).
func (b *builder) forwarding(ra *routev3.RouteAction) {
	b.pathRewrite(ra)
	b.hostRewrite(ra)
	b.mirror(ra)
}

// matchedPart describes which part of the path Envoy's prefix_rewrite replaces: the
// matched prefix for prefix matches, the whole path otherwise. It returns a PCRE
// pattern (applied to nginx's $uri, which has no query) whose group 1 is the part that
// is kept, or whole=true when the entire path is replaced.
func (b *builder) matchedPart(field string) (pattern string, whole, ok bool) {
	m := b.in.Route.GetMatch()
	fold := ""
	if cs := m.GetCaseSensitive(); cs != nil && !cs.GetValue() {
		fold = "(?i)"
	}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		return `(?s)\A` + fold + quotePCRE(ps.Prefix) + `(.*)`, false, true
	case *routev3.RouteMatch_PathSeparatedPrefix:
		return `(?s)\A` + fold + quotePCRE(ps.PathSeparatedPrefix) + `(.*)`, false, true
	case *routev3.RouteMatch_Path, *routev3.RouteMatch_SafeRegex:
		return "", true, true
	default:
		b.fail(field, report.Unsupported, "prefix rewrite after a %T path match has no APISIX equivalent", ps)
		return "", false, false
	}
}

// pathRewrite translates prefix_rewrite and regex_rewrite. Envoy rewrites the path and
// keeps the query string; APISIX's proxy-rewrite rewrites $uri and appends the query
// string itself.
func (b *builder) pathRewrite(ra *routev3.RouteAction) {
	switch {
	case ra.GetPathRewritePolicy() != nil:
		b.fail("route.route.path_rewrite_policy", report.Unsupported, "path_rewrite_policy (URI template rewrite) has no APISIX equivalent")
	case ra.GetPrefixRewrite() != "":
		const field = "route.route.prefix_rewrite"
		rw := ra.GetPrefixRewrite()
		pattern, whole, ok := b.matchedPart(field)
		if !ok {
			return
		}
		conf := b.pluginConf(pluginProxyRewrite)
		switch {
		case whole && strings.HasPrefix(rw, "/") && len(rw) <= maxRewriteURI && checkAPISIXLiteral(rw) == nil:
			conf["uri"] = rw
		case whole:
			conf["regex_uri"] = []any{`(?s)\A.*`, ngxTemplateLiteral(rw)}
		default:
			conf["regex_uri"] = []any{pattern, ngxTemplateLiteral(rw) + "${1}"}
		}
	case ra.GetRegexRewrite() != nil:
		const field = "route.route.regex_rewrite"
		pattern, tmpl, ok := b.regexRewrite(field, ra.GetRegexRewrite())
		if ok {
			b.pluginConf(pluginProxyRewrite)["regex_uri"] = []any{pattern, tmpl}
		}
	}
}

// regexRewrite converts an Envoy RegexMatchAndSubstitute into a PCRE pattern and an
// ngx.re.sub template. Envoy replaces every match; APISIX only the first, so the
// pattern must be anchored at the start of the path (then it matches at most once).
func (b *builder) regexRewrite(field string, rs *matcherv3.RegexMatchAndSubstitute) (pattern, tmpl string, ok bool) {
	re := rs.GetPattern().GetRegex()
	pattern, groups, err := re2ToPCRE(re)
	if err != nil {
		b.fail(field, report.Unsupported, "%v", err)
		return "", "", false
	}
	if !anchoredAtStart(re) {
		b.fail(field, report.Unsupported, "regex %q is not anchored with ^: Envoy replaces every match, APISIX only the first", re)
		return "", "", false
	}
	tmpl, err = re2SubstToNgx(rs.GetSubstitution(), groups)
	if err != nil {
		b.fail(field, report.Invalid, "%v", err)
		return "", "", false
	}
	return pattern, tmpl, true
}

// ngxTemplateLiteral escapes text for an ngx.re.sub template, where only '$' is
// special.
func ngxTemplateLiteral(s string) string { return strings.ReplaceAll(s, "$", "$$") }

// maxRewriteURI is proxy-rewrite's maxLength for uri.
const maxRewriteURI = 4096

// apisixHost is proxy-rewrite's pattern for host.
var apisixHost = regexp.MustCompile(`^[0-9a-zA-Z-.]+(:\d{1,5})?$`)

// hostRewrite translates host_rewrite_literal. A weighted cluster's host rewrite is
// applied first, so the route's wins when both are set.
func (b *builder) hostRewrite(ra *routev3.RouteAction) {
	field, host := "route.route.host_rewrite_literal", ""
	switch hs := ra.GetHostRewriteSpecifier().(type) {
	case *routev3.RouteAction_HostRewriteLiteral:
		host = hs.HostRewriteLiteral
	case *routev3.RouteAction_AutoHostRewrite:
		if hs.AutoHostRewrite.GetValue() {
			b.fail("route.route.auto_host_rewrite", report.Unsupported, "auto_host_rewrite (Host from the chosen endpoint's hostname) is not translated")
			return
		}
	case *routev3.RouteAction_HostRewriteHeader:
		b.fail("route.route.host_rewrite_header", report.Unsupported, "host_rewrite_header (Host from a request header) has no APISIX equivalent")
		return
	case *routev3.RouteAction_HostRewritePathRegex:
		b.fail("route.route.host_rewrite_path_regex", report.Unsupported, "host_rewrite_path_regex (Host from the path) has no APISIX equivalent")
		return
	case nil:
	default:
		b.fail("route.route.host_rewrite_specifier", report.Unsupported, "host rewrite %T has no APISIX equivalent", hs)
		return
	}
	if host == "" && b.shared != nil {
		field, host = "route.weighted_clusters.clusters.host_rewrite_literal", b.shared.GetHostRewriteLiteral()
	}
	if host == "" {
		return
	}
	if !apisixHost.MatchString(host) {
		b.fail(field, report.Unsupported, "host %q does not fit proxy-rewrite's host pattern", host)
		return
	}
	b.pluginConf(pluginProxyRewrite)["host"] = host
}

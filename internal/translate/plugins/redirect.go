package plugins

import (
	"regexp"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/amesh-dev/amesh/internal/report"
)

var redirectCodes = map[routev3.RedirectAction_RedirectResponseCode]int{
	routev3.RedirectAction_MOVED_PERMANENTLY:  301,
	routev3.RedirectAction_FOUND:              302,
	routev3.RedirectAction_SEE_OTHER:          303,
	routev3.RedirectAction_TEMPORARY_REDIRECT: 307,
	routev3.RedirectAction_PERMANENT_REDIRECT: 308,
}

var schemeRE = regexp.MustCompile(`^[a-z][a-z0-9+.-]*$`)

// redirect translates a RedirectAction into APISIX's redirect plugin.
//
// Envoy answers with Location "<scheme>://<host><port><path>": scheme from
// scheme_redirect / https_redirect or the request; host from host_redirect or the
// request's Host (whose port is dropped when port_redirect is set, or when the scheme
// changes and the port was the old scheme's default); path from path_redirect (whose
// own query, if any, replaces the request's), from prefix/regex rewriting of the
// request path, or the request path itself; the request's query is kept unless
// strip_query.
//
// The plugin's "uri" is a template over nginx variables ($scheme, $http_host, $host,
// $request_uri, $uri); "regex_uri" rewrites nginx's $uri (decoded, no query) with a
// regex but cannot use variables, so for rewritten paths the scheme and host must be
// fixed by the route, or the Location is relative (the same URL once resolved).
func (b *builder) redirect(r *routev3.RedirectAction) {
	code, ok := redirectCodes[r.GetResponseCode()]
	if !ok {
		b.fail("route.redirect.response_code", report.Invalid, "unknown redirect response code %v", r.GetResponseCode())
		return
	}
	conf := map[string]any{"ret_code": code}

	scheme, fixedScheme := "$scheme", false
	switch s := r.GetSchemeRewriteSpecifier().(type) {
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			scheme, fixedScheme = "https", true
		}
	case *routev3.RedirectAction_SchemeRedirect:
		if s.SchemeRedirect != "" {
			scheme, fixedScheme = strings.ToLower(s.SchemeRedirect), true
			if !schemeRE.MatchString(scheme) {
				b.fail("route.redirect.scheme_redirect", report.Invalid, "scheme %q is not a URL scheme", s.SchemeRedirect)
				return
			}
		}
	}

	host, fixedHost := "$http_host", false
	port := r.GetPortRedirect()
	portSuffix := ""
	if port != 0 {
		portSuffix = ":" + strconv.FormatUint(uint64(port), 10)
	}
	switch h := r.GetHostRedirect(); {
	case h != "":
		if !b.literalURIPart("route.redirect.host_redirect", h) {
			return
		}
		if port != 0 && strings.Contains(strings.TrimPrefix(h, "["), ":") && !strings.HasSuffix(h, "]") {
			b.fail("route.redirect.host_redirect", report.Unsupported, "host_redirect %q carries a port and port_redirect is set too", h)
			return
		}
		host, fixedHost = h+portSuffix, true
	case port != 0:
		host = "$host" + portSuffix
	case fixedScheme:
		b.note("route.redirect", report.Approximated, "a Host header carrying the old scheme's default port (:80 or :443) keeps it in the Location; Envoy drops it when the scheme changes")
	}

	strip := r.GetStripQuery()
	prefix := scheme + "://" + host
	switch p := r.GetPathRewriteSpecifier().(type) {
	case *routev3.RedirectAction_PathRedirect:
		path := p.PathRedirect
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		if !b.literalURIPart("route.redirect.path_redirect", path) {
			return
		}
		conf["uri"] = prefix + path
		// A query in path_redirect replaces the request's and survives strip_query.
		if !strings.Contains(path, "?") && !strip {
			conf["append_query_string"] = true
		}
	case *routev3.RedirectAction_PrefixRewrite:
		const field = "route.redirect.prefix_rewrite"
		pattern, whole, ok := b.matchedPart(field)
		if !ok {
			return
		}
		rw := p.PrefixRewrite
		if whole {
			if !strings.HasPrefix(rw, "/") {
				rw = "/" + rw
			}
			if strings.Contains(rw, "?") {
				b.fail(field, report.Unsupported, "prefix_rewrite %q contains a query; Envoy appends the request's query after a second '?'", rw)
				return
			}
			if !b.literalURIPart(field, rw) {
				return
			}
			conf["uri"] = prefix + rw
			if !strip {
				conf["append_query_string"] = true
			}
			break
		}
		if !b.regexRedirect(field, conf, pattern, ngxTemplateLiteral(rw)+"${1}", scheme, host, fixedScheme, fixedHost, port != 0) {
			return
		}
		if !strip {
			conf["append_query_string"] = true
		}
	case *routev3.RedirectAction_RegexRewrite:
		const field = "route.redirect.regex_rewrite"
		pattern, tmpl, ok := b.regexRewrite(field, p.RegexRewrite)
		if !ok || !b.regexRedirect(field, conf, pattern, tmpl, scheme, host, fixedScheme, fixedHost, port != 0) {
			return
		}
		if !strip {
			conf["append_query_string"] = true
		}
	case nil:
		if strip {
			conf["uri"] = prefix + "$uri"
			b.note("route.redirect.strip_query", report.Approximated, "the Location carries nginx's normalized, percent-decoded path ($uri); Envoy keeps the request's path as received")
		} else {
			conf["uri"] = prefix + "$request_uri"
		}
	default:
		b.fail("route.redirect.path_rewrite_specifier", report.Unsupported, "path rewrite %T has no APISIX equivalent", p)
		return
	}
	b.setPlugin(pluginRedirect, conf)
}

// regexRedirect sets regex_uri for a redirect whose path is computed by a regex.
func (b *builder) regexRedirect(field string, conf map[string]any, pattern, tmpl, scheme, host string, fixedScheme, fixedHost, portRedirect bool) bool {
	switch {
	case fixedScheme && fixedHost:
		// The pattern matches at the start of $uri, so text prepended to the template
		// starts the Location.
		conf["regex_uri"] = []any{pattern, ngxTemplateLiteral(scheme+"://"+host) + tmpl}
	case !fixedScheme && !fixedHost && !portRedirect:
		conf["regex_uri"] = []any{pattern, tmpl}
		b.note(field, report.Approximated, "the Location is relative (the same URL once resolved) and its path is built from nginx's normalized, percent-decoded path ($uri)")
		return true
	default:
		b.fail(field, report.Unsupported, "a rewritten redirect path needs either both scheme and host fixed by the route or neither (regex_uri cannot use request variables)")
		return false
	}
	b.note(field, report.Approximated, "the Location path is built from nginx's normalized, percent-decoded path ($uri)")
	return true
}

// literalURIPart checks text that goes verbatim into the redirect plugin's uri
// template, where '$' starts a variable and '\' an escape.
func (b *builder) literalURIPart(field, s string) bool {
	if strings.ContainsAny(s, `$\`) {
		b.fail(field, report.Unsupported, "%q contains '$' or '\\', which the redirect plugin's uri template would interpret", s)
		return false
	}
	return true
}

package plugins

import (
	"fmt"
	"strconv"

	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/amesh-dev/amesh/internal/re2"
	"github.com/amesh-dev/amesh/internal/report"
)

// corsSource is one level's CorsPolicy.
type corsSource struct {
	field  string
	policy *corsv3.CorsPolicy
}

// cors translates the CORS policies of a route (most specific first) into APISIX's
// cors plugin.
//
// Envoy's cors filter resolves each attribute separately: the most specific policy
// that sets it wins; enabled-ness comes from the most specific policy alone. It acts
// only on requests with a non-empty Origin that one of the matchers accepts (a matcher
// that accepts the string "*" accepts every origin); it answers a preflight (OPTIONS
// with Origin and Access-Control-Request-Method) itself and adds
// Access-Control-Allow-Origin (the request's origin), -Allow-Credentials and
// -Expose-Headers to other responses.
//
// APISIX's cors answers every OPTIONS request itself and, with allow_origins "**",
// echoes any origin. A _meta.filter restricts the plugin to exactly the requests
// Envoy's filter handles: allowed origin, and not an OPTIONS request without
// Access-Control-Request-Method.
func (b *builder) cors(policies []corsSource) {
	head := policies[0]
	enabled := runtimeFraction(head.policy.GetFilterEnabled())
	switch {
	case enabled <= 0:
		return
	case enabled < 1:
		b.fail(head.field+".filter_enabled", report.Unsupported, "CORS enabled for %g of requests cannot be expressed", enabled)
		return
	}

	var (
		origins          []*matcherv3.StringMatcher
		originsField     string
		methods, headers string
		expose, maxAge   string
		credentials      bool
		forward          = true
		privateNetwork   bool
		setCreds, setFwd bool
		setPNA           bool
	)
	for _, s := range policies {
		p := s.policy
		if len(origins) == 0 && len(p.GetAllowOriginStringMatch()) > 0 {
			origins, originsField = p.GetAllowOriginStringMatch(), s.field+".allow_origin_string_match"
		}
		if methods == "" {
			methods = p.GetAllowMethods()
		}
		if headers == "" {
			headers = p.GetAllowHeaders()
		}
		if expose == "" {
			expose = p.GetExposeHeaders()
		}
		if maxAge == "" {
			maxAge = p.GetMaxAge()
		}
		if !setCreds && p.GetAllowCredentials() != nil {
			credentials, setCreds = p.GetAllowCredentials().GetValue(), true
		}
		if !setFwd && p.GetForwardNotMatchingPreflights() != nil {
			forward, setFwd = p.GetForwardNotMatchingPreflights().GetValue(), true
		}
		if !setPNA && p.GetAllowPrivateNetworkAccess() != nil {
			privateNetwork, setPNA = p.GetAllowPrivateNetworkAccess().GetValue(), true
		}
	}
	if !forward {
		b.note(head.field+".forward_not_matching_preflights", report.Approximated, "preflights from origins that are not allowed are forwarded upstream; Envoy answers them with 200 and no Access-Control-Allow-Origin (browsers reject both)")
	}
	if len(origins) == 0 {
		return // no origin is allowed: Envoy's filter never adds a header
	}

	var alts []any
	anyOrigin := false
	for i, m := range origins {
		e, star, err := originExpr(m)
		if err != nil {
			b.fail(fmt.Sprintf("%s[%d]", originsField, i), report.Unsupported, "%v", err)
			return
		}
		anyOrigin = anyOrigin || star
		alts = append(alts, e)
	}
	filter := []any{[]any{"http_origin", "~~", "."}}
	switch {
	case anyOrigin:
	case len(alts) == 1:
		filter = append(filter, alts[0])
	default:
		filter = append(filter, append([]any{"OR"}, alts...))
	}
	filter = append(filter, []any{"OR",
		[]any{"request_method", "~=", "OPTIONS"},
		[]any{"http_access_control_request_method", "~~", "."},
	})

	conf := map[string]any{
		"allow_origins": "**",
		"_meta":         map[string]any{"filter": filter},
	}
	// Envoy sends each of these only when set; an empty header means the same to a
	// browser as no header. "*" for methods is echoed by Envoy and is a wildcard to
	// browsers, except on credentialed requests, where APISIX refuses "*" too.
	switch {
	case methods == "*" && credentials:
		conf["allow_methods"] = "**"
		b.note(head.field+".allow_methods", report.Approximated, "\"*\" (echo the requested method) with credentials becomes APISIX's fixed list of standard methods")
	default:
		conf["allow_methods"] = methods
	}
	if headers == "*" {
		conf["allow_headers"] = "**" // both echo Access-Control-Request-Headers
	} else {
		conf["allow_headers"] = headers
	}
	switch {
	case expose == "":
	case expose == "*" && credentials:
		// On a credentialed response "*" names no header; APISIX refuses it.
	default:
		conf["expose_headers"] = expose
	}
	if maxAge != "" {
		n, err := strconv.Atoi(maxAge)
		if err != nil {
			b.note(head.field+".max_age", report.Approximated, "max_age %q is not an integer; APISIX sends its default of 5 seconds", maxAge)
		} else {
			conf["max_age"] = n
		}
	}
	if credentials {
		conf["allow_credential"] = true
	}
	if privateNetwork {
		b.note(head.field+".allow_private_network_access", report.Approximated, "Access-Control-Allow-Private-Network is not sent")
	}
	b.note(head.field, report.Approximated, "APISIX also sends Access-Control-Allow-Methods/-Headers/-Max-Age and Vary: Origin on actual responses, and OPTIONS requests without Access-Control-Request-Method get no CORS headers")
	b.setPlugin(pluginCORS, conf)
}

// originExpr turns an origin matcher into a lua-resty-expr condition on $http_origin.
// star reports whether the matcher accepts the literal "*", which makes Envoy accept
// every origin.
func originExpr(m *matcherv3.StringMatcher) (expr []any, star bool, err error) {
	op := "~~"
	if m.GetIgnoreCase() {
		op = "~*"
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		if !m.GetIgnoreCase() {
			return []any{"http_origin", "==", p.Exact}, p.Exact == "*", nil
		}
		return []any{"http_origin", op, `\A` + quotePCRE(p.Exact) + `\z`}, p.Exact == "*", nil
	case *matcherv3.StringMatcher_Prefix:
		return []any{"http_origin", op, `\A` + quotePCRE(p.Prefix)}, p.Prefix == "" || p.Prefix == "*", nil
	case *matcherv3.StringMatcher_Suffix:
		return []any{"http_origin", op, quotePCRE(p.Suffix) + `\z`}, p.Suffix == "" || p.Suffix == "*", nil
	case *matcherv3.StringMatcher_Contains:
		return []any{"http_origin", op, quotePCRE(p.Contains)}, p.Contains == "" || p.Contains == "*", nil
	case *matcherv3.StringMatcher_SafeRegex:
		re := p.SafeRegex.GetRegex()
		pcre, _, err := re2ToPCRE(re)
		if err != nil {
			return nil, false, err
		}
		// RE2 safe_regex matches the whole string; lua-resty-expr's ~~ searches.
		full, err := re2.CompileWhole(re)
		if err != nil {
			return nil, false, err
		}
		return []any{"http_origin", "~~", `\A(?:` + pcre + `)\z`}, full.MatchString("*"), nil
	default:
		return nil, false, fmt.Errorf("origin matcher %T has no APISIX equivalent", p)
	}
}

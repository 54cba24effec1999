package upstream

import (
	"fmt"
	"regexp"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// What APISIX accepts as a chash key (apisix/upstream.lua); anything else is rejected.
var (
	hashNameRE = regexp.MustCompile(`^[a-zA-Z0-9-_]+$`)
	hashArgRE  = regexp.MustCompile(`^arg_[0-9a-zA-z_-]+$`)
)

// HashFromPolicy maps a route's hash_policy list to APISIX's hash_on and key (for
// Variant.HashOn and Variant.HashKey):
//
//	header h           → hash_on "header", key h (":authority" → vars "host")
//	cookie c           → hash_on "cookie", key c
//	source_ip          → hash_on "vars", key "remote_addr"
//	query_parameter q  → hash_on "vars", key "arg_q"
//
// APISIX hashes on one key, so only the first policy is used. problems says, in
// sentences for a report entry, what differs from Envoy; hashOn is "" when no policy
// could be translated (the route then balances like its cluster without a hash).
func HashFromPolicy(hps []*routev3.RouteAction_HashPolicy) (hashOn, key string, problems []string) {
	if len(hps) == 0 {
		return "", "", nil
	}
	if len(hps) > 1 {
		problems = append(problems, fmt.Sprintf("%d hash policies: only the first is used (Envoy combines them and falls through when one yields no value)", len(hps)))
	}
	hp := hps[0]
	switch {
	case hp.GetHeader() != nil:
		name := strings.ToLower(hp.GetHeader().GetHeaderName())
		if hp.GetHeader().GetRegexRewrite() != nil {
			problems = append(problems, "header hash regex_rewrite is not supported; the whole header value is hashed")
		}
		switch {
		case name == ":authority" || name == "host":
			return "vars", "host", problems
		case hashNameRE.MatchString(name):
			return "header", name, problems
		}
		return "", "", append(problems, fmt.Sprintf("header %q cannot be an APISIX hash key; not hashing", name))
	case hp.GetCookie() != nil:
		ck := hp.GetCookie()
		if !hashNameRE.MatchString(ck.GetName()) {
			return "", "", append(problems, fmt.Sprintf("cookie %q cannot be an APISIX hash key; not hashing", ck.GetName()))
		}
		if ck.GetTtl() != nil {
			problems = append(problems, "cookie ttl: APISIX does not generate the cookie when it is missing (Envoy does)")
		}
		return "cookie", ck.GetName(), problems
	case hp.GetConnectionProperties() != nil:
		if hp.GetConnectionProperties().GetSourceIp() {
			return "vars", "remote_addr", problems
		}
		return "", "", problems
	case hp.GetQueryParameter() != nil:
		k := "arg_" + hp.GetQueryParameter().GetName()
		if !hashArgRE.MatchString(k) {
			return "", "", append(problems, fmt.Sprintf("query parameter %q cannot be an APISIX hash key; not hashing", hp.GetQueryParameter().GetName()))
		}
		return "vars", k, problems
	}
	return "", "", append(problems, "filter_state hash policy is not supported; not hashing")
}

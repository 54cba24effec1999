package schema

import (
	"errors"
	"fmt"
	"regexp"
)

// APISIX checks these upstream rules in code after the schema
// (apisix/upstream.lua check_upstream_conf); a schema-valid upstream that breaks them
// is still rejected.
var (
	chashVarsKey   = regexp.MustCompile(`^((uri|server_name|server_addr|request_uri|remote_port|remote_addr|query_string|host|hostname|mqtt_client_id)|arg_[0-9a-zA-z_-]+)$`)
	chashHeaderKey = regexp.MustCompile(`^[a-zA-Z0-9-_]+$`)
)

// checkUpstreams applies checkUpstream to the upstream obj is or embeds.
func checkUpstreams(kind string, obj map[string]any) error {
	switch kind {
	case "upstreams":
		return checkUpstream(obj)
	case "routes", "services", "stream_routes":
		if u, ok := obj["upstream"].(map[string]any); ok {
			if err := checkUpstream(u); err != nil {
				return fmt.Errorf("upstream: %w", err)
			}
		}
	}
	if plugins, ok := obj["plugins"].(map[string]any); ok {
		ts, _ := plugins["traffic-split"].(map[string]any)
		rules, _ := ts["rules"].([]any)
		for i, r := range rules {
			rm, _ := r.(map[string]any)
			wus, _ := rm["weighted_upstreams"].([]any)
			for j, wu := range wus {
				wum, _ := wu.(map[string]any)
				if u, ok := wum["upstream"].(map[string]any); ok {
					if err := checkUpstream(u); err != nil {
						return fmt.Errorf("traffic-split rules[%d].weighted_upstreams[%d].upstream: %w", i, j, err)
					}
				}
			}
		}
	}
	return nil
}

func checkUpstream(u map[string]any) error {
	if u["pass_host"] == "rewrite" {
		if h, _ := u["upstream_host"].(string); h == "" {
			return errors.New(`pass_host "rewrite" needs a non-empty upstream_host`)
		}
	}
	if u["type"] != "chash" {
		return nil
	}
	hashOn, _ := u["hash_on"].(string)
	if hashOn == "" {
		hashOn = "vars"
	}
	if hashOn == "consumer" {
		return nil
	}
	key, ok := u["key"].(string)
	if !ok {
		return errors.New(`type "chash" needs a key`)
	}
	switch hashOn {
	case "vars":
		if !chashVarsKey.MatchString(key) {
			return fmt.Errorf("chash key %q is not a valid variable for hash_on vars", key)
		}
	case "header", "cookie":
		if !chashHeaderKey.MatchString(key) {
			return fmt.Errorf("chash key %q is not a valid %s name", key, hashOn)
		}
	}
	return nil
}

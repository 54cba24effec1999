package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/amesh-dev/amesh/internal/xds/bootstrap"
)

// Variables lists every variable this package and package bootstrap read, except the
// node metadata ones (bootstrap.MetaPrefixes). A config file may set any of them but
// AMESH_CONFIG_FILE.
func Variables() []string {
	own := []string{EnvLogLevel, EnvLogFile, EnvOriginalDstVar, EnvWindow, EnvStatusAddr, EnvWorkloadCert,
		EnvControllerAddress, EnvControllerTokenFile, EnvControllerTLS, EnvControllerCAFile, EnvControllerServerName}
	all := append(own, bootstrap.Variables...)
	slices.Sort(all)
	return all
}

// checkKnown rejects a config file key that no code reads: a typo would otherwise be
// ignored without a word, and the setting silently left at its default.
func checkKnown(key string) error {
	if key == EnvConfigFile {
		return fmt.Errorf("%s cannot be set in the config file it names", key)
	}
	for _, p := range bootstrap.MetaPrefixes {
		if strings.HasPrefix(key, p) && len(key) > len(p) {
			return nil
		}
	}
	known := Variables()
	if slices.Contains(known, key) {
		return nil
	}
	best, bestDist := "", -1
	for _, k := range known {
		if d := editDistance(strings.ToUpper(key), k); bestDist < 0 || d < bestDist {
			best, bestDist = k, d
		}
	}
	// A suggestion is only useful when the key is a plausible misspelling of it.
	if bestDist <= max(2, len(best)/4) {
		return fmt.Errorf("unknown variable %s (did you mean %s?)", key, best)
	}
	return fmt.Errorf("unknown variable %s (the variables are listed in amesh's internal/config/README.md)", key)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

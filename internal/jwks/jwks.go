// Package jwks fetches the JSON Web Key Sets that Envoy's jwt_authn filter would fetch
// itself (a provider's remote_jwks: istiod's PILOT_JWT_ENABLE_REMOTE_JWKS modes, where
// the jwksUri's host is a service of the mesh). Envoy sends the request over the cluster
// the http_uri names, with that cluster's endpoints and transport sockets, and keeps
// the keys for cache_duration. The Fetcher does the same from the Plans translation
// hands it: the endpoints of the cluster and how Envoy would connect to each (plaintext,
// or the cluster's TLS with the workload certificate, SNI, ALPN and subject alt name
// checks). Its results go back to translation as a Set, which inlines the keys as it
// does the keys istiod fetched.
//
// This is the pipeline's only stage that talks to workloads: translation stays pure,
// and a fetch that fails (no endpoint, a refused connection, a status other than 200)
// is a Result with an error, for which Envoy's answer holds: the provider's tokens fail
// ("Jwks remote fetch is failed").
package jwks

import (
	"fmt"
	"time"

	"github.com/amesh-dev/amesh/internal/identity"
)

// Source is one remote JWKS: the URI a provider names and the cluster it is fetched
// over. Two providers with the same pair share the fetch.
type Source struct {
	URI     string
	Cluster string
}

func (s Source) String() string { return s.URI + " via " + s.Cluster }

// Plan is how to fetch a Source now.
type Plan struct {
	Source
	// Timeout bounds one fetch (http_uri.timeout); CacheDuration is how long its keys
	// are used before they are fetched again (remote_jwks.cache_duration).
	Timeout, CacheDuration time.Duration
	// Nodes are the cluster's endpoints the way its upstream reaches them.
	Nodes []Node
	// Why, when set, says why the Source cannot be fetched (the cluster is unknown,
	// say); Nodes is then empty.
	Why string
}

// Node is one endpoint of the cluster.
type Node struct {
	// Addr is host:port (the host an IP or, for DNS clusters, a name).
	Addr string
	// Priority: only the nodes of the highest priority are used (Envoy's priority 0;
	// APISIX's largest value, as the upstream has it).
	Priority int
	// TLS is the transport socket Envoy uses for the endpoint; nil for plaintext.
	TLS *TLS
}

// TLS is a cluster's TLS context as a fetch applies it.
type TLS struct {
	// ServerName is sent as SNI ("" for none).
	ServerName string
	ALPN       []string
	// The client certificate: CertPEM and Key, or CertFile and KeyFile; none when all
	// are empty.
	CertPEM           string
	Key               identity.Secret
	CertFile, KeyFile string
	// The roots the server's chain must lead to: RootsPEM, RootsFile or the system's.
	// None of them: the server's certificate is not verified (Envoy without a
	// trusted CA).
	RootsPEM    string
	RootsFile   string
	SystemRoots bool
	// SANs: one of them must match a subject alt name of the server's certificate.
	SANs []SANMatcher
	// VerifyName, when set, must match a DNS subject alt name of the server's
	// certificate (auto_san_validation: the SNI the request's host gave).
	VerifyName string
	// MinVersion and MaxVersion are crypto/tls versions; 0 leaves Go's default.
	MinVersion, MaxVersion uint16
	// Unsupported, when set, says what of the context a fetch cannot reproduce: such
	// a fetch fails rather than connect with weaker TLS than Envoy's.
	Unsupported string
}

// SANMatcher is Envoy's subject alt name matcher. Type "" matches DNS, URI, email and
// IP SANs, else "dns", "uri", "email" or "ip" only; Match is "exact", "prefix",
// "suffix" or "contains".
type SANMatcher struct {
	Type, Match, Value string
	IgnoreCase         bool
}

// Result is what the last fetch of a Source brought: the JWKS text, or why there is
// none. Fetched is when it completed.
type Result struct {
	JWKS    string
	Err     string
	Fetched time.Time
}

// Same reports whether r and o give translation the same input.
func (r Result) Same(o Result) bool { return r.JWKS == o.JWKS && r.Err == o.Err }

// Set holds the Result of every Source fetched at least once. It is immutable once
// published.
type Set map[Source]Result

// errorf builds a Result's error.
func errorf(format string, args ...any) Result {
	return Result{Err: fmt.Sprintf(format, args...)}
}

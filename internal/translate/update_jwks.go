package translate

// Remote JWKS: the fourth input of translation. The jwt_authn providers of a listener
// that fetch their JWKS (remote_jwks) name a Source; the translator keeps which
// listeners name which Source, hands the pipeline a Plan for each (Result.JWKS: how
// Envoy would reach the cluster's endpoints), and takes the fetched sets back through
// SetJWKS. A Source whose result changed makes the listeners that name it stale: they
// are rebuilt with the keys inlined, as those istiod fetches are.

import (
	"crypto/tls"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"

	"github.com/amesh-dev/amesh/internal/jwks"
	"github.com/amesh-dev/amesh/internal/translate/upstream"
)

// Envoy's defaults when a remote_jwks leaves them out.
const (
	defaultJWKSTimeout = 5 * time.Second  // istiod's, for a config without http_uri.timeout
	defaultJWKSCache   = 10 * time.Minute // Envoy's default cache_duration
)

// remoteJWKS is a Source a provider names, with how it is fetched.
type remoteJWKS struct {
	jwks.Source
	Timeout, Cache time.Duration
}

// appendRemote appends the remote JWKS of c's providers.
func appendRemote(out []remoteJWKS, c *jwtv3.JwtAuthentication) []remoteJWKS {
	for _, p := range c.GetProviders() {
		r := p.GetRemoteJwks()
		if r == nil {
			continue
		}
		s, ok := remoteSource(r)
		if !ok {
			continue
		}
		rj := remoteJWKS{Source: s, Timeout: defaultJWKSTimeout, Cache: defaultJWKSCache}
		if d := r.GetHttpUri().GetTimeout(); d != nil && d.AsDuration() > 0 {
			rj.Timeout = d.AsDuration()
		}
		if d := r.GetCacheDuration(); d != nil && d.AsDuration() > 0 {
			rj.Cache = d.AsDuration()
		}
		out = append(out, rj)
	}
	return out
}

// sortRemote sorts rs by source and keeps one entry per source (the longest timeout,
// the shortest cache duration).
func sortRemote(rs []remoteJWKS) []remoteJWKS {
	slices.SortFunc(rs, func(a, b remoteJWKS) int {
		if c := strings.Compare(a.URI, b.URI); c != 0 {
			return c
		}
		return strings.Compare(a.Cluster, b.Cluster)
	})
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && out[n-1].Source == r.Source {
			out[n-1].Timeout = max(out[n-1].Timeout, r.Timeout)
			out[n-1].Cache = min(out[n-1].Cache, r.Cache)
			continue
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}

// SetJWKS makes set the fetched remote JWKS that Translate inlines, from its next
// call on. set must not be modified afterwards.
func (t *Translator) SetJWKS(set jwks.Set) { t.nextFetched = &set }

// syncJWKS installs the set SetJWKS handed over and marks stale the listeners that
// name a Source whose result changed.
func (t *Translator) syncJWKS() {
	if t.nextFetched == nil {
		return
	}
	next := *t.nextFetched
	t.nextFetched = nil
	for s, names := range t.remoteUsers {
		old, had := t.fetched[s]
		res, has := next[s]
		if had == has && old.Same(res) {
			continue
		}
		for name := range names {
			t.idx.MarkListenerStale(name)
		}
	}
	t.fetched = next
}

func (t *Translator) useRemote(listener string, rs []remoteJWKS) {
	for _, r := range rs {
		if t.remoteUsers == nil {
			t.remoteUsers = map[jwks.Source]map[string]remoteJWKS{}
		}
		m := t.remoteUsers[r.Source]
		if m == nil {
			m = map[string]remoteJWKS{}
			t.remoteUsers[r.Source] = m
		}
		m[listener] = r
	}
}

func (t *Translator) unuseRemote(listener string, rs []remoteJWKS) {
	for _, r := range rs {
		if m := t.remoteUsers[r.Source]; m != nil {
			delete(m, listener)
			if len(m) == 0 {
				delete(t.remoteUsers, r.Source)
			}
		}
	}
}

// jwksPlans returns how to fetch each Source a listener names, from the current
// clusters, endpoints, identity and secrets.
func (t *Translator) jwksPlans() []jwks.Plan {
	if len(t.remoteUsers) == 0 {
		return nil
	}
	out := make([]jwks.Plan, 0, len(t.remoteUsers))
	for _, users := range t.remoteUsers {
		var rs []remoteJWKS
		for _, r := range users {
			rs = append(rs, r)
		}
		r := sortRemote(rs)[0]
		out = append(out, t.jwksPlan(r))
	}
	slices.SortFunc(out, func(a, b jwks.Plan) int { return strings.Compare(a.Source.String(), b.Source.String()) })
	return out
}

func (t *Translator) jwksPlan(r remoteJWKS) jwks.Plan {
	p := jwks.Plan{Source: r.Source, Timeout: r.Timeout, CacheDuration: r.Cache}
	cs := t.clusters[r.Cluster]
	if cs == nil {
		p.Why = "cluster " + r.Cluster + " is not in the configuration"
		return p
	}
	u, _ := upstream.BuildUnnamed(t.up, r.Cluster, cs.src.Shape(), cs.cla)
	if u == nil {
		p.Why = "cluster " + r.Cluster + " has no endpoints amesh reaches"
		return p
	}
	var ctx *jwks.TLS
	if cs.tls != nil {
		ctx = t.fetchTLS(cs.tls, r.URI)
	}
	for _, n := range u.Nodes {
		useTLS := u.Scheme == "https"
		if v, ok := n.Metadata[upstream.NodeTLSKey].(bool); ok {
			useTLS = v
		}
		node := jwks.Node{Addr: net.JoinHostPort(n.Host, strconv.Itoa(n.Port)), Priority: n.Priority}
		if useTLS {
			if ctx == nil {
				continue // left out of the upstream too; never reached in plaintext
			}
			node.TLS = ctx
		}
		p.Nodes = append(p.Nodes, node)
	}
	return p
}

// fetchTLS is a cluster's TLS context for a fetch of uri. Envoy's jwt_authn sends the
// fetch through the cluster with its own request, not through the HTTP filters, so the
// cluster's own ALPN holds (Istio's ALPN override is one of those filters); auto SNI
// and auto SAN validation take the URI's host, the request's :authority.
func (t *Translator) fetchTLS(c *upstream.TLSConf, uri string) *jwks.TLS {
	out := &jwks.TLS{ServerName: c.SNI, ALPN: c.ALPN}
	if c.AutoSNI {
		if u, err := url.Parse(uri); err == nil {
			out.ServerName = u.Hostname()
		}
		if c.AutoSAN {
			out.VerifyName = out.ServerName
		}
	}
	if c.Cert != nil {
		switch {
		case c.Cert.CertFile != "":
			out.CertFile, out.KeyFile = c.Cert.CertFile, c.Cert.KeyFile
		case c.Cert.SSLID == t.up.Identity.CertID:
			id := t.identity.Identity
			if id == nil {
				out.Unsupported = "the workload certificate is not available"
				return out
			}
			out.CertPEM, out.Key = id.CertChain, id.Key
		default:
			found := false
			for name, sec := range t.up.Secrets {
				if upstream.SecretSSLID(name) == c.Cert.SSLID {
					out.CertPEM, out.Key, found = sec.CertChain, sec.Key, true
					break
				}
			}
			if !found {
				out.Unsupported = "the client certificate's secret is not available"
				return out
			}
		}
	}
	if c.CA != nil {
		out.RootsFile, out.RootsPEM, out.SystemRoots = c.CA.File, c.CA.PEM, c.CA.System
	}
	for _, m := range c.SANs {
		out.SANs = append(out.SANs, jwks.SANMatcher{Type: m.Type, Match: m.Match, Value: m.Value, IgnoreCase: m.IgnoreCase})
	}
	out.MinVersion, out.MaxVersion = tlsVersion(c.MinVersion), tlsVersion(c.MaxVersion)
	if c.CRLFile != "" {
		out.Unsupported = "amesh does not check certificate revocation lists on JWKS fetches"
	}
	return out
}

// tlsVersion is crypto/tls's number of an amesh-upstream-tls version name; 0 for
// none.
func tlsVersion(v string) uint16 {
	switch v {
	case "TLSv1_0":
		return tls.VersionTLS10
	case "TLSv1_1":
		return tls.VersionTLS11
	case "TLSv1_2":
		return tls.VersionTLS12
	case "TLSv1_3":
		return tls.VersionTLS13
	}
	return 0
}

package translate

// SDS secrets served over ADS (a DestinationRule's credentialName): the client keeps
// those the clusters name in the snapshot. A certificate secret becomes an APISIX ssl
// object (type "client", id upstream.SecretSSLID) that the clusters' amesh-upstream-tls
// configurations refer to; a validation context secret becomes part of those
// configurations (upstream.TLSCA.PEM). So a secret's change rewrites its ssl object and
// re-syncs the clusters that name it: their TLS digest (clusterInfo.tls) changes when
// what routes carry does (the secret arrived or left, the CA changed), and then the
// routes to them are rewritten as for any other cluster change.

import (
	"slices"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/translate/upstream"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// secretIndex is what the translator keeps about secrets between calls.
type secretIndex struct {
	// users are the clusters that name each secret.
	users map[string]map[string]struct{}
	// used are the snapshot's secrets each cluster that names one was translated with
	// (nil for an absent one), in the order of its Cluster.Secrets.
	used map[string][]*resource.Secret
	// ssls are the secrets an ssl object was written for.
	ssls map[string]struct{}
}

// secretsOf returns the snapshot's secrets that src names (nil when it names none).
func (t *Translator) secretsOf(src *resource.Cluster) []*resource.Secret {
	names := src.Secrets()
	if len(names) == 0 {
		return nil
	}
	out := make([]*resource.Secret, len(names))
	for i, n := range names {
		out[i] = t.call.snap.Secrets[n]
	}
	return out
}

// setClusterSecrets records that cluster name, which named the secrets of old (nil:
// none), now names those of src (nil: it is gone), found as secs.
func (t *Translator) setClusterSecrets(name string, old, src *resource.Cluster, secs []*resource.Secret) {
	x := &t.secrets
	if old != nil {
		for _, n := range old.Secrets() {
			if u := x.users[n]; u != nil {
				delete(u, name)
				if len(u) == 0 {
					delete(x.users, n)
				}
			}
		}
	}
	if src != nil {
		for _, n := range src.Secrets() {
			if x.users == nil {
				x.users = map[string]map[string]struct{}{}
			}
			if x.users[n] == nil {
				x.users[n] = map[string]struct{}{}
			}
			x.users[n][name] = struct{}{}
		}
	}
	if len(secs) == 0 {
		delete(x.used, name)
		return
	}
	if x.used == nil {
		x.used = map[string][]*resource.Secret{}
	}
	x.used[name] = secs
}

// sameSecrets reports whether cluster name was translated with secs.
func (t *Translator) sameSecrets(name string, secs []*resource.Secret) bool {
	return slices.Equal(t.secrets.used[name], secs)
}

// syncSecrets writes the ssl objects of the certificate secrets that changed (all of
// them when full) and deletes those of the secrets gone, and adds the clusters that
// name a changed secret to names.
func (t *Translator) syncSecrets(full bool, ch *resource.Changes, names map[string]bool) {
	snap := t.call.snap
	var changed []string
	if full {
		for n := range snap.Secrets {
			changed = append(changed, n)
		}
		for n := range t.secrets.ssls {
			if snap.Secrets[n] == nil {
				changed = append(changed, n)
			}
		}
	} else {
		for n := range ch.Secrets {
			changed = append(changed, n)
		}
	}
	for _, n := range changed {
		key := apisix.Key(apisix.KindSSLs, upstream.SecretSSLID(n))
		if s := snap.Secrets[n]; s != nil && upstream.SSLFits(s) {
			t.out.Set(&t.sc.enc, key, &apisix.SSL{ID: upstream.SecretSSLID(n), Type: "client", Cert: s.CertChain, Key: s.Key.Reveal()})
			if t.secrets.ssls == nil {
				t.secrets.ssls = map[string]struct{}{}
			}
			t.secrets.ssls[n] = struct{}{}
		} else if _, ok := t.secrets.ssls[n]; ok {
			t.out.Delete(key)
			delete(t.secrets.ssls, n)
		}
		if names != nil {
			for c := range t.secrets.users[n] {
				names[c] = true
			}
		}
	}
}

package translate

// The workload identity: the third input of translation, beside the xDS state and the
// controller's plugins. The certificate istio-agent writes for the pod becomes two
// APISIX ssl objects with fixed ids, so that what refers to them keeps doing so across
// rotations, which change nothing else:
//
//   - ClientSSLID, type "client": the certificate APISIX presents when it originates
//     Istio mTLS to an upstream (the upstream's tls.client_cert_id).
//   - ServerSSLID, type "server": the certificate APISIX presents when it terminates
//     Istio mTLS, requiring a client certificate that chains to the mesh roots. Its SNI
//     is "*", which APISIX matches against any name: mesh peers send
//     outbound_.PORT_._.HOST for whichever of the services that select this pod they
//     called, names amesh cannot list (a ServiceEntry may select the pod under any
//     host), and Envoy's inbound chains present the workload certificate whatever the
//     SNI. A specific "*.domain" would not do: APISIX's wildcard covers one label.

import (
	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/identity"
	"github.com/amesh-dev/amesh/internal/report"
)

// The ids of the workload identity's ssl objects.
const (
	ClientSSLID = "istio-mtls-client"
	ServerSSLID = "istio-mtls-server"
)

// maxPEM is the longest cert, key or CA APISIX's ssl schema accepts.
const maxPEM = 65536

// verifyDepth bounds the CA certificates above a peer's leaf: Envoy sets no
// max_verify_depth in Istio's inbound chains, so BoringSSL's default of 100 applies.
const verifyDepth = 100

// SetIdentity makes st the workload identity that Translate turns into ssl objects,
// from its next call on.
func (t *Translator) SetIdentity(st identity.State) { t.nextIdentity = &st }

// syncIdentity writes the ssl objects of the identity SetIdentity handed over, or
// deletes them when there is none.
func (t *Translator) syncIdentity() {
	if t.nextIdentity == nil {
		return
	}
	next := *t.nextIdentity
	t.nextIdentity = nil
	if next.Problem != t.identity.Problem || next.Dir != t.identity.Dir {
		t.findings.dirty = true
	}
	same := next.Identity == t.identity.Identity
	t.identity = next
	if same {
		return
	}
	t.findings.dirty = true
	ssls, es := buildSSLs(next.Identity, next.Dir)
	t.identityReport = es
	for _, id := range []string{ClientSSLID, ServerSSLID} {
		key := apisix.Key(apisix.KindSSLs, id)
		if s, ok := ssls[id]; ok {
			t.out.Set(&t.sc.enc, key, s)
		} else {
			t.out.Delete(key)
		}
	}
}

// buildSSLs returns the ssl objects of id by their ids (none for nil), and what could
// not be built.
func buildSSLs(id *identity.Identity, dir string) (map[string]*apisix.SSL, []report.Entry) {
	if id == nil {
		return nil, nil
	}
	key := id.Key.Reveal()
	for _, f := range []struct{ name, pem string }{
		{identity.ChainFile, id.CertChain}, {identity.KeyFile, key}, {identity.RootFile, id.Roots},
	} {
		if len(f.pem) > maxPEM {
			return nil, []report.Entry{{Kind: "workload_certificate", Resource: dir, Field: f.name, Severity: report.Unsupported,
				Message: "longer than the 65536 characters APISIX's ssl schema allows: APISIX gets no workload identity"}}
		}
	}
	return map[string]*apisix.SSL{
		ClientSSLID: {ID: ClientSSLID, Type: "client", Cert: id.CertChain, Key: key},
		ServerSSLID: {ID: ServerSSLID, Type: "server", SNI: "*", Cert: id.CertChain, Key: key,
			Client: &apisix.SSLClient{CA: id.Roots, Depth: verifyDepth}},
	}, nil
}

// identityFindings returns the findings about the workload identity: what could not be
// built, and why the files' content is not in force.
func (t *Translator) identityFindings() []report.Entry {
	es := t.identityReport
	if p := t.identity.Problem; p != "" {
		msg := "not in force: " + p + "; APISIX has no workload identity"
		if id := t.identity.Identity; id != nil {
			msg = "not in force: " + p + "; APISIX keeps " + id.URI + " (serial " + id.Serial + ")"
		}
		es = append(es[:len(es):len(es)], report.Entry{Kind: "workload_certificate", Resource: t.identity.Dir,
			Severity: report.Invalid, Message: msg})
	}
	return es
}

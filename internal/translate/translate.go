// Package translate turns a consistent xDS state (resource.State) into APISIX objects.
// It is pure: no I/O, no clock, no randomness; the same input gives byte-identical
// output.
//
// A Translator keeps what its output was built from and redoes only what the
// state's Changes (or pointer identity) require. One call syncs clusters,
// listeners, route configurations and upstreams in that order (update_*.go): each
// sync runs the builders, which are pure (buildListener, vhostBuilder, package
// upstream and package plugins), over what changed or what package index says went
// stale, and writes what they build to package store. Listeners are cheap and redone
// when any changes; route configurations are translated per virtual host, and a
// virtual host whose wire form is unchanged keeps its routes; clusters and endpoints
// rebuild only the upstreams that name them. The plugin configs of amesh-controller
// are a second input (SetPlugins, update_plugins.go), merged into each route before it
// is encoded; a new set rebuilds the virtual hosts whose routes it may change. The
// workload identity is a third (SetIdentity, update_identity.go): the certificate the
// watcher read becomes ssl objects, and nothing else. The
// store keeps a digest per object (apisix.Hash) and hands back the objects that
// changed: the complete JSON lives in the sink (nginx's shared memory or the file),
// not here.
//
// Known approximations, reported per resource where they apply: nginx's $uri is the
// decoded, normalised path while Envoy matches the (normalised) :path (amesh-rbac
// reads the raw request target instead, see rbacrules.go); $http_<name>
// joins repeated headers with "," like Envoy; a route timeout becomes nginx's
// per-operation connect/send/read timeouts; $host has no port, so domains are matched
// without port as with ignore_port_in_host_matching (istiod's default).
package translate

import (
	"maps"
	"slices"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/identity"
	"github.com/amesh-dev/amesh/internal/jwks"
	"github.com/amesh-dev/amesh/internal/overlay"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/translate/index"
	"github.com/amesh-dev/amesh/internal/translate/store"
	"github.com/amesh-dev/amesh/internal/translate/upstream"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// Options configure the translation.
type Options struct {
	// OriginalDstVar is the nginx variable holding the original destination port of a
	// connection redirected by iptables; routes of an outbound listener on port P carry
	// the condition [OriginalDstVar, "==", P]. Default "connection_original_dst";
	// "server_port" fits APISIX listening on each port directly.
	OriginalDstVar string
	// ParallelMin is the number of pieces (clusters, virtual hosts) of one call from
	// which their builds are spread over every core. Zero takes a default; the output
	// does not depend on it.
	ParallelMin int
	// WorkloadCertID is the APISIX /ssls object (type "client") with the workload's
	// certificate and key, which upstreams reached with Istio mTLS are shown (Envoy's
	// SDS secret "default"). MeshRootFile is the PEM file with the mesh's roots their
	// certificates must chain to (the SDS secret "ROOTCA"; pilot-agent writes it to
	// OUTPUT_CERTS as root-cert.pem). Without either, the endpoints Envoy reaches with
	// Istio mTLS are left out of their upstreams and reported: never reached in
	// plaintext.
	WorkloadCertID string
	MeshRootFile   string
}

// Result is the outcome of one Translate call.
type Result struct {
	// Changes turns the previous output into the new one.
	Changes apisix.ChangeSet
	// Report is the complete, sorted list of findings for the current output.
	Report []report.Entry
	// Prior holds, for each key of Changes that the previous output had, the digest
	// (apisix.Hash) of its previous value; a key of Changes without an entry is new.
	// The pipeline uses it to drop a change undone by a later one before it is written
	// without keeping a digest of its own for every object. Nil when nothing of
	// Changes existed before (a first translation).
	Prior map[string]uint64
	// JWKS are the remote JWKS the output's jwt_authn providers name, with how to
	// fetch each; the pipeline hands the results back with SetJWKS.
	JWKS []jwks.Plan
}

// Translator keeps what its output was built from, so that each call only redoes the
// work the state's Changes (and a new set of controller plugins, SetPlugins)
// require. It is not safe for concurrent use.
type Translator struct {
	opts Options
	up   upstream.Options          // what upstreams build with (opts' identity)
	out  *store.Store              // the output: a digest per object
	idx  *index.Index[*vhostState] // what each piece read

	// The translated pieces, kept from one call to the next.
	started   bool
	seq       uint64 // of the state translated last
	listeners map[string]*listenerState
	ctxs      map[string]*rcState     // by httpCtx.key
	streams   map[string]*streamState // by object key
	// streamReport are the findings of the stream routes' clusters (syncStreams).
	streamReport []report.Entry
	clusters     clusters
	refs         upRefs
	findings     findings

	// Controller plugins (update_plugins.go): the rules merged into routes, the set
	// SetPlugins handed over for the next call, and the routes whose translated
	// plugins shadow a config's, by virtual host.
	plugins     *overlay.Rules
	nextPlugins *overlay.Set
	shadows     map[*vhostState][]routeShadow

	// Workload identity (update_identity.go): the state in force, the one SetIdentity
	// handed over for the next call, and what its ssl objects could not be built for.
	identity       identity.State
	nextIdentity   *identity.State
	identityReport []report.Entry

	// SDS secrets over ADS (update_secrets.go).
	secrets secretIndex

	// Remote JWKS (update_jwks.go): the results in force, those SetJWKS handed over
	// for the next call, and the listeners that name each Source.
	fetched     jwks.Set
	nextFetched *jwks.Set
	remoteUsers map[jwks.Source]map[string]remoteJWKS

	call call    // the call in progress; zero between calls
	sc   scratch // buffers of this goroutine (see parallel)
}

// call is what one Translate call works on.
type call struct {
	snap     *resource.State
	full     bool            // translate all of snap, not only its Changes
	dirtyUp  map[string]bool // upstream ids referenced or released
	rebuilds map[string]bool // clusters whose upstreams must be rebuilt
	// first: the output was empty. syncRC then queues new virtual hosts in vhostJobs
	// instead of building them one by one (see buildVhosts).
	first     bool
	vhostJobs []vhostJob
	// allClustersNew: a full translation by a translator that had no clusters, so
	// every cluster is synced and rebuilt in this call.
	allClustersNew bool
}

// New returns a Translator.
func New(opts Options) *Translator {
	if opts.OriginalDstVar == "" {
		opts.OriginalDstVar = "connection_original_dst"
	}
	if opts.ParallelMin <= 0 {
		opts.ParallelMin = defaultParallelMin
	}
	return &Translator{
		opts:      opts,
		up:        upstream.Options{Identity: upstream.Identity{CertID: opts.WorkloadCertID, RootFile: opts.MeshRootFile}},
		out:       store.New(),
		listeners: map[string]*listenerState{},
		ctxs:      map[string]*rcState{},
		streams:   map[string]*streamState{},
		clusters:  clusters{},
		idx:       index.New[*vhostState](),
		refs:      upRefs{byID: map[string]*upRef{}, splits: map[string]*upRef{}},
	}
}

// Len returns the number of objects in the current output.
func (t *Translator) Len() int { return t.out.Len() }

// Translate brings the output up to date with snap and returns what changed: the
// Changes of successive calls, applied in order to an empty map, give the complete
// output (a fresh Translator's first Changes.Put is the complete output of its state).
//
// A Translate that panicked leaves the Translator unusable: its state may be
// half-updated. The caller drops it and starts over with a new one.
func (t *Translator) Translate(snap *resource.State) Result {
	ch := &snap.Changes
	full := !t.started || ch.Full || ch.Since != t.seq
	t.begin(snap, full)
	defer t.end()
	t.syncPlugins()
	t.syncIdentity()
	t.syncJWKS()

	// 1. Clusters first: routes need their kind and existence.
	t.syncClusters(full, ch)
	// 2. Listeners decide the set of route-config contexts.
	dirtyCtx := t.syncListeners(full || len(ch.Listeners) > 0 || t.idx.AnyListenerStale())
	// 3. Route configurations whose resource changed.
	if full {
		for name := range t.idx.RouteConfigs() {
			t.idx.CollectContexts(name, dirtyCtx)
		}
	} else {
		for name := range ch.RouteConfigs {
			t.idx.CollectContexts(name, dirtyCtx)
		}
	}
	if len(dirtyCtx) > 0 {
		for _, key := range slices.Sorted(maps.Keys(dirtyCtx)) {
			if st := t.ctxs[key]; st != nil {
				t.syncRC(st)
			}
		}
		t.buildVhosts()
	}
	// 4. Virtual hosts affected by cluster changes or by changed controller plugins.
	for vhs := t.idx.TakeStale(); len(vhs) > 0; vhs = t.idx.TakeStale() {
		t.rebuildStale(vhs)
	}
	// 5. Upstreams: rebuild what changed, add what is newly referenced, drop the rest.
	t.syncUpstreams()

	t.started, t.seq = true, snap.Seq
	cs, prior := t.out.Changes()
	return Result{Changes: cs, Prior: prior, Report: t.fullReport(), JWKS: t.jwksPlans()}
}

// begin starts a call. A first translation sizes the maps that will hold one entry
// per cluster or per object up front: growing maps of tens of thousands of entries
// shows in its time.
func (t *Translator) begin(snap *resource.State, full bool) {
	t.call = call{snap: snap, full: full, dirtyUp: map[string]bool{}, first: t.out.Len() == 0}
	t.up.Secrets = snap.Secrets
	hintClusters, hint := 0, 0
	if len(t.clusters) == 0 {
		hintClusters = len(snap.Clusters)
		t.clusters = make(clusters, hintClusters)
	}
	if t.call.first {
		hint = sizeHint(snap)
	}
	t.call.rebuilds = make(map[string]bool, hintClusters)
	t.call.allClustersNew = full && hintClusters > 0
	t.out.Begin(hint)
	t.idx.Begin()
}

// end ends a call, also one that panicked.
func (t *Translator) end() {
	t.idx.End()
	t.call = call{}
}

// sizeHint estimates the number of objects snap translates into: about one upstream
// per cluster and one route per xDS route.
func sizeHint(snap *resource.State) int {
	n := len(snap.Clusters)
	for _, rc := range snap.RouteConfigs {
		n += rc.Routes
	}
	return n
}

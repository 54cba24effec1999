// Package agent is the pipeline shared by libxds.so and the amesh command: it takes
// consistent updates from the xDS client, translates them, coalesces the changes of a
// short window into one batch, and hands each batch to a sink that writes it and then
// makes it visible (one version bump per batch). The plugin configs of amesh-controller,
// the workload identity and the remote JWKS fetched, when configured, are further
// inputs: a new value of any is translated like a new update.
package agent

import (
	"context"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/identity"
	"github.com/amesh-dev/amesh/internal/jwks"
	"github.com/amesh-dev/amesh/internal/overlay"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// Source yields updates (client.Client is one). Next blocks until there is
// something newer than what it returned last, and returns one Update covering
// everything since; the first one replaces every kind. The caller owns it.
type Source interface {
	Next(ctx context.Context) (*resource.Update, error)
}

// Translator is what the pipeline needs of translate.Translator. Its change sets,
// applied in order, give its complete output, the first one all of it. Its
// Result.Prior must be exact (translate.Result.CheckPrior): the pipeline skips a
// batched change whose value equals the prior one. A Translator whose Translate or
// SetPlugins panicked is not called again: the pipeline builds a new one, and hands
// it the current plugin set and identity before its first Translate.
type Translator interface {
	Translate(*resource.State) translate.Result
	// SetPlugins makes set the plugin configs that the following Translate calls
	// merge into routes.
	SetPlugins(set overlay.Set)
	// SetIdentity makes st the workload identity that the following Translate calls
	// write as ssl objects.
	SetIdentity(st identity.State)
	// SetJWKS makes set the fetched remote JWKS that the following Translate calls
	// inline (translate.Result.JWKS says what to fetch).
	SetJWKS(set jwks.Set)
}

// Plugins is the pipeline's second input, the plugin configs of amesh-controller
// (pluginsync.Client is one): Current returns the set in force and a channel closed
// once a newer one is available.
type Plugins = overlay.Feed

// Identity is the pipeline's third input, the workload identity (certwatch.Watcher is
// one): Current returns the state in force and a channel closed once it changes.
type Identity = identity.Feed

// JWKS is the pipeline's fourth input and its only output besides the sink: the
// remote JWKS that translation asks for (Want, from each translate.Result) and the
// results fetched (Current; jwks.Fetcher is one).
type JWKS interface {
	Want(plans []jwks.Plan)
	Current() (jwks.Set, <-chan struct{})
}

// Sink writes APISIX objects somewhere APISIX reads them.
type Sink interface {
	// Apply writes cs (in cs.Ordered() order) and then makes the new state visible
	// (for the shared dict: one version bump after all keys are written). The first
	// call holds the complete state; sinks that rewrite everything (a file) keep
	// what they need of it. An error means the batch is not (completely) written; the
	// pipeline retries it, merged with any later changes, until Apply succeeds, so a
	// sink must not let a failed Apply change what later ones produce.
	Apply(ctx context.Context, cs apisix.ChangeSet) error
}

// Reader is implemented by sinks that can return what they hold (Agent.Objects, the
// /debug/apisix view): the pipeline itself keeps no copy of the objects (for other
// sinks, only their keys).
type Reader interface {
	// Objects returns the objects written by the last successful Apply, keyed
	// "/<kind>/<id>". The values must not be modified.
	Objects() map[string][]byte
}

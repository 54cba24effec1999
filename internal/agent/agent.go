// Package agent is the pipeline shared by libxds.so and the amesh command: it takes
// consistent snapshots from the xDS client, translates them, coalesces the changes of a
// short window into one batch, and hands each batch to a sink that writes it and then
// makes it visible (one version bump per batch).
package agent

import (
	"context"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// Source yields snapshots. Next blocks until a snapshot newer than the last one it
// returned exists, and returns the newest, with Changes merged over any it skipped.
type Source interface {
	Next(ctx context.Context) (*resource.Snapshot, error)
}

// Translator is what the pipeline needs of translate.Translator.
type Translator interface {
	Translate(*resource.Snapshot) translate.Result
	Objects() map[string][]byte
}

// Sink writes APISIX objects somewhere APISIX reads them.
type Sink interface {
	// Apply writes cs (in cs.Ordered() order) and then makes the new state visible
	// (for the shared dict: one version bump after all keys are written). objects is the
	// complete state after the change, for sinks that rewrite everything (a file). An
	// error means the batch is not (completely) written; the pipeline retries it, merged
	// with any later changes, until Apply succeeds.
	Apply(ctx context.Context, cs apisix.ChangeSet, objects map[string][]byte) error
}

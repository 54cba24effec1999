// Package translate turns a consistent xDS snapshot into APISIX objects. It is pure:
// no I/O, no clock, no randomness; the same input gives byte-identical output.
package translate

import (
	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// Options configure the translation.
type Options struct {
	// OriginalDstVar is the nginx variable holding the original destination port of a
	// connection redirected by iptables; routes of an outbound listener on port P carry
	// the condition [OriginalDstVar, "==", P]. Default "connection_original_dst";
	// "server_port" fits APISIX listening on each port directly.
	OriginalDstVar string
}

// Result is the outcome of one Translate call.
type Result struct {
	// Changes turns the previous output into the new one.
	Changes apisix.ChangeSet
	// Report is the complete, sorted list of findings for the current output.
	Report []report.Entry
}

// Translator keeps the previous output so that each call only redoes the work the
// snapshot's Changes require. It is not safe for concurrent use.
type Translator struct {
	opts    Options
	objects map[string][]byte
}

// New returns a Translator.
func New(opts Options) *Translator {
	if opts.OriginalDstVar == "" {
		opts.OriginalDstVar = "connection_original_dst"
	}
	return &Translator{opts: opts, objects: map[string][]byte{}}
}

// Translate brings the output up to date with snap and returns what changed.
func (t *Translator) Translate(snap *resource.Snapshot) Result {
	panic("not implemented yet")
}

// Objects returns the current output, keyed by shared-dict key ("/routes/<id>"). The
// map and its values must not be modified.
func (t *Translator) Objects() map[string][]byte { return t.objects }

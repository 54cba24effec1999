// Package certwatch follows the workload certificate files that istio-agent writes
// into OUTPUT_CERTS (identity.KeyFile, ChainFile, RootFile) and publishes every
// consistent set as the pipeline's identity input (identity.Feed). It owns its state:
// the files' last stat, the set in force, the problem seen; the agent only receives
// identity.State values.
//
// istio-agent replaces the three files one after the other (each by a rename), so a
// rotation read half-way holds a new key and the old chain. Nothing is published
// unless the three files form one identity (identity.Parse) and did not change while
// they were read; otherwise the set in force stays. A problem is reported (State's
// Problem, a warning in the log) only when the files stay the same and still
// inconsistent at the next poll: a rotation caught between two writes has moved on by
// then.
//
// Polling rather than inotify: a poll is three stat calls, once a second, and reads
// the files only when one of them changed; a certificate lives for hours (istio-agent
// asks for 24 and rotates at half-life), so a second's delay costs nothing. inotify
// would need watches re-armed when the directory is removed or replaced (a volume
// remounted, the directory made after amesh started), platform-specific code, and a
// poll anyway for a certificate that becomes valid or expires without any write.
package certwatch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/amesh-dev/amesh/internal/feed"
	"github.com/amesh-dev/amesh/internal/identity"
)

// DefaultInterval is how often the files are checked.
const DefaultInterval = time.Second

// Options configure a Watcher.
type Options struct {
	// Dir holds the files (istio-agent's OUTPUT_CERTS).
	Dir string
	// Interval between polls; default DefaultInterval.
	Interval time.Duration
	// Now is the clock certificates are verified against; default time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Watcher polls Dir and publishes the identity it holds. Current and Status may be
// called from any goroutine.
type Watcher struct {
	opts Options // read-only after New
	out  feed.Latest[identity.State]

	// Used only by Run's goroutine (poll). seen is the files' stat when they were
	// last read to the end of an evaluation; settled: that evaluation is final until
	// they change (they were absent or consistent). pending is a problem seen once
	// with the files as seen, reported if the next poll finds it again. absentSaid:
	// the absence of the files has been logged.
	seen       stamp
	settled    bool
	pending    string
	absentSaid bool

	mu     sync.Mutex // guards status
	status Status
}

var _ identity.Feed = (*Watcher)(nil)

// Status is the watcher's view for the status server.
type Status struct {
	Dir string
	// Files is "absent" (none of the three), "consistent" (they form the identity in
	// force) or "inconsistent" (Problem says why).
	Files string
	// Published counts the identities published.
	Published uint64
	// LastPublished is when the identity in force was published.
	LastPublished time.Time
}

// New returns a Watcher of opts.Dir; Run polls it.
func New(opts Options) *Watcher {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	w := &Watcher{opts: opts, status: Status{Dir: opts.Dir, Files: "absent"}}
	w.out.Publish(identity.State{Dir: opts.Dir})
	return w
}

// Current returns the identity state in force and a channel closed when it changes.
func (w *Watcher) Current() (identity.State, <-chan struct{}) { return w.out.Current() }

// Status returns the watcher's counters.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}

// Run polls at once and then every Interval until ctx is done; it returns nil then.
func (w *Watcher) Run(ctx context.Context) error {
	t := time.NewTicker(w.opts.Interval)
	defer t.Stop()
	for {
		w.poll()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// poll checks the files once and publishes what changed.
func (w *Watcher) poll() {
	cur, _ := w.out.Current()
	before := stat(w.opts.Dir)
	if w.settled && before.equal(w.seen) {
		w.checkExpiry(cur)
		return
	}
	key, chain, root, err := read(w.opts.Dir)
	if after := stat(w.opts.Dir); !after.equal(before) {
		// Written while read: evaluate once the writer is done.
		w.settled = false
		return
	}
	recheck := before.equal(w.seen) // the files were evaluated before, unchanged since
	w.seen = before
	if errors.Is(err, errAbsent) {
		w.absent(cur)
		return
	}
	w.absentSaid = false
	var id *identity.Identity
	if err == nil {
		id, err = identity.Parse(key, chain, root, w.opts.Now())
	}
	if err != nil {
		w.inconsistent(cur, err.Error(), recheck)
		return
	}
	w.settled, w.pending = true, ""
	w.setFiles("consistent")
	if id.Same(cur.Identity) {
		if cur.Problem != "" {
			w.publish(identity.State{Identity: cur.Identity, Dir: w.opts.Dir})
			w.opts.Logger.Info("workload certificate files consistent again", "dir", w.opts.Dir)
		}
		return
	}
	w.publish(identity.State{Identity: id, Dir: w.opts.Dir})
	w.opts.Logger.Info("workload identity published", "dir", w.opts.Dir, "spiffe", id.URI, "serial", id.Serial,
		"not_before", id.NotBefore, "not_after", id.NotAfter)
}

// absent handles files that are not there: before any identity, that means none (said
// once); after one, it stays in force, as a proxy keeps its certificate when its
// source goes away.
func (w *Watcher) absent(cur identity.State) {
	w.settled, w.pending = true, ""
	w.setFiles("absent")
	if !w.absentSaid {
		w.absentSaid = true
		if cur.Identity == nil {
			w.opts.Logger.Info("no workload certificate: APISIX gets no identity until istio-agent writes one", "dir", w.opts.Dir,
				"files", []string{identity.KeyFile, identity.ChainFile, identity.RootFile})
		} else {
			w.opts.Logger.Warn("workload certificate files gone; keeping the identity in force", "dir", w.opts.Dir,
				"spiffe", cur.Identity.URI, "serial", cur.Identity.Serial, "not_after", cur.Identity.NotAfter)
		}
	}
	if cur.Problem != "" {
		w.publish(identity.State{Identity: cur.Identity, Dir: w.opts.Dir})
	}
}

// inconsistent handles files that do not form an identity. The files are read again
// at every poll (a certificate may become valid without a write); the problem is
// reported once the same files give it twice in a row.
func (w *Watcher) inconsistent(cur identity.State, problem string, recheck bool) {
	w.settled = false
	if !recheck || problem != w.pending {
		w.pending = problem
		w.opts.Logger.Debug("workload certificate files inconsistent; checking again", "dir", w.opts.Dir, "problem", problem)
		return
	}
	w.setFiles("inconsistent")
	if problem == cur.Problem {
		return
	}
	kept := "none"
	if cur.Identity != nil {
		kept = fmt.Sprintf("%s (serial %s, valid until %s)", cur.Identity.URI, cur.Identity.Serial, cur.Identity.NotAfter.UTC().Format(time.RFC3339))
	}
	w.opts.Logger.Warn("workload certificate files inconsistent; keeping the identity in force", "dir", w.opts.Dir,
		"problem", problem, "in_force", kept)
	w.publish(identity.State{Identity: cur.Identity, Dir: w.opts.Dir, Problem: problem})
}

// checkExpiry reports the identity in force once it has expired with no newer one in
// the files.
func (w *Watcher) checkExpiry(cur identity.State) {
	if cur.Identity == nil || cur.Problem != "" || !w.opts.Now().After(cur.Identity.NotAfter) {
		return
	}
	problem := fmt.Sprintf("the certificate in force (serial %s) expired at %s and %s holds no newer one",
		cur.Identity.Serial, cur.Identity.NotAfter.UTC().Format(time.RFC3339), identity.ChainFile)
	w.opts.Logger.Warn("workload certificate expired", "dir", w.opts.Dir, "spiffe", cur.Identity.URI, "problem", problem)
	w.publish(identity.State{Identity: cur.Identity, Dir: w.opts.Dir, Problem: problem})
}

func (w *Watcher) publish(st identity.State) {
	prev, _ := w.out.Current()
	w.out.Publish(st)
	if st.Identity != prev.Identity {
		w.mu.Lock()
		w.status.Published++
		w.status.LastPublished = w.opts.Now()
		w.mu.Unlock()
	}
}

func (w *Watcher) setFiles(s string) {
	w.mu.Lock()
	w.status.Files = s
	w.mu.Unlock()
}

// errAbsent: none of the three files exists (nor, perhaps, the directory).
var errAbsent = errors.New("no workload certificate files")

// read returns the three files' contents; errAbsent when none exists, an error naming
// the file when some are missing or unreadable.
func read(dir string) (key, chain, root []byte, err error) {
	var missing []string
	out := make([][]byte, 3)
	for i, name := range []string{identity.KeyFile, identity.ChainFile, identity.RootFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, name)
		case err != nil:
			// os errors name the path and the cause, never the content.
			return nil, nil, nil, err
		}
		out[i] = b
	}
	switch len(missing) {
	case 0:
		return out[0], out[1], out[2], nil
	case 3:
		return nil, nil, nil, errAbsent
	}
	return nil, nil, nil, fmt.Errorf("%v missing from %s", missing, dir)
}

// stamp is what stat says of the three files: enough to tell that one was replaced
// (a new inode), written (size, modification time) or removed.
type stamp [3]fileStamp

type fileStamp struct {
	info os.FileInfo // nil: absent or unreadable
}

func stat(dir string) stamp {
	var s stamp
	for i, name := range []string{identity.KeyFile, identity.ChainFile, identity.RootFile} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err == nil {
			s[i].info = fi
		}
	}
	return s
}

func (s stamp) equal(o stamp) bool {
	for i := range s {
		a, b := s[i].info, o[i].info
		if a == nil || b == nil {
			if a != b {
				return false
			}
			continue
		}
		if !os.SameFile(a, b) || a.Size() != b.Size() || !a.ModTime().Equal(b.ModTime()) {
			return false
		}
	}
	return true
}

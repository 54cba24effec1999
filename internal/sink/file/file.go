// Package file is the sink that writes APISIX's standalone configuration file
// (conf/apisix.yaml or conf/apisix.json), which APISIX re-reads when it changes. Every
// write replaces the whole file atomically: the content goes to a temporary file in the
// same directory, is fsynced and then renamed over the target, so APISIX (or any reader)
// sees either the old or the new file, never a partial one. Nothing is written when the
// content would not change.
package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/amesh-dev/amesh/internal/apisix"
)

// Options configure a Sink.
type Options struct {
	// Path of the file, e.g. /usr/local/apisix/conf/apisix.yaml. Its directory must exist.
	Path string
	// Format defaults to YAML.
	Format Format
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Sink writes the standalone file; it implements agent.Sink (the amesh command asserts
// that where it wires them, so this package stays free of the pipeline's imports).
// Safe for concurrent use.
type Sink struct {
	path   string
	format Format
	log    *slog.Logger

	mu sync.Mutex
	// render keeps the rendered form of every object between Applies.
	render renderer
	// last is the content the file is known to hold (read at New, then what was written).
	last []byte
	// version counts writes of new content; it is what a user sees as the config version.
	version uint64
	writes  uint64
	errors  uint64
	lastErr error
}

// New returns a Sink for opts.Path. An existing file is read so that a restart that
// produces the same configuration does not rewrite it.
func New(opts Options) (*Sink, error) {
	if opts.Path == "" {
		return nil, errors.New("file sink: no path")
	}
	if opts.Format == "" {
		opts.Format = YAML
	}
	if _, err := ParseFormat(string(opts.Format)); err != nil {
		return nil, fmt.Errorf("file sink: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	dir := filepath.Dir(opts.Path)
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("file sink: output directory: %w", err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("file sink: %s is not a directory", dir)
	}
	removeStaleTemps(opts.Path, opts.Logger)
	s := &Sink{path: opts.Path, format: opts.Format, log: opts.Logger,
		render: renderer{format: opts.Format, frags: map[string]fragment{}}}
	old, err := os.ReadFile(opts.Path)
	switch {
	case err == nil:
		s.last = old
	case errors.Is(err, fs.ErrNotExist):
	default:
		return nil, fmt.Errorf("file sink: %w", err)
	}
	return s, nil
}

// Path returns the file the sink writes.
func (s *Sink) Path() string { return s.path }

// Apply renders the state cs makes of the last one applied (the first Apply holds the
// complete state) and replaces the file if its content changes. A failed Apply
// changes nothing: the pipeline retries the batch, merged with later changes.
func (s *Sink) Apply(ctx context.Context, cs apisix.ChangeSet) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	content, commit, err := s.render.stage(cs)
	if err != nil {
		s.errors++
		s.lastErr = fmt.Errorf("render %s: %w", s.path, err)
		return s.lastErr
	}
	if bytes.Equal(content, s.last) {
		commit()
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := WriteAtomic(s.path, content); err != nil {
		s.errors++
		s.lastErr = err
		return err
	}
	commit()
	s.last = content
	s.version++
	s.writes++
	s.lastErr = nil
	s.log.Info("wrote APISIX standalone config", "path", s.path, "version", s.version,
		"objects", len(s.render.frags), "put", len(cs.Put), "deleted", len(cs.Delete), "bytes", len(content))
	return nil
}

// Objects returns the objects of the last successful Apply (agent.Reader). The values
// must not be modified.
func (s *Sink) Objects() map[string][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.render.objects()
}

// Version returns the number of times new content was written (agent.Versioned).
func (s *Sink) Version() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// Stats are the sink's counters.
type Stats struct {
	// Version is the number of times new content was written by this Sink.
	Version uint64
	// Writes equals Version; Errors counts failed Apply calls.
	Writes, Errors uint64
	LastError      string
	Bytes          int
}

// Stats returns the sink's counters.
func (s *Sink) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Version: s.version, Writes: s.writes, Errors: s.errors, Bytes: len(s.last)}
	if s.lastErr != nil {
		st.LastError = s.lastErr.Error()
	}
	return st
}

// tempPrefix is how WriteAtomic names its temporary files for path: os.CreateTemp
// replaces the "*" of tempPrefix(path)+"*" by decimal digits.
func tempPrefix(path string) string { return "." + filepath.Base(path) + ".tmp-" }

// removeStaleTemps deletes the temporary files a previous writer of path left behind
// when it was killed between creating one and renaming it (each as large as the whole
// configuration). Only regular files named exactly as WriteAtomic names them for this
// path are removed; anything else in the directory is not ours. One sink writes a
// given file: a second writer of the same path could lose a file it is writing.
func removeStaleTemps(path string, log *slog.Logger) {
	dir, prefix := filepath.Dir(path), tempPrefix(path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		digits, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || digits == "" || strings.Trim(digits, "0123456789") != "" || !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.Remove(p); err != nil {
			log.Warn("cannot remove a stale temporary file", "path", p, "err", err)
			continue
		}
		log.Info("removed a stale temporary file of an interrupted write", "path", p)
	}
}

// WriteAtomic replaces path with content: a temporary file in the same directory (so
// the rename cannot cross file systems) is written, fsynced and renamed over path, and
// the directory is fsynced so the rename survives a crash. Readers see the old file or
// the new one, never a mix. The new file keeps the permissions of the one it replaces
// (0644 when there is none), so that a file narrowed by its operator (it may hold the
// workload's private key) stays narrow.
func WriteAtomic(path string, content []byte) (err error) {
	mode := os.FileMode(0o644) // CreateTemp makes the file 0600; APISIX may run as another user
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, tempPrefix(base)+"*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = fmt.Errorf("write %s: %w", path, err)
		}
	}()
	if _, err = tmp.Write(content); err != nil {
		return err
	}
	if err = tmp.Chmod(mode); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		// Best effort: some file systems do not support fsync on directories.
		_ = d.Sync()
		d.Close()
	}
	return nil
}

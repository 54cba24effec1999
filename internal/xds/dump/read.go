package dump

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// DefaultMaxBytes bounds how much LoadDir and LoadConfigDump read in all. Envoy config
// dumps of large meshes stay under 100 MB; decoding takes several times the input in
// memory, so a larger input is more likely a mistake (a device, a log) than a dump.
const DefaultMaxBytes int64 = 512 << 20

// TooLargeError is returned when an input exceeds its limit.
type TooLargeError struct {
	Name  string // file, or "standard input"
	Limit int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s: more than %d bytes (%d MiB), the limit", e.Name, e.Limit, e.Limit>>20)
}

// budget is what is left to read of a limit shared by every file of one load.
type budget struct {
	limit, left int64
}

func newBudget(limit int64) *budget {
	if limit <= 0 {
		limit = DefaultMaxBytes
	}
	return &budget{limit: limit, left: limit}
}

// read reads r to its end, failing as soon as it holds more than the budget has left.
func (b *budget) read(r io.Reader, name string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, b.left+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if int64(len(data)) > b.left {
		return nil, &TooLargeError{Name: name, Limit: b.limit}
	}
	b.left -= int64(len(data))
	return data, nil
}

// readFile reads the file at path, which must be a regular file once symbolic links are
// followed: a device (/dev/zero) would never end and a named pipe may block forever.
func (b *budget) readFile(path string) ([]byte, error) {
	// O_NONBLOCK: opening a named pipe without a writer would block before its type
	// can be checked on the open file. It changes nothing for a regular file.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "read", Path: path, Err: notRegular(st.Mode())}
	}
	return b.read(f, path)
}

// ReadFile reads a regular file of at most maxBytes bytes (DefaultMaxBytes if <= 0).
func ReadFile(path string, maxBytes int64) ([]byte, error) {
	return newBudget(maxBytes).readFile(path)
}

func notRegular(m fs.FileMode) error {
	kind := "not a regular file"
	switch {
	case m.IsDir():
		kind = "a directory, not a file"
	case m&fs.ModeNamedPipe != 0:
		kind = "a named pipe, not a regular file"
	case m&fs.ModeDevice != 0:
		kind = "a device, not a regular file"
	case m&fs.ModeSocket != 0:
		kind = "a socket, not a regular file"
	}
	return errors.New(kind)
}

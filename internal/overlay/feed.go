package overlay

import "github.com/amesh-dev/amesh/internal/feed"

// Latest is a Feed holding the most recently published Set. The zero value is ready
// to use and safe for concurrent use.
type Latest = feed.Latest[Set]

var _ Feed = (*Latest)(nil)

// Package version holds the amesh build version, injected at link time:
//
//	go build -ldflags "-X github.com/amesh-dev/amesh/internal/version.Version=v1.2.3"
//
// It is shared by the amesh command, libxds.so and the status server.
package version

import "runtime/debug"

// Version is set with -ldflags; a build without it reports the module version when Go
// recorded one (go install ...@vX) and "dev" otherwise.
var Version = ""

// String returns the version to show users.
func String() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

package main

import (
	"context"
	"fmt"
	"io"
	"runtime"

	"github.com/amesh-dev/amesh/internal/version"
)

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("version", stderr)
	short := fs.Bool("short", false, "print only the version")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *short {
		fmt.Fprintln(stdout, version.String())
		return 0
	}
	fmt.Fprintf(stdout, "amesh %s (%s, %s/%s)\n", version.String(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return 0
}

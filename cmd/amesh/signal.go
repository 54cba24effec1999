package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// baseContext is the context long-running commands run under: cancelled by Ctrl-C or
// SIGTERM. Tests replace it to stop a command without signals.
var baseContext = func() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

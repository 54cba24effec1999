// Command amesh runs the amesh pipeline outside nginx and helps to see and debug it:
//
//	amesh agent       connect to istiod and keep APISIX's standalone file up to date
//	amesh translate   translate recorded xDS (a directory or an Envoy config dump) offline
//	amesh demo        an embedded control plane, the agent and a live change, on loopback
//	amesh version     print the version
//
// Every subcommand has its own flags (amesh <command> -h).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	// Long-running commands run until Ctrl-C or SIGTERM.
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}

// command is one subcommand: its run function gets the arguments after its name.
type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"agent", "connect to istiod and write APISIX's standalone configuration", runAgent},
		{"translate", "translate recorded xDS offline and print the APISIX configuration", runTranslate},
		{"demo", "run an embedded control plane and the agent, then apply a live change", runDemo},
		{"version", "print the version", runVersion},
	}
}

// run is main without the process: tests call it in-process. Long-running commands
// stop when ctx is done. It returns the exit code: 0 success, 1 failure, 2 usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (code int) {
	// The last line of defence for "one clear line, never a stack trace".
	defer func() {
		if p := recover(); p != nil {
			fmt.Fprintf(stderr, "amesh: internal error: %v\n", p)
			code = 1
		}
	}()
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "amesh: unknown command %q (try amesh -h)\n", args[0])
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "amesh makes Apache APISIX the data plane of an Istio mesh.")
	fmt.Fprintln(w, "\nUsage: amesh <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun amesh <command> -h for the flags of a command.")
}

// newFlagSet returns a FlagSet that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("amesh "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse parses args; ok=false means the caller returns code.
func parse(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return 2, false
	}
	return 0, true
}

// logLevelFlag adds -log-level to fs.
func logLevelFlag(fs *flag.FlagSet, def string) *string {
	return fs.String("log-level", def, "log level: debug, info, warn or error")
}

// newLogger returns a text logger on w at level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToLower(level))); err != nil {
		return nil, fmt.Errorf("bad -log-level %q (want debug, info, warn or error)", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// fail prints the error of a subcommand and returns exit code 1: one line, or for an
// error that joins several problems (errors.Join) a count and one indented line each,
// so that all of them can be fixed at once.
func fail(stderr io.Writer, cmd string, err error) int {
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) && len(joined.Unwrap()) > 1 && strings.Contains(err.Error(), "\n") {
		errs := joined.Unwrap()
		fmt.Fprintf(stderr, "amesh %s: %d problems:\n", cmd, len(errs))
		for _, e := range errs {
			fmt.Fprintf(stderr, "  %s\n", strings.ReplaceAll(e.Error(), "\n", "\n  "))
		}
		return 1
	}
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	fmt.Fprintf(stderr, "amesh %s: %s\n", cmd, msg)
	return 1
}

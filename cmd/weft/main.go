// Command weft is the one binary of weft: `weft serve` runs a sync server,
// `weft token` mints access tokens, `weft doc ...` inspects and moves stored
// documents, and `weft bench ...` measures.
//
// Each subcommand lives in its own file and registers itself in commands
// from an init function, so the parts of the binary stay independent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
)

// command is one `weft NAME ...` subcommand.
type command struct {
	name    string
	summary string
	// run executes the subcommand with the arguments after its name. It
	// returns the process exit code; errors are printed by run itself.
	run func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

var commands = map[string]command{}

func register(c command) {
	if _, dup := commands[c.name]; dup {
		panic("weft: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "weft: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	return c.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "weft — a CRDT sync server for collaborative editors")
	fmt.Fprintln(w, "\nUsage: weft COMMAND [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'weft COMMAND --help' for a command's flags.")
}

// fillFromEnv sets every flag of fs that the command line did not set (call
// it after fs.Parse) from its WEFT_<NAME> environment variable, so flags win
// over the environment. It reports every bad value at once.
func fillFromEnv(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", envName(f.Name), v, err))
			}
		}
	})
	return errors.Join(errs...)
}

// envName is the environment variable that may set a flag: WEFT_<NAME> with
// dashes as underscores, e.g. --memory-budget → WEFT_MEMORY_BUDGET.
func envName(flagName string) string {
	return "WEFT_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

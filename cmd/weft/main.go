// Command weft is the one binary of weft: `weft serve` runs a sync server,
// `weft token` mints access tokens, `weft doc ...` lists, reads, edits,
// exports and imports documents (through a server or in a stopped server's
// data directory), `weft cluster members` lists a cluster's servers as one
// of them sees them, `weft health` probes a local server, `weft version`
// names the build, and `weft bench ...` measures. Every flag of every
// command can also be set as the environment variable WEFT_<NAME>.
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
	if args[0] == "--version" || args[0] == "-version" {
		args = append([]string{"version"}, args[1:]...)
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
	fmt.Fprintln(w, "\nRun 'weft COMMAND --help' for a command's flags; 'weft --version' for the version.")
}

// newFlagSet returns a command's flag set: errors are returned (and
// printed to stderr), and the help lists the flags with printFlags unless
// the command sets its own Usage.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s [flags]\n\nFlags:\n", fs.Name())
		printFlags(fs)
	}
	return fs
}

// printFlags lists fs's flags as the help of every weft command does:
// "--name TYPE", then the usage and default. (flag.PrintDefaults writes
// "-name", while the rest of weft's help and docs write "--name"; both
// parse.)
func printFlags(fs *flag.FlagSet) {
	w := fs.Output()
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		head := "  --" + f.Name
		if typ != "" {
			head += " " + typ
		}
		def := ""
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "%s\n        %s%s\n", head, usage, def)
	})
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

// parseFlags parses a command's flags, refuses positional arguments, and
// fills every flag not given on the command line from WEFT_<NAME>. Help
// that was asked for goes to helpOut. done reports that the command should
// return code now (help, a bad flag, a stray argument).
func parseFlags(fs *flag.FlagSet, args []string, helpOut io.Writer) (code int, done bool) {
	pos, code, done := parseAnywhere(fs, args, helpOut)
	if done {
		return code, true
	}
	if len(pos) > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected arguments %q\n", fs.Name(), pos)
		return 2, true
	}
	return 0, false
}

// parseAnywhere is parseFlags for commands with positional arguments: flags
// may come before, between or after them (`weft doc get ID --data DIR`),
// and everything after "--" is positional. It returns the positional
// arguments in order.
func parseAnywhere(fs *flag.FlagSet, args []string, helpOut io.Writer) (pos []string, code int, done bool) {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" || a == "--h" {
			fs.SetOutput(helpOut) // asked for: help is the output
		}
	}
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0, true
			}
			return nil, 2, true
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if i := len(args) - len(rest) - 1; i >= 0 && args[i] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if err := fillFromEnv(fs); err != nil {
		fmt.Fprintf(fs.Output(), "%s: %v\n", fs.Name(), err)
		return nil, 2, true
	}
	return pos, 0, false
}

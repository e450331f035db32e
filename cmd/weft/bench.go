package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
)

// benchmarks maps `weft bench NAME` to its driver. Each driver lives in its
// own file and adds itself from an init function.
var benchmarks = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) int{}

// internalBenchmarks are `weft bench NAME` commands that benchmarks start
// as their own child processes (e.g. converge-worker); help lists none.
var internalBenchmarks = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) int{}

func init() {
	register(command{
		name:    "bench",
		summary: "measure: trace, merge, converge, conns, store, crash, cluster",
		run:     runBench,
	})
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	names := make([]string, 0, len(benchmarks))
	for n := range benchmarks {
		names = append(names, n)
	}
	slices.Sort(names)
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintf(stdout, "Usage: weft bench NAME [flags] [--json]\n\nBenchmarks:\n")
		for _, n := range names {
			fmt.Fprintf(stdout, "  %s\n", n)
		}
		fmt.Fprintf(stdout, "\nRun 'weft bench NAME --help' for its flags.\n")
		return 0
	}
	b, ok := benchmarks[args[0]]
	if !ok {
		b, ok = internalBenchmarks[args[0]]
	}
	if !ok {
		fmt.Fprintf(stderr, "weft bench: unknown benchmark %q (have %s)\n", args[0], strings.Join(names, ", "))
		return 2
	}
	return b(ctx, args[1:], stdout, stderr)
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/weftsync/weft/bench"
	"github.com/weftsync/weft/internal/traces"
)

func init() {
	benchmarks["trace"] = benchTrace
	benchmarks["merge"] = benchMerge
}

// printResult prints v as one line of JSON (one object per result, so
// several traces give JSON lines) or, without asJSON, calls table.
func printResult(stdout io.Writer, asJSON bool, v any, table func()) error {
	if asJSON {
		return writeJSON(stdout, v, false)
	}
	table()
	return nil
}

// writeJSON writes v and a newline, indented or on one line.
func writeJSON(w io.Writer, v any, indent bool) error {
	enc := json.NewEncoder(w)
	if indent {
		enc.SetIndent("", "  ")
	}
	return enc.Encode(v)
}

func benchTrace(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("weft bench trace", stderr)
	asJSON := fs.Bool("json", false, "print one JSON object per trace")
	runs := fs.Int("runs", 5, "timed runs after one warm-up (the median is reported)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: weft bench trace [--json] [--runs N] TRACE...\n\nReplays editing traces: gzipped JSON in the format of\ngithub.com/josephg/editing-traces, either a file or one of the traces built\ninto weft:\n\n")
		for _, n := range traces.Names() {
			fmt.Fprintf(stderr, "  %s\n", n)
		}
		fmt.Fprintf(stderr, "\nFlags:\n")
		printFlags(fs)
	}
	files, code, done := parseAnywhere(fs, args, stderr)
	if done {
		return code
	}
	if len(files) == 0 {
		fs.Usage()
		return 2
	}
	code = 0
	for _, name := range files {
		tr, err := traces.Load(name)
		if err != nil {
			fmt.Fprintf(stderr, "weft bench trace: %v\n", err)
			return 1
		}
		if tr.Kind == "concurrent" {
			r := bench.RunConcurrentTrace(tr, bench.TraceOptions{Runs: *runs})
			if !r.OK {
				code = 1
			}
			if err := printResult(stdout, *asJSON, r, func() {
				fmt.Fprintf(stdout, "%-32s agents %d  txns %7d  ok %-5v  replay %8.2f ms (%d merges)  merge all %8.2f ms (%d bytes)  snapshot %8d bytes  decode %6.2f ms %s\n",
					r.Trace, r.Agents, r.Txns, r.OK, r.ReplayMS, r.Merges, r.MergeMS, r.HistoryBytes, r.EncodedBytes, r.DecodeMS, r.Error)
			}); err != nil {
				fmt.Fprintf(stderr, "weft bench trace: %v\n", err)
				return 1
			}
			continue
		}
		r := bench.RunTrace(tr, bench.TraceOptions{Runs: *runs})
		if !r.OK {
			code = 1
		}
		if err := printResult(stdout, *asJSON, r, func() {
			fmt.Fprintf(stdout, "%-32s patches %7d  ok %-5v  replay %8.2f ms  encode %6.2f ms  %8d bytes  decode %6.2f ms  heap %6.2f MiB %s\n",
				r.Trace, r.Patches, r.OK, r.ReplayMS, r.EncodeMS, r.EncodedBytes, r.DecodeMS, float64(r.HeapBytes)/(1<<20), r.Error)
		}); err != nil {
			fmt.Fprintf(stderr, "weft bench trace: %v\n", err)
			return 1
		}
	}
	return code
}

func benchMerge(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("weft bench merge", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	edits := fs.Int("edits", 10000, "random single-character edits per replica")
	runs := fs.Int("runs", 5, "timed runs after one warm-up (the median is reported)")
	if code, done := parseFlags(fs, args, stderr); done {
		return code
	}
	r := bench.RunMerge(bench.MergeOptions{Edits: *edits, Runs: *runs})
	if err := printResult(stdout, *asJSON, r, func() {
		fmt.Fprintf(stdout, "merge: edits %d each  delta %d bytes (A→B)  merge %.2f ms  gc cycles %.1f  ok %v %s\n", r.Edits, r.DeltaBytes, r.MergeMS, r.GCCycles, r.OK, r.Error)
	}); err != nil {
		fmt.Fprintf(stderr, "weft bench merge: %v\n", err)
		return 1
	}
	if !r.OK {
		return 1
	}
	return 0
}

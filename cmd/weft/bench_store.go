package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/weftsync/weft/bench"
	"github.com/weftsync/weft/storage"
)

func init() {
	benchmarks["store"] = runBenchStore
	benchmarks["crash"] = runBenchCrash
}

// runBenchCrash is `weft bench crash`: a real `weft serve` (this binary)
// killed with SIGKILL under concurrent writers; every acknowledged edit
// must survive exactly once.
func runBenchCrash(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("weft bench crash", stderr)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	writers := fs.Int("writers", 64, "concurrent writers, one client connection each")
	docs := fs.Int("docs", 8, "documents the writers share")
	duration := fs.Duration("duration", 20*time.Second, "how long the writers write")
	kills := fs.Int("kills", 3, "kill -9 of the server during the run (one more ends it)")
	seed := fs.Uint64("seed", 1, "seed of the kill times")
	dir := fs.String("dir", os.TempDir(), "directory for the server's temporary data directory")
	verbose := fs.Bool("v", false, "show the server's warnings and errors")
	if code, done := parseFlags(fs, args, stderr); done {
		return code
	}
	bin, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "weft bench crash: finding this executable: %v\n", err)
		return 1
	}
	o := bench.CrashOptions{Binary: bin, Dir: *dir, Writers: *writers, Docs: *docs,
		Duration: *duration, Kills: *kills, Seed: *seed}
	if *verbose {
		o.Stderr = stderr
	}
	res := bench.RunCrash(ctx, o)
	if *asJSON {
		if err := writeJSON(stdout, res, true); err != nil {
			fmt.Fprintf(stderr, "weft bench crash: %v\n", err)
			return 1
		}
	} else {
		fmt.Fprintf(stdout, "crash: %d writers on %d documents for %.0fs, %d kill -9\n", res.Writers, res.Docs, res.DurationS, res.Kills)
		fmt.Fprintf(stdout, "  acked       %8d\n  lost        %8d\n  duplicated  %8d\n  unacked     %8d  (in flight at the end; either outcome is correct)\n",
			res.Acked, res.Lost, res.Duplicated, res.Unacked)
		fmt.Fprintf(stdout, "  restart     %8.0f ms (median, kill to listening, including the data check)\n  ok          %8v\n", res.RestartMS, res.OK)
	}
	if res.Error != "" {
		fmt.Fprintf(stderr, "weft bench crash: %s\n", res.Error)
		return 1
	}
	if !res.OK {
		return 1
	}
	return 0
}

// runBenchStore is `weft bench store`: durable acked batches per second
// with concurrent writers, and the cold load of a real document.
func runBenchStore(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("weft bench store", stderr)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	writers := fs.Int("writers", 64, "concurrent writers, one document each")
	batches := fs.Int("batches", 500, "batches each writer appends per run")
	runs := fs.Int("runs", 3, "timed runs after a warm-up (results are medians)")
	dir := fs.String("dir", os.TempDir(), "directory for the temporary stores (use the disk you want to measure)")
	trace := fs.String("trace", "automerge-paper.json.gz", "trace whose document is cold-loaded")
	timeout := fs.Duration("timeout", 5*time.Minute, "bound on the whole benchmark")
	if code, done := parseFlags(fs, args, stderr); done {
		return code
	}
	res := bench.RunStore(ctx, bench.StoreOptions{
		Open: func(dir string) (bench.DurableStore, io.Closer, error) {
			st, err := storage.Open(dir, storage.DefaultOptions())
			if err != nil {
				return nil, nil, err
			}
			return st, st, nil
		},
		Baseline: storage.MeasureBareSync,
		Dir:      *dir,
		Writers:  *writers,
		Batches:  *batches,
		Runs:     *runs,
		Trace:    *trace,
		Timeout:  *timeout,
	})
	if *asJSON {
		if err := writeJSON(stdout, res, true); err != nil {
			fmt.Fprintf(stderr, "weft bench store: %v\n", err)
			return 1
		}
	} else {
		fmt.Fprintf(stdout, "store: %d writers on %d documents, %d batches each, median of %d runs\n",
			res.Writers, res.Documents, res.Acked/max(res.Writers, 1), res.Runs)
		fmt.Fprintf(stdout, "  acked_per_s    %12.0f  (floor 50000)\n", res.AckedPerS)
		fmt.Fprintf(stdout, "  bare Pebble    %12.0f  synced Sets/s, same writers, disk and run; store/bare %.2f\n", res.BareSyncPerS, res.VsBare)
		fmt.Fprintf(stdout, "  ack p50 / p99  %8.2f ms / %.2f ms\n", res.AckP50MS, res.AckP99MS)
		fmt.Fprintf(stdout, "  batch bytes    %12.1f\n", res.BatchBytes)
		fmt.Fprintf(stdout, "  cold_load_ms   %12.2f  (floor 10; %s, snapshot %d bytes)\n", res.ColdLoadMS, res.Trace, res.SnapshotBytes)
		fmt.Fprintf(stdout, "  ok             %12v\n", res.OK)
	}
	if res.Error != "" {
		fmt.Fprintf(stderr, "weft bench store: %s\n", res.Error)
		return 1
	}
	if !res.OK {
		return 1
	}
	return 0
}

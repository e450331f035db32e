package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/weftsync/weft/bench"
)

func init() {
	benchmarks["cluster"] = benchCluster
	internalBenchmarks["cluster-heal-watch"] = benchClusterHealWatch
}

// benchClusterHealWatch samples the divergence timeline of a `weft bench
// cluster` fault run, and times the heal of `--partition` or
// `--offline-peer`, in a process of its own, speaking the benchmark's
// protocol over stdin and stdout (see bench.ClusterHealWatch). Not for
// people: the benchmark starts it.
func benchClusterHealWatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "weft bench cluster-heal-watch: takes no arguments (it is started by weft bench cluster)\n")
		return 2
	}
	if err := bench.ClusterHealWatch(ctx, os.Stdin, stdout); err != nil {
		fmt.Fprintf(stderr, "weft bench cluster-heal-watch: %v\n", err)
		return 1
	}
	return 0
}

func benchCluster(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("weft bench cluster", stderr)
	binary := fs.String("binary", "", "weft executable the peers run (default: this one)")
	peers := fs.Int("peers", 3, "number of weft serve processes, joined by gossip on 127.0.0.1 (1: a plain server, the single-server baseline)")
	clients := fs.Int("clients", 150, "number of Go clients, client i on peer i mod peers")
	docs := fs.Int("docs", 10, "number of documents")
	rate := fs.Float64("rate", 10, "edits per second per client")
	duration := fs.Duration("duration", 20e9, "how long the clients edit")
	settle := fs.Duration("settle", 60e9, "how long to wait, after editing, for every peer to converge")
	partition := fs.Duration("partition", 0, "cut peer 0 off (gossip and peer links) a quarter into the run for this long, then heal")
	kill := fs.Int("kill", 0, "kill -9 a random peer this many times during the run (each restarted at once)")
	offline := fs.Duration("offline-peer", 0, "stop peer 1 a quarter into the run for this long, then restart it")
	ackPeers := fs.Int("ack-peers", 0, "--ack-peers of every peer")
	seed := fs.Uint64("seed", 1, "seed of positions and kill choices")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	plot := fs.String("plot", "", "write an SVG: latency CDF same-peer vs cross-peer, and the divergence timeline of fault runs")
	verbose := fs.Bool("v", false, "log progress to stderr")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process (the clients) to this file; --server-arg=--debug-listen=... profiles the peers")
	var serverArgs stringList
	fs.Var(&serverArgs, "server-arg", "extra flag for every peer, repeatable; {peer} becomes the peer's index, e.g. --server-arg=--debug-listen=127.0.0.1:606{peer}")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: weft bench cluster [--peers P] [--clients C] [--docs D] [--rate R] [--duration T] [--partition DUR | --offline-peer DUR] [--kill N] [--json] [--plot FILE.svg]\n\n"+
			"Starts P real `weft serve` processes on loopback joined into a cluster, spreads C Go clients\n"+
			"over them and D documents, and measures edit → applied on every other subscriber, same-peer\n"+
			"and cross-peer; then checks every peer holds identical documents with every acknowledged edit\n"+
			"(lost must be 0). Every flag may also be set as WEFT_<NAME>.\n\n")
		printFlags(fs)
	}
	if code, done := parseFlags(fs, args, stderr); done {
		return code
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400) // the clients share this process
	}
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		fmt.Fprintf(stderr, "weft bench cluster: %v\n", err)
		return 1
	}
	defer stopProfile()
	r, err := bench.RunCluster(ctx, bench.ClusterOptions{
		Binary: *binary, Peers: *peers, Clients: *clients, Docs: *docs, Rate: *rate, Duration: *duration, Settle: *settle,
		Partition: *partition, Kill: *kill, OfflinePeer: *offline, AckPeers: *ackPeers, Seed: *seed, ServerArgs: serverArgs,
		Logger: benchLogger(stderr, *verbose),
	})
	if err != nil {
		fmt.Fprintf(stderr, "weft bench cluster: %v\n", err)
		return 1
	}
	if *plot != "" {
		if err := os.WriteFile(*plot, bench.ClusterSVG(r), 0o644); err != nil {
			fmt.Fprintf(stderr, "weft bench cluster: --plot: %v\n", err)
			return 1
		}
	}
	if *asJSON {
		b, _ := json.MarshalIndent(r, "", "  ")
		fmt.Fprintln(stdout, string(b))
	} else {
		fmt.Fprintf(stdout, "peers %d, clients %d, docs %d, edits %d (acked %d), loadavg %s\n", r.Peers, r.Clients, r.Docs, r.Edits, r.Acked, r.LoadAvg)
		fmt.Fprintf(stdout, "same peer:  p50 %.2f ms  p99 %.2f ms  max %.1f ms  (%d deliveries)\n", r.SamePeer.P50Ms, r.SamePeer.P99Ms, r.SamePeer.MaxMs, r.SamePeer.Deliveries)
		fmt.Fprintf(stdout, "cross peer: p50 %.2f ms  p99 %.2f ms  max %.1f ms  (%d deliveries)\n", r.CrossPeer.P50Ms, r.CrossPeer.P99Ms, r.CrossPeer.MaxMs, r.CrossPeer.Deliveries)
		if r.ServersCores > 0 {
			fmt.Fprintf(stdout, "cpu while editing: peers %.2f cores, clients (this process) %.2f cores\n", r.ServersCores, r.ClientsCores)
		}
		fmt.Fprintf(stdout, "converged %v, lost %d, duplicated %d", r.Converged, r.Lost, r.Duplicated)
		if r.HealMs > 0 {
			fmt.Fprintf(stdout, ", heal %.0f ms", r.HealMs)
		}
		fmt.Fprintln(stdout)
	}
	if !r.Converged || r.Lost > 0 || r.Duplicated > 0 {
		return 1
	}
	return 0
}

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"strings"

	"github.com/weftsync/weft/bench"
)

func init() {
	benchmarks["converge"] = benchConverge
	internalBenchmarks["converge-worker"] = benchConvergeWorker
	benchmarks["conns"] = benchConns
}

func benchLogger(stderr io.Writer, verbose bool) *slog.Logger {
	if !verbose {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(stderr, nil))
}

func benchConverge(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	d := bench.DefaultConvergeOptions()
	fs := newFlagSet("weft bench converge", stderr)
	server := fs.String("server", "", "URL of a running server (default: start a 'weft serve --insecure' child process)")
	token := fs.String("token", "", "access token every client sends (with --server)")
	binary := fs.String("binary", "", "weft executable to start as the server without --server (default: this one)")
	clients := fs.Int("clients", d.Clients, "number of Go clients, one connection each")
	docs := fs.Int("docs", d.Docs, "number of documents the clients are spread over")
	rate := fs.Float64("rate", d.Rate, "edits per second per client")
	duration := fs.Duration("duration", d.Duration, "how long the clients edit")
	settle := fs.Duration("settle", d.Settle, "how long to wait, after editing, for every replica to converge")
	seed := fs.Uint64("seed", d.Seed, "seed of the edit mix")
	asJSON := fs.Bool("json", false, "print JSON: clients, docs, edits, p50_ms, p99_ms, max_ms, converged, acked, lost, server_cpu_per_delivery_us, load_generator (per process), load_generator_bottleneck")
	verbose := fs.Bool("v", false, "log progress to stderr")
	procs := fs.Int("procs", d.Procs, "spread the clients over this many load generator processes (this one and procs-1 workers), so that one process's CPU does not bound the load")
	gogc := fs.Int("gogc", 400, "GC percent of the load generator processes, which run the clients (the server is a separate process with its own setting); -1 keeps the runtime's")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the load generator (this process's clients: the first share with --procs) to this file")
	memProfile := fs.String("memprofile", "", "write an allocation profile of the load generator (this process) to this file")
	serverCPUs := fs.String("server-cpus", "", "pin the child server to these CPUs, e.g. 1 or 2-3 (taskset -c syntax)")
	clientCPUs := fs.String("client-cpus", "", "pin the load generator (this process and its workers) to these CPUs, e.g. 0")
	plot := fs.String("plot", "", "write the latency distribution (CDF) to this SVG file")
	var serverArgs stringList
	fs.Var(&serverArgs, "server-arg", "extra flag for the child server, repeatable, e.g. --server-arg=--data=:memory: (documents in memory, as the Hocuspocus comparison runs)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: weft bench converge [--server URL] --clients N --docs D --rate R --duration T [--json]\n\n"+
			"N Go clients over D documents each make R edits/s, in --procs P processes; latency is the time\n"+
			"from an edit to its arrival at every other subscriber of its document. Every flag may also be\n"+
			"set as WEFT_<NAME>.\n\n")
		printFlags(fs)
	}
	if code, done := parseFlags(fs, args, stderr); done {
		return code
	}
	workerGOGC := 0 // a GOGC in the environment reaches the workers as it is
	if *gogc != -1 && os.Getenv("GOGC") == "" {
		// N clients share this process, where real clients each have
		// their own: a lazier collector keeps the load generator's GC from
		// competing with the server for the cores.
		debug.SetGCPercent(*gogc)
		workerGOGC = *gogc
	}
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		fmt.Fprintf(stderr, "weft bench converge: %v\n", err)
		return 1
	}
	defer stopProfile()
	if *memProfile != "" {
		defer func() {
			if f, err := os.Create(*memProfile); err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	scpus, err := bench.ParseCPUList(*serverCPUs)
	if err != nil {
		fmt.Fprintf(stderr, "weft bench converge: --server-cpus: %v\n", err)
		return 2
	}
	ccpus, err := bench.ParseCPUList(*clientCPUs)
	if err != nil {
		fmt.Fprintf(stderr, "weft bench converge: --client-cpus: %v\n", err)
		return 2
	}
	if len(scpus) > 0 && *server != "" {
		fmt.Fprintf(stderr, "weft bench converge: --server-cpus pins the child server; with --server, pin that server yourself (taskset)\n")
		return 2
	}
	r, err := bench.Converge(ctx, bench.ConvergeOptions{
		Server: *server, Token: *token, Binary: *binary, Clients: *clients, Docs: *docs, Rate: *rate,
		Duration: *duration, Settle: *settle, Seed: *seed, ServerCPUs: scpus, ClientCPUs: ccpus,
		ServerArgs: serverArgs, Procs: *procs, WorkerGOGC: workerGOGC, Logger: benchLogger(stderr, *verbose),
	})
	if err != nil {
		fmt.Fprintf(stderr, "weft bench converge: %v\n", err)
		return 1
	}
	if *plot != "" {
		title := fmt.Sprintf("weft bench converge: %d clients, %d docs, %d edits: edit → every other subscriber", r.Clients, r.Docs, r.Edits)
		if err := writePlot(*plot, func(w io.Writer) error {
			return bench.WriteLatencyCDF(w, title, []bench.PlotSeries{{Name: "edit → every other subscriber", Samples: r.Latencies}})
		}); err != nil {
			fmt.Fprintf(stderr, "weft bench converge: --plot: %v\n", err)
			return 1
		}
	}
	if r.Warning != "" {
		fmt.Fprintf(stderr, "weft bench converge: warning: %s\n", r.Warning)
	}
	printResult(stdout, *asJSON, r, func() {
		fmt.Fprintf(stdout, "converge: clients %d  docs %d  edits %d  p50 %.2f ms  p99 %.2f ms  max %.2f ms  converged %v  acked %d  lost %d\n",
			r.Clients, r.Docs, r.Edits, r.P50Ms, r.P99Ms, r.MaxMs, r.Converged, r.Acked, r.Lost)
		if r.ServerUserS+r.ServerSysS > 0 {
			fmt.Fprintf(stdout, "server CPU: user %.2f s  sys %.2f s  %.1f µs/edit  %.2f µs/delivery (%d)  RSS %.1f MiB\n",
				r.ServerUserS, r.ServerSysS, r.ServerCPUPerEditUS, r.ServerCPUPerDeliveryUS, r.Deliveries, float64(r.ServerRSSBytes)/(1<<20))
		}
		fmt.Fprintf(stdout, "load generator CPU: user %.2f s  sys %.2f s  %.2f cores  (%d processes)  loadavg %s\n", r.ClientUserS, r.ClientSysS, r.ClientCores, r.Procs, r.LoadAvg)
		if len(r.LoadGen) > 1 {
			for i, p := range r.LoadGen {
				fmt.Fprintf(stdout, "  process %d (pid %d): clients %d  edits %d  deliveries %d  user %.2f s  sys %.2f s  %.2f cores\n",
					i+1, p.PID, p.Clients, p.Edits, p.Deliveries, p.UserS, p.SysS, p.Cores)
			}
		}
	})
	if !r.Converged {
		return 1
	}
	return 0
}

// benchConvergeWorker runs one share of a `weft bench converge --procs`
// run, speaking the parent's protocol over stdin and stdout (see
// bench.ConvergeWorker). Not for people: it is started by the benchmark.
func benchConvergeWorker(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "weft bench converge-worker: takes no arguments (it is started by weft bench converge --procs)\n")
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := bench.ConvergeWorker(ctx, os.Stdin, stdout, log); err != nil {
		fmt.Fprintf(stderr, "weft bench converge-worker: %v\n", err)
		return 1
	}
	return 0
}

// writePlot writes an SVG file with draw, reporting a failed close.
func writePlot(path string, draw func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := draw(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func benchConns(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	d := bench.DefaultConnsOptions()
	fs := newFlagSet("weft bench conns", stderr)
	conns := fs.Int("conns", d.Conns, "idle authenticated connections to open, each subscribed to a document")
	docs := fs.Int("docs", d.Docs, "documents the connections subscribe to (round robin)")
	parallel := fs.Int("parallel", d.Parallel, "connections being opened at once")
	timeout := fs.Duration("timeout", d.Timeout, "bound on the whole run")
	binary := fs.String("binary", "", "weft executable to start as the server (default: this one)")
	asJSON := fs.Bool("json", false, "print JSON: conns, bytes_per_conn")
	var serverArgs stringList
	fs.Var(&serverArgs, "server-arg", "extra flag for the child server, repeatable, e.g. --server-arg=--debug-listen=127.0.0.1:6060 (to take its heap profile)")
	verbose := fs.Bool("v", false, "log progress to stderr")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: weft bench conns --conns N [--json]\n\n"+
			"Starts a `weft serve` child process, opens N idle subscribed connections and reports the\n"+
			"server's resident memory growth per connection. Every flag may also be set as WEFT_<NAME>.\n\n")
		printFlags(fs)
	}
	if code, done := parseFlags(fs, args, stderr); done {
		return code
	}
	r, err := bench.Conns(ctx, bench.ConnsOptions{
		Conns: *conns, Docs: *docs, Binary: *binary, ServerArgs: serverArgs, Parallel: *parallel, Timeout: *timeout, Logger: benchLogger(stderr, *verbose),
	})
	if err != nil {
		fmt.Fprintf(stderr, "weft bench conns: %v\n", err)
		return 1
	}
	printResult(stdout, *asJSON, struct {
		Conns        int     `json:"conns"`
		BytesPerConn float64 `json:"bytes_per_conn"`
	}{r.Conns, r.BytesPerConn}, func() {
		fmt.Fprintf(stdout, "conns: %d idle connections  server RSS %.1f → %.1f MiB  %.0f bytes/conn\n",
			r.Conns, float64(r.BaselineRSS)/(1<<20), float64(r.LoadedRSS)/(1<<20), r.BytesPerConn)
	})
	return 0
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, " ") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// startCPUProfile writes a CPU profile of this process to path until the
// returned function is called; an empty path profiles nothing.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

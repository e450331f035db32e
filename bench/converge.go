package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/weftsync/weft/crdt"
)

// ConvergeOptions configure the convergence benchmark.
type ConvergeOptions struct {
	// Server is the URL of a running server. Default: "" (start a `weft
	// serve --insecure` child process from Binary with a temporary data
	// directory).
	Server string
	// Token is sent by every client (for Server). Default: "".
	Token string
	// Binary is the weft executable started when Server is empty.
	// Default: os.Executable().
	Binary string
	// ServerArgs are extra flags for the child server. Default: none.
	ServerArgs []string
	// Clients is the number of Go clients, each with its own connection.
	// Default: 200.
	Clients int
	// Docs is the number of documents; client i edits document i mod Docs.
	// Default: 10.
	Docs int
	// Rate is the edits per second each client makes. Default: 10.
	Rate float64
	// Duration is how long clients edit. Default: 20s.
	Duration time.Duration
	// Settle bounds the wait, after editing stops, for every replica to be
	// saved and identical. Default: 30s.
	Settle time.Duration
	// Seed makes the edit mix and positions reproducible. Default: 1.
	Seed uint64
	// ServerCPUs pins the child server's threads to these CPUs (without
	// Server). Default: none (unpinned).
	ServerCPUs []int
	// ClientCPUs pins the load generator (this process and every worker
	// process) to these CPUs. Default: none (unpinned).
	ClientCPUs []int
	// Procs is the number of processes the clients are spread over: this
	// one and Procs-1 workers (`weft bench converge-worker`), each with a
	// contiguous block of clients, so that every document has subscribers
	// in several processes. Default: 1 (this process runs every client).
	Procs int
	// WorkerBinary is the weft executable run as each worker.
	// Default: os.Executable().
	WorkerBinary string
	// WorkerGOGC, if positive, is the GOGC of every worker. Default: 0 (the
	// runtime's, or the GOGC this process was started with).
	WorkerGOGC int
	// Logger receives progress. Default: discard.
	Logger *slog.Logger
}

// DefaultConvergeOptions returns the defaults described on each field (the
// issue's floor configuration).
func DefaultConvergeOptions() ConvergeOptions {
	return ConvergeOptions{Clients: 200, Docs: 10, Rate: 10, Duration: 20 * time.Second, Settle: 30 * time.Second, Seed: 1, Procs: 1}
}

func (o ConvergeOptions) withDefaults() (ConvergeOptions, error) {
	d := DefaultConvergeOptions()
	o.Clients = cmp.Or(o.Clients, d.Clients)
	o.Docs = cmp.Or(o.Docs, d.Docs)
	o.Rate = cmp.Or(o.Rate, d.Rate)
	o.Duration = cmp.Or(o.Duration, d.Duration)
	o.Settle = cmp.Or(o.Settle, d.Settle)
	o.Seed = cmp.Or(o.Seed, d.Seed)
	o.Procs = cmp.Or(o.Procs, d.Procs)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.ServerArgs = slices.Clone(o.ServerArgs)
	var errs []error
	if o.Clients < 2 {
		errs = append(errs, fmt.Errorf("bench: converge needs at least 2 clients, got %d", o.Clients))
	}
	if o.Docs < 1 || o.Docs > o.Clients/2 && o.Clients >= 2 {
		errs = append(errs, fmt.Errorf("bench: converge needs 1 ≤ docs ≤ clients/2 (two subscribers per document), got %d docs for %d clients", o.Docs, o.Clients))
	}
	if o.Rate < 0 || o.Rate > 1000 {
		errs = append(errs, fmt.Errorf("bench: rate must be in (0, 1000] edits/s per client, got %v", o.Rate))
	}
	if o.Duration < 0 || o.Duration > time.Hour {
		errs = append(errs, fmt.Errorf("bench: duration must be in (0, 1h], got %v", o.Duration))
	}
	if o.Settle < 0 {
		errs = append(errs, fmt.Errorf("bench: settle %v is negative", o.Settle))
	}
	if o.Procs < 1 || o.Procs > 64 || o.Procs > o.Clients {
		errs = append(errs, fmt.Errorf("bench: procs must be in [1, min(64, clients)], got %d for %d clients", o.Procs, o.Clients))
	}
	return o, errors.Join(errs...)
}

// ConvergeResult is what `weft bench converge --json` prints.
type ConvergeResult struct {
	Clients   int     `json:"clients"`
	Docs      int     `json:"docs"`
	Edits     int     `json:"edits"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
	Converged bool    `json:"converged"`
	// Deliveries counts edit arrivals at other subscribers: each edit
	// counts once for every other subscriber of its document that applied
	// it, in whichever process.
	Deliveries int `json:"deliveries"`
	// The server's CPU from the first edit until every replica converged,
	// user and system time (only for a child server: without --server).
	ServerUserS float64 `json:"server_user_s,omitempty"`
	ServerSysS  float64 `json:"server_sys_s,omitempty"`
	// ServerCPUPerEditUS and ServerCPUPerDeliveryUS divide the server's CPU
	// (user + system) by edits and by deliveries.
	ServerCPUPerEditUS     float64 `json:"server_cpu_per_edit_us,omitempty"`
	ServerCPUPerDeliveryUS float64 `json:"server_cpu_per_delivery_us,omitempty"`
	// ServerRSSBytes is the server's resident set at the end.
	ServerRSSBytes int64 `json:"server_rss_bytes,omitempty"`
	// The load generator's CPU over the same window, summed over its
	// processes, and the cores it kept busy on average.
	ClientUserS float64 `json:"client_user_s"`
	ClientSysS  float64 `json:"client_sys_s"`
	ClientCores float64 `json:"client_cores"`
	// Warning says when the figures measure the load generator rather than
	// the server (see LoadGenBottleneck).
	Warning string `json:"warning,omitempty"`

	// Procs is the number of load generator processes.
	Procs int `json:"procs"`
	// Acked counts the edits the server acknowledged; Lost, those of them
	// that some replica of their document lacks at the end.
	Acked int `json:"acked"`
	Lost  int `json:"lost"`
	// Undelivered counts edits that some other subscriber never applied;
	// DuplicateDeliveries, edits applied more than once by a subscriber.
	Undelivered         int `json:"undelivered"`
	DuplicateDeliveries int `json:"duplicate_deliveries"`
	// LoadGen is each load generator process, this one first.
	LoadGen []ConvergeProc `json:"load_generator"`
	// LoadGenBottleneck is set when some load generator process kept
	// more than 85% of a core busy, or at least half a core and more CPU
	// than the server, or all of them together 85% of the CPUs they may
	// run on, or they made fewer than 90% of the edits asked for: the
	// latencies then measure the load generator as much as the server.
	LoadGenBottleneck bool `json:"load_generator_bottleneck"`
	// LoadAvg is /proc/loadavg at the end.
	LoadAvg string `json:"loadavg"`
	// Latencies are the sorted edit → every-subscriber latencies (for
	// --plot; not printed).
	Latencies []time.Duration `json:"-"`
}

// ConvergeProc is one load generator process's part of a run.
type ConvergeProc struct {
	PID     int `json:"pid"`
	Clients int `json:"clients"`
	Edits   int `json:"edits"`
	// Deliveries counts edits applied by this process's subscribers.
	Deliveries int     `json:"deliveries"`
	UserS      float64 `json:"user_s"`
	SysS       float64 `json:"sys_s"`
	// Cores is its CPU per second of its own window (editing and
	// settling).
	Cores float64 `json:"cores"`
}

// Converge runs the convergence benchmark: Clients Go clients spread over
// Docs documents each make Rate edits per second for Duration (text
// inserts and deletes, counter adds, register sets); latency is the time
// from an edit to its arrival at every other subscriber of its document.
// At the end it waits (at most Settle) for every replica to be saved and
// all replicas of a document to be identical. With Procs > 1 the clients
// are spread over that many processes (see ConvergeWorker).
func Converge(ctx context.Context, opts ConvergeOptions) (ConvergeResult, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return ConvergeResult{}, err
	}
	log := o.Logger
	res := ConvergeResult{Clients: o.Clients, Docs: o.Docs, Procs: o.Procs}

	url := o.Server
	serverPID := 0 // a child server's, whose CPU is measured
	if url == "" {
		bin := o.Binary
		if bin == "" {
			if bin, err = os.Executable(); err != nil {
				return res, fmt.Errorf("bench: locate weft binary: %w", err)
			}
		}
		dir, err := os.MkdirTemp("", "weft-bench-converge-")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		srv, err := StartServer(sctx, bin, dir, append([]string{"--insecure"}, o.ServerArgs...)...)
		cancel()
		if err != nil {
			return res, err
		}
		defer srv.Stop(10 * time.Second)
		url = srv.URL
		serverPID = srv.PID()
		if err := PinProcess(serverPID, o.ServerCPUs); err != nil {
			return res, err
		}
		log.Info("started server", "url", url, "pid", serverPID, "cpus", o.ServerCPUs)
	}
	workerBin := o.WorkerBinary
	if workerBin == "" && o.Procs > 1 {
		if workerBin, err = os.Executable(); err != nil {
			return res, fmt.Errorf("bench: locate weft binary: %w", err)
		}
	}

	// Process p runs a contiguous block of clients: client i edits
	// document i mod Docs, so each block holds subscribers of every
	// document once it has Docs clients, and deliveries cross processes.
	runID := uuid.NewString()[:8]
	cfgs := make([]convergeWorkerConfig, o.Procs)
	for p := range cfgs {
		first, next := p*o.Clients/o.Procs, (p+1)*o.Clients/o.Procs
		cfgs[p] = convergeWorkerConfig{
			URL: url, Token: o.Token, RunID: runID, First: first, Count: next - first,
			Clients: o.Clients, Docs: o.Docs, Rate: o.Rate, Duration: o.Duration, Settle: o.Settle,
			Seed: o.Seed, ClientCPUs: o.ClientCPUs,
		}
	}
	// The workers connect while this process connects its own share.
	var children []*convergeChild
	defer func() {
		for _, c := range children {
			c.stop()
		}
	}()
	for _, cfg := range cfgs[1:] {
		c, err := startConvergeChild(workerBin, cfg, o.WorkerGOGC)
		if err != nil {
			return res, err
		}
		children = append(children, c)
	}
	self, err := startConvergeWorker(ctx, cfgs[0], log)
	if err != nil {
		return res, err
	}
	defer self.close()
	shares := []convergeShare{self}
	for i, c := range children {
		if err := c.ready(ctx); err != nil {
			return res, err
		}
		shares = append(shares, childShare{c: c, cfg: cfgs[i+1]})
	}
	log.Info("clients connected", "clients", o.Clients, "docs", o.Docs, "procs", o.Procs)

	// Edit. CPU is measured from here until every replica converged.
	var srv0 CPUTimes
	if serverPID != 0 {
		if srv0, err = ProcessCPU(serverPID); err != nil {
			return res, err
		}
	}
	wall0 := time.Now()
	edited, err := convergeEach(shares, func(s convergeShare) (convergeEdited, error) { return s.edit(ctx) })
	if err != nil {
		return res, err
	}
	target := make([]crdt.VersionVector, o.Docs)
	for d := range target {
		target[d] = crdt.VersionVector{}
		for _, e := range edited {
			target[d].Merge(e.Written[d])
		}
	}
	log.Info("editing done")

	// Settle: every replica holds every edit; then compare them.
	finals, err := convergeEach(shares, func(s convergeShare) (convergeFinal, error) { return s.finish(ctx, target) })
	if err != nil {
		return res, err
	}
	wall := time.Since(wall0)
	var srv CPUTimes
	if serverPID != 0 {
		srv1, err := ProcessCPU(serverPID)
		if err != nil {
			return res, err
		}
		srv = srv1.Sub(srv0)
		if res.ServerRSSBytes, err = RSS(serverPID); err != nil {
			return res, err
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		res.LoadAvg = strings.TrimSpace(string(b))
	}

	out := convergeCombine(finals)
	res.Edits, res.Acked, res.Lost = out.edits, out.acked, out.lost
	res.Undelivered, res.DuplicateDeliveries = out.undelivered, out.duplicated
	res.Converged = out.differing == 0 && out.undelivered == 0
	if out.differing > 0 {
		log.Warn("documents did not converge", "count", out.differing)
	}
	if out.undelivered > 0 {
		log.Warn("edits never reached every subscriber", "count", out.undelivered)
	}
	for i, f := range finals {
		p := ConvergeProc{
			PID: f.PID, Clients: cfgs[i].Count, Deliveries: out.deliveries[i],
			UserS: f.CPU.User.Seconds(), SysS: f.CPU.Sys.Seconds(), Cores: f.CPU.Total().Seconds() / f.Wall.Seconds(),
		}
		for _, r := range f.Replicas {
			p.Edits += len(r.Starts)
		}
		res.Deliveries += p.Deliveries
		res.LoadGen = append(res.LoadGen, p)
	}
	res.measureCPU(srv, wall, serverPID != 0, o.ClientCPUs, float64(o.Clients)*o.Rate*o.Duration.Seconds())

	all := out.latencies
	if len(all) == 0 {
		return res, errors.New("bench: no convergeEdit reached its subscribers")
	}
	slices.Sort(all)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	res.P50Ms = ms(convergeQuantile(all, 0.50))
	res.P99Ms = ms(convergeQuantile(all, 0.99))
	res.MaxMs = ms(all[len(all)-1])
	res.Latencies = all
	return res, nil
}

// convergeEach runs f on every share at once and returns their results in
// order, with every error.
func convergeEach[T any](shares []convergeShare, f func(convergeShare) (T, error)) ([]T, error) {
	out := make([]T, len(shares))
	errs := make([]error, len(shares))
	var wg sync.WaitGroup
	for i, s := range shares {
		wg.Go(func() { out[i], errs[i] = f(s) })
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// measureCPU fills the server's CPU figures from srv, used over wall, the
// load generator's from LoadGen, and the bottleneck warning; scheduled is
// the number of edits the clients were asked to make.
func (r *ConvergeResult) measureCPU(srv CPUTimes, wall time.Duration, haveServer bool, clientCPUs []int, scheduled float64) {
	var total time.Duration
	for _, p := range r.LoadGen {
		r.ClientUserS += p.UserS
		r.ClientSysS += p.SysS
		total += time.Duration((p.UserS + p.SysS) * float64(time.Second))
	}
	r.ClientCores = total.Seconds() / wall.Seconds()
	if haveServer {
		r.ServerUserS, r.ServerSysS = srv.User.Seconds(), srv.Sys.Seconds()
		if r.Edits > 0 {
			r.ServerCPUPerEditUS = float64(srv.Total().Microseconds()) / float64(r.Edits)
		}
		if r.Deliveries > 0 {
			r.ServerCPUPerDeliveryUS = float64(srv.Total().Microseconds()) / float64(r.Deliveries)
		}
	}
	var why []string
	cores := float64(runtime.NumCPU())
	if len(clientCPUs) > 0 {
		cores = float64(len(clientCPUs))
	}
	if r.ClientCores >= 0.85*cores {
		why = append(why, fmt.Sprintf("the load generator kept %.2f of its %.0f CPUs busy", r.ClientCores, cores))
	}
	for i, p := range r.LoadGen {
		name := "the load generator"
		if len(r.LoadGen) > 1 {
			name = fmt.Sprintf("load generator process %d of %d", i+1, len(r.LoadGen))
		}
		if p.Cores > 0.85 {
			why = append(why, fmt.Sprintf("%s kept %.2f of a core busy", name, p.Cores))
		}
		// NB: each client decodes every batch its room sends, so a load
		// generator outspends the server even when both idle; more than
		// the server matters once the process is busy itself.
		if s := p.UserS + p.SysS; haveServer && p.Cores >= 0.5 && s > srv.Total().Seconds() {
			why = append(why, fmt.Sprintf("%s used more CPU than the server (%.2f s vs %.2f s)", name, s, srv.Total().Seconds()))
		}
	}
	// Edits are local and never wait for the server: a shortfall means
	// the clients' tickers fired late, in the load generator.
	if float64(r.Edits) < 0.9*scheduled {
		why = append(why, fmt.Sprintf("the load generator made %d of the %.0f edits asked for (%.0f%%)", r.Edits, scheduled, 100*float64(r.Edits)/scheduled))
	}
	if len(why) > 0 {
		r.LoadGenBottleneck = true
		r.Warning = strings.Join(why, "; ") + ": latencies measure it as much as the server (spread the clients over more processes with --procs, pin the server and the clients to separate CPUs, or use fewer clients)"
	}
}

// convergeQuantile returns the q-quantile of sorted samples (nearest rank).
func convergeQuantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// convergeWait waits until cond holds, re-checking whenever ch fires and at
// least every 10ms, or until ctx ends.
func convergeWait(ctx context.Context, ch <-chan struct{}, cond func() bool) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ch:
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

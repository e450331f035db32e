package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	client "github.com/weftsync/weft/clients/go"
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
	// ClientCPUs pins this process, which runs every client, to these CPUs.
	// Default: none (unpinned).
	ClientCPUs []int
	// Logger receives progress. Default: discard.
	Logger *slog.Logger
}

// DefaultConvergeOptions returns the defaults described on each field (the
// issue's floor configuration).
func DefaultConvergeOptions() ConvergeOptions {
	return ConvergeOptions{Clients: 200, Docs: 10, Rate: 10, Duration: 20 * time.Second, Settle: 30 * time.Second, Seed: 1}
}

func (o ConvergeOptions) withDefaults() (ConvergeOptions, error) {
	d := DefaultConvergeOptions()
	o.Clients = cmp.Or(o.Clients, d.Clients)
	o.Docs = cmp.Or(o.Docs, d.Docs)
	o.Rate = cmp.Or(o.Rate, d.Rate)
	o.Duration = cmp.Or(o.Duration, d.Duration)
	o.Settle = cmp.Or(o.Settle, d.Settle)
	o.Seed = cmp.Or(o.Seed, d.Seed)
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
	// counts once for every other subscriber of its document.
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
	// The load generator's (this process's) CPU over the same window, and
	// the cores it kept busy on average.
	ClientUserS float64 `json:"client_user_s"`
	ClientSysS  float64 `json:"client_sys_s"`
	ClientCores float64 `json:"client_cores"`
	// Warning says when the figures measure the load generator rather than
	// the server: it used nearly all of the CPUs it may run on.
	Warning string `json:"warning,omitempty"`
	// Latencies are the sorted edit → every-subscriber latencies (for
	// --plot; not printed).
	Latencies []time.Duration `json:"-"`
}

// convergeEdit is one tracked local edit: when it was made and how many other
// subscribers still lack it.
type convergeEdit struct {
	start   time.Time
	missing int
}

// convergeTracker measures, for every edit of one document, the time until the
// last other subscriber has applied it.
type convergeTracker struct {
	mu        sync.Mutex
	open      map[crdt.ID]*convergeEdit // keyed by the edit's first op id; guarded by mu
	latencies []time.Duration           // guarded by mu
}

func (t *convergeTracker) start(id crdt.ID, receivers int) {
	t.mu.Lock()
	t.open[id] = &convergeEdit{start: time.Now(), missing: receivers}
	t.mu.Unlock()
}

func (t *convergeTracker) arrived(chs []crdt.Change) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range chs {
		ch := &chs[i]
		for s := ch.Seq; s <= ch.End(); s++ {
			id := crdt.ID{Replica: ch.Replica, Seq: s}
			e, ok := t.open[id]
			if !ok {
				continue
			}
			e.missing--
			if e.missing == 0 {
				t.latencies = append(t.latencies, now.Sub(e.start))
				delete(t.open, id)
			}
		}
	}
}

// Converge runs the convergence benchmark: Clients Go clients spread over
// Docs documents each make Rate edits per second for Duration (text
// inserts and deletes, counter adds, register sets); latency is the time
// from an edit to its arrival at every other subscriber of its document.
// At the end it waits (at most Settle) for every replica to be saved and
// all replicas of a document to be identical.
func Converge(ctx context.Context, opts ConvergeOptions) (ConvergeResult, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return ConvergeResult{}, err
	}
	log := o.Logger
	res := ConvergeResult{Clients: o.Clients, Docs: o.Docs}

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
	if err := PinProcess(os.Getpid(), o.ClientCPUs); err != nil {
		return res, err
	}
	if _, err := RaiseFileLimit(uint64(o.Clients)*2 + 256); err != nil {
		return res, err
	}

	// Connect every client and open its document.
	type member struct {
		c   *client.Client
		d   *client.Document
		doc int
	}
	trackers := make([]*convergeTracker, o.Docs)
	subscribers := make([]int, o.Docs)
	for i := range trackers {
		trackers[i] = &convergeTracker{open: map[crdt.ID]*convergeEdit{}}
	}
	for i := range o.Clients {
		subscribers[i%o.Docs]++
	}
	members := make([]member, o.Clients)
	defer func() {
		for _, m := range members {
			if m.c != nil {
				m.c.Close()
			}
		}
	}()
	// Fresh documents per run, so that runs against one --server do not
	// measure each other's leftovers.
	runID := uuid.NewString()[:8]
	connectCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for i := range members {
		copts := client.LocalOptions(url)
		copts.Token = o.Token
		copts.Logger = log
		c, err := client.New(copts)
		if err != nil {
			return res, err
		}
		tr := trackers[i%o.Docs]
		d, err := c.Open(fmt.Sprintf("bench/converge/%s/%d", runID, i%o.Docs), client.DocOptions{
			OnChanges: func(_ *client.Document, chs []crdt.Change) { tr.arrived(chs) },
		})
		if err != nil {
			c.Close()
			return res, err
		}
		members[i] = member{c: c, d: d, doc: i % o.Docs}
	}
	for _, m := range members {
		if err := convergeWait(connectCtx, m.d.Changed(), m.d.Synced); err != nil {
			return res, fmt.Errorf("bench: clients did not connect and sync: %w", err)
		}
	}
	log.Info("clients connected", "clients", o.Clients, "docs", o.Docs)

	// Edit. CPU is measured from here until every replica converged.
	cpu0, err := convergeCPU(serverPID)
	if err != nil {
		return res, err
	}
	wall0 := time.Now()
	runCtx, stop := context.WithTimeout(ctx, o.Duration)
	defer stop()
	var wg sync.WaitGroup
	counts := make([]int, o.Clients)
	errs := make([]error, o.Clients)
	interval := time.Duration(float64(time.Second) / o.Rate)
	for i := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := members[i]
			rng := rand.New(rand.NewPCG(o.Seed, uint64(i)))
			me := m.c.Replica()
			// Random phase so that clients do not edit in lock-step.
			phase := time.NewTimer(time.Duration(rng.Int64N(int64(interval))))
			select {
			case <-phase.C:
			case <-runCtx.Done():
				phase.Stop()
				return
			}
			tick := time.NewTicker(interval)
			defer tick.Stop()
			tr := trackers[m.doc]
			for {
				next := m.d.Seq() + 1
				tr.start(crdt.ID{Replica: me, Seq: next}, subscribers[m.doc]-1)
				if err := m.d.Edit(func(tx *crdt.Tx, doc *crdt.Doc) error { return convergeRandomEdit(tx, doc, rng, i) }); err != nil {
					errs[i] = err
					return
				}
				counts[i]++
				select {
				case <-tick.C:
				case <-runCtx.Done():
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, n := range counts {
		res.Edits += n
	}
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("bench: convergeEdit failed: %w", err)
	}
	log.Info("editing done", "edits", res.Edits)

	// Settle: every replica saved and identical.
	settleCtx, cancelSettle := context.WithTimeout(ctx, o.Settle)
	defer cancelSettle()
	res.Converged = true
	for doc := range o.Docs {
		var group []*client.Document
		for _, m := range members {
			if m.doc == doc {
				group = append(group, m.d)
			}
		}
		if err := convergeWaitEqual(settleCtx, group); err != nil {
			log.Warn("document did not converge", "doc", doc, "err", err)
			res.Converged = false
		}
	}

	cpu1, err := convergeCPU(serverPID)
	if err != nil {
		return res, err
	}
	wall := time.Since(wall0)
	for i, n := range counts {
		res.Deliveries += n * (subscribers[i%o.Docs] - 1)
	}
	if err := res.measureCPU(cpu0, cpu1, wall, serverPID, o.ClientCPUs); err != nil {
		return res, err
	}

	var all []time.Duration
	for _, t := range trackers {
		t.mu.Lock()
		all = append(all, t.latencies...)
		if len(t.open) > 0 {
			log.Warn("edits never reached every subscriber", "count", len(t.open))
			res.Converged = false
		}
		t.mu.Unlock()
	}
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

// convergeCPUSample is the CPU used so far by the server (if pid ≠ 0) and by
// this process.
type convergeCPUSample struct{ server, self CPUTimes }

func convergeCPU(pid int) (convergeCPUSample, error) {
	var s convergeCPUSample
	var err error
	if pid != 0 {
		if s.server, err = ProcessCPU(pid); err != nil {
			return s, err
		}
	}
	s.self, err = SelfCPU()
	return s, err
}

// measureCPU fills the CPU figures from two samples taken wall apart.
func (r *ConvergeResult) measureCPU(a, b convergeCPUSample, wall time.Duration, serverPID int, clientCPUs []int) error {
	self := b.self.Sub(a.self)
	r.ClientUserS, r.ClientSysS = self.User.Seconds(), self.Sys.Seconds()
	r.ClientCores = self.Total().Seconds() / wall.Seconds()
	if serverPID != 0 {
		srv := b.server.Sub(a.server)
		r.ServerUserS, r.ServerSysS = srv.User.Seconds(), srv.Sys.Seconds()
		if r.Edits > 0 {
			r.ServerCPUPerEditUS = float64(srv.Total().Microseconds()) / float64(r.Edits)
		}
		if r.Deliveries > 0 {
			r.ServerCPUPerDeliveryUS = float64(srv.Total().Microseconds()) / float64(r.Deliveries)
		}
		rss, err := RSS(serverPID)
		if err != nil {
			return err
		}
		r.ServerRSSBytes = rss
	}
	cores := float64(runtime.NumCPU())
	if len(clientCPUs) > 0 {
		cores = float64(len(clientCPUs))
	}
	if r.ClientCores >= 0.85*cores {
		r.Warning = fmt.Sprintf("the load generator kept %.2f of its %.0f CPUs busy: latencies measure it as much as the server (pin the server and the clients to separate CPUs, or use fewer clients)", r.ClientCores, cores)
	}
	return nil
}

// convergeQuantile returns the q-quantile of sorted samples (nearest rank).
func convergeQuantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// convergeRandomEdit makes one edit of a typing-like mix: mostly short inserts,
// some deletes, counter adds and register sets.
func convergeRandomEdit(tx *crdt.Tx, doc *crdt.Doc, rng *rand.Rand, who int) error {
	n := doc.TextLen("body")
	switch r := rng.IntN(100); {
	case r < 70 || n < 8:
		word := []string{"a", "bc", "def", "ghij", "é", "∑x", " "}[rng.IntN(7)]
		return tx.Insert("body", rng.IntN(n+1), word)
	case r < 80:
		return tx.Delete("body", rng.IntN(n-2), 1+rng.IntN(2))
	case r < 90:
		return tx.Add("count", int64(rng.IntN(5)-2)|1)
	default:
		// A msgpack positive fixint or uint16: the writer's index.
		return tx.Set("last", []byte{0xcd, byte(who >> 8), byte(who)})
	}
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

// convergeWaitEqual waits until every replica of one document is saved, they
// all have the same version vector, and their contents are identical.
func convergeWaitEqual(ctx context.Context, group []*client.Document) error {
	for _, d := range group {
		if err := d.WaitSaved(ctx); err != nil {
			return err
		}
	}
	same := func() bool {
		v0 := group[0].Version()
		for _, d := range group[1:] {
			if !d.Version().Equal(v0) {
				return false
			}
		}
		return true
	}
	if err := convergeWait(ctx, group[0].Changed(), same); err != nil {
		return fmt.Errorf("version vectors still differ: %w", err)
	}
	s0 := convergeState(group[0])
	for i, d := range group[1:] {
		if s := convergeState(d); s != s0 {
			return fmt.Errorf("replica %d differs from replica 0 at equal versions:\n%s\nvs\n%s", i+1, s, s0)
		}
	}
	return nil
}

// convergeState renders every field of a replica for comparison.
func convergeState(d *client.Document) string {
	var out string
	d.Read(func(doc *crdt.Doc) { out = doc.Describe() })
	return out
}

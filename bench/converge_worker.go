package bench

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	client "github.com/weftsync/weft/clients/go"
	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/internal/editmix"
)

// convergeWorkerConfig is one process's share of a converge run: clients
// First..First+Count-1 of Clients. Every field is chosen by the parent,
// so that all processes edit the same documents of the same run.
type convergeWorkerConfig struct {
	URL, Token, RunID string
	First, Count      int
	Clients, Docs     int
	Rate              float64
	Duration, Settle  time.Duration
	Seed              uint64
	ClientCPUs        []int
}

// convergeStart is one local edit: the sequence number of its first op and
// when it was made (convergeNow).
type convergeStart struct {
	Seq uint64
	At  int64
}

// convergeReplica is what a process reports of one of its clients at the
// end: its edits, what the server acknowledged, and its final state.
type convergeReplica struct {
	Replica crdt.ReplicaID
	Doc     int
	Acked   uint64
	Version crdt.VersionVector
	Digest  [sha256.Size]byte // of crdt.Doc.Describe
	Starts  []convergeStart
}

// convergeArrival says that N subscribers of this process applied the
// change Replica@Seq..End, the last of them at Last (convergeNow).
type convergeArrival struct {
	Replica  crdt.ReplicaID
	Seq, End uint64
	Last     int64
	N        int
}

// convergeEdited is a process's report after editing: per document, the
// last sequence number of each of its writers. Merged over all processes,
// it is the version every replica must reach.
type convergeEdited struct {
	Written []crdt.VersionVector
}

// convergeFinal is a process's report once its replicas reached the target
// version (or the settle bound passed).
type convergeFinal struct {
	PID      int
	Replicas []convergeReplica
	Arrivals []convergeArrival
	// CPU and Wall span editing and settling, as the server's CPU does.
	CPU  CPUTimes
	Wall time.Duration
}

// convergeNow is the time of an edit or an arrival in nanoseconds of
// CLOCK_MONOTONIC, which every process of the machine shares (unlike the
// monotonic reading of time.Now, which counts from this process's start)
// and which no clock adjustment steps. NB: unix.ClockGettime is a real
// system call, not the vDSO; the runtime's monotonic clock is the same
// CLOCK_MONOTONIC read through the vDSO, so one offset taken at start
// turns time.Since into it at the cost of time.Now.
func convergeNow() int64 { return convergeMonoBase + int64(time.Since(convergeTimeBase)) }

var convergeTimeBase, convergeMonoBase = func() (time.Time, int64) {
	var ts unix.Timespec
	t := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic("bench: CLOCK_MONOTONIC: " + err.Error()) // present on every Linux
	}
	return t, ts.Nano()
}()

// convergeRange names one change as one subscriber applied it.
type convergeRange struct {
	first crdt.ID
	end   uint64
}

// convergeTally is when a change last arrived and at how many subscribers.
type convergeTally struct {
	last int64
	n    int
}

// convergeArrivals records the changes the subscribers of one document in
// this process applied. NB: the values hold no pointers, so the map is not
// scanned by the collector of a load generator holding 10⁵ of them.
type convergeArrivals struct {
	mu sync.Mutex
	m  map[convergeRange]convergeTally // guarded by mu
}

func (a *convergeArrivals) add(chs []crdt.Change) {
	now := convergeNow()
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range chs {
		ch := &chs[i]
		k := convergeRange{first: crdt.ID{Replica: ch.Replica, Seq: ch.Seq}, end: ch.End()}
		t := a.m[k]
		t.n++
		t.last = max(t.last, now)
		a.m[k] = t
	}
}

// convergeMember is one client with its document.
type convergeMember struct {
	c      *client.Client
	d      *client.Document
	index  int // among all clients of the run
	doc    int
	starts []convergeStart // written only by the member's editing goroutine
}

// convergeWorker runs one process's share of the clients. Its methods are
// called in order: startConvergeWorker, edit, finish, close.
type convergeWorker struct {
	cfg      convergeWorkerConfig
	log      *slog.Logger
	members  []*convergeMember
	arrivals []*convergeArrivals // by document
	cpu0     CPUTimes
	wall0    time.Time
	settled  time.Time // deadline for saving and converging, set by edit
}

// startConvergeWorker pins this process, connects the share's clients, opens
// their documents and returns once every one has synced.
func startConvergeWorker(ctx context.Context, cfg convergeWorkerConfig, log *slog.Logger) (*convergeWorker, error) {
	if err := PinProcess(os.Getpid(), cfg.ClientCPUs); err != nil {
		return nil, err
	}
	if _, err := RaiseFileLimit(uint64(cfg.Count)*2 + 256); err != nil {
		return nil, err
	}
	w := &convergeWorker{cfg: cfg, log: log, arrivals: make([]*convergeArrivals, cfg.Docs)}
	for i := range w.arrivals {
		w.arrivals[i] = &convergeArrivals{m: map[convergeRange]convergeTally{}}
	}
	connectCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for i := cfg.First; i < cfg.First+cfg.Count; i++ {
		copts := client.LocalOptions(cfg.URL)
		copts.Token = cfg.Token
		copts.Logger = log
		c, err := client.New(copts)
		if err != nil {
			w.close()
			return nil, err
		}
		arr := w.arrivals[i%cfg.Docs]
		d, err := c.Open(convergeDocID(cfg.RunID, i%cfg.Docs), client.DocOptions{
			OnChanges: func(_ *client.Document, chs []crdt.Change) { arr.add(chs) },
		})
		if err != nil {
			c.Close()
			w.close()
			return nil, err
		}
		w.members = append(w.members, &convergeMember{c: c, d: d, index: i, doc: i % cfg.Docs})
	}
	for _, m := range w.members {
		if err := convergeWait(connectCtx, m.d.Changed(), m.d.Synced); err != nil {
			w.close()
			return nil, fmt.Errorf("bench: clients did not connect and sync: %w", err)
		}
	}
	return w, nil
}

// convergeDocID names document doc of run runID: fresh documents per run,
// so that runs against one --server do not measure each other's leftovers.
func convergeDocID(runID string, doc int) string {
	return fmt.Sprintf("bench/converge/%s/%d", runID, doc)
}

// edit makes the share's edits for Duration, then waits (until the settle
// deadline) for the server to acknowledge them all, and reports what each
// writer wrote.
func (w *convergeWorker) edit(ctx context.Context) (convergeEdited, error) {
	cfg := w.cfg
	var err error
	if w.cpu0, err = SelfCPU(); err != nil {
		return convergeEdited{}, err
	}
	w.wall0 = time.Now()
	runCtx, stop := context.WithTimeout(ctx, cfg.Duration)
	defer stop()
	var wg sync.WaitGroup
	errs := make([]error, len(w.members))
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	for k, m := range w.members {
		wg.Go(func() { errs[k] = m.run(runCtx, cfg.Seed, interval) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return convergeEdited{}, fmt.Errorf("bench: convergeEdit failed: %w", err)
	}
	w.settled = time.Now().Add(cfg.Settle)
	sctx, cancel := context.WithDeadline(ctx, w.settled)
	defer cancel()
	out := convergeEdited{Written: make([]crdt.VersionVector, cfg.Docs)}
	for i := range out.Written {
		out.Written[i] = crdt.VersionVector{}
	}
	for _, m := range w.members {
		if err := m.d.WaitSaved(sctx); err != nil {
			// Not fatal: the replicas that miss these edits do not
			// converge, and the result says so.
			w.log.Warn("a client's edits were not all acknowledged", "client", m.index, "err", err)
		}
		if s := m.d.Seq(); s > 0 {
			out.Written[m.doc][m.c.Replica()] = s
		}
	}
	return out, ctx.Err()
}

// run is one client's editing loop: an edit every interval from a random
// phase until ctx ends.
func (m *convergeMember) run(ctx context.Context, seed uint64, interval time.Duration) error {
	rng := rand.New(rand.NewPCG(seed, uint64(m.index)))
	// Random phase so that clients do not edit in lock-step.
	phase := time.NewTimer(time.Duration(rng.Int64N(int64(interval))))
	select {
	case <-phase.C:
	case <-ctx.Done():
		phase.Stop()
		return nil
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		s := convergeStart{Seq: m.d.Seq() + 1, At: convergeNow()}
		if err := m.d.Edit(func(tx *crdt.Tx, doc *crdt.Doc) error { return editmix.Edit(tx, doc, rng, m.index) }); err != nil {
			return err
		}
		m.starts = append(m.starts, s)
		select {
		case <-tick.C:
		case <-ctx.Done():
			return nil
		}
	}
}

// finish waits (until the settle deadline) for every replica of the share to
// hold target, the version of its document over all processes, and reports
// the replicas, what arrived, and the CPU used since edit began.
func (w *convergeWorker) finish(ctx context.Context, target []crdt.VersionVector) (convergeFinal, error) {
	if len(target) != w.cfg.Docs {
		return convergeFinal{}, fmt.Errorf("bench: target for %d documents, want %d", len(target), w.cfg.Docs)
	}
	sctx, cancel := context.WithDeadline(ctx, w.settled)
	defer cancel()
	for _, m := range w.members {
		covers := func() bool { return m.d.Version().Covers(target[m.doc]) }
		if err := convergeWait(sctx, m.d.Changed(), covers); err != nil {
			w.log.Warn("a replica did not receive every edit", "client", m.index, "err", err)
		}
	}
	cpu1, err := SelfCPU()
	if err != nil {
		return convergeFinal{}, err
	}
	f := convergeFinal{PID: os.Getpid(), CPU: cpu1.Sub(w.cpu0), Wall: time.Since(w.wall0)}
	for _, m := range w.members {
		r := convergeReplica{Replica: m.c.Replica(), Doc: m.doc, Acked: m.d.Acked(), Starts: m.starts}
		m.d.Read(func(doc *crdt.Doc) {
			r.Version = doc.Version()
			r.Digest = sha256.Sum256([]byte(doc.Describe()))
		})
		f.Replicas = append(f.Replicas, r)
	}
	for _, a := range w.arrivals {
		a.mu.Lock()
		for k, t := range a.m {
			f.Arrivals = append(f.Arrivals, convergeArrival{Replica: k.first.Replica, Seq: k.first.Seq, End: k.end, Last: t.last, N: t.n})
		}
		a.mu.Unlock()
	}
	return f, ctx.Err()
}

// close disconnects every client of the share.
func (w *convergeWorker) close() {
	for _, m := range w.members {
		m.c.Close()
	}
	w.members = nil
}

// convergeOutcome is what the reports of every process add up to.
type convergeOutcome struct {
	edits, acked, lost int
	// undelivered: edits that some other subscriber never applied;
	// duplicated: arrivals beyond one per other subscriber.
	undelivered, duplicated int
	// deliveries[i]: arrivals of edits at the subscribers of process i.
	deliveries []int
	latencies  []time.Duration // unsorted
	// differing: documents whose replicas differ in version or content.
	differing int
}

// convergeCombine matches every edit (by the id of its first op) with its
// arrivals at the other subscribers of its document in every process:
// latency is the last arrival's time minus the edit's, both on the
// machine's one monotonic clock. An acknowledged edit is lost if some
// replica of its document lacks it at the end.
func convergeCombine(finals []convergeFinal) convergeOutcome {
	out := convergeOutcome{deliveries: make([]int, len(finals))}
	type edit struct {
		at, last int64
		doc, got int
	}
	subscribers := map[int]int{}
	replicas := map[int][]*convergeReplica{}
	var n int
	for i := range finals {
		for j := range finals[i].Replicas {
			r := &finals[i].Replicas[j]
			subscribers[r.Doc]++
			replicas[r.Doc] = append(replicas[r.Doc], r)
			n += len(r.Starts)
		}
	}
	edits := make(map[crdt.ID]*edit, n)
	for _, rs := range replicas {
		for _, r := range rs {
			for _, s := range r.Starts {
				edits[crdt.ID{Replica: r.Replica, Seq: s.Seq}] = &edit{at: s.At, doc: r.Doc}
			}
		}
	}
	out.edits = len(edits)
	for i := range finals {
		for _, a := range finals[i].Arrivals {
			// A change may hold several edits (a batch sent together);
			// the ids of the ops between edits match nothing.
			for s := a.Seq; s <= a.End; s++ {
				e, ok := edits[crdt.ID{Replica: a.Replica, Seq: s}]
				if !ok {
					continue
				}
				e.got += a.N
				e.last = max(e.last, a.Last)
				out.deliveries[i] += a.N
			}
		}
	}
	for _, e := range edits {
		switch need := subscribers[e.doc] - 1; {
		case e.got < need:
			out.undelivered++
		case e.got > need:
			out.duplicated++
		default:
			if need > 0 {
				out.latencies = append(out.latencies, time.Duration(e.last-e.at))
			}
		}
	}
	for _, rs := range replicas {
		for _, r := range rs {
			// The least any replica of the document holds of r's edits.
			least := r.Version[r.Replica]
			for _, o := range rs {
				least = min(least, o.Version[r.Replica])
			}
			for _, s := range r.Starts {
				if s.Seq <= r.Acked {
					out.acked++
					if s.Seq > least {
						out.lost++
					}
				}
			}
		}
		for _, o := range rs[1:] {
			if !o.Version.Equal(rs[0].Version) || o.Digest != rs[0].Digest {
				out.differing++
				break
			}
		}
	}
	return out
}

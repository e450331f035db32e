package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
	"github.com/weftsync/weft/internal/traces"
)

// DurableStore is what the store benchmark drives: the document store the
// sync server uses (syncserver.Store, implemented by storage.Store).
// Declared here so that bench does not import storage; cmd/weft wires it.
type DurableStore interface {
	Load(ctx context.Context, doc string) (snapshot []byte, batches [][]byte, err error)
	Append(ctx context.Context, doc string, batch []byte) (logBytes int64, err error)
	WriteSnapshot(ctx context.Context, doc string, snapshot []byte) error
}

// StoreOpener opens a store in an empty or existing directory.
type StoreOpener func(dir string) (DurableStore, io.Closer, error)

// StoreOptions configure RunStore.
type StoreOptions struct {
	// Open opens the store under test. Required.
	Open StoreOpener
	// Baseline, when set, measures bare synced writes of the same count
	// and size on the same disk (storage.MeasureBareSync), run alternately
	// with the store so that the result also reads as a ratio. Default: nil.
	Baseline func(ctx context.Context, dir string, writers, perWriter, valueBytes int) (perSec float64, err error)
	// Dir is where the benchmark creates its stores (each run a fresh
	// subdirectory, removed afterwards). Default: os.TempDir().
	Dir string
	// Writers is the number of concurrent writers, each on its own
	// document, each waiting for the ack of a batch before the next.
	// Default: 64.
	Writers int
	// Batches is the number of batches each writer appends per run.
	// Default: 500.
	Batches int
	// Runs is the number of timed runs after one warm-up; results are
	// medians. Default: 3.
	Runs int
	// Trace is the trace whose final document is cold-loaded.
	// Default: automerge-paper.json.gz.
	Trace string
	// Timeout bounds the whole benchmark. Default: 5 minutes.
	Timeout time.Duration
}

// StoreResult is what `weft bench store` reports.
type StoreResult struct {
	// AckedPerS is durable (fsynced) acknowledged batches per second over
	// all writers: median of the runs.
	AckedPerS float64 `json:"acked_per_s"`
	Writers   int     `json:"writers"`
	Documents int     `json:"documents"`
	// Acked is the number of batches acknowledged in one run.
	Acked int `json:"acked"`
	// BatchBytes is the mean encoded size of one batch.
	BatchBytes float64 `json:"batch_bytes"`
	// AckP50MS and AckP99MS are the latency of one Append (median run).
	AckP50MS float64 `json:"ack_p50_ms"`
	AckP99MS float64 `json:"ack_p99_ms"`
	// BareSyncPerS is the bare-Pebble baseline (StoreOptions.Baseline) and
	// VsBare the median over runs of acked_per_s / baseline of the same run
	// (0 when no baseline was measured).
	BareSyncPerS float64 `json:"bare_sync_per_s,omitempty"`
	VsBare       float64 `json:"vs_bare,omitempty"`

	// ColdLoadMS is the time to Load the trace's document from a freshly
	// reopened store and decode its snapshot (median of the runs).
	ColdLoadMS float64 `json:"cold_load_ms"`
	// StoreLoadMS is the Store.Load part of ColdLoadMS, DecodeMS the
	// codec.DecodeSnapshot part (medians of the same runs).
	StoreLoadMS   float64 `json:"store_load_ms"`
	DecodeMS      float64 `json:"decode_ms"`
	Trace         string  `json:"trace"`
	SnapshotBytes int     `json:"snapshot_bytes"`

	// OK says every acked batch read back intact and the cold-loaded
	// document equals the trace's final text.
	OK    bool   `json:"ok"`
	Runs  int    `json:"runs"`
	Error string `json:"error,omitempty"`
}

func (o StoreOptions) withDefaults() (StoreOptions, error) {
	if o.Open == nil {
		return o, errors.New("bench: StoreOptions.Open is required")
	}
	if o.Dir == "" {
		o.Dir = os.TempDir()
	}
	if o.Writers <= 0 {
		o.Writers = 64
	}
	if o.Batches <= 0 {
		o.Batches = 500
	}
	if o.Runs <= 0 {
		o.Runs = 3
	}
	if o.Trace == "" {
		o.Trace = "automerge-paper.json.gz"
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	return o, nil
}

// RunStore measures durable appends with concurrent writers and the cold
// load of a real document.
func RunStore(ctx context.Context, opts StoreOptions) StoreResult {
	o, err := opts.withDefaults()
	res := StoreResult{Writers: o.Writers, Documents: o.Writers, Runs: o.Runs, Trace: o.Trace}
	if err != nil {
		res.Error = err.Error()
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if err := storeAppends(ctx, o, &res); err != nil {
		res.Error = err.Error()
		return res
	}
	if err := storeColdLoad(ctx, o, &res); err != nil {
		res.Error = err.Error()
		return res
	}
	res.OK = true
	return res
}

// storeTypingBatches returns n encoded batches of one replica typing a sentence
// in a text and bumping a counter now and then, as an editor sends them: each
// batch is the delta since the previous one.
func storeTypingBatches(replica crdt.ReplicaID, n int) ([][]byte, error) {
	wall := &hlc.ManualWall{Millis: 1_700_000_000_000}
	d := crdt.NewDoc(replica, hlc.NewClock(wall.Read, 0), crdt.Options{})
	const sentence = "the quick brown fox jumps over the lazy dog. "
	out := make([][]byte, 0, n)
	v := d.Version()
	pos := 0
	for i := range n {
		wall.Millis += 120
		tx := d.Begin()
		// Mostly one or two typed characters, sometimes a backspace or a
		// counter (e.g. a word count), like keystroke batches.
		switch {
		case i%17 == 16 && pos > 0:
			if err := tx.Delete("body", pos-1, 1); err != nil {
				return nil, err
			}
			pos--
		case i%29 == 28:
			if err := tx.Add("words", 1); err != nil {
				return nil, err
			}
		default:
			k := 1 + i%2
			s := ""
			for j := range k {
				s += string(sentence[(i+j)%len(sentence)])
			}
			if err := tx.Insert("body", pos, s); err != nil {
				return nil, err
			}
			pos += k
		}
		if err := tx.Commit(); err != nil {
			return nil, err
		}
		out = append(out, codec.EncodeChangeSeq(d.EachChangeSince(v)))
		v = d.Version()
	}
	return out, nil
}

func storeAppends(ctx context.Context, o StoreOptions, res *StoreResult) error {
	batches := make([][][]byte, o.Writers)
	var total int
	for w := range batches {
		b, err := storeTypingBatches(crdt.ReplicaID{0xbe, 0x0c, 14: byte(w >> 8), 15: byte(w) + 1}, o.Batches)
		if err != nil {
			return fmt.Errorf("bench store: preparing batches: %w", err)
		}
		batches[w] = b
		for _, x := range b {
			total += len(x)
		}
	}
	res.BatchBytes = float64(total) / float64(o.Writers*o.Batches)
	res.Acked = o.Writers * o.Batches

	var rates, p50s, p99s, bares, ratios []float64
	for run := 0; run <= o.Runs; run++ {
		var bare float64
		if o.Baseline != nil {
			dir, err := os.MkdirTemp(o.Dir, "weft-bench-bare-")
			if err != nil {
				return fmt.Errorf("bench store: %w", err)
			}
			bare, err = o.Baseline(ctx, dir, o.Writers, o.Batches, int(res.BatchBytes))
			os.RemoveAll(dir)
			if err != nil {
				return fmt.Errorf("bench store: baseline: %w", err)
			}
		}
		rate, lat, err := storeAppendRun(ctx, o, batches)
		if err != nil {
			return err
		}
		if run == 0 {
			continue // warm-up
		}
		rates = append(rates, rate)
		p50s = append(p50s, storeQuantile(lat, 0.5))
		p99s = append(p99s, storeQuantile(lat, 0.99))
		if bare > 0 {
			bares = append(bares, bare)
			ratios = append(ratios, rate/bare)
		}
	}
	res.BareSyncPerS = median(bares)
	res.VsBare = median(ratios)
	res.AckedPerS = median(rates)
	res.AckP50MS = median(p50s)
	res.AckP99MS = median(p99s)
	return nil
}

// storeAppendRun opens a fresh store, runs every writer to completion, checks
// that each document reads back exactly its batches, and returns the
// acknowledged rate and the per-Append latencies in ms.
func storeAppendRun(ctx context.Context, o StoreOptions, batches [][][]byte) (float64, []float64, error) {
	dir, err := os.MkdirTemp(o.Dir, "weft-bench-store-")
	if err != nil {
		return 0, nil, fmt.Errorf("bench store: %w", err)
	}
	defer os.RemoveAll(dir)
	st, closer, err := o.Open(dir)
	if err != nil {
		return 0, nil, fmt.Errorf("bench store: open: %w", err)
	}
	defer closer.Close()

	lat := make([][]float64, len(batches))
	errs := make([]error, len(batches))
	var wg sync.WaitGroup
	start := time.Now()
	for w := range batches {
		wg.Go(func() {
			doc := fmt.Sprintf("bench/doc-%03d", w)
			l := make([]float64, 0, len(batches[w]))
			for _, b := range batches[w] {
				t0 := time.Now()
				if _, err := st.Append(ctx, doc, b); err != nil {
					errs[w] = fmt.Errorf("bench store: append to %s: %w", doc, err)
					return
				}
				l = append(l, ms(time.Since(t0)))
			}
			lat[w] = l
		})
	}
	wg.Wait()
	el := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, nil, err
	}
	var all []float64
	n := 0
	for w := range batches {
		all = append(all, lat[w]...)
		n += len(batches[w])
		doc := fmt.Sprintf("bench/doc-%03d", w)
		snap, got, err := st.Load(ctx, doc)
		if err != nil {
			return 0, nil, fmt.Errorf("bench store: load %s: %w", doc, err)
		}
		if snap != nil || len(got) != len(batches[w]) {
			return 0, nil, fmt.Errorf("bench store: %s read back %d batches, %d acked", doc, len(got), len(batches[w]))
		}
		for i := range got {
			if string(got[i]) != string(batches[w][i]) {
				return 0, nil, fmt.Errorf("bench store: %s batch %d differs from what was acked", doc, i)
			}
		}
	}
	if err := closer.Close(); err != nil {
		return 0, nil, fmt.Errorf("bench store: close: %w", err)
	}
	return float64(n) / el.Seconds(), all, nil
}

func storeColdLoad(ctx context.Context, o StoreOptions, res *StoreResult) error {
	tr, err := traces.Load(o.Trace)
	if err != nil {
		return fmt.Errorf("bench store: %w", err)
	}
	d, err := ReplayTrace(tr, wallsOf(tr))
	if err != nil {
		return fmt.Errorf("bench store: replaying %s: %w", o.Trace, err)
	}
	if d.Text("body") != tr.EndContent {
		return fmt.Errorf("bench store: replaying %s gave the wrong text", o.Trace)
	}
	snap := codec.EncodeSnapshot(d)
	res.SnapshotBytes = len(snap)
	const doc = "papers/automerge"

	dir, err := os.MkdirTemp(o.Dir, "weft-bench-load-")
	if err != nil {
		return fmt.Errorf("bench store: %w", err)
	}
	defer os.RemoveAll(dir)
	st, closer, err := o.Open(dir)
	if err != nil {
		return fmt.Errorf("bench store: open: %w", err)
	}
	if err := st.WriteSnapshot(ctx, doc, snap); err != nil {
		closer.Close()
		return fmt.Errorf("bench store: write snapshot: %w", err)
	}
	if err := closer.Close(); err != nil {
		return fmt.Errorf("bench store: close: %w", err)
	}

	var loads, storeLoads, decodes []float64
	for run := 0; run <= o.Runs; run++ {
		st, closer, err := o.Open(dir) // a restart: nothing cached in the process
		if err != nil {
			return fmt.Errorf("bench store: reopen: %w", err)
		}
		runtime.GC()
		start := time.Now()
		s, batches, err := st.Load(ctx, doc)
		loadEl := time.Since(start)
		var loaded *crdt.Doc
		if err == nil {
			loaded, err = codec.DecodeSnapshot(s, crdt.ReplicaID{0xc0, 15: 1}, hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
		}
		el := time.Since(start)
		cerr := closer.Close()
		if err != nil {
			return fmt.Errorf("bench store: cold load: %w", err)
		}
		if cerr != nil {
			return fmt.Errorf("bench store: close: %w", cerr)
		}
		if len(batches) != 0 || loaded.Text("body") != tr.EndContent {
			return fmt.Errorf("bench store: cold-loaded document differs from the stored one")
		}
		if run > 0 {
			loads = append(loads, ms(el))
			storeLoads = append(storeLoads, ms(loadEl))
			decodes = append(decodes, ms(el-loadEl))
		}
	}
	res.ColdLoadMS = median(loads)
	res.StoreLoadMS = median(storeLoads)
	res.DecodeMS = median(decodes)
	return nil
}

// storeQuantile returns the q-quantile of xs (nearest rank below).
func storeQuantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q * float64(len(s)-1))
	return s[i]
}

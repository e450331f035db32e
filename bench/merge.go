package bench

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/metrics"
	"time"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
)

// MergeResult is what `weft bench merge` reports.
type MergeResult struct {
	Edits      int     `json:"edits"`
	DeltaBytes int     `json:"delta_bytes"`
	MergeMS    float64 `json:"merge_ms"`
	// GCCycles is the median number of garbage collections that ran
	// during a timed merge: a collection during the merge costs it more
	// than its own CPU (see docs/performance.md), so a time is read
	// with it.
	GCCycles float64 `json:"gc_cycles"`
	OK       bool    `json:"ok"`
	Runs     int     `json:"runs"`
	Error    string  `json:"error,omitempty"`
}

// MergeOptions configure RunMerge.
type MergeOptions struct {
	// Edits each replica makes while offline. Default: 10000.
	Edits int
	// Runs is the number of timed runs after one warm-up. Default: 5.
	Runs int
	// Seed for the random edits. Default: 1.
	Seed uint64
}

// forkedPair returns two replicas holding the same 1,000-character document,
// each then edited offline with n random single-character edits (70 %
// inserts), each edit its own transaction.
func forkedPair(n int, seed uint64) (a, b *crdt.Doc, err error) {
	wa, wb := &hlc.ManualWall{Millis: 1_700_000_000_000}, &hlc.ManualWall{Millis: 1_700_000_000_000}
	a = crdt.NewDoc(crdt.ReplicaID{0xa, 15: 1}, hlc.NewClock(wa.Read, 0), crdt.Options{})
	b = crdt.NewDoc(crdt.ReplicaID{0xb, 15: 2}, hlc.NewClock(wb.Read, 0), crdt.Options{})
	rng := rand.New(rand.NewPCG(seed, 99))
	base := make([]byte, 1000)
	for i := range base {
		base[i] = byte('a' + rng.IntN(26))
	}
	tx := a.Begin()
	if err := tx.Insert("body", 0, string(base)); err != nil {
		return nil, nil, err
	}
	tx.Commit()
	if err := b.Apply(a.ChangesSince(nil)...); err != nil {
		return nil, nil, err
	}
	for _, x := range []struct {
		d *crdt.Doc
		w *hlc.ManualWall
	}{{a, wa}, {b, wb}} {
		for i := 0; i < n; i++ {
			x.w.Millis += int64(rng.IntN(200)) // typing pace
			tx := x.d.Begin()
			l := x.d.TextLen("body")
			if l == 0 || rng.IntN(10) < 7 {
				err = tx.Insert("body", rng.IntN(l+1), string(rune('a'+rng.IntN(26))))
			} else {
				err = tx.Delete("body", rng.IntN(l), 1)
			}
			if err != nil {
				return nil, nil, err
			}
			tx.Commit()
		}
	}
	return a, b, nil
}

// encodeDelta encodes what from holds and to lacks straight from from's
// log, in one pass, its tables and columns sized for the delta
// (Doc.SizeSince) rather than grown.
func encodeDelta(from, to *crdt.Doc) []byte {
	v := to.Version()
	ops, inserts := from.SizeSince(v)
	return codec.EncodeChangeSeqSize(from.EachChangeSince(v), ops, inserts)
}

// RunMerge measures exchanging the deltas of two replicas that edited
// offline: encoding, decoding and applying both directions.
func RunMerge(opts MergeOptions) MergeResult {
	if opts.Edits <= 0 {
		opts.Edits = 10000
	}
	if opts.Runs <= 0 {
		opts.Runs = 5
	}
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	res := MergeResult{Edits: opts.Edits, Runs: opts.Runs, OK: true}
	var times, gcs []float64
	// The collector's automatic cycles (runtime.GC's are forced ones),
	// read without stopping the world and without allocating.
	gc := []metrics.Sample{{Name: "/gc/cycles/automatic:gc-cycles"}}
	cycles := func() uint64 {
		metrics.Read(gc)
		return gc[0].Value.Uint64()
	}
	for run := 0; run <= opts.Runs; run++ {
		a, b, err := forkedPair(opts.Edits, opts.Seed)
		if err != nil {
			res.Error, res.OK = err.Error(), false
			return res
		}
		runtime.GC() // the forks' garbage is setup, not merge work
		gc0 := cycles()
		start := time.Now()
		// Each side exports its delta straight from its log, in one
		// pass, without building a []Change. (The sync server's catch-up
		// still builds the changes, to cut them into frames.)
		ab := encodeDelta(a, b)
		ba := encodeDelta(b, a)
		// Each applies the other's change by change as it is decoded,
		// never holding a []Change, as the server replays a stored log
		// when it loads a document.
		err1 := b.ApplySeq(codec.ChangeSeq(ab))
		err2 := a.ApplySeq(codec.ChangeSeq(ba))
		el := time.Since(start)
		// A cycle is counted when it ends, and one that starts late in
		// the merge ends after it: runtime.GC waits for it first.
		runtime.GC()
		gc1 := cycles()
		if err1 != nil || err2 != nil {
			res.Error, res.OK = fmt.Sprint(err1, err2), false
			return res
		}
		if run > 0 {
			times = append(times, ms(el))
			gcs = append(gcs, float64(gc1-gc0))
		}
		res.DeltaBytes = len(ab)
		if a.Text("body") != b.Text("body") || a.Pending()+b.Pending() != 0 {
			res.OK = false
		}
	}
	res.MergeMS = median(times)
	res.GCCycles = median(gcs)
	return res
}

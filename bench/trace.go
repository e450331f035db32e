package bench

import (
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
	"github.com/weftsync/weft/internal/traces"
)

// TraceResult is what `weft bench trace` reports.
type TraceResult struct {
	Trace        string  `json:"trace"`
	Patches      int     `json:"patches"`
	OK           bool    `json:"ok"`
	ReplayMS     float64 `json:"replay_ms"`
	EncodeMS     float64 `json:"encode_ms"`
	EncodedBytes int     `json:"encoded_bytes"`
	DecodeMS     float64 `json:"decode_ms"`
	HeapBytes    uint64  `json:"heap_bytes"` // live heap of the replayed document (after GC, less the loaded trace)
	Runs         int     `json:"runs"`
	Error        string  `json:"error,omitempty"`
}

// TraceOptions configure RunTrace.
type TraceOptions struct {
	// Runs is the number of timed runs (after one warm-up); the result
	// quotes their median. Default: 5.
	Runs int
}

// replica is the replica id traces replay as.
var replica = crdt.ReplicaID{0xaa, 0x01, 15: 0x01}

// ReplayTrace applies every transaction of a sequential trace to a new
// document as one local transaction each, through the public API, with the
// trace's own timestamps as the wall clock.
func ReplayTrace(tr *traces.Trace, walls []int64) (*crdt.Doc, error) {
	wall := &hlc.ManualWall{}
	d := crdt.NewDoc(replica, hlc.NewClock(wall.Read, 0), crdt.Options{})
	if tr.StartContent != "" {
		tx := d.Begin()
		if err := tx.Insert("body", 0, tr.StartContent); err != nil {
			return nil, err
		}
		tx.Commit()
	}
	for i := range tr.Txns {
		wall.Millis = walls[i]
		tx := d.Begin()
		for _, p := range tr.Txns[i].Patches {
			if p.Del > 0 {
				if err := tx.Delete("body", p.Pos, p.Del); err != nil {
					return nil, fmt.Errorf("txn %d: %w", i, err)
				}
			}
			if p.Ins != "" {
				if err := tx.Insert("body", p.Pos, p.Ins); err != nil {
					return nil, fmt.Errorf("txn %d: %w", i, err)
				}
			}
		}
		if err := tx.Commit(); err != nil {
			return nil, err
		}
	}
	return d, nil
}

func wallsOf(tr *traces.Trace) []int64 {
	w := make([]int64, len(tr.Txns))
	for i := range tr.Txns {
		w[i] = tr.Txns[i].WallMillis()
	}
	return w
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// RunTrace replays a sequential trace, checks the result, and measures the
// snapshot encoding.
func RunTrace(tr *traces.Trace, opts TraceOptions) TraceResult {
	if opts.Runs <= 0 {
		opts.Runs = 5
	}
	res := TraceResult{Trace: tr.Name, Patches: tr.Patches(), Runs: opts.Runs}
	fail := func(err error) TraceResult {
		res.Error = err.Error()
		return res
	}
	walls := wallsOf(tr)
	var d *crdt.Doc
	var replay []float64
	var baseline uint64
	for run := 0; run <= opts.Runs; run++ {
		d = nil
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		baseline = m.HeapAlloc // the trace itself, and nothing else of ours
		start := time.Now()
		var err error
		d, err = ReplayTrace(tr, walls)
		el := time.Since(start)
		if err != nil {
			return fail(err)
		}
		if run > 0 {
			replay = append(replay, ms(el))
		}
	}
	res.ReplayMS = median(replay)
	res.OK = d.Text("body") == tr.EndContent

	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	if m.HeapAlloc > baseline {
		res.HeapBytes = m.HeapAlloc - baseline
	}
	runtime.KeepAlive(d)
	runtime.KeepAlive(walls) // part of the baseline

	var enc, dec []float64
	var data []byte
	// Each timed run starts from a collected heap, as the replay runs do, so
	// one run does not pay for the previous run's garbage.
	for run := 0; run <= opts.Runs; run++ {
		runtime.GC()
		start := time.Now()
		data = codec.EncodeSnapshot(d)
		if run > 0 {
			enc = append(enc, ms(time.Since(start)))
		}
	}
	res.EncodedBytes = len(data)
	res.EncodeMS = median(enc)
	for run := 0; run <= opts.Runs; run++ {
		runtime.GC()
		start := time.Now()
		e, err := codec.DecodeSnapshot(data, crdt.ReplicaID{0xbb, 15: 1}, hlc.NewClock((&hlc.ManualWall{}).Read, 0), crdt.Options{})
		el := time.Since(start)
		if err != nil {
			return fail(err)
		}
		if run > 0 {
			dec = append(dec, ms(el))
		}
		if e.Text("body") != tr.EndContent {
			res.OK = false
		}
	}
	res.DecodeMS = median(dec)
	return res
}

package bench

import (
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
)

// gc_cycles counts the collections that ran during the timed merges:
// none with the collector off, at least one in each merge when the heap
// may grow by only 1 % (the merge allocates far more than that; the
// pacer's floor lets a small heap grow by a megabyte or so, hence a
// merge of 5,000 edits, which allocates about 2 MB).
func TestMergeCountsGCCycles(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	if r := RunMerge(MergeOptions{Edits: 5000, Runs: 3}); !r.OK || r.GCCycles != 0 {
		t.Errorf("collector off: ok %v (%s), %v cycles a merge, want 0", r.OK, r.Error, r.GCCycles)
	}
	debug.SetGCPercent(1)
	if r := RunMerge(MergeOptions{Edits: 5000, Runs: 3}); !r.OK || r.GCCycles < 1 {
		t.Errorf("GOGC=1: ok %v (%s), %v cycles a merge, want at least 1", r.OK, r.Error, r.GCCycles)
	}
}

// The merge benchmark's phases, each timed alone on the same forked pair
// (10,000 offline edits each side), so that a profile or benchstat shows
// which one moved. Setup is excluded from the timer.
func BenchmarkMergePhases(b *testing.B) {
	phase := func(name string, run func(b *testing.B)) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			run(b)
		})
	}
	fork := func(b *testing.B) (a, c *crdt.Doc) {
		b.StopTimer()
		x, y, err := forkedPair(10000, 1)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC() // as RunMerge does: the forks' garbage is setup
		b.StartTimer()
		return x, y
	}
	// export is what RunMerge times: each delta encoded straight from
	// the log. changes-since and encode are the same work through a slice
	// of changes (as syncproto's chunked sends do).
	phase("export", func(b *testing.B) {
		for range b.N {
			x, y := fork(b)
			encodeDelta(x, y)
			encodeDelta(y, x)
		}
	})
	phase("changes-since", func(b *testing.B) {
		for range b.N {
			x, y := fork(b)
			x.ChangesSince(y.Version())
			y.ChangesSince(x.Version())
		}
	})
	phase("encode", func(b *testing.B) {
		x, y := fork(b)
		cx, cy := x.ChangesSince(y.Version()), y.ChangesSince(x.Version())
		b.ResetTimer()
		for range b.N {
			codec.EncodeChanges(cx)
			codec.EncodeChanges(cy)
		}
	})
	phase("decode", func(b *testing.B) {
		x, y := fork(b)
		ex, ey := codec.EncodeChanges(x.ChangesSince(y.Version())), codec.EncodeChanges(y.ChangesSince(x.Version()))
		b.ResetTimer()
		for range b.N {
			if _, err := codec.DecodeChanges(ex); err != nil {
				b.Fatal(err)
			}
			if _, err := codec.DecodeChanges(ey); err != nil {
				b.Fatal(err)
			}
		}
	})
	// decode-apply is what RunMerge times after export: each side reads
	// the other's delta change by change (ApplySeq over ChangeSeq).
	phase("decode-apply", func(b *testing.B) {
		for range b.N {
			x, y := fork(b)
			b.StopTimer()
			ex := encodeDelta(x, y)
			ey := encodeDelta(y, x)
			b.StartTimer()
			if err := y.ApplySeq(codec.ChangeSeq(ex)); err != nil {
				b.Fatal(err)
			}
			if err := x.ApplySeq(codec.ChangeSeq(ey)); err != nil {
				b.Fatal(err)
			}
		}
	})
	phase("apply", func(b *testing.B) {
		for range b.N {
			x, y := fork(b)
			b.StopTimer()
			cx, cy := x.ChangesSince(y.Version()), y.ChangesSince(x.Version())
			b.StartTimer()
			if err := y.Apply(cx...); err != nil {
				b.Fatal(err)
			}
			if err := x.Apply(cy...); err != nil {
				b.Fatal(err)
			}
		}
	})
}

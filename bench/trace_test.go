package bench

import (
	"runtime"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
	"github.com/weftsync/weft/internal/traces"
)

// Loading the automerge-paper document from its snapshot: the decode_ms of
// `weft bench trace`, alone, for profiles and benchstat.
func BenchmarkDecodeSnapshotAutomergePaper(b *testing.B) {
	tr, err := traces.Load("automerge-paper.json.gz")
	if err != nil {
		b.Fatal(err)
	}
	d, err := ReplayTrace(tr, wallsOf(tr))
	if err != nil {
		b.Fatal(err)
	}
	data := codec.EncodeSnapshot(d)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		b.StopTimer()
		runtime.GC() // as RunTrace does: one run's garbage is not the next's cost
		b.StartTimer()
		e, err := codec.DecodeSnapshot(data, crdt.ReplicaID{0xbb, 15: 1}, hlc.NewClock((&hlc.ManualWall{}).Read, 0), crdt.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if e.TextLen("body") != len([]rune(tr.EndContent)) {
			b.Fatal("wrong text")
		}
	}
}

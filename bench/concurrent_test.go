package bench

import (
	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
	"strings"
	"testing"

	"github.com/weftsync/weft/internal/traces"
)

// The embedded concurrent trace replays as a real multi-replica merge and
// ends at its endContent, both in the replay and when the whole history is
// merged into one fresh document.
func TestConcurrentTraceReplay(t *testing.T) {
	for name, agents := range map[string]int{"concurrent/friendsforever.json.gz": 2, "concurrent/clownschool.json.gz": 3} {
		t.Run(name, func(t *testing.T) {
			tr, err := traces.Load(name)
			if err != nil {
				t.Fatal(err)
			}
			r := RunConcurrentTrace(tr, TraceOptions{Runs: 1})
			if !r.OK || r.Error != "" {
				t.Fatalf("replay failed: %+v", r)
			}
			if r.Merges == 0 {
				t.Fatalf("the replay merged nothing: %+v", r)
			}
			if r.Agents != agents || r.Txns != len(tr.Txns) || r.HistoryBytes == 0 || r.EncodedBytes == 0 {
				t.Fatalf("unexpected result %+v", r)
			}
		})
	}
}

// A transaction that forgets its own agent's earlier edits is refused with
// an error, not replayed into a wrong text.
func TestConcurrentTraceRefusesForks(t *testing.T) {
	tr := &traces.Trace{Name: "fork", Kind: "concurrent", NumAgents: 1, EndContent: "ab", Txns: []traces.Txn{
		{Agent: 0, Patches: []traces.Patch{{Pos: 0, Ins: "a"}}},
		{Agent: 0, Patches: []traces.Patch{{Pos: 0, Ins: "b"}}}, // no parents: forgets txn 0
	}}
	_, _, err := ReplayConcurrent(tr, wallsOf(tr))
	if err == nil || !strings.Contains(err.Error(), "more than its parents") {
		t.Fatalf("err = %v, want a fork refusal", err)
	}
}

// Merging the whole concurrent history into one document: the merge_ms of
// `weft bench trace concurrent/friendsforever.json.gz`.
func BenchmarkConcurrentReplayFriendsforever(b *testing.B) {
	tr, err := traces.Load("concurrent/friendsforever.json.gz")
	if err != nil {
		b.Fatal(err)
	}
	walls := wallsOf(tr)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ReplayConcurrent(tr, walls); err != nil {
			b.Fatal(err)
		}
	}
}

// Merging the whole encoded history of the concurrent trace into a new
// document: the merge_ms of `weft bench trace concurrent/friendsforever.json.gz`.
func BenchmarkConcurrentMergeAllFriendsforever(b *testing.B) {
	tr, err := traces.Load("concurrent/friendsforever.json.gz")
	if err != nil {
		b.Fatal(err)
	}
	d, _, err := ReplayConcurrent(tr, wallsOf(tr))
	if err != nil {
		b.Fatal(err)
	}
	history := codec.EncodeChanges(d.ChangesSince(nil))
	b.ReportAllocs()
	b.SetBytes(int64(len(history)))
	for b.Loop() {
		m := crdt.NewDoc(crdt.ReplicaID{0xbb, 15: 2}, hlc.NewClock((&hlc.ManualWall{}).Read, 0), crdt.Options{})
		if err := m.ApplySeq(codec.ChangeSeq(history)); err != nil {
			b.Fatal(err)
		}
	}
}

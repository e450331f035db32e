package codec

import (
	"reflect"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
	"github.com/weftsync/weft/internal/traces"
)

// replayTrace types a sequential trace into a document, one transaction per
// trace transaction, stamped with the trace's times.
func replayTrace(t testing.TB, tr *traces.Trace) *crdt.Doc {
	wall := &hlc.ManualWall{}
	d := crdt.NewDoc(rep(1), hlc.NewClock(wall.Read, 0), crdt.Options{})
	if tr.StartContent != "" {
		tx := d.Begin()
		must(t, tx.Insert("body", 0, tr.StartContent))
		must(t, tx.Commit())
	}
	for i := range tr.Txns {
		txn := &tr.Txns[i]
		wall.Millis = txn.WallMillis()
		tx := d.Begin()
		for _, p := range txn.Patches {
			if p.Del > 0 {
				must(t, tx.Delete("body", p.Pos, p.Del))
			}
			if p.Ins != "" {
				must(t, tx.Insert("body", p.Pos, p.Ins))
			}
		}
		must(t, tx.Commit())
	}
	return d
}

// TestTraceHistories: the whole history of every sequential trace (what a
// new replica downloads when it subscribes with an empty version) encodes,
// decodes to the same changes, and rebuilds the text on a fresh replica.
// The sizes are logged: compare them with the snapshot encoding.
func TestTraceHistories(t *testing.T) {
	if raceEnabled {
		t.Skip("long replays; covered by the run without -race")
	}
	for _, name := range traces.Sequential {
		t.Run(name, func(t *testing.T) {
			tr, err := traces.Load(name)
			if err != nil {
				t.Skipf("trace not available: %v", err)
			}
			d := replayTrace(t, tr)
			hist := d.ChangesSince(nil)
			var data []byte
			var back []crdt.Change
			for _, c := range EncodeChunks(hist, 0) {
				got, err := DecodeChanges(c.Data)
				if err != nil {
					t.Fatal(err)
				}
				data = append(data, c.Data...)
				back = append(back, got...)
			}
			if !reflect.DeepEqual(back, hist) {
				t.Fatal("decoded history differs")
			}
			e := crdt.NewDoc(rep(2), hlc.NewClock((&hlc.ManualWall{}).Read, 0), crdt.Options{})
			must(t, e.Apply(back...))
			if e.Text("body") != tr.EndContent || e.Pending() != 0 {
				t.Fatalf("rebuilt text differs (pending %d)", e.Pending())
			}
			t.Logf("%s: %d patches, %d changes, history %d bytes (%.2f bytes/patch), snapshot %d bytes",
				name, tr.Patches(), len(hist), len(data), float64(len(data))/float64(tr.Patches()), len(EncodeSnapshot(d)))
		})
	}
}

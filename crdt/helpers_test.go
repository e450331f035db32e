package crdt_test

import (
	"slices"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
	"github.com/weftsync/weft/internal/traces"
)

func rid(b byte) crdt.ReplicaID {
	var r crdt.ReplicaID
	r[0], r[15] = b, b
	return r
}

func newDoc(b byte, wall *hlc.ManualWall) *crdt.Doc {
	return crdt.NewDoc(rid(b), hlc.NewClock(wall.Read, 0), crdt.Options{})
}

func replay(t testing.TB, tr *traces.Trace) *crdt.Doc {
	return replayWalls(t, tr, wallsOf(tr))
}

// wallsOf parses each transaction's time once, so timed replays do not
// measure time parsing.
func wallsOf(tr *traces.Trace) []int64 {
	w := make([]int64, len(tr.Txns))
	for i := range tr.Txns {
		w[i] = tr.Txns[i].WallMillis()
	}
	return w
}

func replayWalls(t testing.TB, tr *traces.Trace, walls []int64) *crdt.Doc {
	wall := &hlc.ManualWall{}
	d := newDoc(1, wall)
	if tr.StartContent != "" {
		tx := d.Begin()
		if err := tx.Insert("body", 0, tr.StartContent); err != nil {
			t.Fatal(err)
		}
		tx.Commit()
	}
	for i := range tr.Txns {
		txn := &tr.Txns[i]
		wall.Millis = walls[i]
		tx := d.Begin()
		for _, p := range txn.Patches {
			if p.Del > 0 {
				if err := tx.Delete("body", p.Pos, p.Del); err != nil {
					t.Fatalf("txn %d: %v", i, err)
				}
			}
			if p.Ins != "" {
				if err := tx.Insert("body", p.Pos, p.Ins); err != nil {
					t.Fatalf("txn %d: %v", i, err)
				}
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// reusingSeq yields cs for Doc.ApplySeq the way a decoder does: every
// change is copied into one Change and one ops buffer, which the next
// change overwrites, so that ApplySeq holding on to a yielded change shows.
// It fails the pass after fail changes (never, if fail < 0).
func reusingSeq(cs []crdt.Change, fail int, err error) crdt.ChangeSeq {
	return crdt.ChangeSeq{All: func(yield func(*crdt.Change, error) bool) {
		var c crdt.Change
		var ops []crdt.Op
		for i := range cs {
			if i == fail {
				yield(nil, err)
				return
			}
			for j := range ops {
				ops[j] = crdt.Op{Kind: crdt.OpCounterAdd, Field: "scribbled", Delta: 99}
			}
			ops = append(ops[:0], cs[i].Ops...)
			for j := range ops {
				ops[j].Value = slices.Clone(ops[j].Value)
			}
			c = cs[i]
			c.Ops = ops
			if !yield(&c, nil) {
				return
			}
		}
	}, Ops: opsOf(cs)}
}

func opsOf(cs []crdt.Change) int {
	n := 0
	for i := range cs {
		n += len(cs[i].Ops)
	}
	return n
}

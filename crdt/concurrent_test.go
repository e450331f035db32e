//go:build !invariants

// Too long to replay with a full structural check after every change; the
// invariants build covers merges with TestForkedMerge.

package crdt_test

import (
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
	"github.com/weftsync/weft/internal/traces"
)

// TestConcurrentTrace replays a trace with real forks and merges: each
// agent edits its own replica, which first catches up to exactly the
// versions its transaction's parents name.
func TestConcurrentTrace(t *testing.T) {
	for _, name := range []string{"concurrent/friendsforever.json.gz", "concurrent/clownschool.json.gz"} {
		t.Run(name, func(t *testing.T) {
			tr, err := traces.Load(name)
			if err != nil {
				t.Fatal(err)
			}
			d := replayConcurrent(t, tr)
			if got := d.Text("body"); got != tr.EndContent {
				t.Fatalf("got %d runes, want %d", len([]rune(got)), len([]rune(tr.EndContent)))
			}
		})
	}
}

func replayConcurrent(t testing.TB, tr *traces.Trace) *crdt.Doc {
	wall := &hlc.ManualWall{Millis: 1}
	all := newDoc(100, wall) // holds every change
	agents := make([]*crdt.Doc, tr.NumAgents)
	for a := range agents {
		agents[a] = newDoc(byte(a+1), wall)
	}
	versions := make([]crdt.VersionVector, len(tr.Txns))
	for i := range tr.Txns {
		txn := &tr.Txns[i]
		target := crdt.VersionVector{}
		for _, p := range txn.Parents {
			target.Merge(versions[p])
		}
		d := agents[txn.Agent]
		if !target.Covers(d.Version()) {
			// This agent's replica is ahead of the fork point: rebuild it.
			d = newDoc(byte(txn.Agent+1), wall)
		}
		var need []crdt.Change
		for _, c := range all.ChangesSince(d.Version()) {
			if c.End() <= target[c.Replica] {
				need = append(need, c)
			}
		}
		if err := d.Apply(need...); err != nil {
			t.Fatalf("txn %d: catch up: %v", i, err)
		}
		if !d.Version().Equal(target) {
			t.Fatalf("txn %d: replica at %v, want %v", i, d.Version(), target)
		}
		before := d.Version()
		wall.Millis++
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
		tx.Commit()
		agents[txn.Agent] = d
		if err := all.Apply(d.ChangesSince(before)...); err != nil {
			t.Fatalf("txn %d: %v", i, err)
		}
		versions[i] = d.Version()
	}
	return all
}

package crdt_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
)

// One transaction's change holds at most MaxChangeOps operations, so that
// every change a client makes fits a server's rate-limit burst: the edit
// that would exceed it fails with ErrChangeFull and changes nothing, and
// a new transaction goes on.
func TestTxBoundsChangeOps(t *testing.T) {
	d := newDoc(1, &hlc.ManualWall{Millis: 1 << 40})
	tx := d.Begin()
	for i := range crdt.MaxChangeOps {
		if err := tx.Add(fmt.Sprint("c", i%7), 1); err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
	}
	before := d.Version()
	if err := tx.Add("c0", 1); !errors.Is(err, crdt.ErrChangeFull) {
		t.Fatalf("one op more: %v, want ErrChangeFull", err)
	}
	if err := tx.Insert("t", 0, "x"); !errors.Is(err, crdt.ErrChangeFull) {
		t.Fatalf("an insert more: %v, want ErrChangeFull", err)
	}
	if !d.Version().Equal(before) {
		t.Fatalf("a refused edit changed the version: %v → %v", before, d.Version())
	}
	tx.Commit()
	chs := d.ChangesSince(nil)
	if len(chs) != 1 || len(chs[0].Ops) != crdt.MaxChangeOps {
		t.Fatalf("%d changes, first of %d ops", len(chs), len(chs[0].Ops))
	}
	tx = d.Begin()
	if err := tx.Add("c0", 1); err != nil {
		t.Fatalf("a new transaction: %v", err)
	}
	tx.Commit()

	// A delete takes one op per run of adjacent characters it removes:
	// counted before anything is deleted.
	e := newDoc(2, &hlc.ManualWall{Millis: 1 << 40})
	tx = e.Begin()
	if err := tx.Insert("t", 0, strings.Repeat("ab", crdt.MaxChangeOps)); err != nil {
		t.Fatal(err)
	}
	tx.Commit()
	tx = e.Begin()
	for i := 0; i < crdt.MaxChangeOps; i++ { // delete every other char: runs of one
		if err := tx.Delete("t", i+1, 1); err != nil {
			t.Fatalf("delete %d: %v", i, err)
		}
	}
	tx.Commit()
	text := e.Text("t")
	if text != strings.Repeat("a", crdt.MaxChangeOps) {
		t.Fatalf("text %.20q…", text)
	}
	// Reinsert between each pair so a delete of everything spans many runs.
	tx = e.Begin()
	for i := 0; i < crdt.MaxChangeOps/2; i++ {
		if err := tx.Insert("t", 2*i+1, "b"); err != nil {
			t.Fatal(err)
		}
	}
	tx.Commit()
	tx = e.Begin()
	if err := tx.Insert("t", 0, "z"); err != nil {
		t.Fatal(err)
	}
	n := len([]rune(e.Text("t")))
	if err := tx.Delete("t", 0, n); !errors.Is(err, crdt.ErrChangeFull) {
		t.Fatalf("delete across %d runes in many runs: %v, want ErrChangeFull", n, err)
	}
	if got := len([]rune(e.Text("t"))); got != n {
		t.Fatalf("a refused delete changed the text: %d runes, had %d", got, n)
	}
	// What still fits goes on.
	if err := tx.Delete("t", 0, 1); err != nil {
		t.Fatal(err)
	}
	tx.Commit()
}

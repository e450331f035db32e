package crdt_test

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
)

func TestAnchorsSurviveConcurrentEdits(t *testing.T) {
	a, b := newDoc(1, &hlc.ManualWall{}), newDoc(2, &hlc.ManualWall{})
	tx := a.Begin()
	tx.Insert("t", 0, "hello world")
	tx.Commit()
	b.Apply(a.ChangesSince(nil)...)

	// A cursor just before "world" on b, and the end and start anchors.
	before, err := b.AnchorAt("t", 6, crdt.Before)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := b.AnchorAt("t", 5, crdt.After) // just after "hello"
	end, _ := b.AnchorAt("t", 11, crdt.Before)
	start, _ := b.AnchorAt("t", 0, crdt.After)

	// a inserts at the front and deletes the 'w' the cursor sticks to.
	tx = a.Begin()
	tx.Insert("t", 0, ">> ")
	tx.Delete("t", 9, 1) // "w"
	tx.Commit()
	b.Apply(a.ChangesSince(b.Version())...)
	if b.Text("t") != ">> hello orld" {
		t.Fatalf("text %q", b.Text("t"))
	}
	for _, c := range []struct {
		name string
		a    crdt.Anchor
		want int
	}{
		{"before deleted w", before, 9}, // where the w was
		{"after hello", after, 8},
		{"end", end, 13},
		{"start", start, 0},
	} {
		got, err := b.IndexOf("t", c.a)
		if err != nil || got != c.want {
			t.Errorf("%s: IndexOf = %d, %v; want %d", c.name, got, err, c.want)
		}
	}
	if _, err := b.AnchorAt("t", 14, crdt.Before); !errors.Is(err, crdt.ErrOutOfRange) {
		t.Fatalf("anchor past the end: %v", err)
	}
	if _, err := b.IndexOf("t", crdt.Anchor{ID: crdt.ID{Replica: rid(9), Seq: 1}}); !errors.Is(err, crdt.ErrOutOfRange) {
		t.Fatalf("unknown anchor: %v", err)
	}
}

func TestUTF16Offsets(t *testing.T) {
	s := "a😀b→c" // runes: a, 😀 (2 units), b, → (1 unit), c
	for _, c := range []struct{ runes, units int }{{0, 0}, {1, 1}, {2, 3}, {3, 4}, {4, 5}, {5, 6}} {
		u, err := crdt.RunesToUTF16(s, c.runes)
		if err != nil || u != c.units {
			t.Errorf("RunesToUTF16(%d) = %d, %v; want %d", c.runes, u, err, c.units)
		}
		r, err := crdt.UTF16ToRunes(s, c.units)
		if err != nil || r != c.runes {
			t.Errorf("UTF16ToRunes(%d) = %d, %v; want %d", c.units, r, err, c.runes)
		}
	}
	if _, err := crdt.UTF16ToRunes(s, 2); !errors.Is(err, crdt.ErrOutOfRange) {
		t.Error("an offset inside a surrogate pair must be refused")
	}
	if _, err := crdt.UTF16ToRunes(s, 7); !errors.Is(err, crdt.ErrOutOfRange) {
		t.Error("an offset past the end must be refused")
	}
	if _, err := crdt.RunesToUTF16(s, 6); !errors.Is(err, crdt.ErrOutOfRange) {
		t.Error("a rune offset past the end must be refused")
	}
}

// At(t) shows exactly the changes stamped at or before t.
func TestAtShowsThePast(t *testing.T) {
	w := &hlc.ManualWall{Millis: 1000}
	d := newDoc(1, w)
	tx := d.Begin()
	tx.Insert("t", 0, "one")
	tx.Add("n", 1)
	tx.Commit()
	w.Millis = 2000
	tx = d.Begin()
	tx.Insert("t", 3, " two")
	tx.Add("n", 1)
	tx.Commit()
	past := d.At(hlc.New(1500, 0))
	if past.Text("t") != "one" || past.Counter("n") != 1 {
		t.Fatalf("At(1500) = %q, %d", past.Text("t"), past.Counter("n"))
	}
	if err := past.Begin().Insert("t", 0, "x"); !errors.Is(err, crdt.ErrReadOnly) {
		t.Fatalf("edit on a view: %v", err)
	}
	if now := d.At(hlc.New(3000, 0)); now.Text("t") != "one two" || now.Counter("n") != 2 {
		t.Fatalf("At(3000) = %q", now.Text("t"))
	}
}

// At cuts the state; replaying the kept history is the oracle.
func TestAtMatchesReplay(t *testing.T) {
	for seed := 0; seed < *seeds; seed++ {
		rng := rand.New(rand.NewPCG(uint64(seed), 21))
		walls := []*hlc.ManualWall{{Millis: 1000}, {Millis: 1000}, {Millis: 1000}}
		docs := []*crdt.Doc{newDoc(1, walls[0]), newDoc(2, walls[1]), newDoc(3, walls[2])}
		for step := 0; step < 150; step++ {
			i := rng.IntN(3)
			walls[i].Millis += int64(rng.IntN(5))
			if rng.IntN(4) > 0 {
				randomEdit(t, rng, docs[i])
			} else {
				j := rng.IntN(3)
				if err := docs[j].Apply(docs[i].ChangesSince(docs[j].Version())...); err != nil {
					t.Fatal(err)
				}
			}
		}
		d := docs[0]
		for _, o := range docs[1:] {
			if err := d.Apply(o.ChangesSince(d.Version())...); err != nil {
				t.Fatal(err)
			}
		}
		for k := 0; k < 20; k++ {
			at := hlc.New(int64(1000+rng.IntN(400)), uint16(rng.IntN(3)))
			cut, err := crdt.AtByCut(d, at)
			if err != nil {
				t.Fatalf("seed %d, At(%v): cutting the state failed: %v", seed, at, err)
			}
			if got, want := state(cut), state(crdt.AtByReplay(d, at)); got != want {
				t.Fatalf("seed %d, At(%v):\n%s\nreplay:\n%s", seed, at, got, want)
			}
		}
	}
}

package crdt

import (
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/weftsync/weft/hlc"
)

// A layout of the leaves spreads them over the slot array it has while
// that still leaves a free slot for every four leaves (see rebuildWith):
// a text typed into at random places must reach such a layout, keep its
// array through it, and stay consistent (slots, Fenwick trees, id index)
// after every edit, with the visible text matching a plain string edited
// alike.
func TestLayoutSpreadsInTheArrayItHas(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		d := NewDoc(ReplicaID{1, 15: byte(seed)}, hlc.NewClock((&hlc.ManualWall{Millis: 1}).Read, 0), Options{})
		x := d.Begin()
		if err := x.Insert("body", 0, "a"); err != nil {
			t.Fatal(err)
		}
		x.Commit()
		want := []byte("a")
		tx := d.field(Field{"body", FieldText}, false).text
		dense, kept := 0, 0
		for step := range 6000 {
			before, arr := len(tx.leaves), cap(tx.leaves)
			x := d.Begin()
			var err error
			if len(want) == 0 || rng.IntN(10) < 8 {
				pos, c := rng.IntN(len(want)+1), byte('a'+rng.IntN(26))
				err = x.Insert("body", pos, string(c))
				want = append(want[:pos], append([]byte{c}, want[pos:]...)...)
			} else {
				pos := rng.IntN(len(want))
				err = x.Delete("body", pos, 1)
				want = append(want[:pos], want[pos+1:]...)
			}
			if err != nil {
				t.Fatal(err)
			}
			x.Commit()
			if len(tx.leaves) != before || step%97 == 0 {
				tx.checkInvariants()
			}
			if len(tx.leaves) == before {
				continue // no layout
			}
			n := 0
			for range tx.all {
				n++
			}
			if len(tx.leaves) < 2*n+n/2+8 {
				dense++
				if cap(tx.leaves) == arr {
					kept++
				}
				if free := len(tx.leaves) - n; free < n/4+8 {
					t.Fatalf("seed %d: %d leaves laid out in %d slots", seed, n, len(tx.leaves))
				}
			}
		}
		if got := d.Text("body"); got != string(want) {
			t.Fatalf("seed %d: text %q, want %q", seed, got, want)
		}
		if dense == 0 || kept == 0 {
			t.Errorf("seed %d: %d layouts spread over a short array, %d of them in the array they had; want some", seed, dense, kept)
		}
	}
}

// A text of many leaves takes them and their items from slabs (see
// newLeaf): the leaves numbered from slabFrom on sit leafSlab to a slab,
// and so do their items, each with room for leafCap+2 items and no more
// (a leaf growing past it must not run into the next), and the leaves
// edited after that stay consistent.
func TestLeafItemsFromSlabs(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	d := NewDoc(ReplicaID{2, 15: 1}, hlc.NewClock((&hlc.ManualWall{Millis: 1}).Read, 0), Options{})
	n := 0
	for range 8000 {
		x := d.Begin()
		if err := x.Insert("body", rng.IntN(n+1), string(byte('a'+rng.IntN(26)))); err != nil {
			t.Fatal(err)
		}
		x.Commit()
		n++
	}
	tx := d.field(Field{"body", FieldText}, false).text
	if len(tx.byNum) < slabFrom+2*leafSlab {
		t.Fatalf("%d leaves, want more than %d", len(tx.byNum), slabFrom+2*leafSlab)
	}
	adjacent, adjacentLeaves := 0, 0
	for k, l := range tx.byNum {
		if k < slabFrom {
			continue
		}
		if cap(l.items) != leafCap+2 {
			t.Fatalf("leaf %d: room for %d items, want %d", k, cap(l.items), leafCap+2)
		}
		prev := tx.byNum[k-1].items[:1]
		if &prev[:cap(prev)][cap(prev)-1] == &l.items[:1][0] {
			t.Fatalf("leaf %d's items overlap leaf %d's", k, k-1)
		}
		if unsafe.Pointer(&l.items[:1][0]) == unsafe.Add(unsafe.Pointer(&prev[0]), unsafe.Sizeof([leafCap + 2]item{})) {
			adjacent++
		}
		if unsafe.Pointer(l) == unsafe.Add(unsafe.Pointer(tx.byNum[k-1]), unsafe.Sizeof(leaf{})) {
			adjacentLeaves++
		}
	}
	if want := (len(tx.byNum) - slabFrom) * (leafSlab - 1) / leafSlab; adjacent < want-leafSlab {
		t.Errorf("%d of %d leaves past the first %d have items that follow the one before's in memory, want about %d", adjacent, len(tx.byNum)-slabFrom, slabFrom, want)
	}
	if want := (len(tx.byNum) - slabFrom) * (leafSlab - 1) / leafSlab; adjacentLeaves < want-leafSlab {
		t.Errorf("%d of %d leaves past the first %d follow the one before in memory, want about %d", adjacentLeaves, len(tx.byNum)-slabFrom, slabFrom, want)
	}
	tx.checkInvariants()
}

package editmix

import (
	"reflect"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
)

// TestDeliveries: the sequence is the same on every call (the benchmarks
// that share it compare runs), one change per edit, causally complete (a
// fresh replica applies it with nothing pending), and of the mix's kinds.
func TestDeliveries(t *testing.T) {
	a, _, err := Deliveries(2000)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := Deliveries(2000)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 2000 || !reflect.DeepEqual(a, b) {
		t.Fatalf("two calls gave %d and %d changes, equal %v", len(a), len(b), reflect.DeepEqual(a, b))
	}
	d := crdt.NewDoc(crdt.ReplicaID{0xfe, 15: 1}, hlc.NewClock((&hlc.ManualWall{Millis: 1_763_900_000_000}).Read, 0), crdt.Options{})
	if err := d.Apply(a...); err != nil {
		t.Fatal(err)
	}
	if p := d.Pending(); p != 0 {
		t.Fatalf("%d changes wait for dependencies", p)
	}
	kinds := map[crdt.OpKind]int{}
	for _, c := range a {
		kinds[c.Ops[0].Kind]++
	}
	if ins := kinds[crdt.OpTextInsert]; ins < 1200 || ins > 1600 {
		t.Errorf("%d inserts in 2000 edits, want about 70%%", ins)
	}
	for _, k := range []crdt.OpKind{crdt.OpTextDelete, crdt.OpCounterAdd, crdt.OpRegisterSet} {
		if n := kinds[k]; n < 100 || n > 300 {
			t.Errorf("%d ops of kind %v in 2000 edits, want about 10%%", n, k)
		}
	}
}

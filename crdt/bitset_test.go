package crdt

import "testing"

func TestBitsetRanges(t *testing.T) {
	b := newBitset(200)
	if !b.setRange(3, 130) || !b.allSet(3, 130) || !b.allSet(64, 64) {
		t.Fatal("set range not all set")
	}
	if b.allSet(2, 4) || b.allSet(129, 131) {
		t.Fatal("bits outside the range are set")
	}
	if b.setRange(129, 140) {
		t.Fatal("setting a range that overlaps succeeded")
	}
	if b.setRange(150, 300) || b.allSet(150, 300) || b.setRange(5, 4) {
		t.Fatal("a range past the end or reversed was accepted")
	}
	if b = b.grow(400); !b.setRange(300, 400) || !b.allSet(300, 400) || !b.allSet(3, 130) {
		t.Fatal("grow lost bits or room")
	}
}

package crdt

import (
	"slices"
	"testing"
)

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

func TestBitsetAppendRanges(t *testing.T) {
	b := newBitset(200)
	b.setRange(0, 2)
	b.setRange(63, 65)
	b.setRange(70, 71)
	b.setRange(190, 192)
	got := b.appendRanges([]planRange{{1, 2, "x"}}, 100, "t")
	want := []planRange{{1, 2, "x"}, {100, 102, "t"}, {163, 165, "t"}, {170, 171, "t"}, {290, 292, "t"}}
	if !slices.Equal(got, want) {
		t.Fatalf("appendRanges = %v, want %v", got, want)
	}
	if got := newBitset(0).appendRanges(nil, 5, "t"); len(got) != 0 {
		t.Fatalf("empty set gave %v", got)
	}
}

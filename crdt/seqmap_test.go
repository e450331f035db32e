package crdt

import (
	"math/rand/v2"
	"testing"
)

// seqMap agrees with a map on both sides of denseReplicas.
func TestSeqMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var s seqMap
	want := map[uint32]uint32{}
	for range 5000 {
		r := uint32(rng.IntN(2 * denseReplicas))
		if rng.IntN(2) == 0 {
			v := rng.Uint32()
			s.set(r, v)
			want[r] = v
		}
		if got := s.get(r); got != want[r] {
			t.Fatalf("get(%d) = %d, want %d", r, got, want[r])
		}
	}
	for r := uint32(0); r < 2*denseReplicas+5; r++ {
		if got := s.get(r); got != want[r] {
			t.Fatalf("get(%d) = %d, want %d", r, got, want[r])
		}
	}
}

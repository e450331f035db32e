package crdt

import (
	"math/rand/v2"
	"sort"
	"testing"
)

// upper guesses by interpolation before it searches: it must agree with a
// plain search on any sorted list, evenly spread or not.
func TestUpperMatchesSearch(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for n := 0; n < 200; n++ {
		for _, spread := range []int{1, 3, 1000} {
			s := make([]uint32, n)
			v := uint32(rng.IntN(5))
			for i := range s {
				gap := 1 + rng.IntN(spread)
				if rng.IntN(10) == 0 {
					gap += rng.IntN(100000) // clustered lists
				}
				v += uint32(gap)
				s[i] = v
			}
			probes := []uint32{0, 1, v, v + 1, 1<<32 - 1}
			for k := 0; k < 300; k++ {
				probes = append(probes, uint32(rng.IntN(int(v)+2)))
			}
			for _, q := range probes {
				want := sort.Search(len(s), func(i int) bool { return s[i] > q })
				if got := upper(s, q); got != want {
					t.Fatalf("n=%d spread=%d upper(%d) = %d, want %d", n, spread, q, got, want)
				}
			}
		}
	}
}

func TestLowerMatchesSearch(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	for n := 0; n < 100; n++ {
		s := make([]uint32, n)
		v := uint32(0)
		for i := range s {
			v += uint32(1 + rng.IntN(4))
			s[i] = v
		}
		for q := uint32(0); q < v+3; q++ {
			want := sort.Search(len(s), func(i int) bool { return s[i] >= q })
			if got := lower(s, q); got != want {
				t.Fatalf("n=%d lower(%d) = %d, want %d", n, q, got, want)
			}
		}
	}
}

package crdt

import (
	"math"
	"math/bits"
)

// sum128 is a counter's exact value, a two's-complement 128-bit integer:
// at most 2^32 ops of each of at most 2^32 replicas, each below 2^63 in
// size, cannot reach 2^127, so the sum never wraps and does not depend on
// the order the deltas were added in (an int64 wrapped: +MaxInt64 twice
// gave −2, and saturating each step would make the result depend on the
// order).
type sum128 struct {
	hi int64
	lo uint64
}

// add adds n times delta.
func (s *sum128) add(delta int64, n uint32) {
	// |delta|·n as 128 bits, then added or subtracted.
	mag := uint64(delta)
	if delta < 0 {
		mag = -mag // two's complement magnitude; MinInt64 maps to 2^63
	}
	ph, pl := bits.Mul64(mag, uint64(n))
	if delta < 0 {
		var b uint64
		s.lo, b = bits.Sub64(s.lo, pl, 0)
		s.hi -= int64(ph) + int64(b)
		return
	}
	var c uint64
	s.lo, c = bits.Add64(s.lo, pl, 0)
	s.hi += int64(ph) + int64(c)
}

// saturated returns the sum clamped to the int64 range.
func (s sum128) saturated() int64 {
	switch {
	case s.hi == 0 && s.lo <= math.MaxInt64:
		return int64(s.lo)
	case s.hi == -1 && s.lo >= 1<<63:
		return int64(s.lo)
	case s.hi < 0:
		return math.MinInt64
	}
	return math.MaxInt64
}

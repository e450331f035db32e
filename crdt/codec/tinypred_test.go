package codec

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

// TestTinyPredictor: for batches of up to tinyInserts inserts, the
// decoder's tinyPredictor guesses what predictor (the encoder's) guesses.
func TestTinyPredictor(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 8))
	// Few replicas and seqs, so that lefts repeat and runs end where
	// later inserts start; now and then an id too wide for a narrow table.
	id := func() pid {
		switch rng.IntN(8) {
		case 0:
			return 0
		case 1:
			return packID(rng.IntN(100), 1+rng.Uint64N(MaxSeq))
		}
		return packID(rng.IntN(3), 1+rng.Uint64N(6))
	}
	for round := range 20000 {
		var tiny tinyPredictor
		big := newPredictor(tinyInserts)
		for k := range 1 + rng.IntN(tinyInserts) {
			for range 3 {
				left := id()
				gt, okt := tiny.right(left)
				gb, okb := big.right(left)
				if gt != gb || okt != okb {
					t.Fatalf("round %d insert %d: right(%#x) = %#x, %v; predictor says %#x, %v", round, k, left, gt, okt, gb, okb)
				}
			}
			first, left, right := id(), id(), id()
			if first == 0 {
				first = packID(0, 1)
			}
			n := 1 + rng.Uint64N(3)
			tiny.inserted(first, n, left, right)
			big.inserted(first, n, left, right)
		}
		big.release()
	}
}

// TestDecodeScratchReuse: DecodeChanges reuses pooled scratch (and the
// field names of the batch before) across batches of every size, one
// after another on one goroutine; each decodes to what was encoded.
func TestDecodeScratchReuse(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range 3000 {
		want := randomChanges(rng, 1+rng.IntN(3))
		if i%50 == 0 {
			want = textBatch() // compressed, more than keepBytes inflated
		}
		data := EncodeChanges(want)
		if i%7 == 0 && i%50 != 0 {
			data = append(data, 0) // refused after a part of the batch was read
			if _, err := DecodeChanges(data); err == nil {
				t.Fatalf("batch %d: trailing byte accepted", i)
			}
			continue
		}
		got, err := DecodeChanges(data)
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("batch %d decodes to other changes:\n%+v\n%+v", i, got, want)
		}
	}
}

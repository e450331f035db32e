package codec

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/weftsync/weft/crdt"
)

// Temporary (never committed): hashes encodings, decodings and decode errors
// of many batches and mutations, to compare two versions of the codec.
func TestZZCodecGolden(t *testing.T) {
	enc, dec := sha256.New(), sha256.New()
	var batches [][]crdt.Change
	for seed := uint64(0); seed < 3000; seed++ {
		rng := rand.New(rand.NewPCG(seed, 77))
		batches = append(batches, randomChanges(rng, 1+rng.IntN(1+int(seed%7)*30)))
	}
	// Many replicas: remap the replicas of random batches onto up to 60.
	for seed := uint64(0); seed < 300; seed++ {
		rng := rand.New(rand.NewPCG(seed, 78))
		chs := randomChanges(rng, 1+rng.IntN(300))
		n := 1 + rng.IntN(60)
		m := func(r crdt.ReplicaID) crdt.ReplicaID {
			if r.IsZero() {
				return r
			}
			return crdt.ReplicaID{byte(rng.IntN(n) + 1), 3, 15: 9}
		}
		for i := range chs {
			chs[i].Replica = m(chs[i].Replica)
			for j := range chs[i].Ops {
				op := &chs[i].Ops[j]
				op.Left.Replica, op.Right.Replica, op.Target.Replica = m(op.Left.Replica), m(op.Right.Replica), m(op.Target.Replica)
			}
		}
		batches = append(batches, chs)
	}
	for _, c := range sizeCases {
		for seed := uint64(1); seed < 4; seed++ {
			batches = append(batches, editTrace(seed, 3000, 500, c.near, c.tm))
		}
	}
	for seed := uint64(0); seed < 6; seed++ {
		d, _, _ := mergeScenario(t, seed, 2000, typing)
		batches = append(batches, d)
		d, _, _ = mergeScenario(t, seed, 500, fastLoop)
		batches = append(batches, d)
	}
	batches = append(batches, textBatch(), []crdt.Change{})
	nerr, npanic := 0, 0
	for bi, chs := range batches {
		var b []byte
		func() {
			defer func() {
				if r := recover(); r != nil {
					fmt.Fprintf(enc, "%d: panic %v\n", bi, r)
					npanic++
				}
			}()
			b = EncodeChanges(chs)
		}()
		if b == nil {
			continue
		}
		fmt.Fprintf(enc, "%d:%x\n", bi, b)
		rng := rand.New(rand.NewPCG(uint64(bi), 5))
		muts := 40
		if len(chs) > 1000 {
			muts = 4
		}
		for k := 0; k < muts; k++ {
			m := append([]byte(nil), b...)
			if k > 0 && len(m) > 0 {
				switch rng.IntN(4) {
				case 0:
					m[rng.IntN(len(m))] ^= byte(1 << rng.IntN(8))
				case 1:
					m = m[:rng.IntN(len(m))]
				case 2:
					m[rng.IntN(len(m))] = byte(rng.IntN(256))
				case 3:
					i := rng.IntN(len(m))
					m = append(m[:i:i], append([]byte{byte(rng.IntN(256))}, m[i:]...)...)
				}
			}
			got, err := DecodeChanges(m)
			if err != nil {
				nerr++
				fmt.Fprintf(dec, "%d/%d: %v\n", bi, k, err)
			} else {
				fmt.Fprintf(dec, "%d/%d: %+v\n", bi, k, got)
			}
		}
	}
	t.Logf("batches %d, panics %d, decode errors %d\nencode %x\ndecode %x", len(batches), npanic, nerr, enc.Sum(nil), dec.Sum(nil))
}

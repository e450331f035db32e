package codec

import (
	"errors"
	"iter"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/weftsync/weft/crdt"
)

// FuzzDecodeChanges: hostile bytes never panic; whatever decodes is
// well-formed and survives a re-encode unchanged.
func FuzzDecodeChanges(f *testing.F) {
	for seed := uint64(0); seed < 8; seed++ {
		rng := rand.New(rand.NewPCG(seed, 11))
		f.Add(EncodeChanges(randomChanges(rng, 1+rng.IntN(6))))
	}
	f.Add(EncodeChanges(editTrace(1, 40, 20, true, typing)))
	f.Add(EncodeChanges(textBatch())) // compressed (format 2)
	f.Add(EncodeChanges([]crdt.Change{}))
	f.Add([]byte{ChangesFormat})
	f.Fuzz(func(t *testing.T, data []byte) {
		chs, err := DecodeChanges(data)
		seq, seqErr := collectSeq(ChangeSeq(data).All)
		if (err == nil) != (seqErr == nil) {
			t.Fatalf("DecodeChanges says %v, ChangeSeq %v", err, seqErr)
		}
		if err != nil {
			if !errors.Is(seqErr, ErrCorrupt) {
				t.Fatalf("ChangeSeq's error does not wrap ErrCorrupt: %v", seqErr)
			}
			return
		}
		if len(chs) > 0 && !reflect.DeepEqual(chs, seq) {
			t.Fatalf("ChangeSeq yields other changes:\n%+v\n%+v", chs, seq)
		}
		checkWellFormed(t, chs)
		again, err := DecodeChanges(EncodeChanges(chs))
		if err != nil {
			t.Fatalf("re-encoded batch does not decode: %v", err)
		}
		if len(chs) > 0 && !reflect.DeepEqual(chs, again) {
			t.Fatalf("re-encoded batch differs:\n%+v\n%+v", chs, again)
		}
	})
}

// collectSeq copies what a ChangeSeq yields (it reuses its Change and ops).
func collectSeq(seq iter.Seq2[*crdt.Change, error]) ([]crdt.Change, error) {
	var out []crdt.Change
	for c, err := range seq {
		if err != nil {
			return nil, err
		}
		cc := *c
		cc.Ops = slices.Clone(c.Ops)
		out = append(out, cc)
	}
	return out, nil
}

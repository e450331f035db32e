package codec

import (
	"math/rand/v2"
	"reflect"
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
		if err != nil {
			return
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

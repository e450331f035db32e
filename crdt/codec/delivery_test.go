package codec

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
)

// deliveryBatches returns n one-change batches of the edit mix of `weft
// bench converge` (as crdt's BenchmarkReceiveDelivery makes it: 20
// writers with random ids, each having seen all but the last 0-2
// changes; 70% inserts of 1-4 runes at random places, 10% deletes of 1-2
// runes, 10% counter adds, 10% register sets; 5 ms apart), after skip
// edits of warm-up.
func deliveryBatches(tb testing.TB, skip, n int) [][]byte {
	const writers = 20
	wall := &hlc.ManualWall{Millis: 1_763_900_000_000}
	rng := rand.New(rand.NewPCG(27, 5))
	ws := make([]*crdt.Doc, writers)
	seen := make([]int, writers)
	for w := range ws {
		var id crdt.ReplicaID
		binary.LittleEndian.PutUint64(id[:8], rng.Uint64())
		binary.LittleEndian.PutUint64(id[8:], rng.Uint64())
		ws[w] = crdt.NewDoc(id, hlc.NewClock(wall.Read, 0), crdt.Options{})
	}
	words := []string{"a", "bc", "def", "ghij", "é", "∑x", " "}
	var all []crdt.Change
	var msgs [][]byte
	for len(all) < skip+n {
		wall.Millis += 5
		who := rng.IntN(writers)
		w := ws[who]
		upto := max(seen[who], len(all)-rng.IntN(3))
		if err := w.Apply(all[seen[who]:upto]...); err != nil {
			tb.Fatal(err)
		}
		seen[who] = upto
		before := w.Version()
		tx := w.Begin()
		nt := w.TextLen("body")
		var err error
		switch r := rng.IntN(100); {
		case r < 70 || nt < 8:
			err = tx.Insert("body", rng.IntN(nt+1), words[rng.IntN(len(words))])
		case r < 80:
			err = tx.Delete("body", rng.IntN(nt-2), 1+rng.IntN(2))
		case r < 90:
			err = tx.Add("count", int64(rng.IntN(5)-2)|1)
		default:
			err = tx.Set("last", []byte{0xcd, 0, byte(who)})
		}
		if err != nil {
			tb.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			tb.Fatal(err)
		}
		chs := w.ChangesSince(before)
		if len(chs) != 1 {
			tb.Fatalf("edit made %d changes", len(chs))
		}
		if len(all) >= skip {
			msgs = append(msgs, EncodeChanges(chs))
		}
		all = append(all, chs[0])
	}
	return msgs
}

// BenchmarkDecodeDelivery decodes (DecodeChanges) the one-change batches
// of the converge edit mix (see deliveryBatches), one a delivery, as
// every client does for every other editor's edit.
func BenchmarkDecodeDelivery(b *testing.B) {
	msgs := deliveryBatches(b, 4000, 2000)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := decodeBatch(msgs[i%len(msgs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// Package editmix is the edit mix of `weft bench converge`, for that
// benchmark and for the micro-benchmarks that time one of its deliveries
// (crdt's BenchmarkApplyDelivery, codec's BenchmarkDecodeDelivery, ...),
// so that they all measure the same edits.
package editmix

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
)

var words = []string{"a", "bc", "def", "ghij", "é", "∑x", " "}

// Edit makes one random edit of the mix in tx: 70% an insert of 1-4 runes
// at a random position of "body", 10% a delete of 1-2 runes, 10% a counter
// add, 10% a register set of who's index.
func Edit(tx *crdt.Tx, doc *crdt.Doc, rng *rand.Rand, who int) error {
	n := doc.TextLen("body")
	switch r := rng.IntN(100); {
	case r < 70 || n < 8:
		return tx.Insert("body", rng.IntN(n+1), words[rng.IntN(len(words))])
	case r < 80:
		return tx.Delete("body", rng.IntN(n-2), 1+rng.IntN(2))
	case r < 90:
		return tx.Add("count", int64(rng.IntN(5)-2)|1)
	default:
		// A msgpack uint16: the writer's index.
		return tx.Set("last", []byte{0xcd, byte(who >> 8), byte(who)})
	}
}

// Deliveries returns n changes of the mix on one document of 20 writers
// with random ids: each edit is made by a random writer that has seen all
// but the last few changes (0-2, so some inserts are concurrent), one
// change each, 5 ms after the previous one (200 edits/s, as 20 writers at
// 10/s); and the wall clock, at the last change's time.
func Deliveries(n int) ([]crdt.Change, *hlc.ManualWall, error) {
	const writers = 20
	wall := &hlc.ManualWall{Millis: 1_763_900_000_000}
	rng := rand.New(rand.NewPCG(27, 5))
	ws := make([]*crdt.Doc, writers)
	seen := make([]int, writers)
	for w := range ws {
		var id crdt.ReplicaID // random, as the clients' UUIDs
		binary.LittleEndian.PutUint64(id[:8], rng.Uint64())
		binary.LittleEndian.PutUint64(id[8:], rng.Uint64())
		ws[w] = crdt.NewDoc(id, hlc.NewClock(wall.Read, 0), crdt.Options{})
	}
	all := make([]crdt.Change, 0, n)
	for len(all) < n {
		wall.Millis += 5
		who := rng.IntN(writers)
		w := ws[who]
		upto := max(seen[who], len(all)-rng.IntN(3))
		if err := w.Apply(all[seen[who]:upto]...); err != nil {
			return nil, nil, err
		}
		seen[who] = upto
		before := w.Version()
		tx := w.Begin()
		if err := Edit(tx, w, rng, who); err != nil {
			return nil, nil, err
		}
		if err := tx.Commit(); err != nil {
			return nil, nil, err
		}
		chs := w.ChangesSince(before)
		if len(chs) != 1 {
			return nil, nil, fmt.Errorf("editmix: an edit made %d changes", len(chs))
		}
		all = append(all, chs[0])
	}
	return all, wall, nil
}

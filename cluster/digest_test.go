package cluster

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/weftsync/weft/crdt"
)

// TestDigestsHashWhenAsked: versions raised many times between rounds
// (whole, or only the entry that moved) give the buckets and
// per-document hashes that hashing each final version gives, and a
// document's first version puts it in its bucket.
func TestDigestsHashWhenAsked(t *testing.T) {
	const buckets = 8
	rng := rand.New(rand.NewPCG(1, 2))
	reps := make([]crdt.ReplicaID, 5)
	for i := range reps {
		reps[i][0], reps[i][15] = byte(i+1), 7
	}
	d := newDigests(buckets)
	final := map[string]crdt.VersionVector{}
	for round := range 4 {
		for range 200 {
			doc := fmt.Sprintf("doc-%d", rng.IntN(20))
			v := final[doc].Clone()
			if v == nil {
				v = crdt.VersionVector{}
			}
			r := reps[rng.IntN(len(reps))]
			v[r] += uint64(1 + rng.IntN(3))
			final[doc] = v
			if rng.IntN(2) == 0 {
				d.raise(doc, v.Clone()) // the whole vector (a snapshot's)
			} else {
				d.raise(doc, crdt.VersionVector{r: v[r]}) // what an append raised
			}
		}
		want := make([]uint64, buckets)
		for doc, v := range final {
			want[bucketOf(doc, buckets)] ^= versionHash(doc, v)
		}
		if got := d.snapshot(); !slices.Equal(got, want) {
			t.Fatalf("round %d: buckets %x, want %x", round, got, want)
		}
		for b := range buckets {
			_, docs, hashes := d.bucket(b)
			for i, doc := range docs {
				if bucketOf(doc, buckets) != b || hashes[i] != versionHash(doc, final[doc]) {
					t.Fatalf("round %d: bucket %d lists %s with hash %x", round, b, doc, hashes[i])
				}
			}
		}
		if d.count() != len(final) {
			t.Fatalf("round %d: %d documents, want %d", round, d.count(), len(final))
		}
	}
}

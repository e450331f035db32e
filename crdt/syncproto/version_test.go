package syncproto

import (
	"math/rand/v2"
	"testing"

	"github.com/weftsync/weft/crdt"
)

// SplitVersion's parts each encode within the budget, cover every replica
// once, and their union is the vector; a Peer assembles them back.
func TestSplitVersionPartsFitAndReassemble(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	v := crdt.VersionVector{}
	for range 5000 {
		var r crdt.ReplicaID
		for i := range r {
			r[i] = byte(rng.Uint32())
		}
		v[r] = 1 + rng.Uint64N(1<<uint(rng.IntN(40)))
	}
	const budget = 4096
	parts := SplitVersion(v, budget)
	if len(parts) < 2 {
		t.Fatalf("%d replicas in %d part", len(v), len(parts))
	}
	var vp VersionParts
	seen := 0
	for i, p := range parts {
		b, err := Encode(&VersionPart{Doc: "d", Version: p})
		if err != nil {
			t.Fatal(err)
		}
		// The frame adds the tag and the doc id to the part's vector.
		if len(b) > budget+8 {
			t.Fatalf("part %d encodes in %d bytes, budget %d", i, len(b), budget)
		}
		seen += len(p)
		if i < len(parts)-1 {
			if err := vp.Add(p); err != nil {
				t.Fatal(err)
			}
		}
	}
	if seen != len(v) {
		t.Fatalf("parts hold %d replicas, want %d", seen, len(v))
	}
	got, err := vp.Take(parts[len(parts)-1])
	if err != nil || !got.Equal(v) {
		t.Fatalf("reassembled %d replicas (equal %t), %v", len(got), got.Equal(v), err)
	}
	if one := SplitVersion(crdt.VersionVector{}, budget); len(one) != 1 || len(one[0]) != 0 {
		t.Fatalf("empty vector: %v", one)
	}
}

// A receiver refuses parts beyond MaxVersionEntries and forgets them.
func TestVersionPartsBounded(t *testing.T) {
	var vp VersionParts
	big := make(crdt.VersionVector, MaxVersionEntries+1)
	for i := range MaxVersionEntries + 1 {
		var r crdt.ReplicaID
		r[0], r[1], r[2], r[15] = byte(i), byte(i>>8), byte(i>>16), 1
		big[r] = 1
	}
	if err := vp.Add(big); err == nil || vp.Len() != 0 {
		t.Fatalf("Add of %d replicas: %v, holding %d", len(big), err, vp.Len())
	}
}

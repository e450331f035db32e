package codec

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
)

// Encoding a document's delta straight from its log gives the bytes that
// encoding ChangesSince's slice gives, for deltas of several replicas,
// fields and op kinds, from several versions.
func TestEncodeChangeSeqMatchesEncodeChanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	wall := &hlc.ManualWall{Millis: 1_700_000_000_000}
	docs := make([]*crdt.Doc, 3)
	for i := range docs {
		docs[i] = crdt.NewDoc(rep(byte(i+1)), hlc.NewClock(wall.Read, 0), crdt.Options{})
	}
	var versions []crdt.VersionVector
	for step := range 600 {
		wall.Millis += int64(rng.IntN(3))
		d := docs[rng.IntN(len(docs))]
		if rng.IntN(5) == 0 {
			// Sync from another replica, so deltas name several.
			o := docs[rng.IntN(len(docs))]
			if err := d.Apply(o.ChangesSince(d.Version())...); err != nil {
				t.Fatal(err)
			}
			continue
		}
		tx := d.Begin()
		var err error
		switch l := d.TextLen("body"); {
		case l > 0 && rng.IntN(3) == 0:
			err = tx.Delete("body", rng.IntN(l), 1)
		case rng.IntN(10) == 0:
			err = tx.Add("n", int64(rng.IntN(5))+1)
		case rng.IntN(10) == 0:
			err = tx.Set("title", []byte{0xa1, byte('a' + rng.IntN(26))})
		default:
			err = tx.Insert("body", rng.IntN(l+1), string(rune('a'+rng.IntN(26)))+"é")
		}
		if err != nil {
			t.Fatal(err)
		}
		tx.Commit()
		if step%50 == 0 {
			versions = append(versions, d.Version())
		}
	}
	versions = append(versions, nil)
	for _, d := range docs {
		for _, v := range versions {
			want := EncodeChanges(d.ChangesSince(v))
			if got := EncodeChangeSeq(d.EachChangeSince(v)); !bytes.Equal(got, want) {
				t.Fatalf("from %v: EncodeChangeSeq gives %d bytes that differ from EncodeChanges' %d", v, len(got), len(want))
			}
			// Sizes only size buffers: right, wrong or unknown, the
			// bytes are the same.
			ops, inserts := d.SizeSince(v)
			for _, sz := range [][2]int{{ops, inserts}, {0, 0}, {1, 1}, {ops, 0}, {3 * ops, 2 * ops}, {-1, -1}} {
				if got := EncodeChangeSeqSize(d.EachChangeSince(v), sz[0], sz[1]); !bytes.Equal(got, want) {
					t.Fatalf("from %v, sizes %v: EncodeChangeSeqSize gives %d bytes that differ from EncodeChanges' %d", v, sz, len(got), len(want))
				}
			}
		}
	}
}

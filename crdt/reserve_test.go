package crdt

import (
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/weftsync/weft/hlc"
)

// A batch of known size read through ApplySeq gives its first replica's
// text characters room at once (see stage.record and text.reserve): the
// receiving text's bitset of that replica's characters and its id
// index's chunk list are made once, for the rest of the batch, not grown
// through every doubling, and so is the scratch of its scans; and the
// text comes out the same as the sender's.
func TestApplySeqReservesTextRoom(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	src := NewDoc(ReplicaID{3, 15: 1}, hlc.NewClock((&hlc.ManualWall{Millis: 1}).Read, 0), Options{})
	n := 0
	for range 3000 {
		x := src.Begin()
		var err error
		if n == 0 || rng.IntN(10) < 7 {
			err = x.Insert("body", rng.IntN(n+1), string(byte('a'+rng.IntN(26))))
			n++
		} else {
			err = x.Delete("body", rng.IntN(n), 1)
			n--
		}
		if err != nil {
			t.Fatal(err)
		}
		x.Commit()
	}
	cs := src.ChangesSince(nil)
	ops := 0
	for _, c := range cs {
		ops += len(c.Ops)
	}
	dst := NewDoc(ReplicaID{4, 15: 1}, hlc.NewClock((&hlc.ManualWall{Millis: 1}).Read, 0), Options{})
	seq := ChangeSeq{
		All: func(yield func(*Change, error) bool) {
			for i := range cs {
				if !yield(&cs[i], nil) {
					return
				}
			}
		},
		Ops: ops,
	}
	if err := dst.ApplySeq(seq); err != nil {
		t.Fatal(err)
	}
	if dst.Text("body") != src.Text("body") {
		t.Fatal("texts differ")
	}
	tx := dst.field(Field{"body", FieldText}, false).text
	r := dst.replicaIndex(src.replica)
	if want := (ops + 1 + 63) / 64; cap(tx.chars[r]) != want {
		t.Errorf("characters' bitset has room for %d words, want %d (the batch's seqs)", cap(tx.chars[r]), want)
	}
	if want := roomFor(ops/idChunk+1, int(unsafe.Sizeof(idChunkT{}))); cap(tx.ids[r].chunks) != want {
		t.Errorf("id index has room for %d chunks (%d used), want %d (made once)", cap(tx.ids[r].chunks), len(tx.ids[r].chunks), want)
	}
	if cap(tx.seen) != maxSeen || cap(tx.gap) != largeGap {
		t.Errorf("scratch for %d and %d runs, want %d and %d (made for a large batch)", cap(tx.seen), cap(tx.gap), maxSeen, largeGap)
	}
}

// roomFor's capacities hold what was asked, and with an 8-byte header
// fill (to less than one element) 2, 4 or 8 KB or a multiple of 8 KB, no
// more than twice what was asked or 8 KB over it; 1 KB or less is left
// as asked.
func TestRoomFor(t *testing.T) {
	for _, size := range []int{1, 4, 8, 12, 16, 40, 48, 56, 816, 8160, 9000} {
		for n := 1; n*size <= 100<<10; n += 1 + n/50 {
			c := roomFor(n, size)
			b, asked := c*size+8, n*size+8
			if asked <= 1024 || size > 8192 {
				if c != n {
					t.Fatalf("roomFor(%d, %d) = %d, want %d", n, size, c, n)
				}
				continue
			}
			p := 2048
			for p < b {
				if p < 8192 {
					p *= 2
				} else {
					p += 8192
				}
			}
			if c < n || p-b >= size || p > max(2*asked, asked+8192) {
				t.Fatalf("roomFor(%d, %d) = %d: %d bytes of %d for %d", n, size, c, b, p, asked)
			}
		}
	}
}

// Reserving room for one more element at a time, as the stage does for
// a batch of one keystroke, grows a full list to at least twice its
// capacity, not by one.
func TestGrowRoomyDoubles(t *testing.T) {
	var s []uint32
	grown := 0
	for i := range 10000 {
		if g := growRoomy(s, 1); cap(g) != cap(s) {
			grown++
			if cap(s) > 0 && cap(g) < 2*cap(s) {
				t.Fatalf("at %d: grew from %d to %d", i, cap(s), cap(g))
			}
			s = g
		}
		s = append(s, uint32(i))
	}
	if grown > 16 {
		t.Errorf("grown %d times for 10,000 elements", grown)
	}
}

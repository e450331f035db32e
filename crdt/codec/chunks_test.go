package codec

import (
	"reflect"
	"testing"

	"github.com/weftsync/weft/crdt"
)

func TestEncodeChunks(t *testing.T) {
	// Limit+10 one-op changes compress to a few bytes each (a burst of
	// counter clicks): bytes alone would put them in one undecodable batch.
	defer func(o, c int) { opsLimit, changesLimit = o, c }(opsLimit, changesLimit)
	opsLimit, changesLimit = 1000, 1000
	chs := make([]crdt.Change, opsLimit+10)
	for i := range chs {
		chs[i] = crdt.Change{Replica: rep(1), Seq: uint64(i + 1), Time: 1 << 16, Ops: []crdt.Op{{Kind: crdt.OpCounterAdd, Field: "n", Delta: 1}}}
	}
	if b := EncodeChanges(chs); len(b) > 1<<20 {
		t.Fatalf("test premise: %d bytes", len(b))
	} else if _, err := DecodeChanges(b); err == nil {
		t.Fatal("test premise: an over-limit batch decodes")
	}
	chunks := EncodeChunks(chs, 1<<20)
	if len(chunks) != 2 {
		t.Fatalf("%d chunks, want 2", len(chunks))
	}
	var back []crdt.Change
	for _, c := range chunks {
		got, err := DecodeChanges(c.Data)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, c.Changes) {
			t.Fatal("chunk data does not match its changes")
		}
		back = append(back, got...)
	}
	if !reflect.DeepEqual(back, chs) {
		t.Fatal("chunks do not add up to the input")
	}

	// A byte limit splits; a change larger than the limit goes alone.
	trace := editTrace(2, 300, 50, true, typing)
	chunks = EncodeChunks(trace, 200)
	n := 0
	for _, c := range chunks {
		if len(c.Data) > 200 && len(c.Changes) > 1 {
			t.Fatalf("chunk of %d changes, %d bytes", len(c.Changes), len(c.Data))
		}
		n += len(c.Changes)
	}
	if n != len(trace) || len(chunks) < 5 {
		t.Fatalf("%d chunks holding %d of %d changes", len(chunks), n, len(trace))
	}
	if len(EncodeChunks(nil, 100)) != 0 {
		t.Fatal("chunks for no changes")
	}
}

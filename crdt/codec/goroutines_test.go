package codec_test

import (
	"runtime"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
)

// The codec is pure: encoding and decoding snapshots runs in the caller's
// goroutine and leaves none behind (the zstd coder runs with concurrency 1).
func TestSnapshotStartsNoGoroutines(t *testing.T) {
	d := snapDocs(t, 4)
	codec.EncodeSnapshot(d) // warm the package coders
	before := runtime.NumGoroutine()
	for i := 0; i < 10; i++ {
		data := codec.EncodeSnapshot(d)
		if _, err := codec.DecodeSnapshot(data, snapReplica(5), snapClock(), crdt.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	if after := runtime.NumGoroutine(); after != before {
		t.Fatalf("goroutines %d -> %d", before, after)
	}
}

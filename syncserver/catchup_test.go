package syncserver

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/hlc"
)

// A reconnecting client resubscribes all its max_docs documents at once
// and reads as fast as it can: the catch-up is paced by what it has
// consumed, so it is never dropped as too slow, however small the send
// queue (here a 64th of the catch-ups).
func TestResubscribeAllIsPacedNotDropped(t *testing.T) {
	const docs = 1000
	ts := newTestServer(t, func(o *Options) { o.SendQueue = docs / 64 })
	// 1000 documents of 8 KiB each: a register of random (incompressible)
	// bytes, cheaper to build than 8 KiB of text ids.
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range docs {
		raw := make([]byte, 8<<10)
		for j := range raw {
			raw[j] = byte(rnd.Uint32())
		}
		v, err := msgpack.Marshal(raw)
		if err != nil {
			t.Fatal(err)
		}
		d := crdt.NewDoc(crdt.ReplicaID(uuid.New()), hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
		tx := d.Begin()
		if err := tx.Set("r", v); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if _, err := ts.mem.Append(context.Background(), fmt.Sprint("doc", i), codec.EncodeChanges(d.ChangesSince(nil))); err != nil {
			t.Fatal(err)
		}
	}
	// Loaded already (a reconnect after a blip): the subscribes are
	// answered as fast as they arrive.
	for i := range docs {
		r, err := ts.srv.acquire(context.Background(), fmt.Sprint("doc", i))
		if err != nil {
			t.Fatal(err)
		}
		defer ts.srv.release(r)
	}
	wc := ts.dial(ts.token("u"))
	for i := range docs {
		wc.send(&syncproto.Subscribe{Doc: fmt.Sprint("doc", i)})
	}
	synced := 0
	deadline := time.Now().Add(6 * waitFor) // a bound on failure; -race on a loaded machine is slow
	start := time.Now()
	for synced < docs {
		m, err := wc.tryRecv(time.Until(deadline))
		if err != nil {
			t.Fatalf("after %d of %d catch-ups: %v", synced, docs, err)
		}
		switch m := m.(type) {
		case *syncproto.Sync:
			if len(m.Changes) == 0 {
				t.Fatalf("%s: an empty catch-up", m.Doc)
			}
			synced++
		case *syncproto.Error:
			t.Fatalf("error %+v", m)
		}
	}
	t.Logf("%d catch-ups read in %v", docs, time.Since(start))
	if got := ts.counter("weft_connection_closes_total", "code", "too_slow"); got != 0 {
		t.Fatalf("%v connections dropped as too slow", got)
	}
}

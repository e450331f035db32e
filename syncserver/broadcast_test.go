package syncserver

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
)

// slowDisk models a device whose fsync takes latency: a MemStore whose
// Append returns only after it. (A model of the device, not a wait for an
// event.)
type slowDisk struct {
	*MemStore
	latency time.Duration
}

func (d slowDisk) Append(ctx context.Context, doc string, batch []byte) (int64, error) {
	time.Sleep(d.latency)
	return d.MemStore.Append(ctx, doc, batch)
}

// BenchmarkFanout measures the time from a writer sending an update to
// another subscriber receiving it, with the broadcast before (production)
// or after the store write, on a 2 ms fsync.
//
//	go test -run - -bench Fanout ./syncserver
func BenchmarkFanout(b *testing.B) {
	for _, after := range []bool{false, true} {
		name := "broadcast=before-persist"
		if after {
			name = "broadcast=after-persist"
		}
		b.Run(name, func(b *testing.B) {
			ts := newTestServer(b, func(o *Options) {
				o.Store = slowDisk{NewMemStore(), 2 * time.Millisecond}
				o.MaxChangesPerSec = 1 << 30
				o.ChangesBurst = 1 << 30
			})
			ts.srv.broadcastAfterDurable = after
			w := ts.dial(ts.token("writer"))
			r := ts.dial(ts.token("reader"))
			w.subscribe("bench")
			r.subscribe("bench")
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				payload := w.edit("bench", insert("t", 0, "x"))
				w.batch++
				start := time.Now()
				w.send(&syncproto.Update{Doc: "bench", Batch: w.batch, Changes: payload})
				recvType[*syncproto.Changes](r)
				lat = append(lat, time.Since(start))
				w.waitAck("bench", w.batch)
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// Updates that queue up while a room is busy go out as one changes message
// per subscriber, and no author gets its own changes back.
func TestBroadcastCoalescesQueuedUpdates(t *testing.T) {
	ts := newTestServer(t, nil)
	a, b, c := ts.dial(ts.token("a")), ts.dial(ts.token("b")), ts.dial(ts.token("c"))
	for _, wc := range []*wsClient{a, b, c} {
		wc.subscribe("doc")
	}
	ts.srv.rooms.Lock()
	r := ts.srv.rooms.m["doc"]
	ts.srv.rooms.Unlock()
	// Hold the room busy until both updates wait in its queue.
	entered, gate := make(chan struct{}), make(chan struct{})
	if err := r.send(context.Background(), cmdDo{fn: func(*room) { close(entered); <-gate }}); err != nil {
		t.Fatal(err)
	}
	<-entered
	for _, wc := range []*wsClient{a, b} {
		payload := wc.edit("doc", insert("t", 0, "x"))
		wc.batch++
		wc.send(&syncproto.Update{Doc: "doc", Batch: wc.batch, Changes: payload})
	}
	eventually(t, "both updates queued", func() bool { return len(r.cmds) == 2 })
	close(gate)

	replicas := func(m *syncproto.Changes) []crdt.ReplicaID {
		chs, err := codec.DecodeChanges(m.Changes)
		if err != nil {
			t.Fatal(err)
		}
		var out []crdt.ReplicaID
		for _, ch := range chs {
			out = append(out, ch.Replica)
		}
		return out
	}
	m := recvType[*syncproto.Changes](c)
	if got := replicas(m); len(got) != 2 || !slices.Contains(got, a.replica) || !slices.Contains(got, b.replica) {
		t.Fatalf("bystander got changes of %v in its first message, want both writers' (%v, %v)", got, a.replica, b.replica)
	}
	c.absorb(m)
	for _, w := range []struct{ self, other *wsClient }{{a, b}, {b, a}} {
		m := recvType[*syncproto.Changes](w.self)
		if got := replicas(m); !slices.Equal(got, []crdt.ReplicaID{w.other.replica}) {
			t.Fatalf("author %v got changes of %v, want only %v", w.self.replica, got, w.other.replica)
		}
		w.self.absorb(m)
		w.self.waitAck("doc", w.self.batch)
	}
	want := c.doc("doc").Text("t")
	for _, wc := range []*wsClient{a, b} {
		if got := wc.doc("doc").Text("t"); got != want || len(got) != 2 {
			t.Fatalf("texts differ: %q vs %q", got, want)
		}
	}
}

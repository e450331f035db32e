package syncserver

import (
	"bytes"
	"context"
	"github.com/gorilla/websocket"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/weftsync/weft/crdt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftsync/weft/crdt/syncproto"
)

func TestSlowConsumerIsDisconnected(t *testing.T) {
	ts := newTestServer(t, func(o *Options) {
		o.SendQueue = 32
		o.PingInterval = time.Minute // the slow client answers no pings either
		o.WriteTimeout = time.Minute // the queue, not a write timeout, must catch it
		o.MaxDocBytes = 1 << 30
		o.SnapshotMinBytes = 1 << 30
		o.MaxChangesPerSec = 1 << 30
		o.ChangesBurst = 1 << 30
	})
	tok := ts.token("u")
	slow := ts.dial(tok)
	slow.subscribe("d")
	a := ts.dial(tok)
	b := ts.dial(tok)
	a.subscribe("d")
	b.subscribe("d")
	// b reads everything in the background.
	var bMu sync.Mutex
	bGot := 0
	bDone := make(chan struct{})
	go func() {
		defer close(bDone)
		for {
			m, err := b.tryRecv(waitFor)
			if err != nil {
				return
			}
			if _, ok := m.(*syncproto.Changes); ok {
				bMu.Lock()
				bGot++
				bMu.Unlock()
			}
		}
	}()
	// Register values cost one op each, whatever their size: 128 KiB of
	// payload per update without millions of text ids.
	// Random bytes: the codec packs repetitive content.
	raw := make([]byte, 128<<10)
	rnd := rand.New(rand.NewPCG(3, 4))
	for i := range raw {
		raw[i] = byte(rnd.Uint32())
	}
	blob, err := msgpack.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	var lat []time.Duration
	const maxUpdates = 400 // 50 MiB: far beyond any loopback socket buffer
	sent := 0
	sessions := func() int {
		ts.srv.sessions.Lock()
		defer ts.srv.sessions.Unlock()
		return len(ts.srv.sessions.m)
	}
	for ; sent < maxUpdates && sessions() == 3; sent++ {
		start := time.Now()
		if ack := a.update("d", func(tx *crdt.Tx) error { return tx.Set("blob", blob) }); ack.Status != syncproto.StatusOK {
			t.Fatalf("update %d: %v %s", sent, ack.Status, ack.Message)
		}
		lat = append(lat, time.Since(start))
	}
	if sent == maxUpdates {
		t.Fatalf("the slow consumer was never disconnected after %d updates", sent)
	}
	if ts.counter("weft_limit_hits_total", "limit", "send_queue") != 1 {
		t.Fatalf("one session left after %d updates, but not for its send queue", sent)
	}
	code := slow.expectClose()
	if code != int(syncproto.CloseTooSlow) && code != websocket.CloseAbnormalClosure && code != -1 {
		t.Fatalf("slow consumer closed with %d", code)
	}
	// Everyone else goes on: more updates reach b.
	for i := 0; i < 5; i++ {
		if ack := a.update("d", insert("t", 0, "after")); ack.Status != syncproto.StatusOK {
			t.Fatalf("after the disconnect: %v", ack.Status)
		}
	}
	eventually(t, "b to receive every update", func() bool {
		bMu.Lock()
		defer bMu.Unlock()
		return bGot == sent+5
	})
	b.c.Close()
	<-bDone
	slices.Sort(lat)
	p50, max := lat[len(lat)/2], lat[len(lat)-1]
	t.Logf("slow consumer dropped after %d updates of 128 KiB (close code %d); writer ack latency p50 %v max %v", sent, code, p50, max)
	// A room that waited for the slow socket would hold the writer's
	// acks until WriteTimeout (a minute); a third of it tells the two
	// apart on a loaded machine (2 s did not: 1 failure in 12 runs under
	// -race beside other test processes).
	if bound := ts.srv.opts.WriteTimeout / 3; max > bound {
		t.Errorf("the writer was slowed down: max ack latency %v (bound %v)", max, bound)
	}
}

// appendGate blocks the first Append until released, to show group commit.
type appendGate struct {
	*MemStore
	first   sync.Once
	blocked chan struct{}
	release chan struct{}
}

func (g *appendGate) Append(ctx context.Context, doc string, batch []byte) (int64, error) {
	g.first.Do(func() {
		close(g.blocked)
		<-g.release
	})
	return g.MemStore.Append(ctx, doc, batch)
}

func TestGroupCommit(t *testing.T) {
	g := &appendGate{MemStore: NewMemStore(), blocked: make(chan struct{}), release: make(chan struct{})}
	ts := newTestServer(t, func(o *Options) { o.Store = g })
	c := ts.dial(ts.token("u"))
	c.subscribe("d")
	send := func(s string) {
		b := c.edit("d", insert("t", 0, s))
		c.batch++
		c.send(&syncproto.Update{Doc: "d", Batch: c.batch, Changes: b})
	}
	var once sync.Once
	releaseGate := func() { once.Do(func() { close(g.release) }) }
	t.Cleanup(releaseGate) // runs before the server's Shutdown, even on failure
	send("a")
	<-g.blocked
	for i := 0; i < 20; i++ {
		send("b")
	}
	// The pong comes after the reader handed every update to the room, so
	// the observer's subscribe queues behind them.
	c.send(&syncproto.Ping{Nonce: 1})
	recvType[*syncproto.Pong](c)
	// Every update reached the room (it broadcasts and applies them while
	// the first append is blocked); a second client sees them all.
	o := ts.dial(ts.token("v"))
	o.subscribe("d")
	if got := o.doc("d").Text("t"); got != strings.Repeat("b", 20)+"a" {
		t.Fatalf("observer sees %q", got)
	}
	releaseGate()
	for i := uint64(1); i <= 21; i++ {
		if a := c.waitAck("d", i); a.Status != syncproto.StatusOK {
			t.Fatalf("ack %d: %v", i, a.Status)
		}
	}
	if appends, _ := g.Stats(); appends != 2 {
		t.Fatalf("21 updates took %d appends, want 2 (one group commit)", appends)
	}
}

func TestSnapshotReplacesLog(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.SnapshotMinBytes = 1 })
	c := ts.dial(ts.token("u"))
	c.subscribe("d")
	for i := 0; i < 10; i++ {
		if a := c.update("d", insert("t", 0, "abc")); a.Status != syncproto.StatusOK {
			t.Fatal(a.Message)
		}
	}
	if _, snaps := ts.mem.Stats(); snaps == 0 {
		t.Fatal("no snapshot written")
	}
	snap, batches, err := ts.mem.Load(context.Background(), "d")
	if err != nil || snap == nil {
		t.Fatalf("load: %v", err)
	}
	// The log never outgrows the snapshot by more than one batch.
	var logBytes, biggest int
	for _, b := range batches {
		logBytes += len(b)
		biggest = max(biggest, len(b))
	}
	if logBytes > len(snap)+biggest {
		t.Fatalf("log of %d bytes next to a snapshot of %d", logBytes, len(snap))
	}
	if got := storedDoc(t, ts.store, "d").Text("t"); got != strings.Repeat("abc", 10) {
		t.Fatalf("stored %q", got)
	}
}

// TestDeliveriesSurviveAFullSocket: frames to an idle connection are
// written by whoever queues them (writeNow); when the socket takes only
// part of one, the rest must go out first, whole, through a flusher. The
// slow subscriber's socket buffer is shrunk so that it fills at once; it
// reads nothing until the writer is done, then must see every change in
// frames that all decode.
func TestDeliveriesSurviveAFullSocket(t *testing.T) {
	ts := newTestServer(t, func(o *Options) {
		o.SendQueue = 1 << 14
		o.PingInterval = time.Minute
		o.MaxChangesPerSec = 1 << 30
		o.ChangesBurst = 1 << 30
		o.MaxDocBytes = 1 << 30
	})
	tok := ts.token("u")
	slow := ts.dial(tok)
	slow.subscribe("d")
	ts.srv.sessions.Lock()
	for ss := range ts.srv.sessions.m {
		if tc, ok := ss.nc.(*net.TCPConn); ok {
			if err := tc.SetWriteBuffer(4096); err != nil {
				t.Fatal(err)
			}
		}
	}
	ts.srv.sessions.Unlock()
	a := ts.dial(tok)
	a.subscribe("d")
	rnd := rand.New(rand.NewPCG(5, 6))
	const updates = 300
	for i := range updates {
		raw := make([]byte, 1500) // under inlineWriteMax, and incompressible
		for j := range raw {
			raw[j] = byte(rnd.Uint32())
		}
		v, err := msgpack.Marshal(raw)
		if err != nil {
			t.Fatal(err)
		}
		if ack := a.update("d", func(tx *crdt.Tx) error { return tx.Set("k", v) }); ack.Status != syncproto.StatusOK {
			t.Fatalf("update %d: %v %s", i, ack.Status, ack.Message)
		}
	}
	if n := ts.counter("weft_frames_write_deferred_total"); n == 0 {
		t.Fatal("no frame was left to a flusher: the test did not fill the socket")
	}
	want := a.doc("d").Version()
	for !slow.doc("d").Version().Covers(want) {
		slow.absorb(slow.recv())
	}
	got, _ := slow.doc("d").Register("k")
	exp, _ := a.doc("d").Register("k")
	if !bytes.Equal(got, exp) {
		t.Fatal("the slow subscriber's register differs from the writer's")
	}
}

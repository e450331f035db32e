package syncserver

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/hlc"
)

// manyReplicas is the replica count of TestManyReplicas: every tab
// without local storage is a new replica.
const manyReplicas = 200_000

// storeManyReplicas writes a document in which n replicas each added 1
// to counter "n", as the server's store would hold it.
func storeManyReplicas(t *testing.T, st Store, doc string, n int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(11, uint64(n)))
	t0 := hlc.New(hlc.SystemWall()-time.Hour.Milliseconds(), 0)
	chs := make([]crdt.Change, n)
	for i := range chs {
		var r crdt.ReplicaID
		binary.LittleEndian.PutUint64(r[:8], rng.Uint64())
		binary.LittleEndian.PutUint64(r[8:], rng.Uint64()|1)
		chs[i] = crdt.Change{Replica: r, Seq: 1, Time: t0 + hlc.Timestamp(i), Ops: []crdt.Op{{Kind: crdt.OpCounterAdd, Field: "n", Delta: 1}}}
	}
	for _, c := range codec.EncodeChunks(chs, 1<<20) {
		if _, err := st.Append(context.Background(), doc, c.Data); err != nil {
			t.Fatal(err)
		}
	}
}

// peerConn drives a client-role syncproto.Peer over a real WebSocket and
// checks that every frame the server sends stays within max_frame.
type peerConn struct {
	t        *testing.T
	c        *websocket.Conn
	maxFrame int
	doc      *crdt.Doc
	peer     *syncproto.Peer
	sent     []syncproto.Message // what the last send wrote
}

func dialPeer(t *testing.T, ts *testServer, doc string) *peerConn {
	t.Helper()
	wc := ts.dial(ts.token("many"))
	pc := &peerConn{t: t, c: wc.c, maxFrame: int(wc.welcome.Limits.MaxFrame)}
	pc.doc = crdt.NewDoc(wc.replica, hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	o := syncproto.Options{Role: syncproto.RoleClient, MaxBytesPerMessage: pc.maxFrame - syncproto.MaxDocIDLen - 64}
	var err error
	if pc.peer, err = syncproto.NewPeer(pc.doc, doc, o); err != nil {
		t.Fatal(err)
	}
	return pc
}

func (pc *peerConn) send(ms []syncproto.Message) {
	pc.t.Helper()
	pc.sent = ms
	for _, m := range ms {
		b, err := syncproto.Encode(m)
		if err != nil {
			pc.t.Fatal(err)
		}
		if len(b) > pc.maxFrame {
			pc.t.Fatalf("client %s frame of %d bytes exceeds max_frame %d", m.Type(), len(b), pc.maxFrame)
		}
		pc.c.SetWriteDeadline(time.Now().Add(waitFor))
		if err := pc.c.WriteMessage(websocket.BinaryMessage, b); err != nil {
			pc.t.Fatal(err)
		}
	}
}

// until feeds the server's messages to the Peer (sending its answers)
// until done holds after a message; it returns how many frames came.
func (pc *peerConn) until(what string, done func(syncproto.Message) bool) int {
	pc.t.Helper()
	// NB: generous: 200,000 replicas under -race on a loaded machine.
	deadline := time.Now().Add(5 * time.Minute)
	for n := 1; ; n++ {
		pc.c.SetReadDeadline(deadline)
		typ, b, err := pc.c.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				pc.t.Fatalf("waiting for %s: closed %d %q", what, ce.Code, ce.Text)
			}
			pc.t.Fatalf("waiting for %s: %v", what, err)
		}
		if typ != websocket.BinaryMessage || len(b) > pc.maxFrame {
			pc.t.Fatalf("server frame of %d bytes (type %d) exceeds max_frame %d", len(b), typ, pc.maxFrame)
		}
		m, err := syncproto.Decode(b)
		if err != nil {
			pc.t.Fatal(err)
		}
		if e, ok := m.(*syncproto.Error); ok {
			pc.t.Fatalf("waiting for %s: error %s %q", what, e.Status, e.Message)
		}
		out, err := pc.peer.Receive(m)
		if err != nil {
			pc.t.Fatalf("waiting for %s: %v", what, err)
		}
		pc.send(out)
		if done(m) {
			return n
		}
	}
}

func isSync(m syncproto.Message) bool { _, ok := m.(*syncproto.Sync); return ok }

// A document with 200,000 replicas syncs over WebSocket, both ways, with
// every frame within max_frame: its version vector alone is some 4 MB.
func TestManyReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("200,000 replicas")
	}
	ts := newTestServer(t, func(o *Options) {
		// This client applies each catch-up chunk before it reads the
		// next (a 200,000-replica document, under -race, on a shared
		// machine): it must not be dropped as dead or too slow meanwhile.
		o.PingInterval, o.PongTimeout, o.WriteTimeout = time.Minute, 5*time.Minute, 5*time.Minute
	})
	start := time.Now()
	storeManyReplicas(t, ts.mem, "many", manyReplicas)
	t.Logf("stored: %v", time.Since(start))

	pc := dialPeer(t, ts, "many")
	pc.send(pc.peer.Subscribe())
	frames := pc.until("the first sync", isSync)
	if got := pc.doc.Counter("n"); got != manyReplicas {
		t.Fatalf("counter %d after the sync, want %d", got, manyReplicas)
	}
	t.Logf("first sync: %d frames, %v", frames, time.Since(start))

	tx := pc.doc.Begin()
	if err := tx.Add("n", 1); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	pc.send(pc.peer.Outgoing())
	pc.until("the ack", func(m syncproto.Message) bool {
		a, ok := m.(*syncproto.Ack)
		if ok && a.Status != syncproto.StatusOK {
			t.Fatalf("ack %s %q", a.Status, a.Message)
		}
		return ok
	})
	if !pc.peer.Saved() {
		t.Fatal("not saved after the ack")
	}
	t.Logf("acked: %v", time.Since(start))

	// Resubscribe with the whole version: the subscribe must be split.
	pc.peer.Reset()
	pc.send(pc.peer.Subscribe())
	if len(pc.sent) < 2 {
		t.Fatalf("a subscribe of %d replicas went in %d message", manyReplicas+1, len(pc.sent))
	}
	pc.until("the resync", isSync)
	if !pc.peer.Saved() || pc.doc.Counter("n") != manyReplicas+1 {
		t.Fatalf("after the resync: saved %t, counter %d", pc.peer.Saved(), pc.doc.Counter("n"))
	}
	t.Logf("resynced: %v", time.Since(start))

	// Over SSE: the whole document, every event id short, then a resume
	// from the synced id that brings exactly the one change made since.
	ev := openEvents(t, ts, "many", ts.token("reader"), "")
	var last sseMsg
	total := int64(0)
	for last.event != "synced" {
		last = ev.nextWithin(t, 5*time.Minute)
		if len(last.id) > 64 {
			t.Fatalf("%s event id of %d bytes", last.event, len(last.id))
		}
		if last.event == "changes" {
			total += counterDeltas(t, last.data)
		}
	}
	if total != manyReplicas+1 {
		t.Fatalf("the event stream carried %d counter adds, want %d", total, manyReplicas+1)
	}
	ev.resp.Body.Close()
	tx = pc.doc.Begin()
	if err := tx.Add("n", 5); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	pc.send(pc.peer.Outgoing())
	pc.until("the second ack", func(m syncproto.Message) bool { _, ok := m.(*syncproto.Ack); return ok })
	resumed := openEvents(t, ts, "many", ts.token("reader"), last.id)
	m := resumed.nextWithin(t, 5*time.Minute)
	if m.event != "changes" || counterDeltas(t, m.data) != 5 {
		t.Fatalf("resumed with %s %q, want the one change made since", m.event, m.data)
	}
	if m = resumed.nextWithin(t, 5*time.Minute); m.event != "synced" {
		t.Fatalf("then %s, want synced", m.event)
	}
	t.Logf("resumed over SSE: %v", time.Since(start))
}

// counterDeltas sums the counter adds of a changes event's batch.
func counterDeltas(t *testing.T, data string) int64 {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(data)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := codec.DecodeChanges(b)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, c := range cs {
		for _, op := range c.Ops {
			n += op.Delta
		}
	}
	return n
}

// A compact event id stays short and resumes exactly; when a change
// stamped before its cut arrived after it (an edit made offline), the
// stream starts over after a "reset" event, never leaving a gap.
func TestCompactEventIDResumesOrResets(t *testing.T) {
	ts := newTestServer(t, nil)
	const n = 3 * maxExplicitReplicas
	storeManyReplicas(t, ts.mem, "c", n)
	tok := ts.token("reader")
	ev := openEvents(t, ts, "c", tok, "")
	var synced sseMsg
	for synced.event != "synced" {
		synced = ev.next(t)
	}
	ev.resp.Body.Close()
	p, err := parseResumeToken(synced.id)
	if err != nil || !p.compact || len(synced.id) > 64 {
		t.Fatalf("synced id %q (%d bytes): %+v, %v", synced.id, len(synced.id), p, err)
	}
	if synced.data != fmt.Sprintf(`{"replicas":%d}`, n) {
		t.Fatalf("synced data %q", synced.data)
	}

	// A late change: a new replica's edit stamped before every stored one.
	late := crdt.Change{Replica: crdt.ReplicaID{0xee, 1}, Seq: 1, Time: hlc.New(hlc.SystemWall()-2*time.Hour.Milliseconds(), 0),
		Ops: []crdt.Op{{Kind: crdt.OpCounterAdd, Field: "n", Delta: 7}}}
	w := ts.dial(ts.token("late"))
	w.subscribe("c")
	w.send(&syncproto.Update{Doc: "c", Batch: 1, Changes: codec.EncodeChanges([]crdt.Change{late})})
	if a := w.waitAck("c", 1); a.Status != syncproto.StatusOK {
		t.Fatalf("late change: %s %q", a.Status, a.Message)
	}
	again := openEvents(t, ts, "c", tok, synced.id)
	if m := again.next(t); m.event != "reset" {
		t.Fatalf("resume after a late change: %s, want reset", m.event)
	}
	var sum int64
	for m := again.next(t); m.event != "synced"; m = again.next(t) {
		sum += counterDeltas(t, m.data)
	}
	if sum != n+7 {
		t.Fatalf("after the reset the stream carried %d, want the whole document %d", sum, n+7)
	}

	// Without a late change, the compact id resumes exactly.
	again.resp.Body.Close()
	var last sseMsg
	ev = openEvents(t, ts, "c", tok, "")
	for last.event != "synced" {
		last = ev.next(t)
	}
	ev.resp.Body.Close()
	w.send(&syncproto.Update{Doc: "c", Batch: 2, Changes: w.edit("c", func(tx *crdt.Tx) error { return tx.Add("n", 3) })})
	if a := w.waitAck("c", 2); a.Status != syncproto.StatusOK {
		t.Fatalf("edit: %s %q", a.Status, a.Message)
	}
	exact := openEvents(t, ts, "c", tok, last.id)
	if m := exact.next(t); m.event != "changes" || counterDeltas(t, m.data) != 3 {
		t.Fatalf("resumed with %s %q, want the one change", m.event, m.data)
	}
	if m := exact.next(t); m.event != "synced" {
		t.Fatalf("then %s", m.event)
	}
}

package syncserver

import (
	"encoding/binary"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/hlc"
)

// A frame whose header announces 64 GiB is refused with 4005 as soon as
// the header arrives: the payload is never sent, and the heartbeat (which
// would close with 4007) is far away.
func TestHugeFrameHeaderRefusedBeforePayload(t *testing.T) {
	for _, masked := range []bool{true, false} {
		ts := newTestServer(t, func(o *Options) {
			o.PingInterval = time.Minute
			o.PongTimeout = time.Minute
		})
		wc := ts.dial(ts.token("u"))
		// Another frame first, so the guard has to follow the framing.
		wc.send(&syncproto.Ping{Nonce: 7})
		if p, ok := wc.recv().(*syncproto.Pong); !ok || p.Nonce != 7 {
			t.Fatalf("want pong 7, got %#v", p)
		}
		hdr := []byte{0x82, 127}
		if masked {
			hdr[1] |= 0x80
		}
		hdr = binary.BigEndian.AppendUint64(hdr, 64<<30)
		// Without the masking key: the length alone must be enough.
		if _, err := wc.c.NetConn().Write(hdr); err != nil {
			t.Fatal(err)
		}
		if code := wc.expectClose(); code != int(syncproto.CloseFrameTooLarge) {
			t.Fatalf("masked=%v: close code %d, want %d", masked, code, syncproto.CloseFrameTooLarge)
		}
		if got := ts.counter("weft_limit_hits_total", "limit", "frame"); got != 1 {
			t.Fatalf("frame limit hits = %v, want 1", got)
		}
	}
}

// The guard follows frames split across reads at every byte.
func TestGuardedConnFollowsFraming(t *testing.T) {
	var stream []byte
	frame := func(op byte, n int, masked bool) {
		b := []byte{0x80 | op, 0}
		switch {
		case n < 126:
			b[1] = byte(n)
		case n <= 0xffff:
			b[1] = 126
			b = binary.BigEndian.AppendUint16(b, uint16(n))
		default:
			b[1] = 127
			b = binary.BigEndian.AppendUint64(b, uint64(n))
		}
		if masked {
			b[1] |= 0x80
			b = append(b, 1, 2, 3, 4)
		}
		stream = append(stream, b...)
		stream = append(stream, make([]byte, n)...)
	}
	frame(0x2, 10, true)
	frame(0x9, 125, true)
	frame(0x2, 300, false)
	frame(0x0, 70000, true)
	frame(0x2, 100000, true) // exactly the limit
	bad := len(stream)
	frame(0x2, 100001, true)
	for _, step := range []int{1, 3, 7, 4096, len(stream)} {
		g := &guardedConn{limit: 100000}
		at := -1
		for i := 0; i < len(stream); i += step {
			chunk := stream[i:min(i+step, len(stream))]
			if k, ok := g.feed(chunk); !ok {
				at = i + k
				break
			}
		}
		// Refused in the read that completes the length (its last byte is
		// bad+9), at the header's first byte or that read's start.
		if want := max(bad, (bad+9)/step*step); at != want {
			t.Fatalf("step %d: refused at %d, want %d (header at %d)", step, at, want, bad)
		}
	}
}

// countBomb is a valid change batch of some 70 bytes: 2^18 changes (codec's
// maximum) of one counter add each, every column one run. Decoding it
// allocates some 50 MiB.
func countBomb() []byte {
	const n = codec.MaxChanges
	run := func(v uint64) []byte {
		return binary.AppendUvarint(binary.AppendUvarint(nil, (n-1)<<1), v)
	}
	b := []byte{0x01, 1}
	rep := uuid.New()
	b = append(b, rep[:]...)
	b = append(b, 1, 1, 'n') // one field, "n"
	b = binary.AppendUvarint(b, n)
	b = binary.AppendUvarint(b, n)
	cols := [17][]byte{
		0:  run(0),                                // replica index 0
		1:  run(0),                                // seqs as expected
		2:  run(0),                                // same millisecond as the last
		4:  run(1),                                // one op each
		5:  binary.AppendUvarint(nil, (n-1)<<2|0), // all adds
		6:  run(0),                                // field "n"
		14: run(2),                                // zz(+1)
	}
	for _, c := range cols {
		b = binary.AppendUvarint(b, uint64(len(c)))
		b = append(b, c...)
	}
	return b
}

// Frames that declare 2^18 changes in a few dozen bytes are refused from
// their header, before the decoder allocates for them: 150 on one socket
// plus 6 sockets of 15, all pipelined, allocate almost nothing, and a
// socket that keeps sending them is closed with protocol_error.
func TestDeclaredCountBombsCostNothing(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token("u")
	bomb := countBomb()
	if cs, err := codec.DecodeChanges(bomb); err != nil || len(cs) != codec.MaxChanges || len(bomb) > 80 {
		t.Fatalf("the bomb (%d bytes) decodes to %d changes, %v", len(bomb), len(cs), err)
	}
	type plan struct {
		wc     *wsClient
		frames int
	}
	plans := []plan{{ts.dial(tok), 150}}
	for range 6 {
		plans = append(plans, plan{ts.dial(tok), 15})
	}
	for _, p := range plans {
		p.wc.subscribe("d")
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for _, p := range plans {
		for i := range p.frames {
			b, err := syncproto.Encode(&syncproto.Update{Doc: "d", Batch: uint64(i + 1), Changes: bomb})
			if err != nil {
				t.Fatal(err)
			}
			p.wc.c.SetWriteDeadline(time.Now().Add(waitFor))
			if err := p.wc.c.WriteMessage(websocket.BinaryMessage, b); err != nil {
				break // closed under us: the point of the test
			}
		}
	}
	for _, p := range plans {
		want := min(p.frames, maxFouls)
		for refused := 0; refused < want; {
			if a, ok := p.wc.recv().(*syncproto.Ack); ok {
				if a.Status != syncproto.StatusTooLarge {
					t.Fatalf("bomb acked %v %q, want too_large", a.Status, a.Message)
				}
				refused++
			}
		}
		if p.frames >= maxFouls {
			if code := p.wc.expectClose(); code != int(syncproto.CloseProtocolError) {
				t.Fatalf("after %d bombs: close %d, want %d", maxFouls, code, syncproto.CloseProtocolError)
			}
		}
	}
	runtime.ReadMemStats(&after)
	// One decode of the bomb allocates some 50 MiB; 240 of them terabytes.
	got := after.TotalAlloc - before.TotalAlloc
	t.Logf("240 bombs on 7 sockets: %d KiB allocated in the process", got>>10)
	if got > 32<<20 {
		t.Fatalf("the bombs allocated %d MiB", got>>20)
	}
}

// A batch declaring more operations than the whole bucket is refused as
// too_large even when the bucket is full: it could never pass, and letting
// it through once would let one frame buy any amount of work.
func TestBatchLargerThanBurstIsTooLarge(t *testing.T) {
	const burst = crdt.MaxChangeOps // the least a server may configure
	ts := newTestServer(t, func(o *Options) { o.MaxChangesPerSec = burst; o.ChangesBurst = burst })
	wc := ts.dial(ts.token("u"))
	wc.subscribe("d")
	if wc.welcome.Limits.MaxOpsBurst != burst {
		t.Fatalf("welcome announces a burst of %d, want %d", wc.welcome.Limits.MaxOpsBurst, burst)
	}
	// Two changes (one may hold no more than the burst) in one batch.
	d := wc.doc("d")
	for _, n := range []int{burst, 1} {
		tx := d.Begin()
		for i := range n {
			if err := tx.Add("n", int64(i+1)); err != nil {
				t.Fatal(err)
			}
		}
		tx.Commit()
	}
	wc.batch++
	wc.send(&syncproto.Update{Doc: "d", Batch: wc.batch, Changes: codec.EncodeChanges(d.ChangesSince(nil))})
	if ack := wc.waitAck("d", wc.batch); ack.Status != syncproto.StatusTooLarge {
		t.Fatalf("%d ops with a burst of %d: %v %q, want too_large", burst+1, burst, ack.Status, ack.Message)
	}
	other := ts.dial(ts.token("u"))
	other.subscribe("d")
	if ack := other.update("d", func(tx *crdt.Tx) error { return tx.Add("m", 1) }); ack.Status != syncproto.StatusOK {
		t.Fatalf("then one op: %v %q", ack.Status, ack.Message)
	}
}

// POST /v1/docs/{id}/changes is rate limited per principal, whatever the
// document, with 429 rate_limited; other principals are not affected.
func TestHTTPWritesRateLimitedPerPrincipal(t *testing.T) {
	const burst = crdt.MaxChangeOps // the least a server may configure
	ts := newTestServer(t, func(o *Options) { o.MaxChangesPerSec = 1; o.ChangesBurst = burst })
	post := func(user, doc string, n int) (int, []byte) {
		d := crdt.NewDoc(crdt.ReplicaID(uuid.New()), hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
		for i := 0; i < n; { // in changes of at most MaxChangeOps ops
			tx := d.Begin()
			for j := 0; j < crdt.MaxChangeOps && i < n; j, i = j+1, i+1 {
				if err := tx.Add("n", int64(i+1)); err != nil {
					t.Fatal(err)
				}
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
		}
		return httpDo(t, "POST", ts.hs.URL+"/v1/docs/"+doc+"/changes", ts.token(user), codec.EncodeChanges(d.ChangesSince(nil)))
	}
	const n = burst * 3 / 4
	if code, b := post("alice", "a", n); code != 200 {
		t.Fatalf("first POST: %d %s", code, b)
	}
	code, b := post("alice", "b", n)
	if code != http.StatusTooManyRequests || !strings.Contains(string(b), `"status":"rate_limited"`) {
		t.Fatalf("second POST of alice: %d %s, want 429 rate_limited", code, b)
	}
	if code, b := post("bob", "b", n); code != 200 {
		t.Fatalf("bob: %d %s", code, b)
	}
	if code, b := post("bob", "c", burst+1); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("more than the burst: %d %s, want 413", code, b)
	}
	if got := storedDoc(t, ts.store, "b").Counter("n"); got != n*(n+1)/2 {
		t.Fatalf("document b holds %d, want bob's %d only", got, n*(n+1)/2)
	}
}

// A register value is charged decoded: megabytes of zeros compress into a
// frame of a few KB (15.7 MB into 19 KB), and must not reach the document.
func TestCompressedRegisterChargedDecoded(t *testing.T) {
	// Encoding megabytes takes seconds under -race, during which the client
	// reads nothing and so answers no ping: no heartbeat here.
	ts := newTestServer(t, func(o *Options) { o.PingInterval, o.PongTimeout = time.Minute, time.Minute })
	wc := ts.dial(ts.token("u"))
	wc.subscribe("d")
	big, err := msgpack.Marshal(make([]byte, 4<<20)) // four times the limit; cheaper than 15.7 MB under -race
	if err != nil {
		t.Fatal(err)
	}
	payload := wc.edit("d", func(tx *crdt.Tx) error { return tx.Set("r", big) })
	if len(payload) > 64<<10 {
		t.Fatalf("the batch is %d bytes: not the compressed shape this test is about", len(payload))
	}
	wc.batch++
	wc.send(&syncproto.Update{Doc: "d", Batch: wc.batch, Changes: payload})
	if a := wc.waitAck("d", wc.batch); a.Status != syncproto.StatusTooLarge {
		t.Fatalf("a %d-byte frame carrying a %d-byte register: %v %q, want too_large", len(payload), len(big), a.Status, a.Message)
	}
	if d := storedDoc(t, ts.store, "d"); len(d.Fields()) != 0 {
		t.Fatalf("the store holds %v", d.Fields())
	}
}

// httpInsert POSTs one change inserting text at the start of field t,
// with seq (a seq above 1 makes it wait for the replica's earlier ones).
func httpInsert(t *testing.T, ts *testServer, user, doc string, seq uint64, text string) (int, []byte) {
	t.Helper()
	ch := crdt.Change{Replica: crdt.ReplicaID(uuid.New()), Seq: seq, Time: hlc.New(time.Now().UnixMilli(), 0),
		Ops: []crdt.Op{{Kind: crdt.OpTextInsert, Field: "t", Text: text}}}
	body := codec.EncodeChanges([]crdt.Change{ch})
	if len(body) > len(text)/100+1024 {
		t.Fatalf("a %d-byte insert encodes in %d bytes: not compressed", len(text), len(body))
	}
	return httpDo(t, "POST", ts.hs.URL+"/v1/docs/"+doc+"/changes", ts.token(user), body)
}

// Text is charged decoded too: POSTs of a few KB each, carrying 600 KiB of
// text each, do not grow a document past a 1 MiB MaxDocBytes.
func TestCompressedTextChargedDecoded(t *testing.T) {
	ts := newTestServer(t, func(o *Options) {
		o.MaxDocBytes = 1 << 20
		o.MaxChangesPerSec, o.ChangesBurst = 1<<24, 1<<24
	})
	text := strings.Repeat("a", 600<<10)
	if code, b := httpInsert(t, ts, "u", "d", 1, text); code != 200 {
		t.Fatalf("first POST: %d %s", code, b)
	}
	for i := range 3 {
		code, b := httpInsert(t, ts, "u", "d", 1, text)
		if code != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), `"too_large"`) {
			t.Fatalf("POST %d: %d %s, want 413 too_large", i+2, code, b)
		}
	}
	if n := len(storedDoc(t, ts.store, "d").Text("t")); n != len(text) {
		t.Fatalf("the document holds %d bytes of text, want %d", n, len(text))
	}
}

// The pending buffer is bounded in bytes, not only in changes: changes
// that wait for dependencies stop being taken once they hold
// MaxPendingBytes, however few they are.
func TestPendingBufferBoundedInBytes(t *testing.T) {
	ts := newTestServer(t, func(o *Options) {
		o.MaxChangesPerSec, o.ChangesBurst = 1<<24, 1<<24
		// The room has no subscriber: under load (-race, busy CI) the six
		// 3 MiB POSTs can take longer than LocalOptions' 5 s idle
		// timeout, and an unloaded room forgets its pending changes.
		o.IdleTimeout = time.Hour
	})
	text := strings.Repeat("p", 3<<20)
	var held, full int
	for i := range 6 {
		code, b := httpInsert(t, ts, "u", "p", 2, text) // seq 1 never comes
		switch {
		case code == http.StatusConflict && strings.Contains(string(b), `"missing_deps"`):
			held++
		case code == http.StatusConflict && strings.Contains(string(b), `"pending_full"`):
			full++
		default:
			t.Fatalf("POST %d: %d %s", i+1, code, b)
		}
	}
	if held != 2 || full != 4 {
		t.Fatalf("%d held, %d refused as pending_full; want 2 and 4 (8 MiB of 3 MiB changes)", held, full)
	}
	ts.srv.rooms.Lock()
	r := ts.srv.rooms.m["p"]
	ts.srv.rooms.Unlock()
	if r == nil {
		t.Fatal("the room unloaded")
	}
	if mem := r.mem.Load(); mem > 9<<20 {
		t.Fatalf("the document takes %d MiB in memory", mem>>20)
	}
}

func TestWaitingSize(t *testing.T) {
	a, b := crdt.ReplicaID(uuid.New()), crdt.ReplicaID(uuid.New())
	ins := func(r crdt.ReplicaID, seq uint64, text string, left crdt.ID) crdt.Change {
		return crdt.Change{Replica: r, Seq: seq, Ops: []crdt.Op{{Kind: crdt.OpTextInsert, Field: "t", Text: text, Left: left}}}
	}
	del := func(r crdt.ReplicaID, seq uint64, target crdt.ID, n uint64, back bool) crdt.Change {
		return crdt.Change{Replica: r, Seq: seq, Ops: []crdt.Op{{Kind: crdt.OpTextDelete, Field: "t", Target: target, Count: n, Backward: back}}}
	}
	have := crdt.VersionVector{a: 5}
	one := func(c crdt.Change) int64 { n, _ := decodedSize([]crdt.Change{c}); return n }
	for _, tc := range []struct {
		name string
		chs  []crdt.Change
		want int64
	}{
		{"next of its replica", []crdt.Change{ins(a, 6, "x", crdt.ID{Replica: a, Seq: 5})}, 0},
		{"a gap", []crdt.Change{ins(a, 7, "x", crdt.ID{})}, one(ins(a, 7, "x", crdt.ID{}))},
		{"a duplicate", []crdt.Change{ins(a, 3, "xyz", crdt.ID{})}, 0},
		{"origin held", []crdt.Change{ins(b, 1, "x", crdt.ID{Replica: a, Seq: 5})}, 0},
		{"origin missing", []crdt.Change{ins(b, 1, "x", crdt.ID{Replica: a, Seq: 6})}, one(ins(b, 1, "x", crdt.ID{Replica: a, Seq: 6}))},
		{"origin earlier in the batch", []crdt.Change{ins(a, 6, "xy", crdt.ID{}), ins(b, 1, "z", crdt.ID{Replica: a, Seq: 7})}, 0},
		{"delete held", []crdt.Change{del(b, 1, crdt.ID{Replica: a, Seq: 2}, 4, false)}, 0},
		{"delete past what is held", []crdt.Change{del(b, 1, crdt.ID{Replica: a, Seq: 3}, 4, false)}, one(del(b, 1, crdt.ID{Replica: a, Seq: 3}, 4, false))},
		{"backward delete held", []crdt.Change{del(b, 1, crdt.ID{Replica: a, Seq: 5}, 5, true)}, 0},
		{"waiting blocks what follows", []crdt.Change{ins(a, 7, "x", crdt.ID{}), ins(a, 8, "y", crdt.ID{})},
			one(ins(a, 7, "x", crdt.ID{})) + one(ins(a, 8, "y", crdt.ID{}))},
	} {
		if got := waitingSize(have, tc.chs); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

// Batches the room refuses as invalid (they decode, but contradict the
// document) are fouls too: a socket that keeps sending them is closed.
func TestInvalidBatchesCloseTheSocket(t *testing.T) {
	ts := newTestServer(t, nil)
	wc := ts.dial(ts.token("u"))
	wc.subscribe("d")
	if ack := wc.update("d", func(tx *crdt.Tx) error { return tx.Add("f", 1) }); ack.Status != syncproto.StatusOK {
		t.Fatalf("counter: %v", ack.Status)
	}
	// The replica's next change stamped in 1970, before its previous
	// one: well formed, and invalid (backdated).
	bad := codec.EncodeChanges([]crdt.Change{{Replica: wc.replica, Seq: 2, Time: hlc.New(1, 0),
		Ops: []crdt.Op{{Kind: crdt.OpCounterAdd, Field: "f", Delta: 1}}}})
	for i := range maxFouls {
		wc.send(&syncproto.Update{Doc: "d", Batch: uint64(100 + i), Changes: bad})
		if a := wc.waitAck("d", uint64(100+i)); a.Status != syncproto.StatusInvalid {
			t.Fatalf("bad batch %d: %v %q, want invalid", i, a.Status, a.Message)
		}
	}
	if code := wc.expectClose(); code != int(syncproto.CloseProtocolError) {
		t.Fatalf("after %d invalid batches: close %d, want %d", maxFouls, code, syncproto.CloseProtocolError)
	}
}

package syncserver

import (
	"bytes"
	"context"
	"errors"
	"github.com/gorilla/websocket"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/hlc"
)

func TestOptionsValidation(t *testing.T) {
	// A burst below the largest change could refuse a change for good.
	_, err := New(Options{MaxFrameBytes: 10, PingInterval: -1, ChangesBurst: crdt.MaxChangeOps - 1, MaxChangesPerSec: 100})
	if err == nil {
		t.Fatal("New accepted options without a store or secret")
	}
	for _, want := range []string{"Store is required", "Secret is required", "MaxFrameBytes", "PingInterval", "ChangesBurst"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q: %v", want, err)
		}
	}
	o := Options{Store: NewMemStore(), Secret: testSecret, AllowedOrigins: []string{"http://a"}}
	srv, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer srv.Shutdown(context.Background())
	if o.MaxFrameBytes != 0 || o.Logger != nil {
		t.Error("New mutated the caller's options")
	}
	if srv.opts.MaxFrameBytes != DefaultOptions().MaxFrameBytes || srv.opts.Replica.IsZero() {
		t.Errorf("defaults not filled: %+v", srv.opts)
	}
}

func TestSubscribeUpdateAckBroadcast(t *testing.T) {
	ts := newTestServer(t, nil)
	a := ts.dial(ts.token("alice"))
	b := ts.dial(ts.token("bob"))
	a.subscribe("notes/1")
	b.subscribe("notes/1")

	ack := a.update("notes/1", func(tx *crdt.Tx) error {
		if err := tx.Insert("body", 0, "héllo wörld"); err != nil {
			return err
		}
		if err := tx.Add("likes", 3); err != nil {
			return err
		}
		return tx.Set("title", []byte{0xa2, 'h', 'i'})
	})
	if ack.Status != syncproto.StatusOK {
		t.Fatalf("ack: %v %s", ack.Status, ack.Message)
	}
	// Ack means durable: the store already has it.
	if got := storedDoc(t, ts.store, "notes/1").Text("body"); got != "héllo wörld" {
		t.Fatalf("store has %q after the ack", got)
	}
	ch := recvType[*syncproto.Changes](b)
	b.absorb(ch)
	bd := b.doc("notes/1")
	if bd.Text("body") != "héllo wörld" || bd.Counter("likes") != 3 {
		t.Fatalf("b sees %q %d", bd.Text("body"), bd.Counter("likes"))
	}
	// b answers; a converges.
	if ack := b.update("notes/1", insert("body", 0, ">> ")); ack.Status != syncproto.StatusOK {
		t.Fatalf("b ack: %v", ack.Status)
	}
	a.absorb(recvType[*syncproto.Changes](a))
	if a.doc("notes/1").Text("body") != ">> héllo wörld" {
		t.Fatalf("a sees %q", a.doc("notes/1").Text("body"))
	}
	if !a.doc("notes/1").Version().Equal(b.doc("notes/1").Version()) {
		t.Fatal("versions differ")
	}
}

func TestSubscribeExactDelta(t *testing.T) {
	ts := newTestServer(t, nil)
	a := ts.dial(ts.token("alice"))
	a.subscribe("d")
	for _, s := range []string{"one ", "two ", "three "} {
		if ack := a.update("d", insert("t", 0, s)); ack.Status != syncproto.StatusOK {
			t.Fatal(ack.Message)
		}
	}
	full := a.doc("d").ChangesSince(nil)
	// A client that has the first change asks for the rest.
	c := ts.dial(ts.token("carol"))
	if err := c.doc("d").Apply(full[0]); err != nil {
		t.Fatal(err)
	}
	c.send(&syncproto.Subscribe{Doc: "d", Version: c.doc("d").Version()})
	s := recvType[*syncproto.Sync](c)
	got, err := codec.DecodeChanges(s.Changes)
	if err != nil {
		t.Fatal(err)
	}
	var ops uint64
	for i := range got {
		ops += got[i].Len()
		if got[i].Seq <= full[0].End() && got[i].Replica == full[0].Replica {
			t.Errorf("server resent change %d already covered by the client's version", got[i].Seq)
		}
	}
	if want := uint64(len("two three ")); ops != want {
		t.Errorf("catch-up carried %d ops, want exactly %d", ops, want)
	}
	if !s.Version.Equal(a.doc("d").Version()) {
		t.Errorf("sync version %v, want %v", s.Version, a.doc("d").Version())
	}
	c.absorb(s)
	if c.doc("d").Text("t") != a.doc("d").Text("t") {
		t.Fatalf("c has %q", c.doc("d").Text("t"))
	}
	// The client has something the server lacks: subscribe shows it in the
	// server's version, and the client sends it back.
	off := ts.dial(ts.token("dave"))
	off.edit("d", insert("t", 0, "offline ")) // never sent
	s2 := off.subscribe("d")
	if s2.Version.Covers(off.doc("d").Version()) {
		t.Fatal("server claims to have the offline edit")
	}
	lack := off.doc("d").ChangesSince(s2.Version)
	off.batch++
	off.send(&syncproto.Update{Doc: "d", Batch: off.batch, Changes: codec.EncodeChanges(lack)})
	if ack := off.waitAck("d", off.batch); ack.Status != syncproto.StatusOK {
		t.Fatalf("ack %v %s", ack.Status, ack.Message)
	}
	if got := storedDoc(t, ts.store, "d").Text("t"); got != off.doc("d").Text("t") {
		t.Fatalf("store %q, client %q", got, off.doc("d").Text("t"))
	}
}

func TestReadOnlyTokenChangesNothing(t *testing.T) {
	ts := newTestServer(t, nil)
	w := ts.dial(ts.token("writer"))
	w.subscribe("doc")
	if ack := w.update("doc", insert("t", 0, "base")); ack.Status != syncproto.StatusOK {
		t.Fatal(ack.Message)
	}
	appends, _ := ts.mem.Stats()

	r := ts.dial(ts.token("reader", Grant{Pattern: "doc", Access: "read"}))
	r.subscribe("doc")
	if r.doc("doc").Text("t") != "base" {
		t.Fatal("reader cannot read")
	}
	ack := r.update("doc", insert("t", 0, "evil "))
	if ack.Status != syncproto.StatusReadOnly {
		t.Fatalf("read-only update got %v", ack.Status)
	}
	// Over HTTP too.
	body := r.edit("doc", insert("t", 0, "evil2 "))
	req, _ := http.NewRequest("POST", ts.hs.URL+"/v1/docs/doc/changes", strings.NewReader(string(body)))
	req.Header.Set("Authorization", "Bearer "+ts.token("reader", Grant{Pattern: "doc", Access: "read"}))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("read-only POST got %d", resp.StatusCode)
	}
	// Nothing was stored and the writer saw nothing: its next round trip
	// is the first thing it receives.
	if a, _ := ts.mem.Stats(); a != appends {
		t.Fatalf("store appended %d batches for read-only writes", a-appends)
	}
	if ack := w.update("doc", insert("t", 4, "!")); ack.Status != syncproto.StatusOK {
		t.Fatal(ack.Message)
	}
	if got := storedDoc(t, ts.store, "doc").Text("t"); got != "base!" {
		t.Fatalf("store has %q", got)
	}
	// A token without the document at all.
	o := ts.dial(ts.token("other", Grant{Pattern: "notes/*", Access: "write"}))
	o.send(&syncproto.Subscribe{Doc: "doc"})
	if e := recvType[*syncproto.Error](o); e.Status != syncproto.StatusUnauthorized || e.Doc != "doc" {
		t.Fatalf("subscribe outside the grants: %+v", e)
	}
}

func TestForgedReplicaRefused(t *testing.T) {
	ts := newTestServer(t, nil)
	replica := crdt.ReplicaID(uuid.New())
	alice := ts.dialAs(ts.token("alice"), replica)
	alice.subscribe("d")
	if ack := alice.update("d", insert("t", 0, "alice")); ack.Status != syncproto.StatusOK {
		t.Fatal(ack.Message)
	}
	// Mallory connects claiming alice's replica id.
	m := ts.dialAs(ts.token("mallory"), replica)
	m.subscribe("d")
	ack := m.update("d", insert("t", 0, "mallory "))
	if ack.Status != syncproto.StatusUnauthorized {
		t.Fatalf("forged replica: %v %s", ack.Status, ack.Message)
	}
	// Mallory with her own replica id but changes stamped as alice's.
	m2 := ts.dial(ts.token("mallory"))
	m2.subscribe("d")
	forger := crdt.NewDoc(replica, hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	if err := forger.Apply(alice.doc("d").ChangesSince(nil)...); err != nil {
		t.Fatal(err)
	}
	tx := forger.Begin()
	tx.Insert("t", 0, "forged ")
	tx.Commit()
	m2.send(&syncproto.Update{Doc: "d", Batch: 1, Changes: codec.EncodeChanges(forger.ChangesSince(alice.doc("d").Version()))})
	if ack := m2.waitAck("d", 1); ack.Status != syncproto.StatusUnauthorized {
		t.Fatalf("forged changes: %v %s", ack.Status, ack.Message)
	}
	// Relaying alice's own changes (which the server has) is harmless.
	m2.send(&syncproto.Update{Doc: "d", Batch: 2, Changes: codec.EncodeChanges(alice.doc("d").ChangesSince(nil))})
	if ack := m2.waitAck("d", 2); ack.Status != syncproto.StatusOK {
		t.Fatalf("relay: %v %s", ack.Status, ack.Message)
	}
	if got := storedDoc(t, ts.store, "d").Text("t"); got != "alice" {
		t.Fatalf("store has %q", got)
	}
	// Alice keeps writing.
	if ack := alice.update("d", insert("t", 5, "!")); ack.Status != syncproto.StatusOK {
		t.Fatal(ack.Message)
	}
}

func TestAuthFailures(t *testing.T) {
	// The clients below send hello at once; an AuthTimeout they could miss
	// on a loaded machine (100 ms did, under -race) would close them with
	// auth_timeout before their hello is read. Only the silent connection
	// waits for it, on a server of its own.
	ts := newTestServer(t, func(o *Options) { o.AuthTimeout = time.Minute })
	silent := newTestServer(t, func(o *Options) { o.AuthTimeout = 100 * time.Millisecond })
	expired, err := MintToken(testSecret, Claims{Docs: []Grant{{"*", "write"}}, RegisteredClaims: jwtClaims("u", -time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	forged, err := MintToken([]byte("another-secret-of-16+bytes"), Claims{Docs: []Grant{{"*", "write"}}, RegisteredClaims: jwtClaims("u", time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"empty": "", "garbage": "not.a.jwt", "expired": expired, "forged": forged,
		"alg none": "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiZXhwIjo5OTk5OTk5OTk5fQ."} {
		c, _, err := ts.dialRaw(nil)
		if err != nil {
			t.Fatal(err)
		}
		wc := &wsClient{t: t, c: c}
		wc.send(&syncproto.Hello{Version: syncproto.ProtocolVersion, Token: tok, Replica: crdt.ReplicaID(uuid.New())})
		if e, ok := wc.recv().(*syncproto.Error); !ok || e.Status != syncproto.StatusUnauthorized {
			t.Errorf("%s: want an unauthorized error first", name)
		}
		if code := wc.expectClose(); code != int(syncproto.CloseAuthFailed) {
			t.Errorf("%s: close %d, want %d", name, code, syncproto.CloseAuthFailed)
		}
		c.Close()
	}
	// No hello at all.
	c, _, err := silent.dialRaw(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wc := &wsClient{t: t, c: c}
	if code := wc.expectClose(); code != int(syncproto.CloseAuthTimeout) {
		t.Errorf("silent connection closed with %d, want %d", code, syncproto.CloseAuthTimeout)
	}
	// A message before hello.
	c2, _, err := ts.dialRaw(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	wc2 := &wsClient{t: t, c: c2}
	wc2.send(&syncproto.Subscribe{Doc: "x"})
	if code := wc2.expectClose(); code != int(syncproto.CloseProtocolError) {
		t.Errorf("subscribe before hello closed with %d", code)
	}
	// A wrong protocol version.
	c3, _, err := ts.dialRaw(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	wc3 := &wsClient{t: t, c: c3}
	wc3.send(&syncproto.Hello{Version: 99, Token: ts.token("u"), Replica: crdt.ReplicaID(uuid.New())})
	if code := wc3.expectClose(); code != int(syncproto.CloseUnsupportedVersion) {
		t.Errorf("version 99 closed with %d", code)
	}
	// A disallowed browser origin is refused at the handshake.
	_, resp, err := ts.dialRaw(http.Header{"Origin": {"https://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("foreign origin: err %v resp %v", err, resp)
	}
}

func TestInsecureAndOrigins(t *testing.T) {
	ts := newTestServer(t, func(o *Options) {
		o.Secret = nil
		o.Insecure = true
		o.AllowedOrigins = []string{"https://app.example"}
	})
	c := ts.dial("")
	if c.welcome.User != "anonymous" {
		t.Fatalf("insecure user %q", c.welcome.User)
	}
	c.subscribe("x")
	if ack := c.update("x", insert("t", 0, "hi")); ack.Status != syncproto.StatusOK {
		t.Fatal(ack.Message)
	}
	conn, _, err := ts.dialRaw(http.Header{"Origin": {"https://app.example"}})
	if err != nil {
		t.Fatalf("allowed origin refused: %v", err)
	}
	conn.Close()
}

func TestHostileFrames(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxFrameBytes = 64 << 10 })
	good := ts.dial(ts.token("good"))
	good.subscribe("d")
	roundTrip := func(what string) {
		t.Helper()
		if ack := good.update("d", insert("t", 0, "x")); ack.Status != syncproto.StatusOK {
			t.Fatalf("after %s: healthy client got %v", what, ack.Status)
		}
	}
	closes := map[string]struct {
		frame []byte
		code  syncproto.CloseCode
	}{
		"length bomb":     {[]byte{0xdd, 0xff, 0xff, 0xff, 0xff, 0x06}, syncproto.CloseProtocolError},
		"bin bomb":        {[]byte{0x94, 0x06, 0xa1, 'd', 0x01, 0xc6, 0x7f, 0xff, 0xff, 0xff}, syncproto.CloseProtocolError},
		"truncated":       {[]byte{0x94, 0x06, 0xa5, 'd'}, syncproto.CloseProtocolError},
		"invalid msgpack": {[]byte{0xc1, 0xc1, 0xc1}, syncproto.CloseProtocolError},
		"deep nesting":    {append([]byte{0x93, 0x06, 0xa1, 'd'}, []byte(strings.Repeat("\x91", 200))...), syncproto.CloseProtocolError},
		"oversized":       {make([]byte, 65<<10), syncproto.CloseFrameTooLarge},
	}
	for name, tc := range closes {
		h := ts.dial(ts.token("hostile"))
		h.sendRaw(tc.frame)
		if code := h.expectClose(); code != int(tc.code) {
			t.Errorf("%s: close %d, want %d", name, code, tc.code)
		}
		roundTrip(name)
	}
	h := ts.dial(ts.token("hostile"))
	h.subscribe("d")
	// Unknown message type: an error, the connection stays.
	h.sendRaw([]byte{0x92, 0x63, 0x01})
	if e := recvType[*syncproto.Error](h); e.Status != syncproto.StatusInvalid {
		t.Errorf("unknown type: %+v", e)
	}
	// Garbage change payload: acked invalid.
	h.send(&syncproto.Update{Doc: "d", Batch: 7, Changes: []byte{0xff, 0x00, 0x13, 0x37}})
	if a := h.waitAck("d", 7); a.Status != syncproto.StatusInvalid {
		t.Errorf("garbage changes: %v", a.Status)
	}
	// A change whose origin names an id nobody has: it waits and the batch
	// is not saved.
	ghost := crdt.NewDoc(crdt.ReplicaID(uuid.New()), hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	for _, s := range []string{"ghost", "!"} {
		tx := ghost.Begin()
		tx.Insert("t", ghost.TextLen("t"), s)
		tx.Commit()
	}
	all := ghost.ChangesSince(nil)
	if len(all) != 2 {
		t.Fatalf("test setup: %d changes", len(all))
	}
	h.send(&syncproto.Update{Doc: "d", Batch: 8, Changes: codec.EncodeChanges(all[1:])})
	if a := h.waitAck("d", 8); a.Status != syncproto.StatusMissingDeps {
		t.Errorf("change with unknown dependencies: %v %s", a.Status, a.Message)
	}
	// A change that contradicts itself: an insert whose left origin is its
	// own first character.
	r := crdt.ReplicaID(uuid.New())
	bad := crdt.Change{Replica: r, Seq: 1, Time: hlc.New(time.Now().UnixMilli(), 0),
		Ops: []crdt.Op{{Kind: crdt.OpTextInsert, Field: "t", Text: "ab", Left: crdt.ID{Replica: r, Seq: 2}}}}
	h.send(&syncproto.Update{Doc: "d", Batch: 9, Changes: codec.EncodeChanges([]crdt.Change{bad})})
	if a := h.waitAck("d", 9); a.Status != syncproto.StatusInvalid {
		t.Errorf("self-referencing insert: %v %s", a.Status, a.Message)
	}
	// A timestamp an hour ahead.
	skew := crdt.Change{Replica: h.replica, Seq: 1, Time: hlc.New(time.Now().Add(time.Hour).UnixMilli(), 0),
		Ops: []crdt.Op{{Kind: crdt.OpCounterAdd, Field: "n", Delta: 1}}}
	h.send(&syncproto.Update{Doc: "d", Batch: 10, Changes: codec.EncodeChanges([]crdt.Change{skew})})
	if a := h.waitAck("d", 10); a.Status != syncproto.StatusClockSkew {
		t.Errorf("future timestamp: %v %s", a.Status, a.Message)
	}
	// Text frames are a protocol error.
	if err := h.c.WriteMessage(1, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if code := h.expectClose(); code != int(syncproto.CloseProtocolError) {
		t.Errorf("text frame: close %d", code)
	}
	roundTrip("all of it")
	if got := storedDoc(t, ts.store, "d").Text("t"); strings.Contains(got, "ghost") || strings.Count(got, "x") != len(closes)+1 {
		t.Fatalf("store has %q", got)
	}
}

func TestLimits(t *testing.T) {
	ts := newTestServer(t, func(o *Options) {
		o.MaxChangesPerSec = 10
		o.ChangesBurst = crdt.MaxChangeOps
		o.MaxDocBytes = 4 * crdt.MaxChangeOps
		o.MaxConnections = 3
		o.MaxDocsPerConn = 2
	})
	c := ts.dial(ts.token("u"))
	c.subscribe("a")
	// The first batch may empty a full bucket (and leave it a burst in
	// debt); the next is refused.
	if ack := c.update("a", insert("t", 0, strings.Repeat("x", 2*crdt.MaxChangeOps))); ack.Status != syncproto.StatusOK {
		t.Fatalf("first batch: %v", ack.Status)
	}
	if ack := c.update("a", insert("t", 0, "y")); ack.Status != syncproto.StatusRateLimited {
		t.Fatalf("over rate: %v", ack.Status)
	}
	d := ts.dial(ts.token("u2"))
	d.subscribe("b")
	if ack := d.update("b", insert("t", 0, randomText(9*crdt.MaxChangeOps))); ack.Status != syncproto.StatusTooLarge {
		t.Fatalf("over doc size: %v %s", ack.Status, ack.Message)
	}
	d.subscribe("a")
	d.send(&syncproto.Subscribe{Doc: "c"})
	if e := recvType[*syncproto.Error](d); e.Status != syncproto.StatusTooLarge {
		t.Fatalf("third subscription: %+v", e)
	}
	ts.dial(ts.token("u3"))
	_, resp, err := ts.dialRaw(nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("connection over capacity: err %v resp %v", err, resp)
	}
	if ts.counter("weft_limit_hits_total", "limit", "connections") != 1 {
		t.Error("capacity refusal not counted")
	}
}

func TestHeartbeatTimeout(t *testing.T) {
	ts := newTestServer(t, func(o *Options) {
		o.PingInterval = 50 * time.Millisecond
		o.PongTimeout = heartbeatMargin
	})
	pa := answerPings(ts.dial(ts.token("u")))
	// A client that answers pings stays connected well past
	// PingInterval+PongTimeout without sending anything.
	pa.expectAlive(t, ts.srv.opts)
	// One that stops answering is closed.
	pa.expectHeartbeatClose(t, ts)
}

func TestAppPing(t *testing.T) {
	ts := newTestServer(t, nil)
	c := ts.dial(ts.token("u"))
	c.send(&syncproto.Ping{Nonce: 43})
	if p := recvType[*syncproto.Pong](c); p.Nonce != 43 {
		t.Fatalf("pong %d", p.Nonce)
	}
}

func TestFailStop(t *testing.T) {
	var fatal sync.WaitGroup
	fatal.Add(1)
	g := &armedGate{MemStore: NewMemStore(), blocked: make(chan struct{}), release: make(chan struct{})}
	ts := newTestServer(t, func(o *Options) {
		o.Store = g
		o.OnFatal = func(error) { fatal.Done() }
	})
	ts.mem = g.MemStore
	c := ts.dial(ts.token("u"))
	c.subscribe("d")
	if ack := c.update("d", insert("t", 0, "saved")); ack.Status != syncproto.StatusOK {
		t.Fatal(ack.Message)
	}
	// The append of the first of two updates fails while the second waits
	// behind it, unpersisted.
	g.armed.Store(true)
	ts.mem.FailAfter(0)
	c.batch++
	c.send(&syncproto.Update{Doc: "d", Batch: c.batch, Changes: c.edit("d", insert("t", 0, "lost "))})
	<-g.blocked
	c.batch++
	c.send(&syncproto.Update{Doc: "d", Batch: c.batch, Changes: c.edit("d", insert("t", 0, "also lost "))})
	c.send(&syncproto.Ping{Nonce: 1})
	recvType[*syncproto.Pong](c) // both are in the room
	close(g.release)
	for b := c.batch - 1; b <= c.batch; b++ {
		if ack := c.waitAck("d", b); ack.Status != syncproto.StatusInternal {
			t.Fatalf("ack %d after a store failure: %v", b, ack.Status)
		}
	}
	select {
	case err := <-ts.srv.Fatal():
		if !errors.Is(err, ErrStoreFailed) {
			t.Fatalf("fatal error %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("no fatal error")
	}
	fatal.Wait()
	if ack := c.update("d", insert("t", 0, "after ")); ack.Status != syncproto.StatusInternal {
		t.Fatalf("ack after fail-stop: %v", ack.Status)
	}
	resp, err := http.Get(ts.hs.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("healthz after fail-stop: %d", resp.StatusCode)
	}
	ts.mem.FailAfter(-1)
	if got := storedDoc(t, ts.store, "d").Text("t"); got != "saved" {
		t.Fatalf("store has %q", got)
	}
	// Shutdown does not wait for writes a failed store will never take.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown after fail-stop: %v", err)
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	ts := newTestServer(t, nil)
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready", "/metrics": "weft_connections"} {
		resp, err := http.Get(ts.hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("%s: %d %q", path, resp.StatusCode, b)
		}
	}
}

func jwtClaims(sub string, ttl time.Duration) (c jwtRegistered) {
	c.Subject = sub
	c.ExpiresAt = jwtDate(time.Now().Add(ttl))
	return c
}

func TestLargeCatchUpIsSplit(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxFrameBytes = 4096; o.ChangesBurst = 1 << 20 })
	w := ts.dial(ts.token("w"))
	w.subscribe("big")
	for i := 0; i < 12; i++ {
		if a := w.update("big", insert("t", 0, randomText(1000))); a.Status != syncproto.StatusOK {
			t.Fatalf("update %d: %v %s", i, a.Status, a.Message)
		}
	}
	r := ts.dial(ts.token("r"))
	r.send(&syncproto.Subscribe{Doc: "big"})
	parts := 0
	for {
		r.c.SetReadDeadline(time.Now().Add(waitFor))
		_, b, err := r.c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 4096 {
			t.Fatalf("a catch-up frame of %d bytes exceeds the frame limit", len(b))
		}
		m, err := syncproto.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		r.absorb(m)
		parts++
		if _, ok := m.(*syncproto.Sync); ok {
			break
		}
	}
	if parts < 3 {
		t.Fatalf("12 KB of catch-up came in %d frames", parts)
	}
	if r.doc("big").Text("t") != w.doc("big").Text("t") {
		t.Fatal("catch-up incomplete")
	}
}

// randomText returns n random printable characters: content the codec
// cannot pack much.
func randomText(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('!' + rand.IntN(94))
	}
	return string(b)
}

// armedGate blocks the first Append after it is armed until released.
type armedGate struct {
	*MemStore
	armed   atomic.Bool
	once    sync.Once
	blocked chan struct{}
	release chan struct{}
}

func (g *armedGate) Append(ctx context.Context, doc string, batch []byte) (int64, error) {
	if g.armed.Load() {
		g.once.Do(func() {
			close(g.blocked)
			<-g.release
		})
	}
	return g.MemStore.Append(ctx, doc, batch)
}

// Replica ownership is kept with the document: after an idle unload and
// after a restart on the same store, another user writing with alice's
// replica id is refused, and alice keeps writing.
func TestReplicaOwnershipSurvivesUnloadAndRestart(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.IdleTimeout = 20 * time.Millisecond })
	replica := crdt.ReplicaID(uuid.New())
	alice := ts.dialAs(ts.token("alice"), replica)
	alice.subscribe("d")
	if ack := alice.update("d", insert("t", 0, "alice")); ack.Status != syncproto.StatusOK {
		t.Fatal(ack.Message)
	}
	alice.c.Close()
	unloaded := func(srv *Server) func() bool {
		return func() bool {
			srv.rooms.Lock()
			defer srv.rooms.Unlock()
			return srv.rooms.m["d"] == nil
		}
	}
	eventually(t, "idle unload", unloaded(ts.srv))

	forge := func(ts *testServer, what string) {
		t.Helper()
		m := ts.dialAs(ts.token("mallory"), replica)
		m.subscribe("d")
		if ack := m.update("d", insert("t", 0, "mallory ")); ack.Status != syncproto.StatusUnauthorized {
			t.Fatalf("%s: a write with alice's replica id: %v %s", what, ack.Status, ack.Message)
		}
		m.c.Close()
	}
	forge(ts, "after an idle unload")

	restarted := newTestServer(t, func(o *Options) { o.Store = ts.mem })
	forge(restarted, "after a restart")
	a2 := restarted.dialAs(restarted.token("alice"), replica)
	a2.subscribe("d")
	if ack := a2.update("d", insert("t", 5, "!")); ack.Status != syncproto.StatusOK {
		t.Fatalf("alice after the restart: %v %s", ack.Status, ack.Message)
	}
	if got := storedDoc(t, ts.mem, "d").Text("t"); got != "alice!" {
		t.Fatalf("store has %q", got)
	}
}

// A connection and an event stream end when their token expires: the
// socket with an unauthorized error and close 4001, the stream by closing.
func TestTokenExpiryClosesConnectionAndStream(t *testing.T) {
	// JWT expiry has whole seconds: the server's clock runs 300ms short of
	// the expiry instead of the test waiting for it.
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	lag := time.Until(exp) - 300*time.Millisecond
	ts := newTestServer(t, func(o *Options) {
		o.Wall = func() int64 { return hlc.SystemWall() + lag.Milliseconds() }
	})
	tok, err := MintToken(testSecret, Claims{Docs: []Grant{{"*", "write"}},
		RegisteredClaims: jwtRegistered{Subject: "u", ExpiresAt: jwtDate(exp)}})
	if err != nil {
		t.Fatal(err)
	}
	wc := ts.dial(tok)
	wc.subscribe("d")
	ev := openEvents(t, ts, "d", tok, "")
	if m := ev.next(t); m.event != "synced" {
		t.Fatalf("first event %q", m.event)
	}
	var sawError bool
	for {
		m, err := wc.tryRecv(waitFor)
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != int(syncproto.CloseAuthFailed) {
				t.Fatalf("connection ended with %v, want close %d", err, syncproto.CloseAuthFailed)
			}
			break
		}
		if e, ok := m.(*syncproto.Error); ok && e.Status == syncproto.StatusUnauthorized {
			sawError = true
		}
	}
	if !sawError {
		t.Error("no unauthorized error before the close")
	}
	timer := time.AfterFunc(waitFor, func() { ev.resp.Body.Close() })
	defer timer.Stop()
	if _, err := io.Copy(io.Discard, ev.br); err != nil {
		t.Fatalf("event stream: %v, want it ended by the server", err)
	}
	if !timer.Stop() {
		t.Fatal("the event stream outlived its token")
	}
}

// With TokenAudience and TokenIssuer set, a token must carry both.
func TestTokenAudienceAndIssuer(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.TokenAudience = "weft-prod"; o.TokenIssuer = "https://id.example" })
	mint := func(aud, iss string) string {
		c := Claims{Docs: []Grant{{"*", "write"}}, RegisteredClaims: jwtClaims("u", time.Hour)}
		if aud != "" {
			c.Audience = []string{"other", aud}
		}
		c.Issuer = iss
		tok, err := MintToken(testSecret, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	for name, tok := range map[string]string{
		"no aud":    mint("", "https://id.example"),
		"wrong aud": mint("weft-dev", "https://id.example"),
		"no iss":    mint("weft-prod", ""),
		"wrong iss": mint("weft-prod", "https://evil.example"),
	} {
		c, _, err := ts.dialRaw(nil)
		if err != nil {
			t.Fatal(err)
		}
		wc := &wsClient{t: t, c: c}
		wc.send(&syncproto.Hello{Version: syncproto.ProtocolVersion, Token: tok, Replica: crdt.ReplicaID(uuid.New())})
		if e, ok := wc.recv().(*syncproto.Error); !ok || e.Status != syncproto.StatusUnauthorized {
			t.Errorf("%s: want an unauthorized error", name)
		}
		if code := wc.expectClose(); code != int(syncproto.CloseAuthFailed) {
			t.Errorf("%s: close %d, want %d", name, code, syncproto.CloseAuthFailed)
		}
		c.Close()
		if code, _ := httpDo(t, "GET", ts.hs.URL+"/v1/docs/d", tok, nil); code != http.StatusUnauthorized {
			t.Errorf("%s: HTTP %d, want 401", name, code)
		}
	}
	ok := ts.dial(mint("weft-prod", "https://id.example"))
	ok.subscribe("d")
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Local browser development: with Insecure a page on any localhost port
// connects; in every mode a refused origin is logged and told how to
// allow it.
func TestOriginLoopbackInInsecureModeAndRefusalsExplained(t *testing.T) {
	var logs syncBuffer
	insecure := newTestServer(t, func(o *Options) {
		o.Secret = nil
		o.Insecure = true
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	for _, origin := range []string{"http://localhost:5173", "http://127.0.0.1:3000", "http://[::1]:8080", "https://localhost"} {
		conn, resp, err := insecure.dialRaw(http.Header{"Origin": {origin}})
		if err != nil {
			t.Errorf("insecure mode refused %s: %v %v", origin, err, resp)
			continue
		}
		conn.Close()
	}
	for _, origin := range []string{"https://evil.example", "http://localhost.evil.example:5173", "file://localhost"} {
		_, resp, err := insecure.dialRaw(http.Header{"Origin": {origin}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("insecure mode let %s in: %v", origin, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), "--allow-origin "+origin) {
			t.Errorf("refusal of %s says %q", origin, body)
		}
		if !strings.Contains(logs.String(), "origin="+origin) || !strings.Contains(logs.String(), "--allow-origin") {
			t.Errorf("refusal of %s not logged:\n%s", origin, logs.String())
		}
	}

	// With tokens, loopback is an origin like any other.
	secure := newTestServer(t, nil)
	_, resp, err := secure.dialRaw(http.Header{"Origin": {"http://localhost:5173"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a secure server let a localhost page in: %v", err)
	}
	req, _ := http.NewRequest("GET", secure.hs.URL+"/v1/docs/x", nil)
	req.Header.Set("Origin", "http://localhost:5173")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(body), "--allow-origin http://localhost:5173") {
		t.Fatalf("HTTP API refusal: %d %s", resp.StatusCode, body)
	}
}

package syncserver

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/hlc"
)

var testSecret = []byte("0123456789abcdef-test-secret")

// waitFor bounds every wait in these tests.
const waitFor = 10 * time.Second

type testServer struct {
	t     testing.TB
	srv   *Server
	hs    *httptest.Server
	store Store
	mem   *MemStore
	reg   *prometheus.Registry
	ws    string // ws://127.0.0.1:port/v1/ws
}

func newTestServer(t testing.TB, mod func(*Options)) *testServer {
	t.Helper()
	mem := NewMemStore()
	o := LocalOptions()
	o.Store = mem
	o.Secret = testSecret
	o.Registry = prometheus.NewRegistry()
	if mod != nil {
		mod(&o)
	}
	srv, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	hs := httptest.NewServer(srv.Handler())
	ts := &testServer{t: t, srv: srv, hs: hs, store: o.Store, mem: mem, reg: o.Registry,
		ws: "ws" + strings.TrimPrefix(hs.URL, "http") + "/v1/ws"}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		hs.Close()
	})
	return ts
}

func (ts *testServer) token(user string, grants ...Grant) string {
	ts.t.Helper()
	if len(grants) == 0 {
		grants = []Grant{{Pattern: "*", Access: "write"}, {Pattern: "*/*", Access: "write"}}
	}
	tok, err := MintToken(testSecret, Claims{
		Name: user + " name", Color: "#123456", Docs: grants,
		RegisteredClaims: jwt.RegisteredClaims{Subject: user, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))},
	})
	if err != nil {
		ts.t.Fatalf("MintToken: %v", err)
	}
	return tok
}

// counter returns the value of a counter metric with the given labels.
func (ts *testServer) counter(name string, labels ...string) float64 {
	ts.t.Helper()
	mfs, err := ts.reg.Gather()
	if err != nil {
		ts.t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelsMatch(m, labels) {
				if m.Counter != nil {
					return m.Counter.GetValue()
				}
				return m.Gauge.GetValue()
			}
		}
	}
	return 0
}

func labelsMatch(m *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == kv[i] && l.GetValue() == kv[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// eventually waits, with a deadline, until cond holds.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// wsClient is a raw protocol client: a gorilla connection plus a local
// replica of each document it edits.
type wsClient struct {
	t       testing.TB
	c       *websocket.Conn
	replica crdt.ReplicaID
	welcome *syncproto.Welcome
	docs    map[string]*crdt.Doc
	sent    map[string]crdt.VersionVector // what was already sent per doc
	batch   uint64
}

func (ts *testServer) dialRaw(header http.Header) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: waitFor}
	return d.Dial(ts.ws, header)
}

// dial connects and completes hello/welcome with token.
func (ts *testServer) dial(token string) *wsClient {
	ts.t.Helper()
	return ts.dialAs(token, crdt.ReplicaID(uuid.New()))
}

func (ts *testServer) dialAs(token string, replica crdt.ReplicaID) *wsClient {
	ts.t.Helper()
	c, _, err := ts.dialRaw(nil)
	if err != nil {
		ts.t.Fatalf("dial: %v", err)
	}
	ts.t.Cleanup(func() { c.Close() })
	wc := &wsClient{t: ts.t, c: c, replica: replica, docs: map[string]*crdt.Doc{}, sent: map[string]crdt.VersionVector{}}
	wc.send(&syncproto.Hello{Version: syncproto.ProtocolVersion, Token: token, Replica: replica, ClientName: "test"})
	m := wc.recv()
	w, ok := m.(*syncproto.Welcome)
	if !ok {
		ts.t.Fatalf("want welcome, got %#v", m)
	}
	wc.welcome = w
	return wc
}

func (wc *wsClient) send(m syncproto.Message) {
	wc.t.Helper()
	b, err := syncproto.Encode(m)
	if err != nil {
		wc.t.Fatalf("Encode %T: %v", m, err)
	}
	wc.sendRaw(b)
}

func (wc *wsClient) sendRaw(b []byte) {
	wc.t.Helper()
	wc.c.SetWriteDeadline(time.Now().Add(waitFor))
	if err := wc.c.WriteMessage(websocket.BinaryMessage, b); err != nil {
		wc.t.Fatalf("write: %v", err)
	}
}

// recv returns the next message, failing the test on a read error.
func (wc *wsClient) recv() syncproto.Message {
	wc.t.Helper()
	m, err := wc.tryRecv(waitFor)
	if err != nil {
		wc.t.Fatalf("recv: %v", err)
	}
	return m
}

func (wc *wsClient) tryRecv(d time.Duration) (syncproto.Message, error) {
	wc.c.SetReadDeadline(time.Now().Add(d))
	typ, b, err := wc.c.ReadMessage()
	if err != nil {
		return nil, err
	}
	if typ != websocket.BinaryMessage {
		return nil, errors.New("non-binary frame")
	}
	return syncproto.Decode(b)
}

// recvType skips other messages (applying changes it sees) until one of
// type T arrives.
func recvType[T syncproto.Message](wc *wsClient) T {
	wc.t.Helper()
	for {
		m := wc.recv()
		if x, ok := m.(T); ok {
			return x
		}
		wc.absorb(m)
	}
}

// absorb applies the changes a message carries to the local replica.
func (wc *wsClient) absorb(m syncproto.Message) {
	wc.t.Helper()
	var doc string
	var b []byte
	switch m := m.(type) {
	case *syncproto.Sync:
		doc, b = m.Doc, m.Changes
	case *syncproto.Changes:
		doc, b = m.Doc, m.Changes
	default:
		return
	}
	if len(b) == 0 {
		return
	}
	changes, err := codec.DecodeChanges(b)
	if err != nil {
		wc.t.Fatalf("server sent undecodable changes: %v", err)
	}
	if err := wc.doc(doc).Apply(changes...); err != nil {
		wc.t.Fatalf("applying server changes: %v", err)
	}
}

// expectClose reads until the connection ends and returns the close code
// (or -1 if it ended without a close frame).
func (wc *wsClient) expectClose() int {
	wc.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		wc.c.SetReadDeadline(deadline)
		_, _, err := wc.c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		if time.Now().After(deadline) {
			wc.t.Fatalf("connection still open after %v", waitFor)
		}
		return -1
	}
}

func (wc *wsClient) doc(id string) *crdt.Doc {
	d, ok := wc.docs[id]
	if !ok {
		d = crdt.NewDoc(wc.replica, hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
		wc.docs[id] = d
		wc.sent[id] = crdt.VersionVector{}
	}
	return d
}

// subscribe subscribes with the local version and absorbs the answer.
func (wc *wsClient) subscribe(doc string) *syncproto.Sync {
	wc.t.Helper()
	wc.send(&syncproto.Subscribe{Doc: doc, Version: wc.doc(doc).Version()})
	s := recvType[*syncproto.Sync](wc)
	wc.absorb(s)
	return s
}

// edit runs fn in a local transaction and returns the encoded changes
// made since the last edit that was sent.
func (wc *wsClient) edit(doc string, fn func(tx *crdt.Tx) error) []byte {
	wc.t.Helper()
	d := wc.doc(doc)
	tx := d.Begin()
	if err := fn(tx); err != nil {
		wc.t.Fatalf("edit: %v", err)
	}
	if err := tx.Commit(); err != nil {
		wc.t.Fatalf("commit: %v", err)
	}
	changes := d.ChangesSince(wc.sent[doc])
	wc.sent[doc] = d.Version()
	return codec.EncodeChanges(changes)
}

// update sends an edit and returns its ack (absorbing what comes before).
func (wc *wsClient) update(doc string, fn func(tx *crdt.Tx) error) *syncproto.Ack {
	wc.t.Helper()
	b := wc.edit(doc, fn)
	wc.batch++
	wc.send(&syncproto.Update{Doc: doc, Batch: wc.batch, Changes: b})
	return wc.waitAck(doc, wc.batch)
}

func (wc *wsClient) waitAck(doc string, batch uint64) *syncproto.Ack {
	wc.t.Helper()
	for {
		a := recvType[*syncproto.Ack](wc)
		if a.Doc == doc && a.Batch == batch {
			return a
		}
	}
}

func insert(field string, pos int, s string) func(*crdt.Tx) error {
	return func(tx *crdt.Tx) error { return tx.Insert(field, pos, s) }
}

// storedDoc rebuilds a document from what the store holds.
func storedDoc(t testing.TB, st Store, id string) *crdt.Doc {
	t.Helper()
	snap, batches, err := st.Load(context.Background(), id)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	clock := hlc.NewClock(hlc.SystemWall, 0)
	var d *crdt.Doc
	if snap != nil {
		if d, err = codec.DecodeSnapshot(snap, crdt.ReplicaID(uuid.New()), clock, crdt.Options{}); err != nil {
			t.Fatalf("DecodeSnapshot: %v", err)
		}
	} else {
		d = crdt.NewDoc(crdt.ReplicaID(uuid.New()), clock, crdt.Options{})
	}
	for _, b := range batches {
		cs, err := codec.DecodeChanges(b)
		if err != nil {
			t.Fatalf("DecodeChanges: %v", err)
		}
		if err := d.Apply(cs...); err != nil {
			t.Fatalf("Apply: %v", err)
		}
	}
	return d
}

// gatedStore wraps a Store: Load waits for the gate and counts calls;
// Append may be delayed.
type gatedStore struct {
	Store
	gate  chan struct{}
	mu    sync.Mutex
	loads int
}

func (g *gatedStore) Load(ctx context.Context, doc string) ([]byte, [][]byte, error) {
	g.mu.Lock()
	g.loads++
	g.mu.Unlock()
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	return g.Store.Load(ctx, doc)
}

type jwtRegistered = jwt.RegisteredClaims

func jwtDate(t time.Time) *jwt.NumericDate { return jwt.NewNumericDate(t) }

// pingAnswerer answers the server's pings on wc while answer holds,
// counting them in pongs, and reads (dropping messages) until the
// connection ends, whose error it sends on ended.
type pingAnswerer struct {
	answer atomic.Bool
	pongs  atomic.Int32
	ended  chan error
}

func answerPings(wc *wsClient) *pingAnswerer {
	pa := &pingAnswerer{ended: make(chan error, 1)}
	pa.answer.Store(true)
	wc.c.SetPingHandler(func(data string) error {
		if !pa.answer.Load() {
			return nil
		}
		pa.pongs.Add(1)
		return wc.c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	go func() {
		for {
			if _, _, err := wc.c.ReadMessage(); err != nil {
				pa.ended <- err
				return
			}
		}
	}()
	return pa
}

// heartbeatMargin is the PongTimeout of the heartbeat tests: the time a
// client that answers has to get its pong read, counted from the ping's
// due time, through the server's ping timer, its flusher, the socket, the
// client's reader, and back through the server's reader (or, parked, its
// poller and a new reader goroutine). Under -race on a loaded 2-core
// machine that path alone took over 50 ms in a few runs out of a hundred;
// a real heartbeat failure (a pong that does not count) still closes the
// connection after PingInterval+heartbeatMargin, well inside the waits.
const heartbeatMargin = 500 * time.Millisecond

// expectAlive waits, with a deadline, until the client has answered enough
// pings to have outlived the heartbeat deadline (PingInterval+PongTimeout
// after the last frame it sent) twice over, and fails if the server closes
// the connection meanwhile. Pings come at most one per PingInterval, so
// the pong count bounds the time from below even on a slow machine.
func (pa *pingAnswerer) expectAlive(t *testing.T, o Options) {
	t.Helper()
	want := int32(2*(o.PingInterval+o.PongTimeout)/o.PingInterval) + 1
	deadline := time.After(waitFor + 2*(o.PingInterval+o.PongTimeout))
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for pa.pongs.Load() < want {
		select {
		case err := <-pa.ended:
			t.Fatalf("a client answering pings was disconnected after %d pongs: %v", pa.pongs.Load(), err)
		case <-deadline:
			t.Fatalf("only %d of %d pings answered", pa.pongs.Load(), want)
		case <-tick.C:
		}
	}
}

// expectHeartbeatClose stops answering and waits for the server to close
// with CloseHeartbeatTimeout, counted once.
func (pa *pingAnswerer) expectHeartbeatClose(t *testing.T, ts *testServer) {
	t.Helper()
	pa.answer.Store(false)
	select {
	case err := <-pa.ended:
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != int(syncproto.CloseHeartbeatTimeout) {
			t.Fatalf("silent client closed with %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("silent client not closed")
	}
	if got := ts.counter("weft_limit_hits_total", "limit", "heartbeat"); got != 1 {
		t.Errorf("heartbeat closes counted %v, want 1", got)
	}
}

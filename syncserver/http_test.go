package syncserver

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"github.com/gorilla/websocket"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/hlc"
)

func httpDo(t *testing.T, method, u, token string, body []byte) (int, []byte) {
	t.Helper()
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		h.Set("Content-Type", ChangesContentType)
	}
	code, _, b := httpReq(t, method, u, h, body)
	return code, b
}

func TestHTTPDocAndAt(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token("u")
	wall := &hlc.ManualWall{Millis: time.Now().Add(-time.Hour).UnixMilli()}
	d := crdt.NewDoc(crdt.ReplicaID(uuid.New()), hlc.NewClock(wall.Read, 0), crdt.Options{})
	var sent crdt.VersionVector
	post := func(fn func(tx *crdt.Tx)) {
		t.Helper()
		tx := d.Begin()
		fn(tx)
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		body := codec.EncodeChanges(d.ChangesSince(sent))
		sent = d.Version()
		code, b := httpDo(t, "POST", ts.hs.URL+"/v1/docs/notes%2Fevents/changes", tok, body)
		if code != 200 {
			t.Fatalf("POST: %d %s", code, b)
		}
	}
	title, _ := msgpack.Marshal(map[string]any{"t": "first", "n": 1})
	post(func(tx *crdt.Tx) {
		tx.Insert("body", 0, "hello")
		tx.Add("views", 2)
		tx.Set("meta", title)
	})
	first := wall.Millis
	wall.Millis += 60_000
	post(func(tx *crdt.Tx) {
		tx.Insert("body", 5, " world")
		tx.Add("views", 1)
	})
	get := func(query string) DocJSON {
		t.Helper()
		code, b := httpDo(t, "GET", ts.hs.URL+"/v1/docs/notes%2Fevents"+query, tok, nil)
		if code != 200 {
			t.Fatalf("GET%s: %d %s", query, code, b)
		}
		var out DocJSON
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	now := get("")
	if now.ID != "notes/events" || now.Text["body"] != "hello world" || now.Counter["views"] != 3 {
		t.Fatalf("GET: %+v", now)
	}
	if m, ok := now.Register["meta"].(map[string]any); !ok || m["t"] != "first" {
		t.Fatalf("register: %#v", now.Register["meta"])
	}
	if now.Version[d.Replica().String()] != d.Version()[d.Replica()] {
		t.Fatalf("version %v", now.Version)
	}
	at := time.UnixMilli(first).Add(30 * time.Second).UTC().Format(time.RFC3339)
	then := get("?at=" + url.QueryEscape(at))
	if then.Text["body"] != "hello" || then.Counter["views"] != 2 {
		t.Fatalf("GET ?at=%s: %+v", at, then)
	}
	before := get("?at=" + url.QueryEscape(time.UnixMilli(first).Add(-time.Second).UTC().Format(time.RFC3339)))
	if len(before.Text) != 0 {
		t.Fatalf("before the first edit: %+v", before)
	}
	// Errors.
	for _, tc := range []struct {
		method, path, token string
		body                []byte
		want                int
	}{
		{"GET", "/v1/docs/notes%2Fevents?at=yesterday", tok, nil, 400},
		{"GET", "/v1/docs/never-written", tok, nil, 404},
		{"GET", "/v1/docs/x", "", nil, 401},
		{"GET", "/v1/docs/x", "garbage", nil, 401},
		{"GET", "/v1/docs/x", ts.token("v", Grant{"y", "write"}), nil, 403},
		{"POST", "/v1/docs/x/changes", tok, []byte{1, 2, 3}, 400},
		{"POST", "/v1/docs/x/changes", tok, make([]byte, 2<<20), 413},
		{"POST", "/v1/docs/x", tok, []byte{1}, 405},
		{"GET", "/v1/docs/", tok, nil, 400},
	} {
		if code, b := httpDo(t, tc.method, ts.hs.URL+tc.path, tc.token, tc.body); code != tc.want {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, code, b, tc.want)
		}
	}
}

// sseReader parses an event stream.
type sseReader struct {
	resp *http.Response
	br   *bufio.Reader
}

type sseMsg struct{ id, event, data string }

func openEvents(t *testing.T, ts *testServer, doc, token, lastID string) *sseReader {
	t.Helper()
	req, err := http.NewRequest("GET", ts.hs.URL+"/v1/docs/"+doc+"/events?access_token="+url.QueryEscape(token), nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	t.Cleanup(func() { resp.Body.Close() })
	return &sseReader{resp: resp, br: bufio.NewReader(resp.Body)}
}

// next returns the next event (skipping comments); the test's deadline is
// enforced by closing the body from a timer.
func (s *sseReader) next(t *testing.T) sseMsg {
	t.Helper()
	return s.nextWithin(t, waitFor)
}

func (s *sseReader) nextWithin(t *testing.T, d time.Duration) sseMsg {
	t.Helper()
	timer := time.AfterFunc(d, func() { s.resp.Body.Close() })
	defer timer.Stop()
	var m sseMsg
	for {
		line, err := s.br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading events: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if m.event != "" {
				return m
			}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id: "):
			m.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			m.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			m.data = line[6:]
		}
	}
}

func TestSSEResumeWithoutGapsOrRepeats(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.IdleTimeout = 20 * time.Millisecond })
	tok := ts.token("u")
	w := ts.dial(tok)
	w.subscribe("s")
	model := crdt.NewDoc(crdt.ReplicaID(uuid.New()), hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	ops := uint64(0)
	// apply reads events up to "synced" or n changes events and folds them
	// into the model, checking each op arrives once.
	fold := func(m sseMsg) {
		t.Helper()
		b, err := base64.StdEncoding.DecodeString(m.data)
		if err != nil {
			t.Fatal(err)
		}
		cs, err := codec.DecodeChanges(b)
		if err != nil {
			t.Fatal(err)
		}
		have := model.Version()
		for i := range cs {
			if have.Includes(crdt.ID{Replica: cs[i].Replica, Seq: cs[i].Seq}) {
				t.Fatalf("event %s repeats %s@%d", m.id, cs[i].Replica, cs[i].Seq)
			}
			ops += cs[i].Len()
		}
		if err := model.Apply(cs...); err != nil {
			t.Fatal(err)
		}
		v, err := decodeVersionToken(m.id)
		if err != nil {
			t.Fatal(err)
		}
		if !v.Equal(model.Version()) {
			t.Fatalf("event id %v does not match the version after it %v", v, model.Version())
		}
	}
	for i := 0; i < 3; i++ {
		w.update("s", insert("t", 0, "a"))
	}
	ev := openEvents(t, ts, "s", tok, "")
	var last string
	for {
		m := ev.next(t)
		last = m.id
		if m.event == "synced" {
			break
		}
		fold(m)
	}
	for i := 0; i < 3; i++ {
		w.update("s", insert("t", 0, "b"))
		m := ev.next(t)
		if m.event != "changes" {
			t.Fatalf("live event %q", m.event)
		}
		fold(m)
		last = m.id
	}
	// Disconnect, miss some edits, let the document unload, resume.
	ev.resp.Body.Close()
	for i := 0; i < 4; i++ {
		w.update("s", insert("t", 0, "c"))
	}
	w.send(&syncproto.Unsubscribe{Doc: "s"})
	eventually(t, "the document to unload", func() bool { return ts.counter("weft_doc_unloads_total", "reason", "idle") >= 1 })
	ev2 := openEvents(t, ts, "s", tok, last)
	for {
		m := ev2.next(t)
		if m.event == "synced" {
			break
		}
		fold(m)
	}
	if got := model.Text("t"); got != w.doc("s").Text("t") || ops != 10 {
		t.Fatalf("model %q (%d ops), writer %q", got, ops, w.doc("s").Text("t"))
	}
	// A bad Last-Event-ID is refused.
	req, _ := http.NewRequest("GET", ts.hs.URL+"/v1/docs/s/events?access_token="+tok, nil)
	req.Header.Set("Last-Event-ID", "!!")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("bad Last-Event-ID: %d", resp.StatusCode)
	}
}

func TestVersionTokenRoundTrip(t *testing.T) {
	v := crdt.VersionVector{crdt.ReplicaID(uuid.New()): 1, crdt.ReplicaID(uuid.New()): 1 << 40}
	got, err := decodeVersionToken(encodeVersionToken(v))
	if err != nil || !got.Equal(v) {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"", "AA", "AQ" + strings.Repeat("A", 10), strings.Repeat("A", maxVersionToken+1)} {
		if _, err := decodeVersionToken(bad); err == nil && bad != "" {
			t.Errorf("token %q accepted", bad)
		}
	}
}

func TestPresence(t *testing.T) {
	ts := newTestServer(t, func(o *Options) {
		o.PresenceInterval = 30 * time.Millisecond
		o.PresenceTTL = 300 * time.Millisecond
		o.MaxPresencePerSec = 1000
	})
	a := ts.dial(ts.token("alice"))
	b := ts.dial(ts.token("bob"))
	a.subscribe("p")
	b.subscribe("p")
	cursor := crdt.Anchor{}
	// Alice claims to be bob: the server overrides it.
	a.send(&syncproto.Presence{Doc: "p", Session: "fake", User: "bob", Name: "Bob", Clock: 1, Field: "t", Cursor: &cursor, Typing: true})
	p := recvType[*syncproto.Presence](b)
	if p.User != "alice" || p.Name != "alice name" || p.Color != "#123456" || p.Session != a.welcome.Session || !p.Typing {
		t.Fatalf("presence identity not from the token: %+v", p)
	}
	// A burst is coalesced: fewer relays than messages, and the last state
	// wins.
	for i := uint64(2); i <= 40; i++ {
		a.send(&syncproto.Presence{Doc: "p", Clock: i, Field: "t"})
	}
	a.send(&syncproto.Ping{Nonce: 1})
	recvType[*syncproto.Pong](a)
	seen := 0
	for {
		p := recvType[*syncproto.Presence](b)
		seen++
		if p.Clock == 40 {
			break
		}
	}
	if seen >= 39 {
		t.Errorf("burst of 39 relayed %d times", seen)
	}
	// A stale clock is ignored; a newcomer gets the current state.
	a.send(&syncproto.Presence{Doc: "p", Clock: 3, Field: "old"})
	c := ts.dial(ts.token("carol"))
	c.send(&syncproto.Subscribe{Doc: "p"})
	if p := recvType[*syncproto.Presence](c); p.Clock != 40 || p.User != "alice" {
		t.Fatalf("newcomer got %+v", p)
	}
	// Leaving is announced.
	a.send(&syncproto.Unsubscribe{Doc: "p"})
	if l := recvType[*syncproto.PresenceLeave](b); l.Session != a.welcome.Session {
		t.Fatalf("leave %+v", l)
	}
	// A silent session expires.
	b.send(&syncproto.Presence{Doc: "p", Clock: 1})
	for {
		l := recvType[*syncproto.PresenceLeave](c)
		if l.Session == b.welcome.Session {
			break
		}
		if l.Session != a.welcome.Session {
			t.Fatalf("unexpected leave %+v", l)
		}
	}
	// Presence needs a subscription.
	a.send(&syncproto.Presence{Doc: "p", Clock: 99})
	if e := recvType[*syncproto.Error](a); e.Status != syncproto.StatusNotFound {
		t.Fatalf("presence unsubscribed: %+v", e)
	}
}

func TestPresenceRateLimit(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxPresencePerSec = 2 })
	a := ts.dial(ts.token("alice"))
	a.subscribe("p")
	for i := uint64(1); i <= 10; i++ {
		a.send(&syncproto.Presence{Doc: "p", Clock: i})
	}
	if e := recvType[*syncproto.Error](a); e.Status != syncproto.StatusRateLimited {
		t.Fatalf("presence flood: %+v", e)
	}
	// A client that keeps flooding is closed.
	for i := uint64(11); i <= 10+maxStrikes; i++ {
		b, err := syncproto.Encode(&syncproto.Presence{Doc: "p", Clock: i})
		if err != nil {
			t.Fatal(err)
		}
		if a.c.WriteMessage(websocket.BinaryMessage, b) != nil {
			break // closed already
		}
	}
	if code := a.expectClose(); code != int(syncproto.CloseRateLimited) {
		t.Fatalf("sustained flood closed with %d", code)
	}
}

// Strikes count rate refusals in a row: any admitted message that is rate
// limited (here presence) ends the row, so a viewer that now and then
// sends presence too fast is not closed over the connection's lifetime.
func TestStrikesResetByAdmittedPresence(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxPresencePerSec = 10 })
	a := ts.dial(ts.token("alice"))
	a.subscribe("p")
	clock, refused := uint64(0), 0
	for round := uint64(1); round <= 4; round++ {
		// The bucket refilled a little since the last round: the first
		// presences pass, the rest are refused (fewer than maxStrikes).
		for range maxStrikes / 2 {
			clock++
			a.send(&syncproto.Presence{Doc: "p", Clock: clock})
		}
		a.send(&syncproto.Ping{Nonce: round})
		for {
			m := a.recv()
			if p, ok := m.(*syncproto.Pong); ok && p.Nonce == round {
				break
			}
			if e, ok := m.(*syncproto.Error); ok && e.Status == syncproto.StatusRateLimited {
				refused++
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	if refused < maxStrikes {
		t.Fatalf("only %d presences refused; the test needs more than %d", refused, maxStrikes)
	}
	a.send(&syncproto.Ping{Nonce: 99})
	if p := recvType[*syncproto.Pong](a); p.Nonce != 99 {
		t.Fatalf("pong %d", p.Nonce)
	}
}

func TestConcurrentFirstRequestsShareOneLoad(t *testing.T) {
	mem := NewMemStore()
	// A stored document, written through another server.
	{
		ts := newTestServer(t, func(o *Options) { o.Store = mem })
		c := ts.dial(ts.token("u"))
		c.subscribe("shared")
		c.update("shared", insert("t", 0, "stored text"))
	}
	gs := &gatedStore{Store: mem, gate: make(chan struct{})}
	ts := newTestServer(t, func(o *Options) { o.Store = gs })
	tok := ts.token("u")
	clients := make([]*wsClient, 5)
	for i := range clients {
		clients[i] = ts.dial(tok)
		clients[i].send(&syncproto.Subscribe{Doc: "shared"})
	}
	var wg sync.WaitGroup
	codes := make([]int, 3)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = httpDo(t, "GET", ts.hs.URL+"/v1/docs/shared", tok, nil)
		}()
	}
	// Nothing is served before the load finishes.
	if m, err := clients[0].tryRecv(100 * time.Millisecond); err == nil {
		t.Fatalf("served %T before the load finished", m)
	}
	close(gs.gate)
	wg.Wait()
	for i, c := range clients[1:] {
		s := recvType[*syncproto.Sync](c)
		c.absorb(s)
		if got := c.doc("shared").Text("t"); got != "stored text" {
			t.Fatalf("client %d got %q", i, got)
		}
	}
	for _, code := range codes {
		if code != 200 {
			t.Fatalf("GET during load: %d", code)
		}
	}
	gs.mu.Lock()
	loads := gs.loads
	gs.mu.Unlock()
	if loads != 1 {
		t.Fatalf("%d loads for concurrent first requests", loads)
	}
}

// failingLoadStore fails every Load.
type failingLoadStore struct{ Store }

func (failingLoadStore) Load(context.Context, string) ([]byte, [][]byte, error) {
	return nil, nil, io.ErrUnexpectedEOF
}

func TestLoadFailureServesNothing(t *testing.T) {
	mem := NewMemStore()
	ts := newTestServer(t, func(o *Options) { o.Store = failingLoadStore{mem} })
	c := ts.dial(ts.token("u"))
	c.send(&syncproto.Subscribe{Doc: "d"})
	if e := recvType[*syncproto.Error](c); e.Status != syncproto.StatusInternal || e.Doc != "d" {
		t.Fatalf("subscribe to an unloadable doc: %+v", e)
	}
	if mem.Docs() != 0 {
		t.Fatal("an empty state was written")
	}
	if code, _ := httpDo(t, "GET", ts.hs.URL+"/v1/docs/d", ts.token("u"), nil); code != 500 {
		t.Fatalf("GET: %d", code)
	}
}

func TestIdleUnloadAndReload(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.IdleTimeout = 20 * time.Millisecond })
	c := ts.dial(ts.token("u"))
	c.subscribe("d")
	c.update("d", insert("t", 0, "kept"))
	c.send(&syncproto.Unsubscribe{Doc: "d"})
	eventually(t, "idle unload", func() bool { return ts.counter("weft_doc_unloads_total", "reason", "idle") == 1 })
	if ts.counter("weft_docs_loaded") != 0 {
		t.Fatal("docs_loaded not back to 0")
	}
	// Reloaded from the store, nothing lost, nothing overwritten.
	c2 := ts.dial(ts.token("u"))
	c2.subscribe("d")
	if c2.doc("d").Text("t") != "kept" {
		t.Fatalf("after reload: %q", c2.doc("d").Text("t"))
	}
	if ts.counter("weft_doc_loads_total") != 2 {
		t.Fatalf("loads %v", ts.counter("weft_doc_loads_total"))
	}
}

func TestMemoryBudgetUnloadsLeastRecentlyUsed(t *testing.T) {
	// The budget counts in-memory size (crdt.Doc.MemSize plus the room's
	// own overhead): room for about two of the documents below, measured
	// on one built the same way.
	probe := crdt.NewDoc(crdt.ReplicaID{1, 15: 1}, hlc.NewClock((&hlc.ManualWall{}).Read, 0), crdt.Options{})
	tx := probe.Begin()
	tx.Insert("t", 0, randomText(600))
	tx.Commit()
	one := probe.MemSize() + roomOverhead
	ts := newTestServer(t, func(o *Options) {
		o.IdleTimeout = time.Hour
		o.MemoryBudget = one * 5 / 2
	})
	tok := ts.token("u")
	w := ts.dial(tok)
	for _, id := range []string{"old", "mid", "new"} {
		w.subscribe(id)
		w.update(id, insert("t", 0, randomText(600)))
		w.send(&syncproto.Unsubscribe{Doc: id})
	}
	w.send(&syncproto.Ping{})
	recvType[*syncproto.Pong](w)
	// Touch "new" last so it is the most recently used.
	if code, _ := httpDo(t, "GET", ts.hs.URL+"/v1/docs/new", tok, nil); code != 200 {
		t.Fatal(code)
	}
	loaded := func(id string) bool {
		ts.srv.rooms.Lock()
		defer ts.srv.rooms.Unlock()
		return ts.srv.rooms.m[id] != nil
	}
	ts.srv.sweep(time.Now())
	eventually(t, "budget unloads", func() bool { return !loaded("old") })
	if !loaded("new") {
		t.Fatal("the most recently used document was unloaded")
	}
	if ts.counter("weft_doc_unloads_total", "reason", "budget") < 1 {
		t.Fatal("budget unload not counted")
	}
}

func TestShutdownFlushesAcksAndClosesGoingAway(t *testing.T) {
	ts := newTestServer(t, nil)
	c := ts.dial(ts.token("u"))
	c.subscribe("d")
	// Several updates in flight when Shutdown starts.
	for i := 0; i < 5; i++ {
		b := c.edit("d", insert("t", 0, "x"))
		c.batch++
		c.send(&syncproto.Update{Doc: "d", Batch: c.batch, Changes: b})
	}
	c.send(&syncproto.Ping{Nonce: 9})
	acked := 0
	for { // until the pong: the server has read every update
		m := c.recv()
		if _, ok := m.(*syncproto.Pong); ok {
			break
		}
		if a, ok := m.(*syncproto.Ack); ok && a.Status == syncproto.StatusOK {
			acked++
		}
	}
	ev := openEvents(t, ts, "d", ts.token("u"), "")
	for ev.next(t).event != "synced" {
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		done <- ts.srv.Shutdown(ctx)
	}()
	for {
		m, err := c.tryRecv(waitFor)
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
				t.Fatalf("connection ended with %v, want close 1001", err)
			}
			break
		}
		if a, ok := m.(*syncproto.Ack); ok {
			if a.Status != syncproto.StatusOK {
				t.Fatalf("ack %v", a.Status)
			}
			acked++
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The event stream ended too (after whatever it still had queued).
	timer := time.AfterFunc(waitFor, func() { ev.resp.Body.Close() })
	_, err := io.Copy(io.Discard, ev.br)
	if !timer.Stop() {
		t.Fatal("the event stream outlived Shutdown")
	}
	if err != nil {
		t.Fatalf("event stream ended with %v", err)
	}
	if acked != 5 {
		t.Fatalf("%d of 5 in-flight updates acked before the close", acked)
	}
	if got := storedDoc(t, ts.store, "d").Text("t"); got != "xxxxx" {
		t.Fatalf("store has %q", got)
	}
	// New connections are refused.
	if _, resp, err := ts.dialRaw(nil); err == nil || resp.StatusCode != 503 {
		t.Fatalf("dial after shutdown: %v", err)
	}
	if code, _ := httpDo(t, "GET", ts.hs.URL+"/readyz", "", nil); code != 503 {
		t.Fatalf("readyz after shutdown: %d", code)
	}
}

func TestGetSnapshot(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token("u")
	w := ts.dial(tok)
	w.subscribe("notes/1")
	w.update("notes/1", insert("body", 0, "hello snapshot"))
	get := func(id, accept string) (int, string, []byte) {
		req, err := http.NewRequest("GET", ts.hs.URL+"/v1/docs/"+id, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Accept", accept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header.Get("Content-Type"), b
	}
	code, ctype, body := get("notes/1", "application/json;q=0.5, "+SnapshotMediaType)
	if code != 200 || ctype != SnapshotMediaType {
		t.Fatalf("status %d, content type %q", code, ctype)
	}
	d, err := codec.DecodeSnapshot(body, crdt.ReplicaID{7, 15: 7}, hlc.NewClock((&hlc.ManualWall{}).Read, 0), crdt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Text("body") != "hello snapshot" {
		t.Fatalf("snapshot text %q", d.Text("body"))
	}
	if code, _, _ := get("notes/none", SnapshotMediaType); code != http.StatusNotFound {
		t.Fatalf("missing document: status %d, want 404", code)
	}
	if code, ctype, _ := get("notes/1", "application/json"); code != 200 || !strings.HasPrefix(ctype, "application/json") {
		t.Fatalf("JSON still served by default: %d %q", code, ctype)
	}
}

func TestListDocsShowsOnlyReadableDocuments(t *testing.T) {
	ts := newTestServer(t, nil)
	w := ts.dial(ts.token("writer"))
	for _, id := range []string{"a/1", "a/2", "b/1"} {
		w.subscribe(id)
		w.update(id, insert("t", 0, "x"))
	}
	list := func(tok, query string) (int, DocList) {
		code, body := httpDo(t, "GET", ts.hs.URL+"/v1/docs"+query, tok, nil)
		var l DocList
		if code == 200 {
			if err := json.Unmarshal(body, &l); err != nil {
				t.Fatal(err)
			}
		}
		return code, l
	}
	if code, l := list(ts.token("all"), ""); code != 200 || !slices.Equal(l.Docs, []string{"a/1", "a/2", "b/1"}) {
		t.Fatalf("all: %d %v", code, l.Docs)
	}
	if code, l := list(ts.token("a", Grant{Pattern: "a/*", Access: "read"}), ""); code != 200 || !slices.Equal(l.Docs, []string{"a/1", "a/2"}) {
		t.Fatalf("reader of a/*: %d %v", code, l.Docs)
	}
	if code, l := list(ts.token("all"), "?prefix=b/&limit=5"); code != 200 || !slices.Equal(l.Docs, []string{"b/1"}) {
		t.Fatalf("prefix b/: %d %v", code, l.Docs)
	}
	if code, _ := list("", ""); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	if code, _ := list(ts.token("all"), "?limit=0"); code != http.StatusBadRequest {
		t.Fatalf("limit 0: %d", code)
	}
}

// httpReq sends a request with the given headers and returns the status,
// the response headers and the body.
func httpReq(t *testing.T, method, u string, header http.Header, body []byte) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// A document that fails to load is 500 internal on every HTTP endpoint
// (PROTOCOL.md §10: internal is 500; 503 is overloaded), /ops included.
func TestHTTPLoadFailureIsInternal(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.Store = failingLoadStore{NewMemStore()} })
	tok := ts.token("u")
	if code, b := httpDo(t, "GET", ts.hs.URL+"/v1/docs/d", tok, nil); code != 500 || !strings.Contains(string(b), `"internal"`) {
		t.Fatalf("GET: %d %s", code, b)
	}
	if code, out := postOps(t, ts, "d", tok, `[{"field":"t","insert":"x"}]`); code != 500 || out["status"] != "internal" {
		t.Fatalf("POST ops: %d %v", code, out)
	}
	d := crdt.NewDoc(crdt.ReplicaID(uuid.New()), hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	tx := d.Begin()
	if err := tx.Insert("t", 0, "x"); err != nil {
		t.Fatal(err)
	}
	tx.Commit()
	if code, b := httpDo(t, "POST", ts.hs.URL+"/v1/docs/d/changes", tok, codec.EncodeChanges(d.ChangesSince(nil))); code != 500 {
		t.Fatalf("POST changes: %d %s", code, b)
	}
}

// peer_timeout (--ack-peers) means durable here: 202, not the 500 of
// "nothing was made durable", and /ops says what version it made.
func TestHTTPPeerTimeoutIsAccepted(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.srv.SetReplicator(newFakeReplicator(syncproto.StatusPeerTimeout))
	tok := ts.token("u")
	code, out := postOps(t, ts, "d", tok, `[{"field":"t","insert":"x"}]`)
	if code != http.StatusAccepted || out["status"] != "peer_timeout" || out["version"] == nil {
		t.Fatalf("POST ops: %d %v", code, out)
	}
	d := crdt.NewDoc(crdt.ReplicaID(uuid.New()), hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	tx := d.Begin()
	if err := tx.Insert("t", 0, "y"); err != nil {
		t.Fatal(err)
	}
	tx.Commit()
	if code, b := httpDo(t, "POST", ts.hs.URL+"/v1/docs/d/changes", tok, codec.EncodeChanges(d.ChangesSince(nil))); code != http.StatusAccepted || !strings.Contains(string(b), `"peer_timeout"`) {
		t.Fatalf("POST changes: %d %s", code, b)
	}
}

// GET /v1/docs is readable by a browser on an allowed origin, and
// answers its preflight, like /v1/docs/{id}.
func TestListDocsCORS(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.AllowedOrigins = []string{"https://app.example"} })
	h := http.Header{"Origin": {"https://app.example"}, "Access-Control-Request-Method": {"GET"},
		"Access-Control-Request-Headers": {"authorization"}}
	code, hdr, b := httpReq(t, "OPTIONS", ts.hs.URL+"/v1/docs", h, nil)
	if code != http.StatusNoContent || hdr.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(hdr.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight: %d %v %s", code, hdr, b)
	}
	h = http.Header{"Origin": {"https://app.example"}, "Authorization": {"Bearer " + ts.token("u")}}
	code, hdr, b = httpReq(t, "GET", ts.hs.URL+"/v1/docs", h, nil)
	if code != 200 || hdr.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("GET: %d %v %s", code, hdr, b)
	}
	h = http.Header{"Origin": {"https://evil.example"}, "Authorization": {"Bearer " + ts.token("u")}}
	if code, _, b := httpReq(t, "GET", ts.hs.URL+"/v1/docs", h, nil); code != http.StatusForbidden {
		t.Fatalf("GET from another origin: %d %s", code, b)
	}
	if code, _, b := httpReq(t, "POST", ts.hs.URL+"/v1/docs", http.Header{"Authorization": {"Bearer " + ts.token("u")}}, []byte("x")); code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /v1/docs: %d %s", code, b)
	}
}

// POST /changes answers 415 for a body labelled as something else than a
// change batch, as /ops does; none, the weft type and
// application/octet-stream are taken.
func TestPostChangesContentType(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token("u")
	d := crdt.NewDoc(crdt.ReplicaID(uuid.New()), hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	batch := func() []byte {
		tx := d.Begin()
		if err := tx.Insert("t", 0, "x"); err != nil {
			t.Fatal(err)
		}
		tx.Commit()
		return codec.EncodeChanges(d.ChangesSince(nil))
	}
	for _, c := range []struct {
		ct   string
		want int
	}{
		{"application/json", 415},
		{"text/plain", 415},
		{"application/x-www-form-urlencoded", 415},
		{"", 200},
		{ChangesContentType, 200},
		{"application/octet-stream", 200},
	} {
		h := http.Header{"Authorization": {"Bearer " + tok}}
		if c.ct != "" {
			h.Set("Content-Type", c.ct)
		}
		if code, _, b := httpReq(t, "POST", ts.hs.URL+"/v1/docs/d/changes", h, batch()); code != c.want {
			t.Errorf("Content-Type %q: %d %s, want %d", c.ct, code, b, c.want)
		}
	}
}

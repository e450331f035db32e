package syncserver

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/syncproto"
)

// logBuffer is an io.Writer for a test logger, safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A panic on a room goroutine fail-stops that document only: its
// subscribers, its next update and its HTTP readers get internal, a metric
// and a log line name it, and every other document goes on as before.
func TestRoomPanicFailsOnlyThatDocument(t *testing.T) {
	var logs logBuffer
	ts := newTestServer(t, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	tok := ts.token("u")
	a := ts.dial(tok)
	a.subscribe("bad")
	a.subscribe("good")
	if ack := a.update("bad", insert("t", 0, "before")); ack.Status != syncproto.StatusOK {
		t.Fatalf("before: %v", ack.Status)
	}
	r, err := ts.srv.acquire(context.Background(), "bad")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.send(context.Background(), cmdDo{fn: func(*room) { panic("boom") }}); err != nil {
		t.Fatal(err)
	}
	ts.srv.release(r)
	if e := recvType[*syncproto.Error](a); e.Status != syncproto.StatusInternal || e.Doc != "bad" {
		t.Fatalf("subscriber got %+v, want internal for bad", e)
	}
	if ack := a.update("bad", insert("t", 0, "after")); ack.Status != syncproto.StatusInternal {
		t.Fatalf("update of the failed document: %v %q, want internal", ack.Status, ack.Message)
	}
	if ack := a.update("good", insert("t", 0, "fine")); ack.Status != syncproto.StatusOK {
		t.Fatalf("update of another document: %v %q", ack.Status, ack.Message)
	}
	code, b := httpDo(t, "GET", ts.hs.URL+"/v1/docs/bad", tok, nil)
	if code != http.StatusInternalServerError || !strings.Contains(string(b), `"internal"`) {
		t.Fatalf("GET of the failed document: %d %s", code, b)
	}
	if code, b := httpDo(t, "GET", ts.hs.URL+"/v1/docs/good", tok, nil); code != 200 {
		t.Fatalf("GET of another document: %d %s", code, b)
	}
	b2 := ts.dial(tok)
	b2.send(&syncproto.Subscribe{Doc: "bad"})
	if e := recvType[*syncproto.Error](b2); e.Status != syncproto.StatusInternal {
		t.Fatalf("new subscriber: %+v", e)
	}
	if got := ts.counter("weft_doc_failures_total", "doc", "bad"); got != 1 {
		t.Fatalf("weft_doc_failures_total{doc=bad} = %v", got)
	}
	if l := logs.String(); !strings.Contains(l, "doc=bad") || !strings.Contains(l, "boom") {
		t.Fatalf("no log line names the document and the panic:\n%s", l)
	}
	if got := storedDoc(t, ts.store, "bad").Text("t"); got != "before" {
		t.Fatalf("the store holds %q", got)
	}
}

// panicStore panics where a buggy store (or decoder) might.
type panicStore struct {
	Store
	load, appendPanics bool
}

func (p *panicStore) Load(ctx context.Context, doc string) ([]byte, [][]byte, error) {
	if p.load && doc == "bad" {
		panic("load boom")
	}
	return p.Store.Load(ctx, doc)
}

func (p *panicStore) Append(ctx context.Context, doc string, batch []byte) (int64, error) {
	if p.appendPanics && doc == "bad" {
		panic("append boom")
	}
	return p.Store.Append(ctx, doc, batch)
}

// A panic while loading a document is a load error, and one in a store
// write fails that document, not the server.
func TestStorePanicsFailOnlyThatDocument(t *testing.T) {
	for _, ps := range []*panicStore{{load: true}, {appendPanics: true}} {
		ps.Store = NewMemStore()
		ts := newTestServer(t, func(o *Options) { o.Store = ps })
		a := ts.dial(ts.token("u"))
		if ps.load {
			a.send(&syncproto.Subscribe{Doc: "bad", Version: crdt.VersionVector{}})
			if e := recvType[*syncproto.Error](a); e.Status != syncproto.StatusInternal {
				t.Fatalf("subscribe to a document whose load panics: %+v", e)
			}
		} else {
			a.subscribe("bad")
			if ack := a.update("bad", insert("t", 0, "x")); ack.Status != syncproto.StatusInternal {
				t.Fatalf("update whose write panics: %v %q", ack.Status, ack.Message)
			}
		}
		a.subscribe("good")
		if ack := a.update("good", insert("t", 0, "fine")); ack.Status != syncproto.StatusOK {
			t.Fatalf("another document: %v %q", ack.Status, ack.Message)
		}
		if code, b := httpDo(t, "GET", ts.hs.URL+"/healthz", "", nil); code != 200 {
			t.Fatalf("healthz: %d %s", code, b)
		}
		if got := ts.counter("weft_doc_failures_total", "doc", "bad"); got != 1 {
			t.Fatalf("weft_doc_failures_total{doc=bad} = %v", got)
		}
	}
}

// A panic on a session's reader closes that connection with 1011; the
// others go on.
func TestSessionPanicClosesOnlyThatConnection(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.srv.testDispatch = func(m syncproto.Message) {
		if p, ok := m.(*syncproto.Ping); ok && p.Nonce == 666 {
			panic("session boom")
		}
	}
	tok := ts.token("u")
	a, b := ts.dial(tok), ts.dial(tok)
	a.subscribe("d")
	b.subscribe("d")
	a.send(&syncproto.Ping{Nonce: 666})
	if code := a.expectClose(); code != 1011 {
		t.Fatalf("close code %d, want 1011", code)
	}
	if ack := b.update("d", insert("t", 0, "x")); ack.Status != syncproto.StatusOK {
		t.Fatalf("the other connection: %v", ack.Status)
	}
	if got := ts.counter("weft_panics_total", "where", "session_reader"); got != 1 {
		t.Fatalf("weft_panics_total{where=session_reader} = %v", got)
	}
	eventually(t, "the panicked session to go", func() bool {
		ts.srv.sessions.Lock()
		defer ts.srv.sessions.Unlock()
		return len(ts.srv.sessions.m) == 1
	})
}

// A panicking HTTP handler answers 500 internal and counts.
func TestHTTPPanicAnswersInternal(t *testing.T) {
	ts := newTestServer(t, nil)
	h := ts.srv.recoverHTTP(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("http boom") }))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/docs/x", nil))
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != 500 || body["status"] != "internal" {
		t.Fatalf("%d %s (%v)", rec.Code, rec.Body, err)
	}
	if got := ts.counter("weft_panics_total", "where", "http"); got != 1 {
		t.Fatalf("weft_panics_total{where=http} = %v", got)
	}
}

package syncserver

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/weftsync/weft/crdt/syncproto"
)

func loadedRooms(ts *testServer) int {
	ts.srv.rooms.Lock()
	defer ts.srv.rooms.Unlock()
	return len(ts.srv.rooms.m)
}

// An empty room costs what roomOverhead says, and the memory accounting
// (the budget's measure, weft_doc_bytes_held) counts it: many empty
// documents are not free.
func TestRoomOverhead(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.IdleTimeout = time.Hour; o.MemoryBudget = 0 })
	const n = 2000
	runtime.GC()
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	for i := range n {
		r, err := ts.srv.acquire(context.Background(), fmt.Sprint("doc", i))
		if err != nil {
			t.Fatal(err)
		}
		defer ts.srv.release(r)
	}
	runtime.GC()
	runtime.ReadMemStats(&b)
	per := (int64(b.HeapInuse+b.StackInuse) - int64(a.HeapInuse+a.StackInuse)) / n
	t.Logf("an empty room takes %d bytes (roomOverhead %d)", per, roomOverhead)
	if per > 2*roomOverhead {
		t.Errorf("an empty room takes %d bytes, more than twice roomOverhead (%d): measure it again", per, roomOverhead)
	}
	eventually(t, "the janitor's sweep to count the rooms", func() bool {
		return ts.counter("weft_doc_bytes_held") >= n*roomOverhead
	})
}

// A read-only token opening documents on many connections pins at most
// MaxDocsPerUser of them: never-written documents are not free.
func TestUserCannotPinUnboundedRooms(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxDocsPerConn = 100; o.MaxDocsPerUser = 250 })
	tok := ts.token("reader", Grant{"*", "read"})
	synced, refused := 0, 0
	for c := range 4 {
		wc := ts.dial(tok)
		for i := range 100 {
			wc.send(&syncproto.Subscribe{Doc: fmt.Sprintf("never-%d-%d", c, i)})
		}
		for range 100 {
			switch m := wc.recv().(type) {
			case *syncproto.Sync:
				synced++
			case *syncproto.Error:
				if m.Status != syncproto.StatusTooLarge {
					t.Fatalf("refusal %+v, want too_large", m)
				}
				refused++
			default:
				t.Fatalf("unexpected %#v", m)
			}
		}
	}
	if synced != 250 || refused != 150 {
		t.Fatalf("%d subscribed, %d refused; want 250 and 150", synced, refused)
	}
	if n := loadedRooms(ts); n != 250 {
		t.Fatalf("%d rooms loaded, want 250", n)
	}
}

// Subscribes are metered: a burst of MaxDocsPerConn plus a second's
// worth, then MaxSubscribesPerSec.
func TestSubscribesAreMetered(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxDocsPerConn = 5; o.MaxSubscribesPerSec = 1 })
	wc := ts.dial(ts.token("u"))
	for range 6 {
		wc.subscribe("d") // a resubscribe re-encodes the catch-up too
	}
	wc.send(&syncproto.Subscribe{Doc: "d"})
	if e := recvType[*syncproto.Error](wc); e.Status != syncproto.StatusRateLimited {
		t.Fatalf("seventh subscribe at once: %+v, want rate_limited", e)
	}
}

// Loaded documents are capped: over MaxLoadedDocs a request that would load
// one more is answered 503 overloaded.
func TestLoadedDocumentsCapped(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxLoadedDocs = 3; o.IdleTimeout = time.Hour })
	tok := ts.token("u")
	for i := range 3 {
		if code, b := httpDo(t, "GET", ts.hs.URL+fmt.Sprintf("/v1/docs/d%d", i), tok, nil); code != http.StatusNotFound {
			t.Fatalf("GET d%d: %d %s", i, code, b)
		}
	}
	code, b := httpDo(t, "GET", ts.hs.URL+"/v1/docs/d3", tok, nil)
	if code != http.StatusServiceUnavailable || !strings.Contains(string(b), `"overloaded"`) {
		t.Fatalf("a fourth document: %d %s, want 503 overloaded", code, b)
	}
	wc := ts.dial(tok)
	wc.send(&syncproto.Subscribe{Doc: "d4"})
	if e := recvType[*syncproto.Error](wc); e.Status != syncproto.StatusOverloaded {
		t.Fatalf("subscribe to a fourth: %+v", e)
	}
	wc.subscribe("d1") // loaded already
}

// The memory budget sees empty rooms: reading many never-written documents
// over HTTP does not keep them all loaded.
func TestMemoryBudgetCountsEmptyRooms(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MemoryBudget = 50 * roomOverhead; o.IdleTimeout = time.Hour })
	tok := ts.token("u")
	for i := range 200 {
		if code, b := httpDo(t, "GET", ts.hs.URL+fmt.Sprintf("/v1/docs/e%d", i), tok, nil); code != http.StatusNotFound {
			t.Fatalf("GET e%d: %d %s", i, code, b)
		}
	}
	eventually(t, "the budget to unload empty rooms", func() bool { return loadedRooms(ts) <= 50 })
}

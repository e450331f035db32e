package client_test

import (
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	client "github.com/weftsync/weft/clients/go"
	"github.com/weftsync/weft/crdt/syncproto"
)

// A server that closes every connection right after welcome (as one does
// with 4000, 4003, 4004 or 1011) is redialled with a growing backoff:
// only a connection that stayed up and answered a sync resets it
// (PROTOCOL.md §5).
func TestBackoffGrowsWhenServerClosesAfterWelcome(t *testing.T) {
	var dials atomic.Int64
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		dials.Add(1)
		if _, _, err := conn.ReadMessage(); err != nil { // hello
			return
		}
		b, err := syncproto.Encode(&syncproto.Welcome{Version: syncproto.ProtocolVersion, Session: "s", User: "u"})
		if err != nil {
			t.Error(err)
			return
		}
		conn.WriteMessage(websocket.BinaryMessage, b)
		conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(int(syncproto.CloseInternalError), "closing at once"))
	}))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/ws"
	c := newClient(t, url, func(o *client.Options) {
		o.Backoff = client.Backoff{Base: 20 * time.Millisecond, Max: 400 * time.Millisecond, Rand: rand.New(rand.NewPCG(1, 2))}
	})
	open(t, c, "d")
	time.Sleep(1500 * time.Millisecond)
	// Reset at every welcome, each delay is at most Base (20 ms): some 150
	// dials. Growing, the windows are 20, 40, ... 400 ms: about a dozen.
	if n := dials.Load(); n < 2 || n > 40 {
		t.Fatalf("%d dials in 1.5 s against a server that closes after welcome", n)
	}
}

// After a graceful shutdown (close 1001) the first reconnect goes at once,
// not after a backoff (PROTOCOL.md §5): here the backoff's window is an
// hour, the server behind the address is replaced by another, and the
// client must be synced with the new one within seconds.
func TestGoingAwayReconnectsAtOnce(t *testing.T) {
	a := startServer(t, nil)
	b := startServer(t, nil)
	px := startProxy(t, a.Addr)
	c := newClient(t, px.URL(), func(o *client.Options) {
		o.Backoff = client.Backoff{Base: time.Hour, Max: time.Hour, Rand: rand.New(rand.NewPCG(1, 2))}
	})
	d := open(t, c, "going/away")
	waitUntil(t, 5*time.Second, "synced with a", d.Synced, d)
	px.setTarget(b.Addr)
	a.stop(t) // Shutdown: close 1001 to every session
	waitUntil(t, 10*time.Second, "synced with b after 1001", func() bool { return c.Connected() && d.Synced() }, d)
}

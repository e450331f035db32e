//go:build linux

package syncserver

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/weftsync/weft/crdt/syncproto"
)

// parkedSessions counts the sessions whose reader is parked.
func (ts *testServer) parkedSessions() (parked, all int) {
	ts.srv.sessions.Lock()
	defer ts.srv.sessions.Unlock()
	for ss := range ts.srv.sessions.m {
		if ss.parked.Load() {
			parked++
		}
	}
	return parked, len(ts.srv.sessions.m)
}

// TestIdleReadersPark: idle subscribers give up their reader goroutine,
// still get the fan-out, and a parked one that writes is read and acked.
func TestIdleReadersPark(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.ParkIdle = 20 * time.Millisecond })
	before := runtime.NumGoroutine()
	const n = 40
	tok := ts.token("u")
	clients := make([]*wsClient, n)
	for i := range clients {
		clients[i] = ts.dial(tok)
		clients[i].subscribe("d")
	}
	eventually(t, "every idle reader parked", func() bool {
		p, all := ts.parkedSessions()
		return p == n && all == n
	})
	if g := runtime.NumGoroutine() - before; g > n/2 {
		t.Errorf("%d goroutines more with %d parked connections", g, n)
	}
	// A parked connection that sends: the poller resumes its reader.
	if ack := clients[0].update("d", insert("body", 0, "hi")); ack.Status != syncproto.StatusOK {
		t.Fatalf("update from a parked connection: %v %s", ack.Status, ack.Message)
	}
	// The others, parked, still get it (writes need no reader).
	for _, c := range clients[1:] {
		for c.doc("d").Text("body") != "hi" {
			c.absorb(c.recv())
		}
	}
	eventually(t, "the writer parked again", func() bool {
		p, _ := ts.parkedSessions()
		return p == n
	})
}

// TestParkedHeartbeat: a parked connection that answers pings stays
// connected (its pongs are taken without keeping a reader awake); one that
// stops answering is closed with CloseHeartbeatTimeout by its timer.
func TestParkedHeartbeat(t *testing.T) {
	ts := newTestServer(t, func(o *Options) {
		o.ParkIdle = 10 * time.Millisecond
		o.PingInterval = 60 * time.Millisecond
		o.PongTimeout = heartbeatMargin
	})
	pa := answerPings(ts.dial(ts.token("u")))
	// Well past PingInterval+PongTimeout, answering pings: still open,
	// and parked again after each pong.
	pa.expectAlive(t, ts.srv.opts)
	eventually(t, "parked between pings", func() bool {
		p, _ := ts.parkedSessions()
		return p == 1
	})
	pa.expectHeartbeatClose(t, ts)
	eventually(t, "the session ended", func() bool {
		_, all := ts.parkedSessions()
		return all == 0
	})
}

// TestShutdownWithParkedReaders: Shutdown runs parked readers to their end
// and closes their connections with 1001.
func TestShutdownWithParkedReaders(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.ParkIdle = 10 * time.Millisecond })
	tok := ts.token("u")
	clients := make([]*wsClient, 5)
	for i := range clients {
		clients[i] = ts.dial(tok)
		clients[i].subscribe("d")
	}
	eventually(t, "every idle reader parked", func() bool {
		p, _ := ts.parkedSessions()
		return p == len(clients)
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for i, c := range clients {
		if code := c.expectClose(); code != websocket.CloseGoingAway {
			t.Errorf("client %d closed with %d, want 1001", i, code)
		}
	}
}

// TestParkedReaderSeesTheClientClose: a client that goes away while its
// reader is parked ends its session (the poller sees the hang-up).
func TestParkedReaderSeesTheClientClose(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.ParkIdle = 10 * time.Millisecond })
	c := ts.dial(ts.token("u"))
	c.subscribe("d")
	eventually(t, "parked", func() bool {
		p, _ := ts.parkedSessions()
		return p == 1
	})
	c.c.Close()
	eventually(t, "the session ended", func() bool {
		_, all := ts.parkedSessions()
		return all == 0
	})
}

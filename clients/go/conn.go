package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/internal/sockio"
)

// clientName is sent in hello for the server's logs.
const clientName = "weft-go/1"

// defaultMaxFrame bounds frames read from a server that announces no limit.
const defaultMaxFrame = 64 << 20

// writeTimeout bounds one frame write: a server that stops reading is
// treated as gone.
const writeTimeout = 10 * time.Second

// run is the connection loop: connect, serve until the connection drops,
// wait a jittered backoff, repeat, until Close or a terminal refusal.
func (c *Client) run() {
	defer close(c.done)
	log := c.opts.Logger
	for c.ctx.Err() == nil {
		conn, welcome, err := c.dial()
		what := "connect failed"
		if err == nil {
			var stable bool
			stable, err = c.serve(conn, welcome)
			what = "disconnected"
			if stable {
				// Only a connection that proved itself resets the backoff:
				// a server that closes right after welcome (4000, 4003,
				// 4004, 1011) is not redialled every Base forever.
				c.opts.Backoff.Reset()
			}
		}
		if c.ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrTerminal) {
			log.Error("weft client: giving up", "err", err)
			c.mu.Lock()
			c.mu.terminal = err
			c.broadcastStateLocked()
			c.mu.Unlock()
			return
		}
		var delay time.Duration
		if !goingAway(err) || !c.opts.Backoff.skip() {
			delay = c.opts.Backoff.Next()
		}
		log.Info("weft client: "+what, "err", err, "retry_in", delay)
		if !c.sleep(delay) {
			return
		}
	}
}

// goingAway reports whether err is the server's close 1001 (a graceful
// shutdown: another server, or this one restarted, can take the client
// at once; PROTOCOL.md section 5).
func goingAway(err error) bool {
	var ce *websocket.CloseError
	return errors.As(err, &ce) && ce.Code == websocket.CloseGoingAway
}

// sleep waits d or until the client closes; it reports whether to go on.
func (c *Client) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// dial connects and runs the hello/welcome handshake.
func (c *Client) dial() (*websocket.Conn, *syncproto.Welcome, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.DialTimeout)
	defer cancel()
	d := websocket.Dialer{
		// The socket reads and writes through internal/sockio (see its
		// package doc: a client idle between frames otherwise wakes the
		// runtime's monitor at nearly every frame).
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var nd net.Dialer
			nc, err := nd.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return sockio.Wrap(nc), nil
		},
		HandshakeTimeout: c.opts.DialTimeout,
		ReadBufferSize:   4096,
		WriteBufferSize:  4096,
	}
	conn, resp, err := d.DialContext(ctx, c.opts.URL, c.opts.Header)
	if err != nil {
		if resp != nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) {
			return nil, nil, fmt.Errorf("%w: handshake refused with HTTP %s", ErrTerminal, resp.Status)
		}
		if resp != nil {
			return nil, nil, fmt.Errorf("client: dial %s: %w (HTTP %s)", c.opts.URL, err, resp.Status)
		}
		return nil, nil, fmt.Errorf("client: dial %s: %w", c.opts.URL, err)
	}
	fail := func(err error) (*websocket.Conn, *syncproto.Welcome, error) {
		conn.Close()
		return nil, nil, err
	}
	hello, err := syncproto.Encode(&syncproto.Hello{
		Version:    syncproto.ProtocolVersion,
		Token:      c.opts.Token,
		Replica:    c.replica,
		ClientName: clientName,
	})
	if err != nil {
		return fail(fmt.Errorf("%w: %v", ErrTerminal, err))
	}
	deadline, _ := ctx.Deadline()
	conn.SetWriteDeadline(deadline)
	if err := conn.WriteMessage(websocket.BinaryMessage, hello); err != nil {
		return fail(fmt.Errorf("client: send hello: %w", err))
	}
	conn.SetReadDeadline(deadline)
	conn.SetReadLimit(defaultMaxFrame)
	for {
		typ, data, err := conn.ReadMessage()
		if err != nil {
			return fail(closeError("waiting for welcome", err))
		}
		if typ != websocket.BinaryMessage {
			continue
		}
		m, err := syncproto.Decode(data)
		if err != nil {
			if errors.Is(err, syncproto.ErrUnknownMessage) {
				continue
			}
			return fail(fmt.Errorf("client: bad frame before welcome: %w", err))
		}
		switch m := m.(type) {
		case *syncproto.Welcome:
			if m.Version != syncproto.ProtocolVersion {
				return fail(fmt.Errorf("%w: server speaks protocol %d, client %d", ErrTerminal, m.Version, syncproto.ProtocolVersion))
			}
			conn.SetReadDeadline(time.Time{})
			conn.SetWriteDeadline(time.Time{})
			if m.Limits.MaxFrame > 0 {
				// The server never sends more than it accepts, plus slack
				// for the envelope of a fan-out.
				conn.SetReadLimit(int64(min(m.Limits.MaxFrame*2+4096, 1<<30)))
			}
			return conn, m, nil
		case *syncproto.Error:
			if m.Status == syncproto.StatusUnauthorized {
				return fail(fmt.Errorf("%w: %s: %s", ErrTerminal, m.Status, m.Message))
			}
			return fail(fmt.Errorf("client: server refused hello: %s: %s", m.Status, m.Message))
		}
	}
}

// closeError turns a read error into an error that says whether
// reconnecting can help.
func closeError(during string, err error) error {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		code := syncproto.CloseCode(ce.Code)
		switch code {
		case syncproto.CloseAuthFailed, syncproto.CloseUnsupportedVersion, syncproto.CloseReplicaConflict:
			return fmt.Errorf("%w: server closed with %d %s: %s", ErrTerminal, ce.Code, code, ce.Text)
		}
		return fmt.Errorf("client: %s: server closed with %d %s: %w", during, ce.Code, code, err)
	}
	return fmt.Errorf("client: %s: %w", during, err)
}

// session is the state of one live connection shared by its reader and
// writer.
type session struct {
	conn     *websocket.Conn
	gen      uint64
	lastRead atomic.Int64 // unix nanos of the last frame read
	synced   atomic.Bool  // a sync arrived on this connection
	readErr  chan error   // the reader's exit error (capacity 1)
}

// serve runs one connection: the reader in a goroutine, the writer here.
// It returns when either fails or the client closes, after the reader has
// exited, and whether the connection was stable: up for
// Backoff.Stable, and, if a document was open, having answered a sync.
func (c *Client) serve(conn *websocket.Conn, w *syncproto.Welcome) (stable bool, _ error) {
	s := &session{conn: conn, readErr: make(chan error, 1)}
	start := time.Now()
	s.lastRead.Store(time.Now().UnixNano())
	// Fold the server's clock into the skew estimate only when the refusal
	// comes; until then trust the local wall (see restamp.go).
	c.mu.Lock()
	c.mu.gen++
	s.gen = c.mu.gen
	c.mu.connected = true
	c.mu.ctrl = nil
	for _, d := range c.mu.docs {
		if d != nil {
			c.markDirtyLocked(d) // every document subscribes on the new connection
		}
	}
	c.broadcastStateLocked()
	c.mu.Unlock()
	c.serverWelcome(w)
	c.opts.Logger.Info("weft client: connected", "url", c.opts.URL, "session", w.Session, "user", w.User)

	go func() { s.readErr <- c.readLoop(s) }()
	err := c.writeLoop(s)
	conn.Close() // unblocks the reader
	rerr := <-s.readErr
	if err == nil || (errors.Is(rerr, ErrTerminal) && !errors.Is(err, ErrTerminal)) {
		err = rerr
	}

	c.mu.Lock()
	c.mu.connected = false
	c.broadcastStateLocked()
	docs := c.openDocsLocked()
	c.mu.Unlock()
	for _, d := range docs {
		d.disconnected(s.gen)
	}
	stable = time.Since(start) >= c.opts.Backoff.stable() && (s.synced.Load() || len(docs) == 0)
	return stable, err
}

func (c *Client) readLoop(s *session) error {
	// One buffer for every frame: what the decoder returns for a frame
	// is done with once the frame is handled, so the buffer is reused
	// and an idle reader allocates nothing per message.
	var buf bytes.Buffer
	var fr frameReader
	fr.cache.gen-- // matches no generation yet
	for {
		typ, r, err := s.conn.NextReader()
		if err != nil {
			return closeError("read", err)
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			return closeError("read", err)
		}
		s.lastRead.Store(time.Now().UnixNano())
		if typ != websocket.BinaryMessage {
			continue
		}
		err = c.handleFrame(s, &fr, buf.Bytes())
		if buf.Cap() > 1<<20 {
			buf = bytes.Buffer{} // do not keep a buffer grown by one large frame
		}
		if err != nil {
			return err
		}
	}
}

// frameReader is the reader goroutine's state between frames.
type frameReader struct {
	// dec decodes every frame. NB: a changes message it returns aliases
	// the frame and is its own, valid until the next frame: nothing that
	// handles one keeps it (Peer.Receive decodes the payload into changes
	// of their own). Copying each payload and allocating the message and
	// its document id were three of a delivery's seven allocations.
	dec syncproto.Decoder
	// cache is the document of the last document message.
	cache struct {
		gen uint64
		id  string
		doc *Document
	}
}

// handleFrame decodes and handles one binary frame read on s. An error
// ends the connection.
func (c *Client) handleFrame(s *session, fr *frameReader, data []byte) error {
	m, err := fr.dec.Decode(data)
	if err != nil {
		if errors.Is(err, syncproto.ErrUnknownMessage) {
			return nil // a newer server; ignoring is what the spec asks
		}
		return fmt.Errorf("client: bad frame from server: %w", err)
	}
	if _, ok := m.(*syncproto.Sync); ok {
		s.synced.Store(true)
	}
	switch m := m.(type) {
	case *syncproto.Ping:
		c.sendControl(&syncproto.Pong{Nonce: m.Nonce})
	case *syncproto.Pong, *syncproto.Welcome:
	case *syncproto.Error:
		if m.Doc == "" {
			c.opts.Logger.Warn("weft client: server error", "status", m.Status, "message", m.Message)
			return nil
		}
		if d := c.docByID(m.Doc); d != nil {
			d.serverError(s.gen, m)
		}
	default:
		id := syncproto.DocOf(m)
		// NB: the last lookup stands while no document was opened or
		// closed since (the lock and the map lookup were 3% of a
		// 200-client load generator); the generation is read before
		// the lookup, so a change during it is seen next time.
		cache := &fr.cache
		if g := c.docsGen.Load(); g != cache.gen || id != cache.id {
			cache.gen, cache.id, cache.doc = g, id, c.docByID(id)
		}
		d := cache.doc
		if d == nil {
			return nil // closed meanwhile; the server learns from unsubscribe
		}
		if err := d.receive(s.gen, m); err != nil {
			// The server sent changes this replica cannot take: start
			// over on a new connection (after backoff) with a fresh
			// sync, rather than go on with a document out of step.
			return err
		}
	}
	return nil
}

// writeLoop is the connection's only writer.
func (c *Client) writeLoop(s *session) error {
	write := func(m syncproto.Message) error {
		data, err := syncproto.Encode(m)
		if err != nil {
			// Our own message failed validation: a client bug, not a
			// network problem. Drop the message, keep the connection.
			c.opts.Logger.Error("weft client: cannot encode message", "type", m.Type(), "err", err)
			return nil
		}
		s.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err := s.conn.WriteMessage(websocket.BinaryMessage, data); err != nil {
			return fmt.Errorf("client: write: %w", err)
		}
		return nil
	}
	// Stay under the server's announced change rate, so a backlog (a day
	// offline) flows at the rate the server accepts instead of being
	// refused batch after batch.
	bucket := newOpsBucket(c.maxRate.Load(), time.Now())
	pace := func(m syncproto.Message) error {
		u, ok := m.(*syncproto.Update)
		if !ok || bucket == nil {
			return nil
		}
		// The server's rate counts operation units (seqs: each inserted or
		// deleted character, add or set), which only decoding tells.
		chs, err := codec.DecodeChanges(u.Changes)
		if err != nil {
			return nil // our own encoding; let the server judge it
		}
		var units uint64
		for i := range chs {
			units += chs[i].Len()
		}
		wait := bucket.take(float64(units), time.Now())
		if wait <= 0 {
			return nil
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-c.ctx.Done():
			return c.ctx.Err()
		case err := <-s.readErr:
			s.readErr <- err
			return fmt.Errorf("client: connection lost while pacing updates")
		}
	}
	ping := time.NewTicker(c.opts.PingInterval)
	defer ping.Stop()
	var nonce uint64
	var out []syncproto.Message
	for {
		select {
		case <-c.ctx.Done():
			s.conn.SetWriteDeadline(time.Now().Add(time.Second))
			s.conn.WriteMessage(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, "client closed"))
			return nil
		case err := <-s.readErr:
			s.readErr <- err // serve reads it again
			return nil
		case <-ping.C:
			idle := time.Since(time.Unix(0, s.lastRead.Load()))
			if idle > 2*c.opts.PingInterval {
				return fmt.Errorf("client: nothing from server for %v", idle.Round(time.Millisecond))
			}
			if idle >= c.opts.PingInterval {
				nonce++
				if err := write(&syncproto.Ping{Nonce: nonce}); err != nil {
					return err
				}
			}
		case <-c.wake:
			c.mu.Lock()
			ctrl := c.mu.ctrl
			c.mu.ctrl = nil
			dirty := make([]*Document, 0, len(c.mu.dirty))
			for d := range c.mu.dirty {
				dirty = append(dirty, d)
			}
			clear(c.mu.dirty)
			c.mu.Unlock()
			for _, m := range ctrl {
				if err := write(m); err != nil {
					return err
				}
			}
			for _, d := range dirty {
				var drop bool
				out, drop = d.outgoing(s.gen, out[:0])
				for _, m := range out {
					if err := pace(m); err != nil {
						return err
					}
					if err := write(m); err != nil {
						return err
					}
				}
				if drop {
					return fmt.Errorf("client: reconnecting after re-stamping %q", d.id)
				}
			}
			clear(out)
		}
	}
}

// opsBucket is a token bucket of operations per second, refilled at the
// server's announced rate, holding at most one second's worth.
type opsBucket struct {
	rate, tokens float64
	last         time.Time
}

// NB: the bucket runs at 90% of the announced rate, so that a batch sent
// the moment this bucket allows it does not reach the server a moment
// before the server's own bucket (started at a slightly different time)
// has refilled. Welcome does not announce the server's burst; one
// second's worth is assumed (the server's default burst is larger).
func newOpsBucket(rate int64, now time.Time) *opsBucket {
	if rate <= 0 {
		return nil
	}
	r := 0.9 * float64(rate)
	return &opsBucket{rate: r, tokens: r, last: now}
}

// take spends n tokens and returns how long to wait before sending: zero
// when the bucket had them. A batch larger than the bucket goes out once
// the bucket is full (and leaves it in debt).
func (b *opsBucket) take(n float64, now time.Time) time.Duration {
	b.tokens = min(b.rate, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	need := min(n, b.rate)
	var wait time.Duration
	if b.tokens < need {
		wait = time.Duration((need - b.tokens) / b.rate * float64(time.Second))
		b.tokens = need
		b.last = now.Add(wait)
	}
	b.tokens -= n
	return wait
}

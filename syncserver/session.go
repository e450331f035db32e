package syncserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/hlc"
	"github.com/weftsync/weft/internal/sockio"
)

const closeGoingAway = syncproto.CloseGoingAway

// session is one WebSocket connection. Its reader goroutine owns subs and
// the rate limiters and tears the session down. The write side has no
// goroutine while idle: queueFrame writes a frame at once if nothing is
// queued and the socket takes it (writeNow), and otherwise appends to a
// bounded queue and starts a flusher goroutine if none runs; the flusher
// writes until the queue is empty and exits (one writer at a time, so
// frames keep their order). Pings come from a timer. Everyone reaches the
// client through queueFrame, which never blocks. (See "Memory" in the
// package doc for why.)
type session struct {
	s    *Server
	conn *websocket.Conn
	nc   net.Conn // the socket itself, for writes (see guardedConn)
	// raw writes to the socket without blocking (see writeNow); nil when
	// the socket offers no file descriptor (TLS, tests' pipes).
	raw       syscall.RawConn
	guard     *guardedConn
	id        string
	principal *Principal
	replica   crdt.ReplicaID

	out struct {
		sync.Mutex
		frames []outFrame // queued, not yet written
		// Catch-up pacing (see awaitCatchupCredit): the catch-up frames
		// among frames and their bytes, and the subscribes handed to rooms
		// that have not answered yet.
		catchupFrames, catchupBytes, unanswered int
		writing                                 bool // a flusher goroutine runs
		closing                                 bool // kicked: the flusher ends with the close frame
		closed                                  bool // the connection is closed; frames are dropped
		finished                                bool // finishWriter ran: the connection is closed for good
	}
	kickOnce  sync.Once
	closeCode syncproto.CloseCode // written once, in kick, before closing is set
	closeText string
	draining  atomic.Bool // Shutdown stopped the reader
	// readDone is closed (once, readOnce) when the reader has stopped
	// reading the socket for good; closeConn waits for it (see there).
	readDone chan struct{}
	readOnce sync.Once
	kicked   atomic.Bool // kick ran: the reader drops what it reads after
	// ping is the session's one timer: the next ping, or the token's
	// expiry when that comes first (expiring says which). Guarded, with
	// expires and expiring, by out's lock.
	ping     *time.Timer
	expires  time.Time // the token's exp; zero: none
	expiring bool
	// writeDeadline is the socket's write deadline as the writer last set
	// it (see mono; 0: none); only the one writer of the moment uses it.
	writeDeadline time.Duration

	// credit is signalled when catch-up credit frees (see
	// awaitCatchupCredit) and by stopReading.
	credit chan struct{}

	// Parking (see park): parked is set while the connection has no
	// reader goroutine; whoever clears it starts one. lastRead is when
	// the reader last had a frame (mono), which the timer checks the
	// heartbeat against while parked. pollID is the poller's (guarded by
	// its lock). nextPing (mono) is guarded by out's lock.
	parked   atomic.Bool
	pollID   int32
	lastRead atomic.Int64
	nextPing time.Duration

	// Owned by the reader.
	subs subscriptions
	// parts assembles, per document, the version of the next subscribe
	// from version_part messages; partEntries counts the replicas held
	// over all documents (bounded by syncproto.MaxVersionEntries).
	parts       map[string]*syncproto.VersionParts
	partEntries int
	changes     tokenBucket
	// subscribes meters subscribe messages (see Options.MaxSubscribesPerSec).
	subscribes tokenBucket
	presence   tokenBucket
	strikes    int          // rate refusals in a row (any admitted update, subscribe or presence resets it)
	fouls      atomic.Int32 // batches refused as invalid or too_large, here or by a room (see foul)
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if !s.originAllowed(r) {
		// Before the upgrader, whose own refusal is a bare 403.
		s.refuseOrigin(w, r)
		return
	}
	// NB: the session joins sessionWG under the lock Shutdown flips
	// draining under, so Shutdown's Wait never races with this Add.
	s.sessions.Lock()
	if s.draining.Load() {
		s.sessions.Unlock()
		s.m.refused.WithLabelValues("draining").Inc()
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	s.sessionWG.Add(1)
	s.readerWG.Add(1)
	s.sessions.Unlock()
	upgraded := false
	defer func() {
		if !upgraded {
			s.readerWG.Done()
			s.sessionWG.Done()
		}
	}()
	if n := s.conns.Add(1); n > int64(s.opts.MaxConnections) {
		s.conns.Add(-1)
		s.m.refused.WithLabelValues("capacity").Inc()
		s.m.limitHits.WithLabelValues("connections").Inc()
		w.Header().Set("Retry-After", "5")
		http.Error(w, fmt.Sprintf("server at capacity (%d connections)", s.opts.MaxConnections), http.StatusServiceUnavailable)
		return
	}
	conn, err := s.upgrade.Upgrade(guardHijack{w, s.opts.MaxFrameBytes}, r, nil)
	upgraded = err == nil
	if err != nil {
		// Upgrade has answered with an HTTP error (bad handshake, origin).
		s.conns.Add(-1)
		s.m.refused.WithLabelValues("handshake").Inc()
		s.log.Debug("websocket handshake refused", "remote", r.RemoteAddr, "err", err)
		return
	}
	nc := conn.NetConn()
	guard, _ := nc.(*guardedConn)
	if guard != nil {
		nc = guard.Conn // net.Buffers writes with writev only to the socket itself
	}
	ss := &session{
		s:        s,
		conn:     conn,
		nc:       nc,
		raw:      sockio.SyscallConn(nc),
		guard:    guard,
		id:       uuid.NewString(),
		credit:   make(chan struct{}, 1),
		readDone: make(chan struct{}),
	}
	s.sessions.Lock()
	s.sessions.m[ss] = struct{}{}
	s.sessions.Unlock()
	if s.draining.Load() {
		// Shutdown began after the check above and may have listed the
		// sessions before this one: close it ourselves.
		ss.stopReading()
		ss.kick(closeGoingAway, "server shutting down")
	}
	s.m.conns.Inc()
	s.m.connsTotal.Inc()
	// The flusher is the only writer (see flush): pongs go through the
	// queue, and a client's close is answered by our own close frame.
	conn.SetPingHandler(func(data string) error {
		ss.enqueue(outFrame{op: opPong, payload: []byte(data)}, false)
		return nil
	})
	conn.SetCloseHandler(func(int, string) error { return nil })
	// A pong read inside gorilla (while a message is awaited); idle
	// readers take theirs themselves (see idle).
	alive := s.opts.PingInterval + s.opts.PongTimeout
	conn.SetPongHandler(func(string) error {
		ss.touch()
		return ss.extendDeadline(mono(time.Now()) + alive)
	})
	ss.armPing()
	// The handshake (token parsing is deep) runs on the handler goroutine,
	// which then returns; the steady-state reader is a fresh goroutine.
	// NB: staying in the handler would keep net/http's per-request state
	// (its buffered writer, the request and response) and the handler's
	// deep stack alive for the connection's whole life.
	authed := ss.extendDeadline(mono(time.Now())+s.opts.AuthTimeout) == nil && ss.handshake()
	ss.touch()
	go ss.run(authed)
}

// run is the session's reader goroutine and owner.
func (ss *session) run(authed bool) {
	s := ss.s
	if authed {
		if ss.reader() {
			return // parked: a poller event, a close or Shutdown runs it again
		}
	} else {
		s.readerWG.Done()
	}
	ss.readOnce.Do(func() { close(ss.readDone) })
	if !ss.draining.Load() {
		ss.kick(syncproto.CloseNormal, "connection closed")
	}
	ss.awaitWriter()
	ss.out.Lock()
	if ss.ping != nil {
		ss.ping.Stop()
	}
	ss.out.Unlock()
	if s.poller != nil {
		s.poller.forget(ss)
	}
	s.sessions.Lock()
	delete(s.sessions.m, ss)
	s.sessions.Unlock()
	s.m.conns.Dec()
	s.conns.Add(-1)
	s.sessionWG.Done()
}

// WebSocket opcodes the flusher writes (RFC 6455 §5.2).
const (
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xa
)

// outFrame is a queued WebSocket frame. payload may be shared with other
// sessions (a broadcast is encoded once) and is never modified.
type outFrame struct {
	op      byte
	payload []byte
	catchup bool // part of a subscribe's answer (paced, not bounded by SendQueue)
	last    bool // the last frame of a subscribe's answer
	// framed: payload is the unwritten rest of a frame writeNow began,
	// header included; it goes out as it is, before anything else.
	framed bool
}

// queueFrame queues an encoded message without blocking. A full queue
// means the client cannot keep up: it is disconnected with CloseTooSlow,
// never waited for.
func (ss *session) queueFrame(frame []byte) {
	ss.enqueue(outFrame{op: opBinary, payload: frame}, true)
}

// queueCatchup queues a message of a subscribe's answer (last: its final
// one, the sync or an error). Catch-up frames do not count against
// SendQueue: they are paced instead (see awaitCatchupCredit), by what the
// client has read.
func (ss *session) queueCatchup(m syncproto.Message, last bool) {
	frame, err := syncproto.Encode(m)
	if err != nil {
		ss.s.log.Error("encoding a message", "type", m.Type(), "err", err)
		frame = nil // the reservation is still released below
	}
	f := outFrame{op: opBinary, payload: frame, catchup: true, last: last}
	if frame == nil {
		f.op = 0 // nothing to write
	}
	ss.enqueue(f, true)
}

// Catch-up pacing: a subscribe is handed to its room only while fewer
// than catchupDocs subscribes wait for their room's answer and less than
// catchupWindow bytes of answers wait to be written; otherwise the reader
// waits (and, not reading, lets TCP push back on the client). A client
// resubscribing a thousand documents at once then gets them as fast as it
// reads them, never dropped as too slow; its memory on the server is the
// window plus at most catchupDocs answers.
const catchupDocs = 8

func (ss *session) catchupWindow() int { return int(2 * ss.s.opts.MaxFrameBytes) }

// awaitCatchupCredit reserves a place for one subscribe's answer, waiting
// for the window. It returns false if the connection ends meanwhile.
func (ss *session) awaitCatchupCredit() bool {
	for {
		if ss.draining.Load() {
			return false // stopReading
		}
		ss.out.Lock()
		switch {
		case ss.out.closed || ss.out.closing:
			ss.out.Unlock()
			return false
		case ss.out.unanswered < catchupDocs && ss.out.catchupBytes < ss.catchupWindow():
			ss.out.unanswered++
			ss.out.Unlock()
			return true
		}
		ss.out.Unlock()
		<-ss.credit // finishWriter signals it too, after closed is set
	}
}

// releaseCatchupCredit gives back a reservation whose subscribe never
// reached its room.
func (ss *session) releaseCatchupCredit() {
	ss.out.Lock()
	ss.out.unanswered--
	ss.out.Unlock()
	ss.signalCredit()
}

func (ss *session) signalCredit() {
	select {
	case ss.credit <- struct{}{}:
	default:
	}
}

// enqueue adds a frame and starts the flusher if none runs. Control frames
// (limited false) may go past SendQueue, up to twice it, so a pong is not
// what overflows a busy queue, yet a client that floods pings without
// reading the pongs cannot grow it without bound.
func (ss *session) enqueue(f outFrame, limited bool) {
	ss.out.Lock()
	if f.last && ss.out.unanswered > 0 {
		ss.out.unanswered-- // the room has answered: its bytes count from now
		defer ss.signalCredit()
	}
	if ss.out.closed || ss.out.closing {
		ss.out.Unlock()
		return
	}
	if f.op == 0 {
		ss.out.Unlock()
		return
	}
	if f.catchup {
		ss.out.catchupBytes += len(f.payload)
		ss.out.catchupFrames++
		ss.out.frames = append(ss.out.frames, f)
		start := !ss.out.writing
		ss.out.writing = true
		ss.out.Unlock()
		if start {
			go ss.flush()
		}
		return
	}
	bound := ss.s.opts.SendQueue
	if !limited {
		bound *= 2
	}
	if len(ss.out.frames)-ss.out.catchupFrames >= bound {
		ss.out.Unlock()
		ss.kickForLimit("send_queue", syncproto.CloseTooSlow, "send queue overflow: the client is not reading fast enough")
		return
	}
	if !ss.out.writing && ss.raw != nil && len(f.payload) <= inlineWriteMax {
		// Nothing queued and no flusher: write it here, now (see writeNow).
		ss.out.writing = true
		ss.out.Unlock()
		ss.writeNow(f)
		return
	}
	ss.out.frames = append(ss.out.frames, f)
	start := !ss.out.writing
	ss.out.writing = true
	ss.out.Unlock()
	if start {
		go ss.flush()
	}
}

// inlineWriteMax bounds the payload writeNow copies into one buffer; a
// larger frame goes to a flusher, which writes it from where it lies.
const inlineWriteMax = 4 << 10

// frameBufs holds the buffers writeNow assembles frames in.
var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, maxFrameHeader+inlineWriteMax); return &b }}

// writeNow writes one frame to an idle connection from the calling
// goroutine (a room fanning out, the reader acking), with the write side
// already claimed (out.writing set by the caller). A delivery to a
// connection with nothing queued, the common case, then costs one
// write(2) and no goroutine: starting a flusher for it cost a goroutine
// and, on a machine with an idle core, a futex wake-up of a thread to run
// it. The write never blocks: what the socket does not take (its buffer
// is full: a slow client) is queued first for a flusher, which waits for
// the socket as before, under WriteTimeout. Frames other goroutines
// queued meanwhile go to a flusher too.
func (ss *session) writeNow(f outFrame) {
	if ss.writeDeadline != 0 {
		// A flusher's deadline outlives it and, once past, would fail
		// this write: clear it (the next flusher sets its own).
		if err := ss.nc.SetWriteDeadline(time.Time{}); err != nil {
			ss.writeFailed(err)
			return
		}
		ss.writeDeadline = 0
	}
	bp := frameBufs.Get().(*[]byte)
	b := append(appendFrameHeader((*bp)[:0], f.op, len(f.payload)), f.payload...)
	var n int
	var werr error
	err := ss.raw.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, err := sockio.Write(fd, b[n:])
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN:
				return true // full: the rest goes to a flusher
			case err != nil:
				werr = err
				return true
			}
			n += m
		}
		return true
	})
	if err == nil {
		err = werr
	}
	var rest []byte
	if err == nil && n < len(b) {
		rest = slices.Clone(b[n:])
	}
	*bp = b[:0]
	frameBufs.Put(bp)
	if err != nil {
		ss.writeFailed(err)
		return
	}
	ss.s.m.framesOut.Inc()
	ss.s.m.bytesOut.Add(float64(len(f.payload)))
	ss.out.Lock()
	if rest != nil {
		ss.s.m.writesQueued.Inc()
		ss.out.frames = slices.Insert(ss.out.frames, 0, outFrame{op: f.op, payload: rest, framed: true})
	}
	if len(ss.out.frames) == 0 && !ss.out.closing {
		ss.out.writing = false
		ss.out.frames = nil
		ss.out.Unlock()
		return
	}
	ss.out.Unlock()
	go ss.flush()
}

// writeFailed ends a connection whose socket write failed: what is queued
// is dropped and the connection closed, without a close frame.
func (ss *session) writeFailed(err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		// A client that stopped reading: dropped like a full queue.
		ss.s.m.limitHits.WithLabelValues("write_timeout").Inc()
	}
	ss.s.log.Debug("websocket write failed", "session", ss.id, "err", err)
	ss.out.Lock()
	ss.out.closed, ss.out.frames = true, nil
	ss.out.Unlock()
	ss.kickOnce.Do(func() { ss.closeCode = syncproto.CloseNormal })
	ss.conn.Close()
	ss.finishWriter()
}

// flush writes queued frames until none are left, then exits; after a kick
// it writes the close frame and closes the connection. Everything queued
// when it looks goes out in one writev: under load, when queues build up,
// a connection costs one syscall per batch rather than per message.
//
// NB: the flusher writes frames to the socket itself instead of through
// gorilla's writer, which makes one write per message. It is the only
// writer: pings, pongs and the close frame go through the queue too (the
// session installs ping and close handlers so gorilla does not answer on
// its own). gorilla still writes a close frame by itself when a client
// breaks the framing rules, which may interleave with ours; such a
// connection is being torn down anyway.
func (ss *session) flush() {
	defer ss.recoverWriter()
	o := &ss.s.opts
	nc := ss.nc
	var batch []outFrame
	var hdr []byte
	var bufs net.Buffers
	for {
		ss.out.Lock()
		batch, ss.out.frames = ss.out.frames, batch[:0]
		ss.out.catchupFrames = 0 // all taken; their bytes count until written
		if len(batch) == 0 {
			if !ss.out.closing {
				ss.out.writing = false
				ss.out.frames = nil // an idle connection holds no queue
				ss.out.Unlock()
				return
			}
			ss.out.closed = true
			ss.out.Unlock()
			ss.closeConn()
			return
		}
		ss.out.Unlock()
		if ss.abandoned() {
			clear(batch)
			continue
		}
		// hdr is sized up front so the slices bufs takes of it stay valid.
		hdr = slices.Grow(hdr[:0], maxFrameHeader*len(batch))
		bufs = bufs[:0]
		n, catchupBytes, framed := 0, 0, 0
		for i, f := range batch {
			if f.framed {
				// The rest of a frame writeNow began (it was counted then).
				bufs = append(bufs, f.payload)
				batch[i] = outFrame{}
				framed++
				continue
			}
			start := len(hdr)
			hdr = appendFrameHeader(hdr, f.op, len(f.payload))
			bufs = append(bufs, hdr[start:len(hdr):len(hdr)])
			if len(f.payload) > 0 {
				bufs = append(bufs, f.payload)
			}
			n += len(f.payload)
			if f.catchup {
				catchupBytes += len(f.payload)
			}
			batch[i] = outFrame{}
		}
		frames := len(batch) - framed
		var err error
		// Moving the deadline costs a timer update: do it only when less
		// than half of WriteTimeout is left, so a write always has between
		// half and all of it.
		if now := mono(time.Now()); ss.writeDeadline-now < o.WriteTimeout/2 {
			ss.writeDeadline = now + o.WriteTimeout
			err = nc.SetWriteDeadline(monoEpoch.Add(ss.writeDeadline))
		}
		if err == nil {
			// NB: WriteTo consumes bufs (it reslices it), so keep no
			// references to reuse: start from a fresh slice next time.
			_, err = bufs.WriteTo(nc)
			bufs = nil
		}
		if err != nil {
			ss.writeFailed(err)
			return
		}
		if catchupBytes > 0 {
			ss.out.Lock()
			ss.out.catchupBytes -= catchupBytes
			ss.out.Unlock()
			ss.signalCredit()
		}
		ss.s.m.framesOut.Add(float64(frames))
		ss.s.m.bytesOut.Add(float64(n))
	}
}

// finishWriter records that the connection has been closed (its writer
// is done) and wakes the reader's goroutine, which may wait for that in
// awaitWriter or for catch-up credit.
func (ss *session) finishWriter() {
	ss.out.Lock()
	ss.out.finished = true
	ss.out.Unlock()
	ss.signalCredit()
	ss.unpark() // a parked reader runs, finds the connection closed and ends
}

// awaitWriter waits until finishWriter ran.
func (ss *session) awaitWriter() {
	for {
		ss.out.Lock()
		done := ss.out.finished
		ss.out.Unlock()
		if done {
			return
		}
		<-ss.credit
	}
}

// recoverWriter ends the connection of a flusher that panicked (the
// process goes on). It must be deferred directly.
func (ss *session) recoverWriter() {
	v := recover()
	if v == nil {
		return
	}
	ss.s.m.panics.WithLabelValues("session_writer").Inc()
	ss.s.log.Error("session writer panicked; closing the connection", "session", ss.id, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	ss.out.Lock()
	ss.out.closed, ss.out.frames = true, nil
	ss.out.Unlock()
	ss.kickOnce.Do(func() { ss.closeCode = closeInternalError })
	ss.conn.Close()
	ss.finishWriter()
}

// maxFrameHeader is the longest server frame header (no mask).
const maxFrameHeader = 10

// appendFrameHeader appends an unmasked, final frame header (RFC 6455
// §5.2): server frames are never masked or fragmented here.
func appendFrameHeader(b []byte, op byte, n int) []byte {
	b = append(b, 0x80|op)
	switch {
	case n < 126:
		return append(b, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 126), uint16(n))
	}
	return binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
}

// abandoned reports that the client was dropped as too slow: the frames
// still in hand are not written.
func (ss *session) abandoned() bool {
	ss.out.Lock()
	defer ss.out.Unlock()
	return ss.out.closing && ss.closeCode == syncproto.CloseTooSlow
}

// closeConn sends the close frame (best effort) and closes the socket.
func (ss *session) closeConn() {
	nc := ss.nc
	msg := websocket.FormatCloseMessage(int(ss.closeCode), clip(ss.closeText, 120))
	frame := append(appendFrameHeader(nil, opClose, len(msg)), msg...)
	err := nc.SetWriteDeadline(time.Now().Add(ss.s.opts.WriteTimeout))
	if err == nil {
		_, err = nc.Write(frame)
	}
	if err != nil {
		ss.s.log.Debug("writing a close frame", "session", ss.id, "err", err)
	} else if cw, ok := nc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		// Closing a socket whose client is still sending (frames it sent
		// before it saw ours: a client kicked for fouls keeps pipelining)
		// makes the kernel answer with a reset and drop whatever it had
		// not sent yet: the last acks, the error that explains the close,
		// the close frame. So the write side is shut first (a FIN after
		// everything written), and the socket is closed once the reader
		// has met the client's close frame or end of stream, or after
		// closeLinger (RFC 6455 §7.1.1: the server closes the TCP
		// connection after it sent and received a close frame).
		t := time.NewTimer(min(closeLinger, ss.s.opts.WriteTimeout))
		select {
		case <-ss.readDone:
		case <-t.C:
		}
		t.Stop()
	}
	ss.conn.Close()
	ss.finishWriter()
}

// closeLinger bounds closeConn's wait for the client to end its side.
const closeLinger = time.Second

// tick runs on the timer's goroutine: it closes the connection when the
// token has expired or when a parked connection missed its heartbeat, and
// sends a ping when one is due.
func (ss *session) tick() {
	ss.out.Lock()
	expired := ss.expiring
	ss.out.Unlock()
	if expired {
		ss.queueError(syncproto.StatusUnauthorized, "", "the token expired; reconnect with a new one")
		ss.kick(syncproto.CloseAuthFailed, "token expired")
		return
	}
	o := &ss.s.opts
	now := mono(time.Now())
	if ss.parked.Load() && now >= time.Duration(ss.lastRead.Load())+o.PingInterval+o.PongTimeout {
		// What a read deadline does for a reader that is not parked.
		ss.kickForLimit("heartbeat", syncproto.CloseHeartbeatTimeout, "no pong or message before the deadline")
		return
	}
	ss.out.Lock()
	due := now >= ss.nextPing
	if due {
		ss.nextPing = now + o.PingInterval
	}
	ss.out.Unlock()
	if due {
		ss.enqueue(outFrame{op: opPing}, false)
	}
	ss.armPing()
}

// armPing schedules the timer for the next ping, or for the token's
// expiry or, while parked, the heartbeat deadline when either comes first,
// unless the connection is closing. One timer serves all three, reset
// rather than replaced: an idle connection holds one.
func (ss *session) armPing() {
	ss.out.Lock()
	defer ss.out.Unlock()
	if ss.out.closed || ss.out.closing {
		return
	}
	o := &ss.s.opts
	now := mono(time.Now())
	if ss.nextPing == 0 {
		ss.nextPing = now + o.PingInterval
	}
	d := ss.nextPing - now
	if ss.parked.Load() {
		d = min(d, time.Duration(ss.lastRead.Load())+o.PingInterval+o.PongTimeout-now)
	}
	d = max(d, 0)
	ss.expiring = false
	if !ss.expires.IsZero() {
		if left := ss.expires.Sub(ss.s.auth.now()); left <= d {
			d, ss.expiring = left, true
		}
	}
	if ss.ping == nil {
		ss.ping = time.AfterFunc(d, ss.tick)
	} else {
		ss.ping.Reset(d)
	}
}

func (ss *session) queueMsg(m syncproto.Message) {
	frame, err := syncproto.Encode(m)
	if err != nil {
		ss.s.log.Error("encoding a message", "type", m.Type(), "err", err)
		return
	}
	ss.queueFrame(frame)
}

func (ss *session) queueError(st syncproto.Status, doc, msg string) {
	ss.queueMsg(&syncproto.Error{Status: st, Doc: doc, Message: clip(msg, syncproto.MaxMessageLen)})
}

// kick closes the connection with code (the first kick wins). The frames
// already queued (final acks, the error that explains the close) go out
// first, except for CloseTooSlow, where they are dropped.
func (ss *session) kick(code syncproto.CloseCode, reason string) {
	ss.kickForLimit("", code, reason)
}

// kickForLimit is kick for a close that a limit caused: the limit is
// counted in weft_limit_hits_total only when this kick wins, so a close
// that two paths see (the parked connection's timer and the reader woken
// by the hang-up, both past the heartbeat deadline) counts once, and it is
// counted before the close frame can reach the client.
func (ss *session) kickForLimit(limit string, code syncproto.CloseCode, reason string) {
	ss.kickOnce.Do(func() {
		ss.kicked.Store(true)
		if limit != "" {
			ss.s.m.limitHits.WithLabelValues(limit).Inc()
		}
		ss.closeCode, ss.closeText = code, reason
		ss.s.m.closes.WithLabelValues(code.String()).Inc()
		if code == syncproto.CloseTooSlow {
			// The flusher is probably blocked on a full socket: fail that
			// write now instead of waiting WriteTimeout. The close frame
			// then only gets out if the socket had room (see doc.go).
			if err := ss.nc.SetWriteDeadline(time.Unix(1, 0)); err != nil {
				ss.s.log.Debug("unblocking a slow writer", "session", ss.id, "err", err)
			}
		}
		ss.out.Lock()
		if ss.out.closed {
			ss.out.Unlock()
			return
		}
		ss.out.closing = true
		if code == syncproto.CloseTooSlow {
			ss.out.frames = nil
		}
		start := !ss.out.writing
		ss.out.writing = true
		ss.out.Unlock()
		if start {
			go ss.flush()
		}
	})
}

// stopReading makes the reader return without closing the connection
// (Shutdown then closes it after the acks went out).
func (ss *session) stopReading() {
	ss.draining.Store(true)
	ss.signalCredit() // wakes a reader waiting for catch-up credit
	defer ss.unpark() // a parked one runs, meets draining and stops
	// A deadline in the past fails the pending read at once; net.Conn
	// deadlines may be set concurrently with a read. An error means the
	// connection is already closed, so the reader has ended anyway.
	if err := ss.conn.SetReadDeadline(time.Unix(1, 0)); err != nil {
		ss.s.log.Debug("stopping a reader", "session", ss.id, "err", err)
	}
}

// extendDeadline sets the read deadline to at (mono). NB: stopReading sets
// draining before its past deadline, so checking draining after setting
// ours means one of the two past deadlines always wins.
func (ss *session) extendDeadline(at time.Duration) error {
	if err := ss.conn.SetReadDeadline(monoEpoch.Add(at)); err != nil {
		return err
	}
	if ss.draining.Load() {
		return ss.conn.SetReadDeadline(time.Unix(1, 0))
	}
	return nil
}

// sendRoom sends a command to a subscribed room; a room that is gone
// (shutdown) is logged, there is nothing else to do.
func (ss *session) sendRoom(r *room, c roomCmd) bool {
	if err := r.send(context.Background(), c); err != nil {
		ss.s.log.Debug("room command not delivered", "session", ss.id, "doc", r.id, "err", err)
		return false
	}
	return true
}

// reader reads and dispatches frames until the connection ends, or until
// it parks (true): then its goroutine exits, and unpark runs a new one.
func (ss *session) reader() (parked bool) {
	defer ss.recoverSession("session_reader") // first deferred: runs after leaveAll and Done
	defer func() {
		if !parked {
			ss.s.readerWG.Done()
		}
	}()
	defer func() {
		if !parked {
			ss.leaveAll()
		}
	}()
	o := &ss.s.opts
	alive := o.PingInterval + o.PongTimeout
	for {
		if ss.canPark() && ss.idle(o.ParkIdle, alive) {
			return true
		}
		// NB: the deadline runs from when the reader was last ready for a
		// frame, not from the last frame, so time spent dispatching (a
		// document load) does not count against the client.
		if ss.extendDeadline(time.Duration(ss.lastRead.Load())+alive) != nil {
			return false
		}
		if ss.guard != nil {
			// An error here is met again, and handled, by read.
			_ = ss.guard.waitData()
		}
		frame, ok := ss.read()
		if !ok {
			return false
		}
		if ss.kicked.Load() {
			// Closing (see closeConn): what the client sent before it saw
			// our close frame is read, so the socket ends without a reset,
			// but not acted on.
			continue
		}
		received := time.Now()
		m, err := syncproto.Decode(frame)
		if err != nil {
			if errors.Is(err, syncproto.ErrUnknownMessage) {
				// A newer client: tell it, keep the connection.
				ss.queueError(syncproto.StatusInvalid, "", err.Error())
				ss.touch()
				continue
			}
			ss.s.log.Debug("malformed frame", "session", ss.id, "err", err)
			ss.kick(syncproto.CloseProtocolError, err.Error())
			return false
		}
		ss.dispatch(m, received)
		ss.touch()
	}
}

// canPark: the server has a poller, and the connection a socket and the
// read buffer idle looks into.
func (ss *session) canPark() bool {
	return ss.s.poller != nil && ss.raw != nil && ss.guard != nil && ss.guard.br != nil
}

// touch records that the reader is ready for the next frame now: the
// heartbeat deadline runs from here.
func (ss *session) touch() { ss.lastRead.Store(int64(mono(time.Now()))) }

// idle waits, for at most parkIdle, for the first byte of the next frame,
// consuming the pongs that answer the server's pings on the way (they
// would otherwise keep the reader in gorilla, waiting for a message). If
// nothing else comes it parks (true). It returns false, to read, when
// bytes of a frame are buffered, and when the wait ended otherwise (the
// heartbeat deadline passed, the connection failed, Shutdown): the read
// then meets that condition again and handles it.
func (ss *session) idle(parkIdle, alive time.Duration) bool {
	for {
		if ss.guard.takePong() {
			ss.touch()
			continue
		}
		if ss.guard.br.Buffered() > 0 || ss.draining.Load() {
			return false
		}
		now := mono(time.Now())
		heartbeat := time.Duration(ss.lastRead.Load()) + alive
		if ss.extendDeadline(min(now+parkIdle, heartbeat)) != nil {
			return false
		}
		err := ss.guard.waitData()
		if err == nil {
			continue
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || mono(time.Now()) >= heartbeat {
			return false
		}
		if ss.park() {
			return true
		}
	}
}

// park hands the wait for the connection's next bytes to the server's
// poller and reports whether the caller's goroutine must now exit. From
// the moment parked is set, another goroutine may be running the reader
// (unpark): the caller touches no reader state after a true.
func (ss *session) park() bool {
	ss.parked.Store(true)
	if err := ss.s.poller.watch(ss); err != nil {
		ss.s.log.Debug("could not park a reader", "session", ss.id, "err", err)
		// Unless someone resumed it meanwhile, this goroutine reads on.
		return !ss.parked.CompareAndSwap(true, false)
	}
	ss.armPing() // the timer watches the heartbeat while parked
	return true
}

// unpark starts a reader goroutine for a parked connection: its bytes
// arrived, it was closed, or Shutdown stops it. At most one caller wins.
func (ss *session) unpark() {
	if ss.parked.CompareAndSwap(true, false) {
		go ss.run(true)
	}
}

// read returns the next binary frame; on failure it kicks with the fitting
// close code and returns false.
func (ss *session) read() ([]byte, bool) {
	typ, frame, err := ss.readFrame()
	if err != nil {
		var ne net.Error
		switch {
		case ss.draining.Load():
			// Shutdown: keep the connection for the final acks.
		case errors.Is(err, errFrameTooLarge):
			ss.kickForLimit("frame", syncproto.CloseFrameTooLarge, fmt.Sprintf("frame exceeds %d bytes", ss.s.opts.MaxFrameBytes))
		case errors.As(err, &ne) && ne.Timeout():
			if ss.principal == nil {
				ss.kickForLimit("auth_timeout", syncproto.CloseAuthTimeout, "no hello before the deadline")
			} else {
				ss.kickForLimit("heartbeat", syncproto.CloseHeartbeatTimeout, "no pong or message before the deadline")
			}
		default:
			ss.kick(syncproto.CloseNormal, "connection closed")
		}
		return nil, false
	}
	ss.s.m.framesIn.Inc()
	ss.s.m.bytesIn.Add(float64(len(frame)))
	if typ != websocket.BinaryMessage {
		ss.kick(syncproto.CloseProtocolError, "frames must be binary msgpack")
		return nil, false
	}
	return frame, true
}

var errFrameTooLarge = errors.New("syncserver: frame too large")

// readFrame reads one message, at most MaxFrameBytes of it. NB: gorilla's
// own SetReadLimit would answer an oversized frame with close 1009 before we
// could send CloseFrameTooLarge, so the limit is enforced here.
func (ss *session) readFrame() (int, []byte, error) {
	typ, rd, err := ss.conn.NextReader()
	if err != nil {
		return 0, nil, err
	}
	max := ss.s.opts.MaxFrameBytes
	b, err := io.ReadAll(io.LimitReader(rd, max+1))
	if err != nil {
		return 0, nil, err
	}
	if int64(len(b)) > max {
		return 0, nil, errFrameTooLarge
	}
	return typ, b, nil
}

// handshake reads hello, authenticates and answers welcome.
func (ss *session) handshake() bool {
	frame, ok := ss.read()
	if !ok {
		return false
	}
	m, err := syncproto.Decode(frame)
	if err != nil {
		ss.kick(syncproto.CloseProtocolError, "expected hello: "+err.Error())
		return false
	}
	h, isHello := m.(*syncproto.Hello)
	if !isHello {
		ss.kick(syncproto.CloseProtocolError, "expected hello, got "+m.Type().String())
		return false
	}
	if h.Version != syncproto.ProtocolVersion {
		ss.kick(syncproto.CloseUnsupportedVersion, fmt.Sprintf("protocol version %d; this server speaks %d", h.Version, syncproto.ProtocolVersion))
		return false
	}
	p, err := ss.s.auth.authenticate(h.Token)
	if err != nil {
		ss.s.m.refused.WithLabelValues("auth").Inc()
		ss.queueError(syncproto.StatusUnauthorized, "", err.Error())
		ss.kick(syncproto.CloseAuthFailed, "authentication failed")
		return false
	}
	ss.principal = p
	ss.replica = h.Replica
	o := &ss.s.opts
	now := time.Now()
	ss.changes = newTokenBucket(float64(o.MaxChangesPerSec), float64(o.ChangesBurst), now)
	ss.presence = newTokenBucket(float64(o.MaxPresencePerSec), float64(2*o.MaxPresencePerSec), now)
	ss.subscribes = newTokenBucket(float64(o.MaxSubscribesPerSec), float64(o.MaxDocsPerConn+o.MaxSubscribesPerSec), now)
	ss.queueMsg(&syncproto.Welcome{
		Version:    syncproto.ProtocolVersion,
		ServerTime: hlc.New(o.Wall(), 0),
		Session:    ss.id,
		User:       p.User,
		Limits:     o.limits(),
	})
	if !p.Expires.IsZero() {
		// Rights are checked against the token on every request, so a
		// connection must not outlive it.
		ss.out.Lock()
		ss.expires = p.Expires
		ss.out.Unlock()
		ss.armPing()
	}
	ss.s.log.Debug("session authenticated", "session", ss.id, "user", p.User, "replica", h.Replica, "client", h.ClientName)
	return true
}

func (ss *session) dispatch(m syncproto.Message, received time.Time) {
	if ss.s.testDispatch != nil {
		ss.s.testDispatch(m)
	}
	switch m := m.(type) {
	case *syncproto.VersionPart:
		ss.versionPart(m)
	case *syncproto.Subscribe:
		version, err := ss.takeParts(m.Doc, m.Version)
		if err != nil {
			ss.queueError(syncproto.StatusTooLarge, m.Doc, err.Error())
			return
		}
		ss.subscribe(m.Doc, version)
	case *syncproto.Unsubscribe:
		ss.dropParts(m.Doc)
		if r, ok := ss.subs.get(m.Doc); ok {
			ss.subs.remove(m.Doc)
			ss.sendRoom(r, cmdUnsubscribe{sess: ss})
			ss.s.release(r)
			ss.s.userDocs.close(ss.principal.User)
		}
	case *syncproto.Update:
		ss.update(m.Doc, m.Batch, m.Changes, true, received)
	case *syncproto.Sync:
		// A client answering our sync with what we lack, without acks.
		if len(m.Changes) > 0 {
			ss.update(m.Doc, 0, m.Changes, false, received)
		}
	case *syncproto.Changes:
		ss.update(m.Doc, 0, m.Changes, false, received)
	case *syncproto.Presence:
		ss.setPresence(m)
	case *syncproto.Ping:
		ss.queueMsg(&syncproto.Pong{Nonce: m.Nonce})
	case *syncproto.Pong:
		// The read deadline was already extended.
	default:
		ss.queueError(syncproto.StatusInvalid, syncproto.DocOf(m), "a client may not send "+m.Type().String())
	}
}

// versionPart holds part of the version of the client's next subscribe
// of a document (a version vector too large for one frame).
func (ss *session) versionPart(m *syncproto.VersionPart) {
	if ss.principal.Access(m.Doc) == AccessNone {
		ss.queueError(syncproto.StatusUnauthorized, m.Doc, "the token does not grant access to this document")
		return
	}
	if ss.parts == nil {
		ss.parts = make(map[string]*syncproto.VersionParts)
	}
	vp := ss.parts[m.Doc]
	if vp == nil {
		vp = &syncproto.VersionParts{}
		ss.parts[m.Doc] = vp
	}
	before := vp.Len()
	err := vp.Add(m.Version)
	ss.partEntries += vp.Len() - before
	if err == nil && ss.partEntries > syncproto.MaxVersionEntries {
		err = fmt.Errorf("%w: version parts of this connection hold more than %d replicas", syncproto.ErrVersionTooLarge, syncproto.MaxVersionEntries)
	}
	if err != nil {
		// Nothing half-assembled stays: the client starts its subscribe over.
		ss.parts, ss.partEntries = nil, 0
		ss.s.m.limitHits.WithLabelValues("version_parts").Inc()
		ss.queueError(syncproto.StatusTooLarge, m.Doc, err.Error())
	}
}

// takeParts returns the version a subscribe of doc announces: its own
// version merged with the parts sent before it.
func (ss *session) takeParts(doc string, last crdt.VersionVector) (crdt.VersionVector, error) {
	vp := ss.parts[doc]
	if vp == nil {
		return last, nil
	}
	ss.partEntries -= vp.Len()
	delete(ss.parts, doc)
	return vp.Take(last)
}

func (ss *session) dropParts(doc string) {
	if vp := ss.parts[doc]; vp != nil {
		ss.partEntries -= vp.Len()
		delete(ss.parts, doc)
	}
}

func (ss *session) subscribe(doc string, version crdt.VersionVector) {
	if err := checkDocID(doc); err != nil {
		ss.queueError(syncproto.StatusInvalid, doc, err.Error())
		return
	}
	if ss.principal.Access(doc) == AccessNone {
		ss.queueError(syncproto.StatusUnauthorized, doc, "the token does not grant access to this document")
		return
	}
	o := &ss.s.opts
	r, ok := ss.subs.get(doc)
	if !ok && ss.subs.len() >= o.MaxDocsPerConn {
		ss.s.m.limitHits.WithLabelValues("docs_per_conn").Inc()
		ss.queueError(syncproto.StatusTooLarge, doc, fmt.Sprintf("subscribed to the maximum of %d documents", o.MaxDocsPerConn))
		return
	}
	// Each subscribe that will be served costs the room an encoding of the
	// catch-up: metered, with a burst of a whole connection's worth (a
	// reconnect) and a second's.
	if !ss.subscribes.take(1, time.Now()) {
		ss.s.m.limitHits.WithLabelValues("subscribe_rate").Inc()
		ss.queueError(syncproto.StatusRateLimited, doc, fmt.Sprintf("more than %d subscribes per second", o.MaxSubscribesPerSec))
		ss.strike()
		return
	}
	ss.strikes = 0
	if !ok {
		if !ss.s.userDocs.open(ss.principal.User, o.MaxDocsPerUser) {
			ss.s.m.limitHits.WithLabelValues("docs_per_user").Inc()
			ss.queueError(syncproto.StatusTooLarge, doc, fmt.Sprintf("user %q has the maximum of %d documents open", ss.principal.User, o.MaxDocsPerUser))
			return
		}
		var err error
		r, err = ss.s.acquire(context.Background(), doc)
		if err != nil {
			ss.s.userDocs.close(ss.principal.User)
			st := syncproto.StatusInternal
			if errors.Is(err, ErrShuttingDown) || errors.Is(err, ErrTooManyDocs) {
				st = syncproto.StatusOverloaded
			}
			ss.queueError(st, doc, err.Error())
			return
		}
		ss.subs.add(r)
	}
	if !ss.awaitCatchupCredit() {
		return // the connection is ending
	}
	if !ss.sendRoom(r, cmdSubscribe{sess: ss, version: version}) {
		ss.releaseCatchupCredit()
		ss.queueError(syncproto.StatusOverloaded, doc, "the document is closing; retry")
	}
}

// update checks an update's rights and limits, decodes it off the room
// goroutine, and hands it to the room. wantAck: an update message (acked)
// rather than changes relayed in sync or changes messages.
func (ss *session) update(doc string, batch uint64, payload []byte, wantAck bool, received time.Time) {
	ack := func(st syncproto.Status, msg string) {
		if wantAck {
			ss.queueMsg(&syncproto.Ack{Doc: doc, Batch: batch, Status: st, Message: clip(msg, syncproto.MaxMessageLen)})
		} else if st != syncproto.StatusOK {
			ss.queueError(st, doc, msg)
		}
		// A correct client never sends these twice: fouls (see foul),
		// counted after the answer so that the last one still goes out.
		if st == syncproto.StatusInvalid || st == syncproto.StatusTooLarge {
			ss.foul()
		}
	}
	refuse := func(st syncproto.Status, msg string) {
		ss.s.m.updates.WithLabelValues(st.String()).Inc()
		ack(st, msg)
	}
	switch ss.principal.Access(doc) {
	case AccessNone:
		refuse(syncproto.StatusUnauthorized, "the token does not grant access to this document")
		return
	case AccessRead:
		refuse(syncproto.StatusReadOnly, "the token grants read-only access to this document")
		return
	}
	r, ok := ss.subs.get(doc)
	if !ok {
		refuse(syncproto.StatusNotFound, "subscribe to the document before updating it")
		return
	}
	// The sender pays before the server works: the header's op count is
	// charged before anything is decoded (decoding allocates per declared
	// op), and a batch that could never pass is refused outright.
	nops, st, msg := ss.s.admitBatch(payload)
	if st != syncproto.StatusOK {
		refuse(st, msg)
		return
	}
	if !ss.changes.take(float64(nops), time.Now()) {
		ss.s.m.limitHits.WithLabelValues("changes_rate").Inc()
		refuse(syncproto.StatusRateLimited, fmt.Sprintf("more than %d operations per second", ss.s.opts.MaxChangesPerSec))
		ss.strike()
		return
	}
	changes, err := codec.DecodeChanges(payload)
	if err != nil {
		refuse(syncproto.StatusInvalid, err.Error())
		return
	}
	// Every inserted or deleted character is an operation too: what the
	// header's ops undercount (multi-character inserts and deletes) is
	// charged now, as a debt later batches wait for.
	if n := opsOf(changes); n > uint64(nops) {
		ss.changes.owe(float64(n - uint64(nops)))
	}
	ss.strikes = 0
	c := cmdUpdate{from: ss, user: ss.principal.User, replica: ss.replica, changes: changes,
		size: int64(len(payload)), received: received}
	// Without wantAck, ack reports only refusals (as error messages).
	c.ack = ack
	if !ss.sendRoom(r, c) {
		refuse(syncproto.StatusOverloaded, "the document is closing; retry")
	}
}

func (ss *session) setPresence(p *syncproto.Presence) {
	r, ok := ss.subs.get(p.Doc)
	if !ok {
		ss.queueError(syncproto.StatusNotFound, p.Doc, "subscribe to the document before sending presence")
		return
	}
	if !ss.presence.take(1, time.Now()) {
		ss.s.m.limitHits.WithLabelValues("presence_rate").Inc()
		ss.queueError(syncproto.StatusRateLimited, p.Doc, fmt.Sprintf("more than %d presence messages per second", ss.s.opts.MaxPresencePerSec))
		ss.strike()
		return
	}
	ss.strikes = 0
	ss.sendRoom(r, cmdPresence{sess: ss, p: p})
}

// leaveAll unsubscribes from every room when the reader ends. During
// Shutdown the rooms flush first, so the session stays subscribed until its
// acks are queued.
func (ss *session) leaveAll() {
	if ss.draining.Load() {
		return
	}
	for _, r := range ss.subs.all() {
		ss.sendRoom(r, cmdUnsubscribe{sess: ss, gone: true})
		ss.s.release(r)
		ss.s.userDocs.close(ss.principal.User)
	}
	ss.subs = subscriptions{}
}

// subscriptions is a session's subscribed rooms by document id (a room's
// id is its document's). Most connections hold one document or a few: a
// slice of them costs 8 bytes each where a map of one entry cost about
// 250, for every idle connection. Past subsInline a map takes over, so
// that a connection holding thousands still finds one in constant time.
type subscriptions struct {
	few  []*room
	many map[string]*room
}

const subsInline = 8

func (s *subscriptions) get(doc string) (*room, bool) {
	if s.many != nil {
		r, ok := s.many[doc]
		return r, ok
	}
	for _, r := range s.few {
		if r.id == doc {
			return r, true
		}
	}
	return nil, false
}

// add adds r, whose document must not be held already.
func (s *subscriptions) add(r *room) {
	switch {
	case s.many != nil:
		s.many[r.id] = r
	case len(s.few) < subsInline:
		s.few = append(s.few, r)
	default:
		s.many = make(map[string]*room, 2*subsInline)
		for _, x := range s.few {
			s.many[x.id] = x
		}
		s.many[r.id] = r
		s.few = nil
	}
}

func (s *subscriptions) remove(doc string) {
	if s.many != nil {
		delete(s.many, doc)
		return
	}
	for i, r := range s.few {
		if r.id == doc {
			s.few = slices.Delete(s.few, i, i+1)
			return
		}
	}
}

func (s *subscriptions) len() int {
	if s.many != nil {
		return len(s.many)
	}
	return len(s.few)
}

// all yields the rooms in no particular order; the set must not change
// meanwhile.
func (s *subscriptions) all() iter.Seq2[string, *room] {
	return func(yield func(string, *room) bool) {
		if s.many != nil {
			for doc, r := range s.many {
				if !yield(doc, r) {
					return
				}
			}
			return
		}
		for _, r := range s.few {
			if !yield(r.id, r) {
				return
			}
		}
	}
}

// opsOf is what the rate limit charges for changes: their sequence
// numbers (one per character, counter add or register set).
func opsOf(changes []crdt.Change) uint64 {
	var n uint64
	for i := range changes {
		n += changes[i].Len()
	}
	return n
}

// maxFouls is how many batches refused as invalid or too_large a
// connection may send before it is closed with CloseProtocolError: a
// correct client never resends those, and each costs the server a decode.
const maxFouls = 16

// foul counts a batch refused as invalid or too_large.
// It may be called from any goroutine (rooms answer too).
func (ss *session) foul() {
	if n := ss.fouls.Add(1); n == maxFouls {
		ss.s.m.limitHits.WithLabelValues("invalid").Inc()
		ss.kick(syncproto.CloseProtocolError, fmt.Sprintf("%d batches refused as invalid or too large", n))
	}
}

// maxStrikes is how many refusals in a row for rate a connection gets
// before it is closed with CloseRateLimited (a client that ignores
// rate_limited and keeps sending).
const maxStrikes = 64

func (ss *session) strike() {
	ss.strikes++
	if ss.strikes >= maxStrikes {
		ss.kick(syncproto.CloseRateLimited, "kept sending after rate_limited")
	}
}

// monoEpoch is the origin of mono.
var monoEpoch = time.Now()

// mono is t as a duration since the process started, read from the
// monotonic clock when t carries it: a time in 8 bytes instead of
// time.Time's 24, for fields every connection holds.
func mono(t time.Time) time.Duration { return t.Sub(monoEpoch) }

// tokenBucket is a rate limiter owned by one goroutine.
type tokenBucket struct {
	rate, burst, tokens float64
	last                time.Duration // see mono
}

func newTokenBucket(rate, burst float64, now time.Time) tokenBucket {
	return tokenBucket{rate: rate, burst: burst, tokens: burst, last: mono(now)}
}

// take removes n tokens if the bucket holds them; n must not exceed the
// burst (such a request could never pass: refuse it as too large).
func (b *tokenBucket) take(n float64, now time.Time) bool {
	b.refill(now)
	if b.tokens >= n {
		b.tokens -= n
		return true
	}
	return false
}

// owe removes n tokens after the fact (work found while decoding a request
// that was admitted), leaving the bucket at most one burst in debt.
func (b *tokenBucket) owe(n float64) {
	b.tokens = max(b.tokens-n, -b.burst)
}

func (b *tokenBucket) refill(now time.Time) {
	if t := mono(now); t > b.last {
		b.tokens = min(b.burst, b.tokens+(t-b.last).Seconds()*b.rate)
		b.last = t
	}
}

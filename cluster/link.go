package cluster

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/internal/sockio"
)

// ErrAuth is returned when a peer link's handshake fails: the other end
// does not hold the cluster key (or is not a weft peer).
var ErrAuth = errors.New("cluster: peer link authentication failed")

// ---- framing ----

func writeFrame(w *bufio.Writer, b []byte) error {
	var h [4]byte
	binary.BigEndian.PutUint32(h[:], uint32(len(b)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}

// readFrame reads one frame, refusing one above max before reading it.
func readFrame(r *bufio.Reader, max int) ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if int64(n) > int64(max) {
		return nil, fmt.Errorf("cluster: peer frame of %d bytes exceeds %d", n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

func readMsg(r *bufio.Reader, max int) (syncproto.Message, error) {
	b, err := readFrame(r, max)
	if err != nil {
		return nil, err
	}
	return syncproto.Decode(b)
}

func writeMsg(w *bufio.Writer, m syncproto.Message) error {
	b, err := syncproto.Encode(m)
	if err != nil {
		return err
	}
	if err := writeFrame(w, b); err != nil {
		return err
	}
	return w.Flush()
}

// ---- handshake (docs/PROTOCOL.md section 14) ----

func proof(key []byte, label string, n1, n2 []byte, a, b string) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(label))
	mac.Write(n1)
	mac.Write(n2)
	mac.Write([]byte(a))
	mac.Write([]byte{0})
	mac.Write([]byte(b))
	return mac.Sum(nil)
}

func nonce() []byte {
	b := make([]byte, syncproto.PeerNonceLen)
	if _, err := rand.Read(b); err != nil {
		panic("cluster: no randomness: " + err.Error()) // crypto/rand never fails on Linux
	}
	return b
}

// dialHandshake authenticates a link this node dialed; it returns the
// acceptor's node name.
func dialHandshake(r *bufio.Reader, w *bufio.Writer, key []byte, self string) (string, error) {
	nd := nonce()
	if err := writeMsg(w, &syncproto.PeerHello{Node: self, Nonce: nd}); err != nil {
		return "", err
	}
	m, err := readMsg(r, 4096)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrAuth, err)
	}
	h, ok := m.(*syncproto.PeerHello)
	if !ok || len(h.Nonce) != syncproto.PeerNonceLen || len(h.Proof) != syncproto.PeerNonceLen {
		return "", fmt.Errorf("%w: unexpected answer %T", ErrAuth, m)
	}
	if !hmac.Equal(h.Proof, proof(key, "weft-peer-v1 accept", nd, h.Nonce, h.Node, self)) {
		return "", fmt.Errorf("%w: %s does not hold the cluster key", ErrAuth, h.Node)
	}
	if err := writeMsg(w, &syncproto.PeerHello{Node: self, Proof: proof(key, "weft-peer-v1 dial", h.Nonce, nd, self, h.Node)}); err != nil {
		return "", err
	}
	return h.Node, nil
}

// acceptHandshake authenticates a link another node dialed; it returns the
// dialer's node name.
func acceptHandshake(r *bufio.Reader, w *bufio.Writer, key []byte, self string) (string, error) {
	m, err := readMsg(r, 4096)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrAuth, err)
	}
	h, ok := m.(*syncproto.PeerHello)
	if !ok || len(h.Nonce) != syncproto.PeerNonceLen || len(h.Proof) != 0 {
		return "", fmt.Errorf("%w: unexpected first message %T", ErrAuth, m)
	}
	na := nonce()
	if err := writeMsg(w, &syncproto.PeerHello{Node: self, Nonce: na, Proof: proof(key, "weft-peer-v1 accept", h.Nonce, na, self, h.Node)}); err != nil {
		return "", err
	}
	m, err = readMsg(r, 4096)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrAuth, err)
	}
	p, ok := m.(*syncproto.PeerHello)
	if !ok || p.Node != h.Node || len(p.Nonce) != 0 ||
		!hmac.Equal(p.Proof, proof(key, "weft-peer-v1 dial", na, h.Nonce, h.Node, self)) {
		return "", fmt.Errorf("%w: %s does not hold the cluster key", ErrAuth, h.Node)
	}
	return h.Node, nil
}

// ---- a connection with a bounded send queue ----

// peerConn is one authenticated peer-link connection: the reader is the
// goroutine that owns it. Sending never blocks: a frame sent while nothing
// is queued or being written is written at once by the sender, with one
// write(2) that never waits for the socket (see send); otherwise it is
// queued for the writer goroutine, and a full queue closes the connection.
// A frame sent with sendLater (an acceptor's acks) may instead be held
// for up to hold, to go out in one write with the frames sent meanwhile.
type peerConn struct {
	c    net.Conn
	raw  syscall.RawConn // nil when c is not a socket: every frame goes to the writer
	r    *bufio.Reader
	w    *bufio.Writer // the writer goroutine's; empty whenever writing is false
	wake chan struct{} // tells the writer that frames are queued
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
	max  int // frames queued before the connection is dropped as too slow

	hold  time.Duration // how long sendLater may hold a frame; 0: never
	flush *time.Timer   // runs flushHeld; armed while held is not empty

	// direct is writeNow's state, owned by whoever set writing.
	direct struct {
		f   []byte // to write
		n   int    // written
		err error
	}
	writeFD func(fd uintptr) bool // pc.writeFDNow, bound once

	forget func()

	mu struct {
		sync.Mutex
		// queue holds the frames the writer is to send, in order; a
		// frame with framed set already carries its length header (the
		// unwritten rest of a direct write).
		queue []queued
		// writing is set while a sender writes directly or the writer
		// holds frames it took from queue: no one else may write then.
		writing bool
		// held are frames sendLater holds, each with its length header.
		// NB: held is empty whenever writing is set (who sets writing
		// takes held first, and sendLater queues while writing), so
		// held frames always precede queued ones.
		held []byte
		// armed is set while flush is due to run.
		armed bool
		// idle is when writing was last cleared (only kept with hold).
		idle time.Time
	}
}

type queued struct {
	b      []byte
	framed bool
}

// maxHeld bounds the bytes of frames held for one connection: more go
// out at once (some 300 acks).
const maxHeld = 16 << 10

// newPeerConn starts the writer of c. hold is how long sendLater may hold
// a frame (0: it sends at once).
func newPeerConn(c net.Conn, r *bufio.Reader, w *bufio.Writer, queue int, hold time.Duration, f *Faults) *peerConn {
	pc := &peerConn{c: c, r: r, w: w, max: queue, wake: make(chan struct{}, 1), done: make(chan struct{})}
	pc.writeFD = pc.writeFDNow
	pc.raw = sockio.SyscallConn(c)
	if hold > 0 && pc.raw != nil {
		pc.hold = hold
		pc.flush = time.AfterFunc(hold, pc.flushHeld)
		pc.flush.Stop()
	}
	pc.forget = f.track(c)
	pc.wg.Add(1)
	go pc.writer()
	return pc
}

// writer sends what senders queued, through w, flushing when it has
// taken everything.
func (pc *peerConn) writer() {
	defer pc.wg.Done()
	var batch []queued
	for {
		select {
		case <-pc.wake:
		case <-pc.done:
			return
		}
		for {
			pc.mu.Lock()
			if len(pc.mu.queue) == 0 {
				pc.mu.writing = false
				pc.idleLocked()
				pc.mu.Unlock()
				break
			}
			batch = append(batch[:0], pc.mu.queue...)
			clear(pc.mu.queue)
			pc.mu.queue = pc.mu.queue[:0]
			pc.mu.writing = true
			pc.mu.Unlock()
			var err error
			for _, q := range batch {
				if q.framed {
					_, err = pc.w.Write(q.b)
				} else {
					err = writeFrame(pc.w, q.b)
				}
				if err != nil {
					break
				}
			}
			clear(batch)
			if err == nil {
				err = pc.w.Flush()
			}
			if err != nil {
				pc.close()
				return
			}
		}
	}
}

// send queues a frame; false if the connection is closed or its queue
// overflowed (which closes it). With nothing queued or being written, the
// caller writes the frame itself, as a session's writeNow does: that
// costs one write(2) and no hand-over to the writer goroutine (a wake-up
// and, under load, a wait for a thread), on the path of every change a
// peer pushes. Frames held by sendLater go out ahead of it in that write.
// What the socket does not take at once goes to the writer.
func (pc *peerConn) send(b []byte) bool {
	select {
	case <-pc.done:
		return false
	default:
	}
	pc.mu.Lock()
	if pc.raw != nil && !pc.mu.writing && len(pc.mu.queue) == 0 {
		held := pc.mu.held
		pc.mu.held = nil
		pc.mu.writing = true
		pc.mu.Unlock()
		return pc.writeNow(held, b)
	}
	return pc.queueLocked(b)
}

// queueLocked queues b for the writer and unlocks pc.mu.
func (pc *peerConn) queueLocked(b []byte) bool {
	if len(pc.mu.queue) >= pc.max {
		pc.mu.Unlock()
		pc.close()
		return false
	}
	pc.mu.queue = append(pc.mu.queue, queued{b: b})
	start := !pc.mu.writing
	pc.mu.writing = true
	pc.mu.Unlock()
	if start {
		pc.signal()
	}
	return true
}

// sendLater sends a frame that need not leave at once (an ack, which
// only the pusher's bookkeeping and --ack-peers wait for). On a
// connection that wrote nothing for hold it goes at once, as send; on a
// busy one it goes with the next frame sent or written anyway, and no
// later than hold after the oldest frame held, so that the acks of a
// burst of updates share one write(2) here and one read(2) at the other
// end. False as send.
func (pc *peerConn) sendLater(b []byte) bool {
	if pc.hold == 0 {
		return pc.send(b)
	}
	select {
	case <-pc.done:
		return false
	default:
	}
	pc.mu.Lock()
	if pc.mu.writing || len(pc.mu.queue) > 0 {
		return pc.queueLocked(b) // it goes with what is being written
	}
	if len(pc.mu.held) == 0 && time.Since(pc.mu.idle) >= pc.hold {
		pc.mu.writing = true
		pc.mu.Unlock()
		return pc.writeNow(nil, b) // quiet: no reason to wait
	}
	pc.mu.held = binary.BigEndian.AppendUint32(pc.mu.held, uint32(len(b)))
	pc.mu.held = append(pc.mu.held, b...)
	if len(pc.mu.held) >= maxHeld {
		held := pc.mu.held
		pc.mu.held = nil
		pc.mu.writing = true
		pc.mu.Unlock()
		return pc.writeNow(held, nil)
	}
	if !pc.mu.armed {
		pc.mu.armed = true
		pc.flush.Reset(pc.hold)
	}
	pc.mu.Unlock()
	return true
}

// idleLocked records that writing was cleared, for sendLater.
func (pc *peerConn) idleLocked() {
	if pc.hold > 0 {
		pc.mu.idle = time.Now()
	}
}

// flushHeld writes the frames sendLater held, when no send took them
// first.
func (pc *peerConn) flushHeld() {
	pc.mu.Lock()
	pc.mu.armed = false
	if len(pc.mu.held) == 0 || pc.mu.writing {
		pc.mu.Unlock()
		return
	}
	held := pc.mu.held
	pc.mu.held = nil
	pc.mu.writing = true
	pc.mu.Unlock()
	pc.writeNow(held, nil)
}

func (pc *peerConn) signal() {
	select {
	case pc.wake <- struct{}{}:
	default:
	}
}

// writeNow writes held (frames with their headers, possibly none) and
// then the frame b (if not nil) without waiting for the socket, the
// caller holding writing; the rest, and whatever was queued meanwhile,
// is left to the writer.
func (pc *peerConn) writeNow(held, b []byte) bool {
	f := held
	var bp *[]byte
	if b != nil {
		bp = peerFrameBufs.Get().(*[]byte)
		f = append((*bp)[:0], held...)
		f = binary.BigEndian.AppendUint32(f, uint32(len(b)))
		f = append(f, b...)
	}
	pc.direct.f, pc.direct.n, pc.direct.err = f, 0, nil
	err := pc.raw.Write(pc.writeFD)
	n := pc.direct.n
	if err == nil {
		err = pc.direct.err
	}
	pc.direct.f = nil
	var rest []byte
	if err == nil && n < len(f) {
		rest = slices.Clone(f[n:])
	}
	if bp != nil {
		*bp = f[:0]
		peerFrameBufs.Put(bp)
	}
	if err != nil {
		pc.close()
		return false
	}
	pc.mu.Lock()
	if held != nil && pc.mu.held == nil && cap(held) <= maxHeld*2 {
		pc.mu.held = held[:0] // the next frames held reuse its array
	}
	if rest != nil {
		pc.mu.queue = slices.Insert(pc.mu.queue, 0, queued{b: rest, framed: true})
	}
	if len(pc.mu.queue) == 0 {
		pc.mu.writing = false
		pc.idleLocked()
		pc.mu.Unlock()
		return true
	}
	pc.mu.Unlock() // writing stays set: the writer takes it over
	pc.signal()
	return true
}

// writeFDNow is writeNow's callback for RawConn.Write (bound once as
// writeFD: a closure would cost three allocations a write).
func (pc *peerConn) writeFDNow(fd uintptr) bool {
	d := &pc.direct
	for d.n < len(d.f) {
		m, err := sockio.Write(fd, d.f[d.n:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return true // the socket is full: the rest goes to the writer
		case err != nil:
			d.err = err
			return true
		}
		d.n += m
	}
	return true
}

// peerFrameBufs holds the buffers direct writes frame their payload in.
var peerFrameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// sendDroppable queues a frame that may be lost (presence) unless the
// queue is more than three quarters full.
func (pc *peerConn) sendDroppable(b []byte) {
	pc.mu.Lock()
	full := len(pc.mu.queue) >= pc.max*3/4
	pc.mu.Unlock()
	if !full {
		pc.send(b)
	}
}

func (pc *peerConn) sendMsg(m syncproto.Message) bool {
	b, err := syncproto.Encode(m)
	if err != nil {
		return false
	}
	return pc.send(b)
}

// sendMsgLater is sendMsg through sendLater.
func (pc *peerConn) sendMsgLater(m syncproto.Message) bool {
	b, err := syncproto.Encode(m)
	if err != nil {
		return false
	}
	return pc.sendLater(b)
}

func (pc *peerConn) close() {
	pc.once.Do(func() {
		close(pc.done)
		if pc.flush != nil {
			pc.flush.Stop() // what it holds is lost with the connection
		}
		pc.c.Close()
		pc.forget()
	})
}

// wait closes the connection and waits for its writer.
func (pc *peerConn) wait() {
	pc.close()
	pc.wg.Wait()
}

// ---- the outbound link: this node pushes to one peer ----

// link is this node's connection to one peer: it pushes this node's
// clients' changes and runs anti-entropy rounds (the pusher role of
// docs/PROTOCOL.md section 14). Its goroutine dials, serves, and redials
// with backoff until the peer leaves.
type link struct {
	n    *Node
	peer string // node name
	addr string // peer link address
	stop chan struct{}
	done chan struct{}

	mu struct {
		sync.Mutex
		pc       *peerConn         // nil while down
		inflight map[uint64]pushed // batch → what it carried
		subs     map[string]uint64 // doc → round of the last repair subscribe
		// claims are the replica ownership claims pc carried (cleared
		// when it holds maxLinkClaims; resending one is harmless).
		claims map[claimKey]struct{}
	}
}

type pushed struct {
	doc  string
	need crdt.VersionVector // what an ok ack confirms; nil without AckPeers
	n    int
	at   time.Time
}

// update is one encoded update frame to push.
type update struct {
	batch uint64
	frame []byte
	p     pushed
}

type claimKey struct {
	doc     string
	replica crdt.ReplicaID
}

// maxLinkClaims bounds the claims a link remembers having carried: some
// 64 bytes plus the document id each.
const maxLinkClaims = 1 << 16

func (l *link) run() {
	defer close(l.done)
	defer l.n.wg.Done()
	backoff := 10 * time.Millisecond
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		err := l.connect()
		if err != nil && !errors.Is(err, net.ErrClosed) {
			l.n.log.Debug("peer link down", "peer", l.peer, "err", err)
		}
		if errors.Is(err, ErrAuth) {
			l.n.m.authFailures.Inc()
		}
		t := time.NewTimer(backoff)
		select {
		case <-l.stop:
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, l.n.opts.RetryMax)
	}
}

// connect dials, authenticates and serves the link until it fails.
func (l *link) connect() error {
	n := l.n
	if n.opts.Faults.Isolated() {
		return errIsolated
	}
	d := net.Dialer{Timeout: n.opts.DialTimeout}
	c, err := d.Dial("tcp", l.addr)
	if err != nil {
		return err
	}
	sc := sockio.Wrap(c)
	r, w := bufio.NewReaderSize(sc, 32<<10), bufio.NewWriterSize(sc, 32<<10)
	c.SetDeadline(time.Now().Add(n.opts.DialTimeout))
	name, err := dialHandshake(r, w, n.opts.Key, n.name)
	if err != nil {
		c.Close()
		return err
	}
	c.SetDeadline(time.Time{})
	if name != l.peer {
		c.Close()
		return fmt.Errorf("cluster: %s answered as %q, want %q", l.addr, name, l.peer)
	}
	pc := newPeerConn(c, r, w, n.opts.SendQueue, 0, n.opts.Faults)
	l.mu.Lock()
	l.mu.pc = pc
	l.mu.inflight = make(map[uint64]pushed)
	l.mu.subs = make(map[string]uint64)
	l.mu.claims = make(map[claimKey]struct{})
	l.mu.Unlock()
	n.m.linkUps.Inc()
	n.log.Info("peer link up", "peer", l.peer, "addr", l.addr)
	stopWatch := context.AfterFunc(n.ctx, pc.close)
	defer stopWatch()
	go func() {
		select {
		case <-l.stop:
			pc.close()
		case <-pc.done:
		}
	}()
	// A peer that (re)appears gets an anti-entropy round at once.
	l.startRound()
	err = l.serve(pc)
	l.mu.Lock()
	l.mu.pc = nil
	l.mu.inflight = nil
	l.mu.subs = nil
	l.mu.claims = nil
	l.mu.Unlock()
	pc.wait()
	n.m.linkDowns.Inc()
	n.log.Info("peer link down", "peer", l.peer, "err", err)
	return err
}

// conn returns the live connection, or nil.
func (l *link) conn() *peerConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.pc
}

// push queues update frames of doc, preceded by an owners message with
// the claims in owners that this connection has not carried yet (all of
// them for a repair, which must not depend on what the peer did with
// earlier ones), all on one connection (a peer that applied the updates
// got the claims first); nothing happens while the link is down (the
// next anti-entropy round finds what was missed, claims included).
func (l *link) push(doc string, owners []syncproto.Owner, updates []update, repair bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	pc := l.mu.pc
	if pc == nil {
		return
	}
	fresh := owners
	if !repair {
		fresh = nil
		for _, o := range owners {
			if _, sent := l.mu.claims[claimKey{doc, o.Replica}]; !sent {
				fresh = append(fresh, o)
			}
		}
	}
	if len(fresh) > 0 {
		if len(l.mu.claims)+len(fresh) > maxLinkClaims {
			clear(l.mu.claims)
		}
		if !sendOwners(l.n, pc, doc, fresh) {
			return // the connection closed: none of the updates go either
		}
		for _, o := range fresh {
			l.mu.claims[claimKey{doc, o.Replica}] = struct{}{}
		}
	}
	for _, u := range updates {
		l.mu.inflight[u.batch] = u.p
		if !pc.send(u.frame) {
			return
		}
		l.n.m.pushed.Inc()
	}
}

// sendOwners queues claims about doc's replicas on pc as owners messages
// within half a frame each; false if the connection closed.
func sendOwners(n *Node, pc *peerConn, doc string, claims []syncproto.Owner) bool {
	for _, m := range syncproto.SplitOwners(doc, claims, n.opts.MaxFrameBytes/2) {
		b, err := syncproto.Encode(m)
		if err != nil {
			// A principal the server accepted always encodes; drop the
			// connection rather than let changes go without their claims.
			n.log.Error("encoding replica owners for a peer", "doc", doc, "err", err)
			pc.close()
			return false
		}
		if !pc.send(b) {
			return false
		}
		n.m.ownersSent.Add(float64(len(m.Owners)))
	}
	return true
}

// startRound opens an anti-entropy round.
func (l *link) startRound() {
	pc := l.conn()
	if pc == nil {
		return
	}
	round := l.n.round.Add(1)
	if pc.sendMsg(&syncproto.Digest{Round: round, Buckets: l.n.dig.snapshot()}) {
		l.n.m.rounds.Inc()
	}
}

// subscribe asks the peer for doc (a repair): its answer brings what this
// node lacks, and this node then sends what the peer lacks.
func (l *link) subscribe(pc *peerConn, doc string, round uint64) {
	l.mu.Lock()
	if l.mu.pc != pc || round != 0 && l.mu.subs[doc] == round {
		l.mu.Unlock()
		return // the link went down meanwhile, or already asked this round
	}
	l.mu.subs[doc] = round
	l.mu.Unlock()
	v := l.n.dig.version(doc)
	if v == nil {
		v = crdt.VersionVector{}
	}
	pc.sendMsg(&syncproto.Subscribe{Doc: doc, Version: v})
}

// serve reads the acceptor's messages until the connection fails.
func (l *link) serve(pc *peerConn) error {
	n := l.n
	ctx, cancel := context.WithCancel(n.ctx)
	defer cancel()
	go func() {
		<-pc.done
		cancel()
	}()
	logAck := func(doc string) func(syncproto.Status, string) {
		return func(st syncproto.Status, msg string) {
			if st != syncproto.StatusOK && st != syncproto.StatusMissingDeps {
				n.log.Warn("a peer's changes were refused here", "peer", l.peer, "doc", doc, "status", st, "msg", msg)
			}
		}
	}
	for {
		m, err := readMsg(pc.r, n.opts.MaxFrameBytes)
		if err != nil {
			if errors.Is(err, syncproto.ErrUnknownMessage) {
				continue // a newer peer
			}
			return err
		}
		switch m := m.(type) {
		case *syncproto.Ack:
			l.mu.Lock()
			p, ok := l.mu.inflight[m.Batch]
			delete(l.mu.inflight, m.Batch)
			l.mu.Unlock()
			if !ok {
				continue
			}
			switch m.Status {
			case syncproto.StatusOK:
				n.acks.confirmed(l.peer, p.doc, p.need)
			case syncproto.StatusMissingDeps, syncproto.StatusPendingFull:
				l.subscribe(pc, p.doc, 0)
			default:
				n.m.peerRefused.WithLabelValues(m.Status.String()).Inc()
				n.log.Warn("peer refused changes", "peer", l.peer, "doc", p.doc, "status", m.Status, "msg", m.Message)
			}
		case *syncproto.Changes:
			if err := l.apply(ctx, m.Doc, m.Changes, logAck(m.Doc)); err != nil {
				return err
			}
		case *syncproto.Sync:
			if err := l.apply(ctx, m.Doc, m.Changes, logAck(m.Doc)); err != nil {
				return err
			}
			// A sync's version is what the peer holds durably.
			n.acks.confirmed(l.peer, m.Doc, m.Version)
			// Send back exactly what the peer lacks, with its claims.
			chunks, _, owners, err := n.opts.Local.PeerSync(ctx, m.Doc, m.Version, n.opts.MaxFrameBytes/2)
			if err != nil {
				return err
			}
			n.pushChunks(m.Doc, chunks, owners, []*link{l}, true)
		case *syncproto.Owners:
			// Before the changes that follow (the answer to a subscribe).
			if err := n.opts.Local.PeerOwners(ctx, m.Doc, l.peer, m.Owners); err != nil {
				return err
			}
			n.m.ownersReceived.Add(float64(len(m.Owners)))
		case *syncproto.DigestDocs:
			if int(m.Bucket) >= n.dig.n {
				return fmt.Errorf("cluster: digest_docs for bucket %d of %d", m.Bucket, n.dig.n)
			}
			for _, doc := range n.dig.differing(int(m.Bucket), m.Docs, m.Hashes) {
				n.m.repaired.Inc()
				l.subscribe(pc, doc, m.Round)
			}
		case *syncproto.Error:
			n.log.Warn("peer reported an error", "peer", l.peer, "doc", m.Doc, "status", m.Status, "msg", m.Message)
		case *syncproto.Pong:
		default:
			n.log.Warn("unexpected message on a peer link", "peer", l.peer, "type", m.Type())
		}
	}
}

// apply hands changes the peer sent to the local server.
func (l *link) apply(ctx context.Context, doc string, b []byte, ack func(syncproto.Status, string)) error {
	if len(b) == 0 {
		return nil
	}
	changes, err := codec.DecodeChanges(b)
	if err != nil {
		return fmt.Errorf("cluster: undecodable changes from %s: %w", l.peer, err)
	}
	return l.n.opts.Local.PeerUpdate(ctx, doc, l.peer, changes, int64(len(b)), ack)
}

// ---- the inbound side: another node pushes to this one ----

// acceptLoop accepts peer links until the listener closes.
func (n *Node) acceptLoop() {
	defer n.wg.Done()
	for {
		c, err := n.ln.Accept()
		if err != nil {
			return
		}
		if n.opts.Faults.Isolated() {
			c.Close()
			continue
		}
		n.wg.Add(1)
		go n.serveInbound(c)
	}
}

// serveInbound authenticates and serves one link another node dialed (the
// acceptor role).
func (n *Node) serveInbound(c net.Conn) {
	defer n.wg.Done()
	sc := sockio.Wrap(c)
	r, w := bufio.NewReaderSize(sc, 32<<10), bufio.NewWriterSize(sc, 32<<10)
	c.SetDeadline(time.Now().Add(n.opts.DialTimeout))
	peer, err := acceptHandshake(r, w, n.opts.Key, n.name)
	if err != nil {
		n.m.authFailures.Inc()
		n.log.Warn("refused a peer link", "remote", c.RemoteAddr(), "err", err)
		c.Close()
		return
	}
	c.SetDeadline(time.Time{})
	pc := newPeerConn(c, r, w, n.opts.SendQueue, n.opts.AckDelay, n.opts.Faults)
	ctx, cancel := context.WithCancel(n.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, pc.close)
	defer stop()
	go func() {
		<-pc.done
		cancel()
	}()
	err = n.acceptor(ctx, pc, peer)
	pc.wait()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		n.log.Debug("inbound peer link closed", "peer", peer, "err", err)
	}
}

func (n *Node) acceptor(ctx context.Context, pc *peerConn, peer string) error {
	local := n.opts.Local
	// unowned holds the documents whose claims this node could not take
	// (the document did not load): the pusher sends a claim once per
	// connection, so their updates are refused for as long as this
	// connection lives, and none applies without its claims. Closing the
	// link instead would let one document that cannot load break it for
	// all the others at every write. Such a document still converges:
	// this node's own link subscribes to it when a round finds it
	// differs, and that answer brings its claims first.
	unowned := make(map[string]bool)
	for {
		m, err := readMsg(pc.r, n.opts.MaxFrameBytes)
		if err != nil {
			var u *syncproto.UnknownTypeError
			if errors.As(err, &u) {
				pc.sendMsg(&syncproto.Error{Status: syncproto.StatusInvalid, Message: err.Error()})
				continue
			}
			return err
		}
		switch m := m.(type) {
		case *syncproto.Update:
			doc, batch := m.Doc, m.Batch
			ack := func(st syncproto.Status, msg string) {
				pc.sendMsgLater(&syncproto.Ack{Doc: doc, Batch: batch, Status: st, Message: trim(msg)})
			}
			if unowned[doc] {
				ack(syncproto.StatusOverloaded, "this node could not take the replica owners sent for this document on this connection")
				continue
			}
			changes, err := codec.DecodeChanges(m.Changes)
			if err != nil {
				ack(syncproto.StatusInvalid, err.Error())
				continue
			}
			if err := local.PeerUpdate(ctx, doc, peer, changes, int64(len(m.Changes)), ack); err != nil {
				ack(syncproto.StatusOverloaded, err.Error())
			}
		case *syncproto.Owners:
			// Before the updates that need them, which must not apply here
			// without them (see unowned).
			if err := local.PeerOwners(ctx, m.Doc, peer, m.Owners); err != nil {
				if ctx.Err() != nil {
					return err
				}
				unowned[m.Doc] = true
				n.log.Warn("could not take a peer's replica owners; refusing its updates of the document on this connection",
					"peer", peer, "doc", m.Doc, "err", err)
				pc.sendMsg(&syncproto.Error{Status: syncproto.StatusOverloaded, Doc: m.Doc, Message: trim("replica owners not taken: " + err.Error())})
				continue
			}
			n.m.ownersReceived.Add(float64(len(m.Owners)))
		case *syncproto.Subscribe:
			chunks, v, owners, err := local.PeerSync(ctx, m.Doc, m.Version, n.opts.MaxFrameBytes/2)
			if err != nil {
				pc.sendMsg(&syncproto.Error{Status: syncproto.StatusOverloaded, Doc: m.Doc, Message: trim(err.Error())})
				continue
			}
			// The claims first: the subscriber adopts them before it
			// applies the changes.
			if !sendOwners(n, pc, m.Doc, owners) {
				continue
			}
			var last []byte
			for i, ch := range chunks {
				if i == len(chunks)-1 {
					last = ch.Data
					break
				}
				pc.sendMsg(&syncproto.Changes{Doc: m.Doc, Changes: ch.Data})
			}
			pc.sendMsg(&syncproto.Sync{Doc: m.Doc, Version: v, Changes: last})
		case *syncproto.Presence:
			local.PeerPresence(m.Doc, m)
		case *syncproto.PresenceLeave:
			local.PeerPresence(m.Doc, m)
		case *syncproto.Digest:
			if len(m.Buckets) != n.dig.n {
				pc.sendMsg(&syncproto.Error{Status: syncproto.StatusInvalid,
					Message: fmt.Sprintf("digest has %d buckets, this node uses %d (every node must use the same)", len(m.Buckets), n.dig.n)})
				continue
			}
			mine := n.dig.snapshot()
			for b := range mine {
				if mine[b] == m.Buckets[b] {
					continue
				}
				_, docs, hashes := n.dig.bucket(b)
				pc.sendMsg(&syncproto.DigestDocs{Round: m.Round, Bucket: uint64(b), Docs: docs, Hashes: hashes})
			}
		case *syncproto.Ping:
			pc.sendMsg(&syncproto.Pong{Nonce: m.Nonce})
		default:
			pc.sendMsg(&syncproto.Error{Status: syncproto.StatusInvalid, Message: fmt.Sprintf("%s is not accepted on a peer link", m.Type())})
		}
	}
}

// trim fits a message into an ack or error.
func trim(s string) string {
	if len(s) > syncproto.MaxMessageLen {
		s = strings.ToValidUTF8(s[:syncproto.MaxMessageLen-3], "")
	}
	return s
}

package syncserver

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/hlc"
)

// room is one live document. Its goroutine (run) owns every field below the
// "owned by run" line; other goroutines talk to it only through cmds.
type room struct {
	s  *Server
	id string

	cmds  chan roomCmd
	ready chan struct{} // closed when the load finished (loadErr says how)
	done  chan struct{} // closed when run returns

	loadErr error // written before ready is closed

	// refs counts holders (subscribed sessions, event streams, HTTP
	// requests); guarded by s.rooms's lock. A room unloads only at zero.
	refs     int
	lastUsed atomic.Int64 // unix nanos of the last acquire or release
	bytes    atomic.Int64 // encoded size: snapshot + log + unpersisted
	mem      atomic.Int64 // in-memory size of the loaded document (crdt.Doc.MemSize)

	// ---- owned by run ----
	doc      *crdt.Doc
	memStale bool // the document changed since measureMem
	subs     map[*session]struct{}
	streams  map[*stream]struct{}
	owners   map[crdt.ReplicaID]string // replica → principal that first wrote with it
	// latest is the latest time of a change the document holds, once
	// maxTimeKnown (computed when an event stream first needs it).
	latest       hlc.Timestamp
	maxTimeKnown bool
	// newOwners are the claims in owners not yet handed to the store; the
	// next write records them before its changes.
	newOwners   map[crdt.ReplicaID]string
	presence    map[*session]*presenceEntry
	presenceTkr *time.Ticker

	// version mirrors doc.Version(), kept by update and edit (the only
	// writers of doc after load): a copy per update was 14% of what the server
	// allocated under the converge benchmark. Read it, never keep it.
	version     crdt.VersionVector
	unpersisted []crdt.Change // applied, not yet handed to the store
	// unpersistedEnc encodes unpersisted when it holds one batch's fresh
	// changes and nothing else (its encodeOnce); nil otherwise.
	unpersistedEnc   func() []codec.Chunk
	unpersistedBytes int64
	waiting          []*ackWaiter // acks that wait for durability
	durable          crdt.VersionVector
	persisting       bool // a store write is in flight
	persistDone      chan persistResult
	snapshotBytes    int64
	logBytes         int64
	held             []heldBroadcast // only with Server.broadcastAfterDurable
	casts            []roomCast      // fan-out to sessions not yet queued (see castFlush)
	failed           error           // the store failed: fail-stop
	broken           error           // a panic on the room goroutine: this document fail-stops (see crash)
	stopping         bool
	lastPending      int
	// pendingBytes bounds from above the decoded size of the document's
	// pending buffer (see waitingSize); 0 when it is empty.
	pendingBytes int64
}

// roomCmd is a message to a room goroutine.
type roomCmd interface{ isRoomCmd() }

type cmdSubscribe struct {
	sess    *session
	version crdt.VersionVector
}

type cmdUnsubscribe struct {
	sess *session
	// gone: the session closed (rather than unsubscribing), so its waiting
	// acks can go too.
	gone bool
}

// cmdUpdate carries decoded changes from a session or an HTTP request.
type cmdUpdate struct {
	from     *session // nil for HTTP
	user     string   // principal
	replica  crdt.ReplicaID
	changes  []crdt.Change
	size     int64     // encoded bytes, for the document size limit
	received time.Time // when the frame arrived, for the fan-out metric
	// ack reports the outcome; it must not block. For sync and changes
	// messages from a client (which carry no batch id) it reports only
	// refusals, as error messages.
	ack func(status syncproto.Status, msg string)
	// ctx, if set, ends the wait for durability (an HTTP request gone).
	ctx context.Context
	// peer names the cluster peer that sent the changes ("" otherwise): a
	// trusted relay, outside replica ownership (see replicate.go).
	peer string
}

type cmdPresence struct {
	sess *session
	p    *syncproto.Presence
}

// cmdDo runs fn on the room goroutine (reads of the document). fail, if
// set, is called instead when the room has failed (see room.crash) or fn
// panics; it must not block.
type cmdDo struct {
	fn   func(r *room)
	fail func(error)
}

type cmdStream struct {
	st   *stream
	from resumePoint
	add  bool
}

type cmdUnload struct{ reason string }

type cmdStop struct{}

func (cmdSubscribe) isRoomCmd()   {}
func (cmdUnsubscribe) isRoomCmd() {}
func (cmdUpdate) isRoomCmd()      {}
func (cmdPresence) isRoomCmd()    {}
func (cmdDo) isRoomCmd()          {}
func (cmdStream) isRoomCmd()      {}
func (cmdUnload) isRoomCmd()      {}
func (cmdStop) isRoomCmd()        {}

// ackWaiter is an update whose ack waits until the store holds everything
// the update's changes need: the highest seq per replica in it.
type ackWaiter struct {
	from *session
	need crdt.VersionVector
	ack  func(syncproto.Status, string)
	ctx  context.Context
}

// heldBroadcast is a broadcast that waits for durability (the alternative
// order, kept for BenchmarkFanout).
type heldBroadcast struct {
	author     *session
	before     crdt.VersionVector
	fresh      []crdt.Change
	withAuthor bool
	received   time.Time
	version    crdt.VersionVector // the document's version after these changes
}

// roomCast is one update's fresh changes waiting, until the room has
// handled what was queued with it, to be sent to the subscribed sessions.
type roomCast struct {
	author     *session
	fresh      []crdt.Change
	encoded    func() []codec.Chunk // fresh's chunks (see encodeOnce)
	withAuthor bool
	received   time.Time
}

type persistResult struct {
	snapshot   bool
	ownersOnly bool // only claims were written
	bytes      int64
	logBytes   int64
	version    crdt.VersionVector // a snapshot's
	raised     crdt.VersionVector // what an append raised (see flush)
	elapsed    time.Duration
	err        error
}

// roomQueue is the depth of a room's command channel. Senders block when it
// is full (back-pressure on the connections feeding a hot document).
const roomQueue = 256

// acquire returns the live room for doc, creating and loading it if needed,
// and takes a reference that the caller must drop with release. Concurrent
// first requests share one load, and nothing is returned before the load has
// finished.
func (s *Server) acquire(ctx context.Context, doc string) (*room, error) {
	s.rooms.Lock()
	r := s.rooms.m[doc]
	if r == nil {
		if s.draining.Load() {
			s.rooms.Unlock()
			return nil, ErrShuttingDown
		}
		if len(s.rooms.m) >= s.opts.MaxLoadedDocs {
			s.rooms.Unlock()
			s.m.limitHits.WithLabelValues("docs_loaded").Inc()
			return nil, fmt.Errorf("%w: %d documents are loaded, the maximum", ErrTooManyDocs, s.opts.MaxLoadedDocs)
		}
		r = &room{
			s:     s,
			id:    doc,
			cmds:  make(chan roomCmd, roomQueue),
			ready: make(chan struct{}),
			done:  make(chan struct{}),
		}
		s.rooms.m[doc] = r
		s.roomWG.Add(1)
		go r.run()
	}
	r.refs++
	r.lastUsed.Store(time.Now().UnixNano())
	s.rooms.Unlock()
	select {
	case <-r.ready:
	case <-ctx.Done():
		s.release(r)
		return nil, ctx.Err()
	}
	if r.loadErr != nil {
		s.release(r)
		return nil, r.loadErr
	}
	return r, nil
}

// release drops a reference taken by acquire.
func (s *Server) release(r *room) {
	s.rooms.Lock()
	r.refs--
	r.lastUsed.Store(time.Now().UnixNano())
	s.rooms.Unlock()
}

// send delivers a command, waiting while the room's queue is full. The
// caller must hold a reference (so the room cannot unload meanwhile).
func (r *room) send(ctx context.Context, c roomCmd) error {
	select {
	case r.cmds <- c:
		return nil
	case <-r.done:
		return fmt.Errorf("syncserver: document %q is closed", r.id)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// trySend delivers a command if there is room in the queue.
func (r *room) trySend(c roomCmd) {
	select {
	case r.cmds <- c:
	default:
	}
}

func (r *room) run() {
	defer r.s.roomWG.Done()
	defer close(r.done)
	if err := r.safeLoad(); err != nil {
		r.loadErr = err
		r.s.m.loadErrors.Inc()
		r.s.log.Error("document load failed", "doc", r.id, "err", err)
		r.s.rooms.Lock()
		if r.s.rooms.m[r.id] == r {
			delete(r.s.rooms.m, r.id)
		}
		r.s.rooms.Unlock()
		close(r.ready)
		return
	}
	close(r.ready)
	r.s.m.docsLoaded.Inc()
	defer r.s.m.docsLoaded.Dec()

	for {
		var tick <-chan time.Time
		if r.presenceTkr != nil {
			tick = r.presenceTkr.C
		}
		var cmd roomCmd // the command being handled, for crash
		exit := r.protect(&cmd, func() bool {
			select {
			case c := <-r.cmds:
				if cmd = c; r.handle(c) {
					return true
				}
				// Group commit: take whatever else is queued before persisting.
				for n := 0; n < roomQueue; n++ {
					select {
					case c := <-r.cmds:
						if cmd = c; r.handle(c) {
							return true
						}
						continue
					default:
					}
					break
				}
				cmd = nil
				r.castFlush()
			case res := <-r.persistDone:
				r.persisted(res)
			case now := <-tick:
				r.presenceTick(now)
			}
			r.flush()
			return false
		})
		if exit {
			return
		}
		// A failed store takes nothing more: what is unpersisted then was
		// never acked and stays with its authors.
		if r.stopping && !r.persisting && ((len(r.unpersisted) == 0 && len(r.newOwners) == 0) || r.failed != nil) && len(r.cmds) == 0 {
			// Whatever still waits depends on changes that will not arrive
			// before we exit: the clients resend after reconnecting.
			for _, w := range r.waiting {
				w.ack(syncproto.StatusOverloaded, "the server is shutting down before this batch's dependencies arrived; resend")
			}
			r.waiting = nil
			r.close("shutdown")
			return
		}
	}
}

// handle runs one command; it reports whether the room has exited.
func (r *room) handle(c roomCmd) bool {
	if r.broken != nil {
		return r.handleBroken(c)
	}
	if _, ok := c.(cmdUpdate); !ok {
		// Whatever else the room does (a newcomer's catch-up, presence
		// that may point into the changes) comes after the fan-out of the
		// updates before it.
		r.castFlush()
	}
	switch c := c.(type) {
	case cmdSubscribe:
		r.subscribe(c)
	case cmdUnsubscribe:
		r.unsubscribe(c.sess, c.gone)
	case cmdUpdate:
		r.update(c)
	case cmdPresence:
		r.setPresence(c.sess, c.p)
	case cmdEdit:
		r.edit(c)
	case cmdDo:
		c.fn(r)
	case cmdStream:
		if c.add {
			r.addStream(c.st, c.from)
		} else {
			r.removeStream(c.st)
		}
	case cmdUnload:
		return r.tryUnload(c.reason)
	case cmdStop:
		r.stopping = true
	}
	return false
}

// load builds the document from the store: its snapshot, then every batch
// appended after it.
func (r *room) load() error {
	start := time.Now()
	ctx := context.Background()
	snap, batches, err := r.s.opts.Store.Load(ctx, r.id)
	if err != nil {
		return fmt.Errorf("syncserver: loading %q: %w", r.id, err)
	}
	o := &r.s.opts
	clock := hlc.NewClock(o.Wall, o.MaxClockOffset)
	copts := crdt.Options{MaxPending: o.MaxPending}
	if snap != nil {
		r.doc, err = codec.DecodeSnapshot(snap, o.Replica, clock, copts)
		if err != nil {
			return fmt.Errorf("syncserver: loading %q: snapshot: %w", r.id, err)
		}
	} else {
		r.doc = crdt.NewDoc(o.Replica, clock, copts)
	}
	var logBytes int64
	for i, b := range batches {
		// Decoded change by change, never as a []Change: a log of
		// keystrokes would take some forty times its stored size.
		// NB: ApplyTrusted skips the max-offset check: stored changes
		// passed it when they arrived, and a wall clock stepped back
		// since must not make the document unloadable. Any other refusal
		// here is a real problem and is reported, never papered over.
		if err := r.doc.ApplyTrusted(codec.ChangeSeq(b)); err != nil {
			return fmt.Errorf("syncserver: loading %q: batch %d: %w", r.id, i, err)
		}
		logBytes += int64(len(b))
	}
	owners, err := r.s.opts.Store.Owners(ctx, r.id)
	if err != nil {
		return fmt.Errorf("syncserver: loading %q: replica owners: %w", r.id, err)
	}
	if owners == nil {
		owners = make(map[crdt.ReplicaID]string)
	}
	r.subs = make(map[*session]struct{})
	r.streams = make(map[*stream]struct{})
	r.owners = owners
	r.presence = make(map[*session]*presenceEntry)
	r.persistDone = make(chan persistResult, 1)
	r.version = r.doc.Version()
	r.durable = r.version.Clone()
	r.snapshotBytes = int64(len(snap))
	r.logBytes = logBytes
	r.lastPending = r.doc.Pending()
	r.s.m.pendingTotal.Add(float64(r.lastPending))
	r.setBytes()
	r.measureMem()
	r.s.m.loads.Inc()
	r.s.m.loadSeconds.Observe(time.Since(start).Seconds())
	r.s.log.Debug("document loaded", "doc", r.id, "snapshot_bytes", len(snap), "batches", len(batches), "elapsed", time.Since(start))
	return nil
}

func (r *room) setBytes() {
	r.bytes.Store(r.snapshotBytes + r.logBytes + r.unpersistedBytes)
}

// measureMem walks the document for its in-memory size. O(leaves): 0.37
// us for the automerge-paper document, cheap next to applying and
// persisting the batch that changed it; it runs once per such batch (a
// store write's outcome changes only bytes).
func (r *room) measureMem() {
	r.mem.Store(r.doc.MemSize())
	r.memStale = false
}

// roomOverhead is what a loaded room costs besides its document: its
// goroutine's stack, its command queue, maps and the empty crdt.Doc
// (TestRoomOverhead measures it: about 12 KiB). The memory budget counts
// it for every room (sweep), so that many empty documents are not free;
// a document's own size limit does not.
const roomOverhead = 12 << 10

// quiescent: nothing is in flight, so the room may exit without losing
// an ack or a write.
func (r *room) quiescent() bool {
	return !r.persisting && len(r.unpersisted) == 0 && len(r.newOwners) == 0 && len(r.waiting) == 0 && len(r.cmds) == 0
}

// tryUnload exits the room if it has no holders and nothing in flight.
func (r *room) tryUnload(reason string) bool {
	// Waiters of HTTP requests that gave up do not pin the room.
	r.pruneWaiters(func(w *ackWaiter) bool { return w.ctx != nil && w.ctx.Err() != nil })
	if !r.quiescent() || len(r.subs) > 0 || len(r.streams) > 0 {
		return false
	}
	r.s.rooms.Lock()
	if r.refs > 0 || len(r.cmds) > 0 {
		r.s.rooms.Unlock()
		return false
	}
	delete(r.s.rooms.m, r.id)
	r.s.rooms.Unlock()
	r.close(reason)
	return true
}

// close ends the room: streams are closed, presence is dropped. The caller
// has made sure everything acknowledged is durable.
func (r *room) close(reason string) {
	r.s.rooms.Lock()
	if r.s.rooms.m[r.id] == r {
		delete(r.s.rooms.m, r.id) // the shutdown path
	}
	r.s.rooms.Unlock()
	for st := range r.streams {
		r.removeStream(st)
	}
	if r.presenceTkr != nil {
		r.presenceTkr.Stop()
	}
	r.s.m.pendingTotal.Sub(float64(r.lastPending))
	r.s.m.unloads.WithLabelValues(reason).Inc()
	r.s.log.Debug("document unloaded", "doc", r.id, "reason", reason)
}

func (r *room) subscribe(c cmdSubscribe) {
	r.subs[c.sess] = struct{}{}
	changes := r.doc.ChangesSince(c.version)
	// The sync's version is what the store holds, not what memory holds:
	// the subscriber counts its own changes in it as saved (see "subscribe
	// and sync" in docs/PROTOCOL.md). The catch-up still carries every
	// change in memory; what is applied but not durable yet the client
	// resends, and its ack waits for the store like any other.
	//
	// Catch-up may exceed a frame: all but the last chunk go as changes
	// messages, the last as the sync that carries our version. A version
	// too large for half a frame (a document with very many replicas) goes
	// in version_part messages before the sync, which then carries its
	// last part and no changes, so no frame exceeds MaxFrameBytes. Paced
	// by the session (see awaitCatchupCredit), not bounded by its send
	// queue.
	half := int(r.s.opts.MaxFrameBytes / 2)
	parts := syncproto.SplitVersion(r.durable.Clone(), half-syncproto.MaxDocIDLen-64) // queued: durable changes in place
	chunks := codec.EncodeChunks(changes, half)
	var last []byte
	if len(parts) == 1 && len(chunks) > 0 {
		last = chunks[len(chunks)-1].Data
		chunks = chunks[:len(chunks)-1]
	}
	for _, ch := range chunks {
		c.sess.queueCatchup(&syncproto.Changes{Doc: r.id, Changes: ch.Data}, false)
	}
	for _, p := range parts[:len(parts)-1] {
		c.sess.queueCatchup(&syncproto.VersionPart{Doc: r.id, Version: p}, false)
	}
	c.sess.queueCatchup(&syncproto.Sync{Doc: r.id, Version: parts[len(parts)-1], Changes: last}, true)
	// The newcomer sees who is here.
	for other, e := range r.presence {
		if other != c.sess && e.sent != nil {
			c.sess.queueFrame(e.sent)
		}
	}
	r.replayPeerPresence(c.sess)
}

func (r *room) unsubscribe(sess *session, gone bool) {
	if _, ok := r.subs[sess]; !ok {
		return
	}
	delete(r.subs, sess)
	r.dropPresence(sess)
	if gone {
		// A closed session cannot receive its acks; the client resends.
		r.pruneWaiters(func(w *ackWaiter) bool { return w.from == sess })
	}
}

func (r *room) pruneWaiters(drop func(*ackWaiter) bool) {
	kept := r.waiting[:0]
	for _, w := range r.waiting {
		if !drop(w) {
			kept = append(kept, w)
		}
	}
	clear(r.waiting[len(kept):])
	r.waiting = kept
}

// update applies a batch, fans it out, and queues its ack behind the store.
func (r *room) update(c cmdUpdate) {
	ack := func(st syncproto.Status, msg string) {
		r.s.m.updates.WithLabelValues(st.String()).Inc()
		if c.ack != nil {
			c.ack(st, msg)
		}
	}
	switch {
	case r.failed != nil:
		ack(syncproto.StatusInternal, "the server's store failed; not saved, retry elsewhere")
		return
	case r.stopping:
		ack(syncproto.StatusOverloaded, "the server is shutting down; retry")
		return
	}
	o := &r.s.opts
	size, maxValue := decodedSize(c.changes)
	switch {
	case maxValue > o.MaxValueBytes:
		r.s.m.limitHits.WithLabelValues("value_size").Inc()
		ack(syncproto.StatusTooLarge, fmt.Sprintf("a register value of %d bytes exceeds the limit of %d", maxValue, o.MaxValueBytes))
		return
	case max(r.bytes.Load(), r.mem.Load())+size > o.MaxDocBytes:
		r.s.m.limitHits.WithLabelValues("doc_size").Inc()
		ack(syncproto.StatusTooLarge, fmt.Sprintf("document would exceed %d bytes (this batch takes %d decoded)", o.MaxDocBytes, size))
		return
	}
	// The pending buffer's byte bound. Working out what would wait costs
	// a pass over the batch, paid only when the batch could matter.
	waiting, measured := int64(0), false
	if r.pendingBytes+size > o.MaxPendingBytes {
		waiting, measured = waitingSize(r.version, c.changes), true
		if waiting > 0 && r.pendingBytes+waiting > o.MaxPendingBytes {
			r.s.m.limitHits.WithLabelValues("pending").Inc()
			ack(syncproto.StatusPendingFull, fmt.Sprintf("changes waiting for missing dependencies would exceed %d bytes; resync", o.MaxPendingBytes))
			return
		}
	}
	if c.peer == "" {
		if msg := r.checkOwners(c); msg != "" {
			ack(syncproto.StatusUnauthorized, msg)
			return
		}
	}
	// before is needed only by event streams and the after-durable
	// broadcast; everyone else works from the mirror.
	var before crdt.VersionVector
	if len(r.streams) > 0 || r.s.broadcastAfterDurable {
		before = r.version.Clone()
	}
	pending, rejected := r.doc.Pending(), r.doc.Rejected()
	if err := r.doc.Apply(c.changes...); err != nil {
		st := syncproto.StatusFor(err)
		if st == syncproto.StatusPendingFull {
			r.s.m.limitHits.WithLabelValues("pending").Inc()
		}
		ack(st, err.Error())
		return
	}
	if c.peer == "" {
		r.claimOwners(c)
	}
	if p := r.doc.Pending(); p != r.lastPending {
		r.s.m.pendingTotal.Add(float64(p - r.lastPending))
		r.lastPending = p
		switch {
		case p == 0:
			r.pendingBytes = 0
		case p > pending:
			if !measured {
				waiting = waitingSize(r.version, c.changes) // r.version is still the one before Apply
			}
			if waiting == 0 {
				waiting = size // Apply parked what the in-order pass would apply: it does not, but stay an upper bound
			}
			// NB: an upper bound, lowered only when the buffer empties.
			r.pendingBytes += waiting
		}
		r.memStale = true // the pending buffer is part of the document's memory (accept measures)
	}
	fresh := syncproto.Fresh(r.doc, r.version, c.changes, pending, rejected)
	r.accept(c, before, fresh)
}

// accept takes the changes an update or an edit (c) made fresh, everything
// after version before: they are queued for the store, broadcast and
// replicated, and c is acked once everything it carries is durable.
func (r *room) accept(c cmdUpdate, before crdt.VersionVector, fresh []crdt.Change) {
	ack := func(st syncproto.Status, msg string) {
		r.s.m.updates.WithLabelValues(st.String()).Inc()
		if c.ack != nil {
			c.ack(st, msg)
		}
	}
	r.noteTimes(fresh)
	if len(fresh) > 0 {
		// The subscribers, the event streams, the peers and (when the
		// store keeps up, so that these are all it has to write) the
		// store get the same bytes: encoded once, when the first of them
		// needs them.
		encoded := r.encodeOnce(fresh)
		r.unpersistedEnc = nil
		if len(r.unpersisted) == 0 {
			r.unpersistedEnc = encoded
		}
		r.unpersisted = append(r.unpersisted, fresh...)
		r.unpersistedBytes += c.size
		r.setBytes()
		if r.s.broadcastAfterDurable {
			r.held = append(r.held, heldBroadcast{c.from, before, fresh, len(fresh) != len(c.changes), c.received, r.version.Clone()})
		} else {
			r.streamCast(before, encoded)
			r.casts = append(r.casts, roomCast{c.from, fresh, encoded, len(fresh) != len(c.changes), c.received})
		}
		r.replicateApplied(fresh, encoded, c.peer)
	}
	if len(fresh) > 0 || r.memStale {
		r.measureMem()
	}
	if c.ack == nil {
		return
	}
	need := make(crdt.VersionVector)
	for i := range c.changes {
		ch := &c.changes[i]
		if end := ch.End(); end > need[ch.Replica] {
			need[ch.Replica] = end
		}
	}
	if have := r.version; !have.Covers(need) {
		// Some changes wait in the pending buffer for operations this server
		// does not have. They are kept (and applied once those arrive), but
		// the batch is not saved: the client should resync (subscribe with
		// its version, send what we lack) and resend it.
		ack(syncproto.StatusMissingDeps, fmt.Sprintf("%d changes wait for operations the server lacks (server version %s); resync and resend", r.doc.Pending(), have))
		return
	}
	ack = r.withPeerAcks(&c, need, ack)
	w := &ackWaiter{from: c.from, need: need, ack: ack, ctx: c.ctx}
	if r.durable.Covers(need) {
		ack(syncproto.StatusOK, "") // everything was already durable (a resend)
		return
	}
	r.waiting = append(r.waiting, w)
}

// checkOwners enforces replica ownership: a replica id belongs to the first
// principal that wrote with it (see "Replica ownership" in the package doc).
// It returns a refusal message, or "".
func (r *room) checkOwners(c cmdUpdate) string {
	if c.from != nil {
		if o, ok := r.owners[c.replica]; ok && o != c.user {
			return fmt.Sprintf("replica %s belongs to another user", c.replica)
		}
	}
	var have crdt.VersionVector
	for i := range c.changes {
		ch := &c.changes[i]
		o, owned := r.owners[ch.Replica]
		own := ch.Replica == r.s.opts.Replica // the server's: JSON edits (edit)
		if own || (owned && o != c.user) {
			if have == nil {
				have = r.version
			}
			if have.Includes(crdt.ID{Replica: ch.Replica, Seq: ch.End()}) {
				continue // relaying what we already hold is a no-op, not a forgery
			}
			if own {
				return fmt.Sprintf("replica %s is the server's own", ch.Replica)
			}
			return fmt.Sprintf("changes of replica %s belong to another user", ch.Replica)
		}
	}
	return ""
}

func (r *room) claimOwners(c cmdUpdate) {
	if c.from != nil {
		for i := range c.changes {
			if c.changes[i].Replica == c.replica {
				r.claim(c.replica, c.user)
				break
			}
		}
		return
	}
	// HTTP writers have no session replica: they own what they write.
	for i := range c.changes {
		r.claim(c.changes[i].Replica, c.user)
	}
}

// claim makes user the owner of replica if it has none; the claim goes to
// the store with the next write, before the changes that made it, so that
// it is durable before they are acked and holds after an unload or a
// restart.
func (r *room) claim(replica crdt.ReplicaID, user string) {
	if _, ok := r.owners[replica]; ok {
		return
	}
	r.owners[replica] = user
	if r.newOwners == nil {
		r.newOwners = make(map[crdt.ReplicaID]string)
	}
	r.newOwners[replica] = user
}

// broadcast sends freshly applied changes (everything after version
// before) to every subscriber except their author, and to every event
// stream. NB: it runs before the changes are durable (see "Broadcast before
// persist" in the package doc), except with broadcastAfterDurable.
// withAuthor: the batch unblocked other changes, which the author may lack
// too.
func (r *room) broadcast(author *session, before crdt.VersionVector, fresh []crdt.Change, withAuthor bool) {
	encoded := r.encodeOnce(fresh)
	r.sessionCast(author, encoded, withAuthor)
	r.streamCast(before, encoded)
}

// encodeOnce returns a function giving fresh cut into chunks that each fit
// a message, encoding them at its first call only.
func (r *room) encodeOnce(fresh []crdt.Change) func() []codec.Chunk {
	var chunks []codec.Chunk
	return func() []codec.Chunk {
		if chunks == nil {
			chunks = codec.EncodeChunks(fresh, int(r.s.opts.MaxFrameBytes/2))
		}
		return chunks
	}
}

// sessionCast queues fresh changes to every subscribed session except
// their author (unless withAuthor), encoded once for all of them.
func (r *room) sessionCast(author *session, encoded func() []codec.Chunk, withAuthor bool) {
	if len(r.subs) == 0 {
		return
	}
	// Unblocked pending changes can make fresh larger than one message.
	for _, ch := range encoded() {
		frame, err := syncproto.Encode(&syncproto.Changes{Doc: r.id, Changes: ch.Data})
		if err != nil {
			r.s.log.Error("encoding a changes message", "doc", r.id, "err", err)
			continue
		}
		for sess := range r.subs {
			if sess != author || withAuthor {
				sess.queueFrame(frame)
			}
		}
	}
}

// streamCast sends fresh changes (everything after version before) to
// every event stream, one event per update so each carries its own resume
// version.
func (r *room) streamCast(before crdt.VersionVector, encoded func() []codec.Chunk) {
	if len(r.streams) == 0 {
		return
	}
	at := before.Clone()
	var w hlc.Timestamp
	chunks := encoded()
	n := len(before)
	for _, ch := range chunks {
		n += len(ch.Changes)
	}
	if n > maxExplicitReplicas {
		w = r.maxTime() // the fresh changes are in the document already
	}
	for _, ch := range chunks {
		advance(at, ch.Changes)
		ev := sseEvent{id: versionToken(at, w), name: "changes", data: ch.Data}
		for st := range r.streams {
			r.streamSend(st, ev)
		}
	}
}

// castFlush sends the sessions the changes of the updates handled since
// the last call. One update (the usual case when the room keeps up) goes
// out as before: one changes message, encoded once, to everyone but its
// author. Several updates that queued up while the room was busy go out as
// one changes message per subscriber: everyone gets all of them, except
// that an author does not get back its own (a second encoding per author).
//
// NB: this is coalescing without waiting: a batch forms only from updates
// that were already queued, so no change is held back for a later one.
// Under load it is what keeps the work per change from growing with the
// backlog: one frame, one write and, on the client, one decode and apply
// per batch instead of per update. It runs before the room handles any
// other command, so a newcomer's catch-up or a presence message never
// overtakes changes applied before it.
func (r *room) castFlush() {
	casts := r.casts
	if len(casts) == 0 {
		return
	}
	defer func() {
		now := time.Now()
		for _, c := range casts {
			if !c.received.IsZero() {
				r.s.m.fanoutSecs.Observe(now.Sub(c.received).Seconds())
			}
		}
		clear(casts)
		r.casts = casts[:0]
	}()
	if len(casts) == 1 {
		r.sessionCast(casts[0].author, casts[0].encoded, casts[0].withAuthor)
		return
	}
	if len(r.subs) == 0 {
		return
	}
	var all []crdt.Change
	authors := make(map[*session]struct{}, len(casts))
	for _, c := range casts {
		all = append(all, c.fresh...)
		if c.author != nil && !c.withAuthor {
			authors[c.author] = struct{}{}
		}
	}
	frames := func(chs []crdt.Change) [][]byte {
		var out [][]byte
		for _, ch := range codec.EncodeChunks(chs, int(r.s.opts.MaxFrameBytes/2)) {
			frame, err := syncproto.Encode(&syncproto.Changes{Doc: r.id, Changes: ch.Data})
			if err != nil {
				r.s.log.Error("encoding a changes message", "doc", r.id, "err", err)
				continue
			}
			out = append(out, frame)
		}
		return out
	}
	everyone := frames(all)
	for sess := range r.subs {
		fs := everyone
		if _, ok := authors[sess]; ok {
			var others []crdt.Change
			for _, c := range casts {
				if c.author != sess || c.withAuthor {
					others = append(others, c.fresh...)
				}
			}
			fs = frames(others)
		}
		for _, f := range fs {
			sess.queueFrame(f)
		}
	}
}

// advance raises v to cover changes.
func advance(v crdt.VersionVector, changes []crdt.Change) {
	for i := range changes {
		if e := changes[i].End(); e > v[changes[i].Replica] {
			v[changes[i].Replica] = e
		}
	}
}

// flush hands the unpersisted changes to the store if no write is in
// flight: everything that arrived during the previous write goes in one
// batch (group commit), and a snapshot replaces the log when it outgrew it.
func (r *room) flush() {
	if r.persisting || r.failed != nil || r.broken != nil {
		return
	}
	o := &r.s.opts
	if len(r.unpersisted) == 0 {
		if len(r.newOwners) > 0 {
			// Claims without fresh changes (a resend of changes the store
			// already holds): record them alone.
			r.startPersist(nil, nil, r.durable, nil)
		}
		return
	}
	if r.logBytes > max(o.SnapshotMinBytes, r.snapshotBytes) {
		// The snapshot covers the unpersisted changes too, so it replaces
		// their append.
		// NB: only the export (a copy) runs here; encoding and compressing
		// it, the expensive part, runs with the write, off the room.
		state := r.doc.ExportState()
		r.unpersisted = r.unpersisted[:0]
		r.unpersistedEnc = nil
		r.unpersistedBytes = 0
		r.startPersist(state, nil, r.doc.Version(), nil)
		return
	}
	// One batch must decode on load: within codec's change and op limits.
	head := r.unpersisted[:min(len(r.unpersisted), o.MaxBatchChanges)]
	var first codec.Chunk
	if enc := r.unpersistedEnc; enc != nil && len(enc()) == 1 && len(head) == len(r.unpersisted) {
		first = enc()[0] // one update's changes, already encoded for its subscribers
	} else {
		first = codec.EncodeChunks(head, 0)[0]
	}
	r.unpersistedEnc = nil
	n, batch := len(first.Changes), first.Data
	// What the batch raises: the store will hold that and what it held
	// before. The store records only this (the whole vector is bytes per
	// writer the document ever had, with every keystroke), and durable
	// and the Replicator take it in, without copying the whole vector.
	raised := make(crdt.VersionVector, 1)
	advance(raised, r.unpersisted[:n])
	rest := copy(r.unpersisted, r.unpersisted[n:])
	clear(r.unpersisted[rest:])
	r.unpersisted = r.unpersisted[:rest]
	if rest == 0 {
		r.unpersistedBytes = 0
	}
	r.startPersist(nil, batch, nil, raised)
}

// startPersist writes a snapshot of state (if not nil) or appends batch,
// in a goroutine of its own. version is a snapshot's; raised, for an
// append, what the batch raises (see storeAppend).
func (r *room) startPersist(state *crdt.State, batch []byte, version, raised crdt.VersionVector) {
	r.persisting = true
	store, doc, done := r.s.opts.Store, r.id, r.persistDone
	owners := r.newOwners
	r.newOwners = nil
	// One short-lived goroutine per write keeps idle rooms at one
	// goroutine; the room goes on applying and broadcasting meanwhile.
	go func() {
		start := time.Now()
		res := persistResult{snapshot: state != nil, version: version, raised: raised}
		defer func() {
			// A panic (encoding the snapshot) fails this document, not
			// the process; the room sees it as the write's outcome.
			if v := recover(); v != nil {
				res.err = &panicError{v, debug.Stack()}
				done <- res
			}
		}()
		if len(owners) > 0 {
			// First: an ack for the changes must never go out while the
			// claim they made could still be lost.
			if res.err = store.AddOwners(context.Background(), doc, owners); res.err != nil || (state == nil && batch == nil) {
				res.ownersOnly = true
				res.elapsed = time.Since(start)
				done <- res
				return
			}
		}
		data := batch
		if state != nil {
			data = codec.EncodeState(state)
		}
		res.bytes = int64(len(data))
		if state != nil {
			res.err = storeSnapshot(context.Background(), store, doc, data, version)
		} else {
			res.logBytes, res.err = storeAppend(context.Background(), store, doc, data, raised)
		}
		res.elapsed = time.Since(start)
		done <- res
	}()
}

// persisted takes a store write's outcome: acks what it made durable, or
// fail-stops.
func (r *room) persisted(res persistResult) {
	r.persisting = false
	if r.broken != nil {
		return // nothing more is acked or persisted
	}
	if pe := (*panicError)(nil); errors.As(res.err, &pe) {
		r.crash(pe.value, pe.stack, nil)
		return
	}
	if res.err != nil {
		r.failed = res.err
		r.s.m.storeErrors.Inc()
		r.s.failStop(r.id, res.err)
		for _, w := range r.waiting {
			w.ack(syncproto.StatusInternal, "the server's store failed; not saved, retry elsewhere")
		}
		clear(r.waiting)
		r.waiting = r.waiting[:0]
		return
	}
	if res.ownersOnly {
		return
	}
	if res.snapshot {
		r.snapshotBytes = res.bytes
		r.logBytes = 0
		r.s.m.snapshots.Inc()
	} else {
		r.logBytes = res.logBytes
		r.s.m.commitSecs.Observe(res.elapsed.Seconds())
		r.s.m.commitBytes.Observe(float64(res.bytes))
	}
	if len(r.unpersisted) == 0 {
		r.unpersistedBytes = 0
	}
	r.setBytes()
	if res.snapshot {
		r.durable = res.version
		r.replicateDurable(res.version)
	} else {
		r.durable.Merge(res.raised) // in place: nothing else holds durable (subscribe copies it)
		r.replicateDurable(res.raised)
	}
	for len(r.held) > 0 && r.durable.Covers(r.held[0].version) {
		h := r.held[0]
		r.broadcast(h.author, h.before, h.fresh, h.withAuthor)
		r.s.m.fanoutSecs.Observe(time.Since(h.received).Seconds())
		r.held = r.held[1:]
	}
	r.pruneWaiters(func(w *ackWaiter) bool {
		if r.durable.Covers(w.need) {
			w.ack(syncproto.StatusOK, "")
			return true
		}
		return false
	})
}

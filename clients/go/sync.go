package client

import (
	"fmt"
	"time"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
)

// This file drives syncproto.Peer (RoleClient) for one document on one
// connection: the Peer decides what to subscribe, send and resend; this
// code adds what a client needs around it: durable "acked" tracking that
// survives reconnection, pacing of retries, re-stamping after clock_skew,
// the local file, callbacks and presence.

// resetLocked starts the per-connection state for connection gen.
func (d *Document) resetLocked(gen uint64) error {
	d.mu.gen = gen
	d.mu.subscribed = false
	d.mu.out = nil
	d.forgetBatchesLocked()
	d.mu.batches = map[uint64]batchInfo{}
	d.mu.retryAt = time.Time{}
	d.mu.dropConn = false
	d.mu.resumeDue = false
	o := syncproto.DefaultOptions()
	o.Role = syncproto.RoleClient
	o.MaxOpsPerMessage = d.c.opts.MaxBatchOps
	if b := d.c.maxBurst.Load(); b > 0 {
		// A batch declaring more ops than the server's burst is refused
		// as too_large. (A change goes alone whatever its size; the
		// server's burst is never below crdt.MaxChangeOps, so it fits.)
		o.MaxOpsPerMessage = int(min(int64(o.MaxOpsPerMessage), b))
	} else if r := d.c.maxRate.Load(); r > 0 && int64(o.MaxOpsPerMessage) > r {
		// A server that does not announce its burst: stay within a
		// second's budget, which its burst is likely to cover.
		o.MaxOpsPerMessage = int(r)
	}
	if mf := d.c.maxFrame.Load(); mf > 0 {
		o.MaxBytesPerMessage = int(max(1, min(int64(o.MaxBytesPerMessage), mf-frameOverhead)))
	}
	p, err := syncproto.NewPeer(d.mu.doc, d.id, o)
	if err != nil {
		d.mu.peer = nil
		return err
	}
	d.mu.peer = p
	if d.mu.presence != nil {
		d.mu.presenceDirty = true
	}
	return nil
}

// frameOverhead bounds the bytes an update message adds around its changes
// (type tag, document id, batch id, headers).
const frameOverhead = syncproto.MaxDocIDLen + 64

func (d *Document) disconnected(gen uint64) {
	d.mu.Lock()
	if d.mu.gen == gen {
		d.mu.peer = nil
		d.forgetBatchesLocked()
		d.mu.batches = nil
		d.mu.out = nil
		// Every outcome is known now (lost batches count as held): a
		// re-stamp that waited for them can run; the next connection
		// sends the result.
		d.maybeRestampLocked(false)
	}
	hadPeers := len(d.mu.peers) > 0
	// Presence of others is only valid while connected; the server resends
	// it after the next subscribe.
	clear(d.mu.peers)
	d.mu.Unlock()
	if hadPeers {
		d.signal()
	}
}

// outgoing appends the messages the writer should send for d on
// connection gen. drop reports that the connection should be dropped
// (after a re-stamp).
func (d *Document) outgoing(gen uint64, out []syncproto.Message) (_ []syncproto.Message, drop bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.closed {
		return out, false
	}
	if d.mu.gen != gen {
		if err := d.resetLocked(gen); err != nil {
			d.rejectLocked(fmt.Errorf("%w: %q: %v", ErrRejected, d.id, err))
			return out, false
		}
	}
	if d.mu.dropConn {
		return out, true
	}
	if d.mu.peer == nil {
		return out, false
	}
	out = append(out, d.mu.out...)
	d.mu.out = nil
	if time.Now().Before(d.mu.retryAt) {
		return out, false // a timer marks d dirty again when the pause ends
	}
	if d.mu.resumeDue && d.mu.subscribed {
		d.mu.resumeDue = false
		out = append(out, d.mu.peer.Resume()...)
	}
	if !d.mu.subscribed {
		d.c.opts.Logger.Debug("weft client: subscribe", "doc", d.id)
		out = append(out, d.mu.peer.Subscribe()...)
		d.mu.subscribed = true
	}
	if d.mu.rejected == nil {
		out = d.trackLocked(out, d.mu.peer.Outgoing())
	}
	if d.mu.presenceDirty && d.mu.peer.Synced() {
		limit := d.c.presenceInterval()
		if wait := limit - time.Since(d.mu.lastPresence); wait > 0 {
			if !d.mu.presenceTimer {
				d.mu.presenceTimer = true
				time.AfterFunc(wait, func() {
					d.mu.Lock()
					d.mu.presenceTimer = false
					d.mu.Unlock()
					d.c.markDirty(d)
				})
			}
		} else {
			d.mu.presenceClock++
			p := *d.mu.presence
			p.Clock = d.mu.presenceClock
			out = append(out, &p)
			d.mu.presenceDirty = false
			d.mu.lastPresence = time.Now()
		}
	}
	return out, false
}

// trackLocked appends msgs (from the Peer) to out, remembering for each
// update batch which own seq it makes durable. The Peer sends everything
// the server lacks, so the last batch of msgs reaches the document's own
// version; earlier parts of a split get 0 (unknown), which only delays
// acked until the last part is acked.
func (d *Document) trackLocked(out, msgs []syncproto.Message) []syncproto.Message {
	last := -1
	for i, m := range msgs {
		if _, ok := m.(*syncproto.Update); ok {
			last = i
		}
	}
	var own uint64
	if last >= 0 {
		// NB: only now, and from the mirror: Version copies a map, and most
		// calls carry no update (this runs for every message received).
		own = d.knownLocked()[d.c.replica]
	}
	maxFrame := d.c.maxFrame.Load()
	for i, m := range msgs {
		u, ok := m.(*syncproto.Update)
		if !ok {
			out = append(out, m)
			continue
		}
		if maxFrame > 0 && int64(len(u.Changes))+frameOverhead > maxFrame {
			// The Peer sends a change larger than its byte budget alone;
			// the server would close the connection for it, and resending
			// would loop.
			d.rejectLocked(fmt.Errorf("%w: %q: a change of %d bytes exceeds the server's frame limit of %d bytes",
				ErrRejected, d.id, len(u.Changes), maxFrame))
			return out
		}
		var end uint64
		if i == last {
			end = own
		}
		d.mu.batches[u.Batch] = batchInfo{end: end, sent: d.knownLocked()[d.c.replica]}
		d.c.opts.Logger.Debug("weft client: update", "doc", d.id, "batch", u.Batch, "bytes", len(u.Changes), "own_end", end)
		out = append(out, u)
	}
	return out
}

func (d *Document) rejectLocked(err error) {
	if d.mu.rejected == nil {
		d.mu.rejected = err
		d.c.opts.Logger.Warn("weft client: document refused", "doc", d.id, "err", err)
		d.notifySavedLocked()
	}
}

// receive handles a document message read on connection gen. An error
// means the connection should be dropped (the server sent changes this
// replica cannot take).
func (d *Document) receive(gen uint64, m syncproto.Message) error {
	switch m := m.(type) {
	case *syncproto.Presence:
		d.receivePresence(m)
		return nil
	case *syncproto.PresenceLeave:
		d.receiveLeave(m)
		return nil
	case *syncproto.Error:
		d.serverError(gen, m)
		return nil
	}

	d.mu.Lock()
	if d.mu.closed || d.mu.gen != gen || d.mu.peer == nil {
		d.mu.Unlock()
		return nil
	}
	var before crdt.VersionVector
	switch m := m.(type) {
	case *syncproto.VersionPart:
		// Part of the sync's version (a vector too large for one frame):
		// durable, like the rest of it.
		if s := m.Version[d.c.replica]; s > d.mu.acked {
			d.mu.acked = s
			d.notifySavedLocked()
		}
	case *syncproto.Sync:
		d.c.opts.Logger.Debug("weft client: sync", "doc", d.id, "version", m.Version, "bytes", len(m.Changes))
		before = d.knownLocked()
		// The server holds m.Version: everything of ours in it is durable.
		if s := m.Version[d.c.replica]; s > d.mu.acked {
			d.mu.acked = s
			d.notifySavedLocked()
		}
		d.forgetBatchesLocked() // the Peer forgets batches in flight at a sync
	case *syncproto.Changes:
		before = d.knownLocked()
	}
	pendingBefore, rejectedBefore := d.mu.doc.Pending(), d.mu.doc.Rejected()
	out, err := d.mu.peer.Receive(m)
	if err != nil {
		d.mu.Unlock()
		return fmt.Errorf("client: %s for %q: %w", m.Type(), d.id, err)
	}
	if a, ok := m.(*syncproto.Ack); ok {
		d.ackLocked(a)
	} else {
		d.maybeRestampLocked(true) // a sync forgets the batches in flight
	}
	var applied []crdt.Change
	var perr error
	if before != nil {
		applied = d.appliedLocked(before, pendingBefore, rejectedBefore)
	}
	if len(applied) > 0 {
		if d.mu.file != nil {
			perr = d.persistLocked(codec.EncodeChanges(applied))
		}
	}
	d.mu.out = d.trackLocked(d.mu.out, out)
	wake := len(d.mu.out) > 0 || d.mu.dropConn
	d.mu.Unlock()
	if wake {
		d.c.markDirty(d)
	}
	if len(applied) > 0 {
		d.signal()
		if d.opts.OnChanges != nil {
			d.opts.OnChanges(d, applied)
		}
	}
	if perr != nil {
		d.c.opts.Logger.Error("weft client: cannot persist remote changes", "doc", d.id, "err", perr)
	}
	return nil
}

// appliedLocked returns exactly what the last Receive added to the document
// and raises before, the known mirror, to the document's version (see
// syncproto.Fresh).
func (d *Document) appliedLocked(before crdt.VersionVector, pendingBefore, rejectedBefore int) []crdt.Change {
	return syncproto.Fresh(d.mu.doc, before, d.mu.peer.Received(), pendingBefore, rejectedBefore)
}

// knownLocked returns the mirror of the document's version vector that
// receive keeps up to date, computing it afresh after local edits. NB: a
// copy of the version per received message was 9% of a 200-client load
// generator's CPU; local edits are far rarer than remote ones.
func (d *Document) knownLocked() crdt.VersionVector {
	if d.mu.known == nil {
		d.mu.known = d.mu.doc.Version()
	}
	return d.mu.known
}

// ackLocked updates acked, retry pacing and refusals after the Peer saw an
// ack.
func (d *Document) ackLocked(m *syncproto.Ack) {
	info, known := d.mu.batches[m.Batch]
	delete(d.mu.batches, m.Batch)
	d.c.opts.Logger.Debug("weft client: ack", "doc", d.id, "batch", m.Batch, "status", m.Status, "known", known)
	if !known {
		return // a batch from before a sync: the Peer ignores it too
	}
	if !refusedWhole(m.Status) {
		d.mu.mayHold = max(d.mu.mayHold, info.sent)
	}
	defer d.maybeRestampLocked(true)
	switch {
	case m.Status == syncproto.StatusOK:
		d.mu.retries = 0
		if info.end > d.mu.acked {
			d.mu.acked = info.end
			d.notifySavedLocked()
		}
	case m.Status == syncproto.StatusClockSkew:
		d.c.opts.Logger.Warn("weft client: server refused our timestamps; re-stamping unsent changes",
			"doc", d.id, "message", m.Message, "in_flight", len(d.mu.batches))
		// The Peer halted; the re-stamp waits for the batches still in
		// flight, whose outcomes say what the server may hold.
		d.mu.restampDue = true
	case m.Status.Retryable():
		// The Peer rewound to what the server confirmed; pause before
		// resending so a loaded server is not hammered.
		d.backoffLocked()
	case m.Status == syncproto.StatusPendingFull || m.Status == syncproto.StatusMissingDeps:
		// The Peer resubscribes; its subscribe is in the messages it
		// returned.
		d.forgetBatchesLocked()
	default:
		if st, msg, halted := d.mu.peer.Halted(); halted {
			d.rejectLocked(fmt.Errorf("%w: %q: %s: %s", ErrRejected, d.id, st, msg))
		}
	}
}

// refusedWhole reports whether an ack with status st guarantees that the
// server applied none of the batch: it refused it before or in an atomic
// Apply. Every other outcome (ok, missing_deps: held in the pending
// buffer, internal: maybe applied before the store failed, overloaded,
// statuses this client does not know) may leave the changes with the
// server.
func refusedWhole(st syncproto.Status) bool {
	switch st {
	case syncproto.StatusClockSkew, syncproto.StatusInvalid, syncproto.StatusReadOnly,
		syncproto.StatusTooLarge, syncproto.StatusRateLimited, syncproto.StatusUnauthorized,
		syncproto.StatusNotFound, syncproto.StatusPendingFull:
		return true
	}
	return false
}

// forgetBatchesLocked drops the batches in flight without an outcome:
// the server may hold each of them.
func (d *Document) forgetBatchesLocked() {
	for _, b := range d.mu.batches {
		d.mu.mayHold = max(d.mu.mayHold, b.sent)
	}
	clear(d.mu.batches)
}

// maybeRestampLocked runs a re-stamp that a clock_skew refusal asked for
// once no batch is in flight. connected: the Peer of the live connection
// is halted and must be restarted.
func (d *Document) maybeRestampLocked(connected bool) {
	if !d.mu.restampDue || len(d.mu.batches) > 0 || d.mu.rejected != nil {
		return
	}
	d.mu.restampDue = false
	n, err := d.restampLocked()
	if err != nil {
		d.rejectLocked(fmt.Errorf("%w: %q: clock_skew: re-stamping failed: %v", ErrRejected, d.id, err))
		return
	}
	if n == 0 {
		// Every refused change may also be held by the server under its
		// old time (sent in a batch whose outcome is unknown): it cannot
		// change. The server takes it once its clock has caught up; try
		// again after a growing pause.
		d.c.opts.Logger.Warn("weft client: refused changes may be held by the server; waiting for its clock", "doc", d.id)
		d.backoffLocked()
		d.mu.resumeDue = connected
		return
	}
	if connected {
		// Start over on a new connection: the Peer holds the old
		// document, and acks of batches sent before the re-stamp must not
		// be taken for acks of batches sent after it.
		d.mu.dropConn = true
	}
}

// backoffLocked pauses updates after a retryable refusal. The batches in
// flight behind the refused one are usually refused too: one episode
// counts once, so the pause grows per episode, not per batch.
func (d *Document) backoffLocked() {
	if time.Now().Before(d.mu.retryAt) {
		return
	}
	d.mu.retries++
	d.pauseLocked(min(50*time.Millisecond<<min(d.mu.retries-1, 7), 5*time.Second))
}

// pauseLocked holds back updates for delay.
func (d *Document) pauseLocked(delay time.Duration) {
	d.mu.retryAt = time.Now().Add(delay)
	time.AfterFunc(delay, func() { d.c.markDirty(d) })
}

func (d *Document) receivePresence(m *syncproto.Presence) {
	if m.Session != "" && m.Session == d.c.sessionID() {
		return // our own presence echoed back
	}
	d.mu.Lock()
	if old, ok := d.mu.peers[m.Session]; ok && old.Clock >= m.Clock {
		d.mu.Unlock()
		return
	}
	d.mu.peers[m.Session] = *m
	d.mu.Unlock()
	d.signal()
	if d.opts.OnPresence != nil {
		d.opts.OnPresence(d, *m, false)
	}
}

func (d *Document) receiveLeave(m *syncproto.PresenceLeave) {
	d.mu.Lock()
	_, ok := d.mu.peers[m.Session]
	delete(d.mu.peers, m.Session)
	d.mu.Unlock()
	if ok {
		d.signal()
		if d.opts.OnPresence != nil {
			d.opts.OnPresence(d, syncproto.Presence{Doc: m.Doc, Session: m.Session}, true)
		}
	}
}

func (d *Document) serverError(gen uint64, m *syncproto.Error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.gen != gen {
		return
	}
	d.c.opts.Logger.Warn("weft client: server error for document", "doc", d.id, "status", m.Status, "message", m.Message)
	switch {
	case m.Status == syncproto.StatusRateLimited && d.mu.peer != nil && d.mu.peer.Synced():
		// Presence over the server's rate: it was dropped; the next
		// presence goes out after the pause.
		d.pauseLocked(time.Second)
	case m.Status.Retryable(), m.Status == syncproto.StatusPendingFull, m.Status == syncproto.StatusMissingDeps:
		// Resubscribe on a fresh Peer after a pause.
		if err := d.resetLocked(d.mu.gen); err != nil {
			d.rejectLocked(fmt.Errorf("%w: %q: %v", ErrRejected, d.id, err))
			return
		}
		d.backoffLocked()
	default:
		d.rejectLocked(fmt.Errorf("%w: %q: %s: %s", ErrRejected, d.id, m.Status, m.Message))
	}
}

package syncproto

import (
	"cmp"
	"errors"
	"fmt"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
)

// Doc is what the sync state machine needs from a document. *crdt.Doc
// implements it. Calls never block; the Peer's owner serialises them.
type Doc interface {
	Version() crdt.VersionVector
	ChangesSince(v crdt.VersionVector) []crdt.Change
	Apply(changes ...crdt.Change) error
	Pending() int
}

// DurableDoc is a Doc that knows which of its changes are durable. A
// server-role Peer whose Doc implements it answers subscribe with the
// durable version (docs/PROTOCOL.md, "subscribe and sync"): a client
// counts its changes in a sync's version as saved, so a change applied in
// memory but not yet on disk must not appear there.
type DurableDoc interface {
	Doc
	// DurableVersion returns what is durable, always covered by Version.
	// The Peer keeps nothing it returns.
	DurableVersion() crdt.VersionVector
}

// Role says which side of a connection a Peer is on.
type Role uint8

const (
	// RoleClient: an editor's side. It subscribes, sends its local changes
	// as update batches and counts them saved when acked.
	RoleClient Role = 1
	// RoleServer: a server's side, towards a client or another server. It
	// answers subscribe with sync, acks updates, and streams changes. Two
	// servers each use RoleServer and may both subscribe.
	RoleServer Role = 2
)

func (r Role) String() string {
	switch r {
	case RoleClient:
		return "client"
	case RoleServer:
		return "server"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// ErrUnexpected is wrapped by Receive when a message does not belong to the
// sync of this document in this role (another doc, a presence message, an
// ack on a server...).
var ErrUnexpected = errors.New("syncproto: unexpected message")

// Options configure a Peer.
type Options struct {
	// Role is the side of the connection. Default: RoleClient.
	Role Role
	// MaxOpsPerMessage bounds the ops in one sync, update or changes
	// message; larger deltas are split. At most codec.MaxOps.
	// Default: 8192.
	MaxOpsPerMessage int
	// MaxBytesPerMessage bounds the encoded change batch in one message, so
	// frames stay under the server's max_frame (a single change larger than
	// this still goes alone). Default: 256 KiB.
	MaxBytesPerMessage int
}

// DefaultOptions returns the options NewPeer uses for zero fields.
func DefaultOptions() Options {
	return Options{Role: RoleClient, MaxOpsPerMessage: 8192, MaxBytesPerMessage: 256 << 10}
}

func (o Options) withDefaults() (Options, error) {
	def := DefaultOptions()
	o.Role = cmp.Or(o.Role, def.Role)
	o.MaxOpsPerMessage = cmp.Or(o.MaxOpsPerMessage, def.MaxOpsPerMessage)
	o.MaxBytesPerMessage = cmp.Or(o.MaxBytesPerMessage, def.MaxBytesPerMessage)
	var errs []error
	if o.Role != RoleClient && o.Role != RoleServer {
		errs = append(errs, fmt.Errorf("syncproto: Options.Role %d is neither client nor server", o.Role))
	}
	if o.MaxOpsPerMessage < 1 || o.MaxOpsPerMessage > codec.MaxOps {
		errs = append(errs, fmt.Errorf("syncproto: Options.MaxOpsPerMessage %d outside [1, %d]", o.MaxOpsPerMessage, codec.MaxOps))
	}
	if o.MaxBytesPerMessage < 1 {
		errs = append(errs, fmt.Errorf("syncproto: Options.MaxBytesPerMessage %d must be positive", o.MaxBytesPerMessage))
	}
	return o, errors.Join(errs...)
}

// Peer is the sync state of one document with one remote peer: what we
// believe the peer has, which of our update batches await an ack, whether a
// resync is under way. It does no I/O and starts no goroutines: feed it the
// peer's messages (Receive), ask it what to send after local edits
// (Outgoing), and send what it returns.
type Peer struct {
	doc   Doc
	docID string
	opts  Options

	// theirs is what we believe the peer has: what it told us (subscribe,
	// sync), plus what it sent us, plus what we sent it (optimistically:
	// a lost message shows up as missing dependencies and a resync). nil
	// until the peer's version is known.
	theirs crdt.VersionVector
	// confirmed (client) is what the server has confirmed having: its sync
	// version, the changes it sent, our acked batches. Saved compares it
	// with the document.
	confirmed crdt.VersionVector
	// unacked (client) maps batch ids awaiting an ack to the version each
	// batch brings the server to.
	unacked   map[uint64]crdt.VersionVector
	nextBatch uint64
	// resyncing: we sent a subscribe and wait for its sync.
	resyncing bool
	// halted (client): the server refused a batch for a reason resending
	// cannot fix; nothing more is sent until Resume or Reset.
	halted     bool
	haltStatus Status
	haltMsg    string
	// received holds the changes decoded from the last sync or changes
	// message Receive applied (see Received).
	received []crdt.Change
	// parts assembles the version of the next subscribe or sync from the
	// version_part messages before it.
	parts VersionParts
}

// NewPeer returns the sync state of document docID (held in doc) with one
// remote peer. It reports every invalid option at once.
func NewPeer(doc Doc, docID string, opts Options) (*Peer, error) {
	o, err := opts.withDefaults()
	if doc == nil {
		err = errors.Join(err, errors.New("syncproto: NewPeer with nil Doc"))
	}
	if docID == "" || len(docID) > MaxDocIDLen {
		err = errors.Join(err, fmt.Errorf("syncproto: document id of %d bytes outside [1, %d]", len(docID), MaxDocIDLen))
	}
	if err != nil {
		return nil, err
	}
	return &Peer{doc: doc, docID: docID, opts: o, unacked: map[uint64]crdt.VersionVector{}, nextBatch: 1}, nil
}

// Subscribe returns the subscribe that asks the peer for what we lack (and,
// in its reply, tells us what it has): one message, or, when our version
// vector would not fit in MaxBytesPerMessage, version_part messages and
// then the subscribe. Send them when the connection is up, and again after
// Reset.
func (p *Peer) Subscribe() []Message {
	p.resyncing = true
	return versionMessages(p.docID, p.doc.Version(), p.opts.MaxBytesPerMessage, &Subscribe{Doc: p.docID})
}

// Reset forgets everything about the peer: call it when the connection
// drops (the peer may come back with less than before, e.g. restarted
// empty). Unacked batches are forgotten too; after the next sync, Outgoing
// resends whatever the peer lacks.
func (p *Peer) Reset() {
	p.theirs, p.confirmed = nil, nil
	clear(p.unacked)
	p.parts.Reset()
	p.resyncing, p.halted, p.haltStatus, p.haltMsg = false, false, StatusOK, ""
}

// Saved reports (client) whether the server has confirmed every change the
// document holds: all local edits are acked.
func (p *Peer) Saved() bool {
	return p.confirmed != nil && len(p.unacked) == 0 && p.confirmed.Covers(p.doc.Version())
}

// Unacked returns the number of update batches awaiting an ack.
func (p *Peer) Unacked() int { return len(p.unacked) }

// Synced reports whether the peer's version is known (a subscribe or sync
// has been exchanged since the last Reset).
func (p *Peer) Synced() bool { return p.theirs != nil }

// Halted reports (client) whether the server refused a batch with a status
// that resending cannot fix (invalid, read_only, too_large, clock_skew,
// unauthorized, not_found), and which. Outgoing sends nothing while halted.
func (p *Peer) Halted() (Status, string, bool) { return p.haltStatus, p.haltMsg, p.halted }

// Resume clears a halt (after the caller fixed its cause, e.g. re-stamped
// changes after clock_skew) and returns the subscribe that restarts the sync.
func (p *Peer) Resume() []Message {
	p.halted, p.haltStatus, p.haltMsg = false, StatusOK, ""
	p.theirs = nil
	return p.Subscribe()
}

// Received returns the changes decoded from the message the last Receive
// applied (a sync or changes message), in message order, or nil after any
// other message. They are what the peer sent, which is not always what was
// new: duplicates of changes the document already held are included, and
// changes that the message released from the document's pending buffer
// are not. A caller that wants exactly what was applied can take them as
// is when they all lie past its version before Receive and nothing was or
// is pending, and fall back to ChangesSince otherwise (clients/go does).
// The slice belongs to the Peer until the next Receive: read it, do not
// keep or modify it.
func (p *Peer) Received() []crdt.Change { return p.received }

// Outgoing returns the messages that carry the changes the peer lacks
// (update batches for a client, changes for a server), split per
// MaxOpsPerMessage and MaxBytesPerMessage, and assumes the peer will have
// them. Call it after local edits or after applying changes from another
// peer. It returns nothing until the peer's version is known, or while
// halted.
func (p *Peer) Outgoing() []Message {
	if p.theirs == nil || p.halted {
		return nil
	}
	return p.send(p.doc.ChangesSince(p.theirs))
}

func (p *Peer) send(chs []crdt.Change) []Message {
	var out []Message
	for _, part := range p.split(chs) {
		for _, c := range codec.EncodeChunks(part, p.opts.MaxBytesPerMessage) {
			cov := coverage(c.Changes)
			p.theirs.Merge(cov)
			if p.opts.Role == RoleClient {
				id := p.nextBatch
				p.nextBatch++
				p.unacked[id] = cov
				out = append(out, &Update{Doc: p.docID, Batch: id, Changes: c.Data})
			} else {
				out = append(out, &Changes{Doc: p.docID, Changes: c.Data})
			}
		}
	}
	return out
}

// split cuts chs into runs of at most MaxOpsPerMessage ops (a change with
// more goes alone).
func (p *Peer) split(chs []crdt.Change) [][]crdt.Change {
	var out [][]crdt.Change
	start, ops := 0, 0
	for i := range chs {
		n := len(chs[i].Ops)
		if i > start && ops+n > p.opts.MaxOpsPerMessage {
			out = append(out, chs[start:i])
			start, ops = i, 0
		}
		ops += n
	}
	if start < len(chs) {
		out = append(out, chs[start:])
	}
	return out
}

// advance raises v (if not nil) to cover chs.
func advance(v crdt.VersionVector, chs []crdt.Change) {
	if v == nil {
		return
	}
	for i := range chs {
		if e := chs[i].End(); e > v[chs[i].Replica] {
			v[chs[i].Replica] = e
		}
	}
}

// coverage returns, per replica, the last seq the changes reach.
func coverage(chs []crdt.Change) crdt.VersionVector {
	v := crdt.VersionVector{}
	for i := range chs {
		if e := chs[i].End(); e > v[chs[i].Replica] {
			v[chs[i].Replica] = e
		}
	}
	return v
}

// Receive handles one message from the peer and returns the messages to
// send back, in order. Duplicated, reordered or stale messages are
// harmless: applying changes twice is a no-op, and changes whose
// dependencies are missing wait inside the document while Receive asks for
// a resync.
//
// A server answers an update with an ack. HAZARD: the ack in out must be
// sent only after the changes it acknowledges are durable: the caller
// persists doc.ChangesSince(versionBefore) first. A refused update (invalid
// changes, clock skew, full pending buffer, missing dependencies) becomes an
// ack with the matching status and leaves the document untouched; err is
// nil because the refusal is the answer.
//
// err is non-nil (and out empty) when the message does not belong here
// (ErrUnexpected), or when a sync or changes message from the other side
// carries changes this document cannot take (wrapping codec.ErrCorrupt,
// crdt.ErrInvalidChange, hlc.ErrClockOffset or crdt.ErrPendingFull); the
// document is then untouched and the caller should report the error and
// drop the connection.
func (p *Peer) Receive(m Message) ([]Message, error) {
	p.received = nil
	if d := DocOf(m); d != p.docID {
		return nil, fmt.Errorf("%w: %s for document %q on the sync of %q", ErrUnexpected, m.Type(), d, p.docID)
	}
	switch m := m.(type) {
	case *VersionPart:
		if err := p.parts.Add(m.Version); err != nil {
			return nil, fmt.Errorf("syncproto: version of %q: %w", p.docID, err)
		}
		return nil, nil

	case *Subscribe:
		if p.opts.Role != RoleServer {
			return nil, fmt.Errorf("%w: subscribe sent to a client", ErrUnexpected)
		}
		theirs, err := p.parts.Take(m.Version)
		if err != nil {
			return nil, fmt.Errorf("syncproto: version of %q: %w", p.docID, err)
		}
		// The peer says exactly what it has: replace our belief.
		p.theirs = theirs.Clone()
		msgs := p.send(p.doc.ChangesSince(p.theirs))
		version := p.doc.Version()
		if dd, ok := p.doc.(DurableDoc); ok {
			version = dd.DurableVersion()
		}
		sync := &Sync{Doc: p.docID}
		vmsgs := versionMessages(p.docID, version, p.opts.MaxBytesPerMessage, sync)
		if n := len(msgs); n > 0 && len(vmsgs) == 1 {
			// Catch-up too large for one message: changes first, the last
			// part in the sync, so the sync marks the end of the catch-up.
			// (Not with a split version: the sync carries its last part.)
			sync.Changes = msgs[n-1].(*Changes).Changes
			msgs = msgs[:n-1]
		}
		return append(msgs, vmsgs...), nil

	case *Unsubscribe:
		if p.opts.Role != RoleServer {
			return nil, fmt.Errorf("%w: unsubscribe sent to a client", ErrUnexpected)
		}
		p.theirs = nil
		p.parts.Reset()
		return nil, nil

	case *Sync:
		version, err := p.parts.Take(m.Version)
		if err != nil {
			return nil, fmt.Errorf("syncproto: version of %q: %w", p.docID, err)
		}
		chs, err := p.applyRemote(m.Changes)
		if err != nil {
			return nil, err
		}
		p.received = chs
		p.resyncing = false
		p.theirs = version.Clone()
		advance(p.theirs, chs)
		if p.opts.Role == RoleClient {
			p.confirmed = p.theirs.Clone()
			// Batches in flight before this sync may or may not have
			// arrived; the sync version says what did, and Outgoing
			// resends the rest under new batch ids.
			clear(p.unacked)
		}
		// NB: no resync here even if changes still wait for dependencies:
		// the sync was the peer's whole catch-up, so it lacks them too, and
		// asking again would loop. They arrive when their author delivers.
		return p.Outgoing(), nil

	case *Changes:
		pendingBefore := p.doc.Pending()
		chs, err := p.applyRemote(m.Changes)
		if err != nil {
			return nil, err
		}
		p.received = chs
		// NB: straight from the changes, not through coverage: this runs
		// for every change a client receives, and the map coverage builds
		// was a tenth of Receive.
		advance(p.theirs, chs)
		p.confirm(chs)
		if p.doc.Pending() > pendingBefore && !p.resyncing {
			// A message was lost (or overtaken): ask for everything we
			// lack. One resync per episode; the sync ends it.
			return p.Subscribe(), nil
		}
		if p.opts.Role == RoleClient {
			// NB: a client's only peer is its server, so what it just
			// applied came from the server and is nothing to send back;
			// its own edits go out when its owner calls Outgoing after
			// them. Skipping the ChangesSince here was 4% of a 200-client
			// load generator.
			return nil, nil
		}
		return p.Outgoing(), nil

	case *Update:
		if p.opts.Role != RoleServer {
			return nil, fmt.Errorf("%w: update sent to a client", ErrUnexpected)
		}
		ack := &Ack{Doc: p.docID, Batch: m.Batch}
		chs, err := codec.DecodeChanges(m.Changes)
		if err == nil {
			err = p.doc.Apply(chs...)
		}
		if err != nil {
			ack.Status, ack.Message = StatusFor(err), truncate(err.Error(), MaxMessageLen)
			return []Message{ack}, nil
		}
		cov := coverage(chs)
		if p.theirs != nil {
			p.theirs.Merge(cov)
		}
		if !p.doc.Version().Covers(cov) {
			// Held in the pending buffer: not applied, so not durable.
			ack.Status = StatusMissingDeps
			ack.Message = "changes depend on changes this server does not have; resync"
		}
		return []Message{ack}, nil

	case *Ack:
		if p.opts.Role != RoleClient {
			return nil, fmt.Errorf("%w: ack sent to a server", ErrUnexpected)
		}
		cov, ok := p.unacked[m.Batch]
		if !ok {
			// A batch from before a Reset or a sync: nothing to do.
			return nil, nil
		}
		delete(p.unacked, m.Batch)
		switch {
		case m.Status == StatusOK:
			if p.confirmed != nil {
				p.confirmed.Merge(cov)
			}
			return nil, nil
		case m.Status.Retryable():
			// Forget the optimistic belief: the next Outgoing resends from
			// what the server confirmed. The caller paces it (backoff).
			p.rewind()
			return nil, nil
		case m.Status == StatusPendingFull || m.Status == StatusMissingDeps:
			// The server lacks what our changes build on: start over from
			// its version.
			p.theirs = nil
			clear(p.unacked)
			return p.Subscribe(), nil
		default:
			p.rewind()
			p.halted, p.haltStatus, p.haltMsg = true, m.Status, m.Message
			return nil, nil
		}
	}
	return nil, fmt.Errorf("%w: %s is not part of document sync", ErrUnexpected, m.Type())
}

// confirm raises confirmed (client) to cover changes the server sent.
// NB: a server may echo a client's own changes before they are durable
// (an update that released changes from its pending buffer goes back to
// its author too); only the ack of the batch that carried them confirms
// those.
func (p *Peer) confirm(chs []crdt.Change) {
	if p.confirmed == nil {
		return
	}
	if len(p.unacked) == 0 {
		advance(p.confirmed, chs)
		return
	}
	for i := range chs {
		c := &chs[i]
		if p.inFlight(c) {
			continue
		}
		if e := c.End(); e > p.confirmed[c.Replica] {
			p.confirmed[c.Replica] = e
		}
	}
}

// inFlight reports whether c lies in an update batch awaiting its ack.
func (p *Peer) inFlight(c *crdt.Change) bool {
	for _, cov := range p.unacked {
		if cov[c.Replica] >= c.Seq {
			return true
		}
	}
	return false
}

// rewind falls back to what the server confirmed.
func (p *Peer) rewind() {
	if p.confirmed != nil {
		p.theirs = p.confirmed.Clone()
	} else {
		p.theirs = nil
	}
}

// applyRemote decodes and applies changes the peer sent and returns them.
func (p *Peer) applyRemote(data []byte) ([]crdt.Change, error) {
	if len(data) == 0 {
		return nil, nil
	}
	chs, err := codec.DecodeChanges(data)
	if err != nil {
		return nil, fmt.Errorf("syncproto: changes for %q: %w", p.docID, err)
	}
	if err := p.doc.Apply(chs...); err != nil {
		return nil, fmt.Errorf("syncproto: changes for %q: %w", p.docID, err)
	}
	return chs, nil
}

// StatusFor maps an error from decoding or applying changes to the status a
// server acks it with.
func StatusFor(err error) Status {
	switch {
	case err == nil:
		return StatusOK
	case errors.Is(err, hlc.ErrClockOffset):
		return StatusClockSkew
	case errors.Is(err, crdt.ErrPendingFull):
		return StatusPendingFull
	case errors.Is(err, crdt.ErrInvalidChange), errors.Is(err, codec.ErrCorrupt):
		return StatusInvalid
	}
	return StatusInternal
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary.
	for n > 0 && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n]
}

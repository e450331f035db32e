package syncserver

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
)

// Replicator is what a Server tells the other servers of a cluster about.
// cluster.Node implements it; cmd/weft wires it with SetReplicator. Without
// one the server is alone and none of this runs.
//
// Every method is called on a document's room goroutine (or, for
// Presence, also on a session's): none may block or call back into the
// Server synchronously. Slices passed in belong to the caller for the
// duration of the call only; a version vector passed in is the callee's.
type Replicator interface {
	// Applied reports changes freshly applied to doc, in apply order.
	// origin is "" for changes from this server's clients (WebSocket or
	// HTTP), or the name of the cluster peer that sent them. owners are
	// the ownership claims this server holds for the replicas of fresh
	// (at most one per replica; none for unclaimed ones), which a peer
	// must learn before it applies fresh (see PeerOwners).
	// encoded gives fresh cut into chunks of at most half the server's
	// frame limit, encoded once for the subscribers, the event streams
	// and the Replicator (it encodes at its first call).
	Applied(doc string, fresh []crdt.Change, encoded func() []codec.Chunk, origin string, owners []syncproto.Owner)
	// Durable reports that the store now holds doc at version v at least
	// (after each store write): v is what the write raised, to be merged
	// into what was reported before.
	Durable(doc string, v crdt.VersionVector)
	// Presence reports a presence or presence_leave message of one of this
	// server's sessions, identity already filled in, after coalescing.
	Presence(doc string, m syncproto.Message)
	// AwaitPeers is asked, once a client's batch is durable here, to call
	// done exactly once: with StatusOK when enough peers hold need durably
	// (--ack-peers), or with a refusal when it gives up. It may call done
	// before returning.
	AwaitPeers(doc string, need crdt.VersionVector, done func(syncproto.Status, string))
}

// VersionStore is implemented by stores that keep each document's version
// vector in the same atomic write as its data, so that a cluster can
// compare documents without loading them. With one, the server passes
// the version the store holds after each write.
type VersionStore interface {
	// AppendVersion is Store.Append that also records that the document
	// now holds at least version: the entry-wise maximum of what it held
	// and version. The ends of the batch's changes are enough.
	AppendVersion(ctx context.Context, doc string, batch []byte, version crdt.VersionVector) (logBytes int64, err error)
	// WriteSnapshotVersion is Store.WriteSnapshot that also records
	// version.
	WriteSnapshotVersion(ctx context.Context, doc string, snapshot []byte, version crdt.VersionVector) error
}

// replication is the Server's side of a cluster: the Replicator and the
// presence of other servers' sessions.
type replication struct {
	r atomic.Pointer[Replicator]

	mu struct {
		sync.Mutex
		// remote holds, per document, the last presence frame of each
		// session of another server, replayed to new local subscribers.
		remote map[string]map[string]remotePresence
	}
}

type remotePresence struct {
	frame []byte
	at    time.Time
}

// SetReplicator makes the server report to rep (see Replicator). Call it
// before the server takes traffic; nil detaches.
func (s *Server) SetReplicator(rep Replicator) {
	if rep == nil {
		s.repl.r.Store(nil)
		return
	}
	s.repl.r.Store(&rep)
}

func (s *Server) replicator() Replicator {
	if p := s.repl.r.Load(); p != nil {
		return *p
	}
	return nil
}

// PeerUpdate applies changes that the cluster peer named peer sent for
// doc. A peer is trusted: its changes are not checked against replica
// ownership (it relays other users' changes) and claim nothing; the claims
// that go with them come first, through PeerOwners. The changes fan out to this server's
// subscribers and are persisted; ack is called once, from the room
// goroutine, after they are durable (StatusOK) or refused; it must not
// block. PeerUpdate blocks only while the document loads or its queue is
// full.
func (s *Server) PeerUpdate(ctx context.Context, doc, peer string, changes []crdt.Change, size int64, ack func(syncproto.Status, string)) error {
	if peer == "" {
		return fmt.Errorf("syncserver: PeerUpdate needs the peer's name")
	}
	r, err := s.acquire(ctx, doc)
	if err != nil {
		return err
	}
	defer s.release(r)
	return r.send(ctx, cmdUpdate{user: "peer:" + peer, peer: peer, changes: changes, size: size, received: time.Now(), ack: ack})
}

// PeerSync answers a cluster peer's subscribe: doc's changes since
// version, encoded in chunks of at most maxBytes (codec.EncodeChunks), the
// version the store holds durably (a peer may count it as confirmed; what
// it sends back on that belief beyond it is a harmless duplicate), and the
// ownership claims this server holds for the replicas of those changes,
// which the peer must learn (PeerOwners) before it applies them. It loads
// the document if needed; everything returned is the caller's (the
// chunks' changes are copies).
func (s *Server) PeerSync(ctx context.Context, doc string, since crdt.VersionVector, maxBytes int) ([]codec.Chunk, crdt.VersionVector, []syncproto.Owner, error) {
	r, err := s.acquire(ctx, doc)
	if err != nil {
		return nil, nil, nil, err
	}
	defer s.release(r)
	type result struct {
		chunks  []codec.Chunk
		version crdt.VersionVector
		owners  []syncproto.Owner
	}
	// Buffered: the room never waits for a caller that gave up.
	done := make(chan result, 1)
	err = r.send(ctx, cmdDo{fn: func(r *room) {
		changes := r.doc.ChangesSince(since)
		done <- result{codec.EncodeChunks(changes, maxBytes), r.durable.Clone(), r.ownersOf(changes)}
	}})
	if err != nil {
		return nil, nil, nil, err
	}
	select {
	case res := <-done:
		return res.chunks, res.version, res.owners, nil
	case <-r.done:
		// The room exited, perhaps after running the command (shutdown).
		select {
		case res := <-done:
			return res.chunks, res.version, res.owners, nil
		default:
			return nil, nil, nil, fmt.Errorf("syncserver: document %q is closed", doc)
		}
	case <-ctx.Done():
		return nil, nil, nil, ctx.Err()
	}
}

// PeerOwners takes the replica ownership claims that the cluster peer
// named peer holds for doc; a peer sends them before the changes of those
// replicas (Replicator.Applied, PeerSync), and the caller hands them over
// in the order it received them, before those changes (room commands run
// in order). A claim for a replica that has no owner here is adopted: it
// is recorded as if a client of this server had made it (stored before
// the next write of the document), so that nobody else may write with
// that replica through this server. A claim that contradicts the owner
// recorded here is dropped, the local owner kept, and it is counted
// (weft_peer_owner_conflicts_total) and logged: two principals wrote with
// one new replica id through two servers before either heard of the other
// (see the HAZARD on ownership in the package doc). A claim for this
// server's own replica is dropped likewise. PeerOwners blocks only while
// the document loads or its queue is full.
func (s *Server) PeerOwners(ctx context.Context, doc, peer string, owners []syncproto.Owner) error {
	if peer == "" {
		return fmt.Errorf("syncserver: PeerOwners needs the peer's name")
	}
	if len(owners) == 0 {
		return nil
	}
	for _, o := range owners {
		if o.Replica.IsZero() || o.Principal == "" {
			return fmt.Errorf("syncserver: peer %s sent a claim without a replica or a principal for %q", peer, doc)
		}
	}
	r, err := s.acquire(ctx, doc)
	if err != nil {
		return err
	}
	defer s.release(r)
	owners = slices.Clone(owners) // the room runs after we return
	return r.send(ctx, cmdDo{fn: func(r *room) { r.adoptOwners(peer, owners) }})
}

// adoptOwners takes a peer's claims (see PeerOwners).
func (r *room) adoptOwners(peer string, owners []syncproto.Owner) {
	for _, o := range owners {
		local, ok := r.owners[o.Replica]
		switch {
		case o.Replica == r.s.opts.Replica:
			// Nobody writes with it here; a peer that relays our claim on
			// it says so, anything else is a conflict.
			if o.Principal != ServerPrincipal {
				r.s.m.ownerConflicts.Inc()
				r.s.log.Warn("a peer claims this server's own replica; ignored",
					"doc", r.id, "replica", o.Replica, "peer", peer, "peer_principal", o.Principal)
			}
		case !ok:
			r.claim(o.Replica, o.Principal)
			r.s.m.ownersAdopted.Inc()
		case local != o.Principal:
			r.s.m.ownerConflicts.Inc()
			r.s.log.Warn("a peer's replica owner contradicts this server's; keeping this server's",
				"doc", r.id, "replica", o.Replica, "principal", local, "peer", peer, "peer_principal", o.Principal)
		}
	}
}

// ownersOf returns the claims the room holds for the replicas of changes,
// one per claimed replica; the server's own replica is claimed for
// ServerPrincipal.
func (r *room) ownersOf(changes []crdt.Change) []syncproto.Owner {
	var out []syncproto.Owner
	var seen map[crdt.ReplicaID]struct{} // once out is too long to scan
	var last crdt.ReplicaID
	for i := range changes {
		id := changes[i].Replica
		if i > 0 && id == last {
			continue // runs of one replica are the usual case
		}
		last = id
		p, ok := r.owners[id]
		if id == r.s.opts.Replica {
			p, ok = ServerPrincipal, true
		}
		if !ok {
			continue
		}
		if seen == nil && len(out) >= 8 {
			seen = make(map[crdt.ReplicaID]struct{}, 2*len(out))
			for _, o := range out {
				seen[o.Replica] = struct{}{}
			}
		}
		if seen != nil {
			if _, dup := seen[id]; dup {
				continue
			}
			seen[id] = struct{}{}
		} else if slices.ContainsFunc(out, func(o syncproto.Owner) bool { return o.Replica == id }) {
			continue
		}
		out = append(out, syncproto.Owner{Replica: id, Principal: p})
	}
	return out
}

// PeerPresence relays a presence or presence_leave message of a session
// on another server to doc's local subscribers, if doc is loaded here
// (nobody else could see it). Its identity fields are the other server's
// and are kept. It never blocks.
func (s *Server) PeerPresence(doc string, m syncproto.Message) {
	var session string
	switch p := m.(type) {
	case *syncproto.Presence:
		session = p.Session
	case *syncproto.PresenceLeave:
		session = p.Session
	default:
		return
	}
	frame, err := syncproto.Encode(m)
	if err != nil {
		s.log.Warn("a peer's presence does not encode", "doc", doc, "err", err)
		return
	}
	s.repl.mu.Lock()
	if _, leave := m.(*syncproto.PresenceLeave); leave {
		delete(s.repl.mu.remote[doc], session)
		if len(s.repl.mu.remote[doc]) == 0 {
			delete(s.repl.mu.remote, doc)
		}
	} else {
		if s.repl.mu.remote == nil {
			s.repl.mu.remote = make(map[string]map[string]remotePresence)
		}
		if s.repl.mu.remote[doc] == nil {
			s.repl.mu.remote[doc] = make(map[string]remotePresence)
		}
		s.repl.mu.remote[doc][session] = remotePresence{frame: frame, at: time.Now()}
	}
	s.repl.mu.Unlock()
	s.rooms.Lock()
	r := s.rooms.m[doc]
	s.rooms.Unlock()
	if r == nil {
		return
	}
	r.trySend(cmdDo{fn: func(r *room) {
		for sess := range r.subs {
			sess.queueFrame(frame)
		}
	}})
}

// replayPeerPresence sends a new subscriber the presence of the sessions
// of other servers (those heard from within PresenceTTL).
func (r *room) replayPeerPresence(sess *session) {
	rp := &r.s.repl
	now := time.Now()
	rp.mu.Lock()
	defer rp.mu.Unlock()
	for id, p := range rp.mu.remote[r.id] {
		if now.Sub(p.at) >= r.s.opts.PresenceTTL {
			delete(rp.mu.remote[r.id], id)
			continue
		}
		sess.queueFrame(p.frame)
	}
}

// replicateApplied tells the Replicator about fresh changes and the
// claims on their replicas.
func (r *room) replicateApplied(fresh []crdt.Change, encoded func() []codec.Chunk, origin string) {
	if rep := r.s.replicator(); rep != nil && len(fresh) > 0 {
		var owners []syncproto.Owner
		if origin == "" {
			// A peer's changes are not pushed on (their origin pushed
			// them to everyone, with its claims).
			owners = r.ownersOf(fresh)
		}
		rep.Applied(r.id, fresh, encoded, origin, owners)
	}
}

// replicateDurable tells the Replicator what the store now holds (v: what
// the write raised).
func (r *room) replicateDurable(v crdt.VersionVector) {
	if rep := r.s.replicator(); rep != nil {
		rep.Durable(r.id, v.Clone())
	}
}

// replicatePresence tells the Replicator about a local session's presence.
func (r *room) replicatePresence(m syncproto.Message) {
	if rep := r.s.replicator(); rep != nil {
		rep.Presence(r.id, m)
	}
}

// withPeerAcks wraps the ack of a client's update so that ok waits for the
// Replicator (--ack-peers). Peers' own updates are acked on local
// durability alone.
func (r *room) withPeerAcks(c *cmdUpdate, need crdt.VersionVector, ack func(syncproto.Status, string)) func(syncproto.Status, string) {
	rep := r.s.replicator()
	if rep == nil || c.peer != "" {
		return ack
	}
	doc := r.id
	return func(st syncproto.Status, msg string) {
		if st != syncproto.StatusOK {
			ack(st, msg)
			return
		}
		rep.AwaitPeers(doc, need, ack)
	}
}

// storeAppend appends batch, recording that the document now holds at
// least raised (the ends of the batch's changes) when the store keeps
// versions.
func storeAppend(ctx context.Context, st Store, doc string, batch []byte, version crdt.VersionVector) (int64, error) {
	if vs, ok := st.(VersionStore); ok {
		return vs.AppendVersion(ctx, doc, batch, version)
	}
	return st.Append(ctx, doc, batch)
}

// storeSnapshot writes a snapshot, recording version when the store keeps
// versions.
func storeSnapshot(ctx context.Context, st Store, doc string, snap []byte, version crdt.VersionVector) error {
	if vs, ok := st.(VersionStore); ok {
		return vs.WriteSnapshotVersion(ctx, doc, snap, version)
	}
	return st.WriteSnapshot(ctx, doc, snap)
}

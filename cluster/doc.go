// Package cluster makes several weft servers one service: they find each
// other by gossip (hashicorp/memberlist) and replicate every document over
// direct, authenticated peer links, so an editor may connect to any of
// them and a server that dies, restarts or is cut off converges by itself.
//
// # Model
//
// A Node is one server's member of the cluster. It wraps three things:
//
//   - Membership: memberlist with its LAN defaults, gossip encrypted with
//     the 32-byte cluster key. A node's metadata carries the address of its
//     peer link listener; gossip carries membership only, never documents.
//     memberlist forgets a dead node after GossipToTheDeadTime; like Serf,
//     the Node remembers failed members and re-joins one at random every
//     ReconnectInterval (for ReconnectTimeout, 24h by default), and re-joins
//     the Join seeds and the members it saved in PeersFile (at start and
//     whenever it is alone), so the cluster re-forms after a partition of
//     any length and after every node restarted, seeds or not. Shutdown
//     sends no leave: the others treat a stopped node as failed and
//     re-join it when it is back.
//   - Peer links: every node dials one TCP link to every live member and
//     pushes on it, as update messages, the changes its own clients make,
//     as soon as its room applied them (Applied). The other end applies
//     them as a trusted replica (syncserver's PeerUpdate), fans them out to
//     its subscribers, persists them and acks after they are durable. The
//     link speaks crdt/syncproto: subscribe/sync to repair a document,
//     update/ack, changes, presence, and owners: the replica ownership
//     claims on the replicas of the changes that follow (before a
//     connection's first update of a claimed replica, and before every
//     subscribe's answer), which the other end adopts through syncserver's
//     PeerOwners before it applies those changes. It starts with a mutual
//     HMAC-SHA256 challenge over fresh nonces, so a process without the key
//     learns nothing. See docs/PROTOCOL.md section 14.
//   - Anti-entropy: a digest per document (a hash of its durable version
//     vector, kept current by every store write via Durable and rebuilt at
//     start from the versions storage records with each write) XOR-combined
//     into Buckets buckets. A round sends the buckets; the other end lists
//     its documents of each differing bucket; the sender subscribes to each
//     document that differs, which repairs both directions. Rounds run
//     every AntiEntropyInterval and when a link comes up.
//
// Placement is full replication: every node keeps every document (peers
// is the set of live members). Rendezvous placement on R replicas would
// replace the choice of links in Applied and of digests per peer.
//
// # Invariants
//
//   - An ack still means durable on the server that sent it. With
//     AckPeers K > 0 a client's ok also means K peers acked ok updates
//     covering the batch; otherwise the client gets peer_timeout after
//     AckTimeout (the change is durable here and keeps replicating).
//   - Nothing acknowledged is lost by a dropped push: a change that never
//     reached a peer (its link was down, its queue overflowed, it crashed
//     before persisting) differs in the digests of the next round, which
//     syncs exactly that document.
//   - No document is loaded to learn that nothing differs: identical
//     digests end a round after one message each way.
//   - A node never waits for a slow peer: a link whose send queue fills is
//     closed and repaired by the anti-entropy round of its reconnect.
//   - Claims before changes: a node that applies a peer's changes of a
//     replica has first taken the peer's claim on that replica (the owners
//     message precedes them on the same connection: link.push queues
//     both under one lock, the acceptor sends them ahead of its subscribe
//     answer), so it refuses that replica to every principal but its
//     owner. A pusher's connection carries each (document, replica) claim
//     once with live updates (a repair carries every claim on its
//     changes). A node that cannot take claims never applies the changes
//     without them: an acceptor refuses that document's updates for the
//     rest of the connection (the document still reaches it by its own
//     link's repairs), a pusher closes the link (as when it cannot apply
//     a subscribe's answer).
//
// # Failure handling
//
// A crashed node restarts from its own Pebble store, re-joins (its seeds,
// or the others re-join it), and its links' first round repairs what it
// missed both ways. A partitioned node keeps serving its clients; when the
// partition heals the reconnect loop re-joins the failed members and the
// rounds merge both sides' edits (CRDTs: no conflicts to resolve). A peer
// that was offline for a day costs a round plus one subscribe per document
// that changed. Presence is best effort: it crosses links as it is
// relayed, and a remote session's state is forgotten PresenceTTL after it
// was last heard of.
//
// # Example
//
//	node, err := cluster.New(cluster.Options{Gossip: "0.0.0.0:7946", Join: seeds,
//		Key: key, Local: srv, Versions: store, Registry: reg, Logger: log})
//	if err != nil { ... }
//	srv.SetReplicator(node)
//	...
//	srv.Shutdown(ctx) // first: rooms persist and report what they hold
//	node.Shutdown(ctx)
//
// # Concurrency
//
// All methods are safe for concurrent use. Applied, Durable, Presence and
// AwaitPeers are called on room goroutines and never block (they queue
// frames, or write one at once: a frame sent while the link has nothing
// queued or being written goes out with one non-blocking write(2) by the
// sender, and only what the socket does not take waits for the link's
// writer; a link's reads and writes are raw system calls, internal/sockio). An acceptor's acks are the exception: on a connection that
// wrote within the last AckDelay (2 ms by default) an ack waits up to
// AckDelay, so that the acks of updates that became durable close
// together share one write (and the pusher one read); it leaves sooner
// with any other frame written to that pusher, or when the connection's
// timer (time.AfterFunc, stopped when the connection closes) writes it.
// Each link has one reader goroutine (that calls Local, which may block
// while a document loads) and one writer; one manager goroutine
// follows membership events; one reconnector re-joins members. Shutdown
// stops them all and waits.
//
// HAZARD: every node of a cluster must use the same Buckets (a digest with
// another count is refused) and the same key.
//
// HAZARD: changes a node received from a peer are not pushed on to other
// peers: when the mesh is partial (A reaches B, B reaches C, A does not
// reach C), A's changes reach C by anti-entropy, within a round.
//
// HAZARD: replica ownership (syncserver's "Replica ownership") is decided
// on each node at a replica's first write there, and a peer's claims only
// fill in replicas without an owner. Two principals writing with the same
// new replica id through two nodes before either node has the other's
// first change of it each become the owner on their node (the conflict is
// counted and logged when the claims cross), and writing the same seqs
// makes the nodes keep different changes under one id, which anti-entropy
// cannot see. See syncserver's HAZARD on ownership.
//
// HAZARD: memberlist's Members returns nodes it keeps writing to; the Node
// keeps its own copies from the event callbacks instead.
package cluster

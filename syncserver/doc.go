// Package syncserver is weft's WebSocket and HTTP server: it lets many
// editors sync documents through one process, with presence, auth, limits
// and durable acknowledgements.
//
// # Model
//
// A Server serves documents (identified by application-chosen ids such as
// "notes/42") to sessions (WebSocket connections speaking
// crdt/syncproto messages) and to plain HTTP clients (JSON reads, event
// streams, POSTed changes). Each live document is a room: one goroutine
// that owns the crdt.Doc, its subscribers, its presence table and its
// event streams. Everything that touches a document is a command sent to
// its room, so the document needs no lock.
//
// Endpoints (see docs/PROTOCOL.md for the wire format):
//
//	/v1/ws                        WebSocket, binary msgpack frames, many documents per socket
//	GET  /v1/docs/{id}            the document as JSON; ?at=<RFC 3339> as it was then
//	GET  /v1/docs/{id}/events     Server-Sent Events of its changes, resumable (Last-Event-ID); ?format=json
//	POST /v1/docs/{id}/changes    apply a batch (body: codec.EncodeChanges bytes)
//	POST /v1/docs/{id}/ops        edit in JSON ([{"field":"body","insert":"hi","at":0}, ...])
//	/metrics, /healthz, /readyz
//
// Document ids may contain '/'. The HTTP routes match the /events,
// /changes and /ops suffixes on the escaped path; an id that itself ends
// in one of them is written with that last slash as %2F. HTTP requests carry
// their token as "Authorization: Bearer T" or, for EventSource, as
// ?access_token=T.
//
// # Invariants
//
//   - Ack after durable. An update is acked ok only after Store.Append (or
//     a snapshot covering it) has returned: the room keeps the durable
//     version vector and acks a batch when it covers the highest seq of every
//     replica in the batch. A batch whose changes wait for dependencies the
//     server lacks is answered missing_deps at once: the changes stay in the
//     document's pending buffer (and apply when the dependencies arrive),
//     but the batch is not durable, so the client resyncs and resends.
//
//   - Fail-stop. A store error is never retried: the room acks nothing
//     more (waiting batches get status internal, so clients keep them), the
//     server reports the error once on Fatal() and Options.OnFatal, and
//     /healthz fails. `weft serve` exits non-zero.
//
//   - Load before serve. A room answers no command before its load has
//     finished; concurrent first requests share that one load. A room starts
//     from what the store returned and only appends to it, so an empty state
//     never overwrites a stored one. A failed load leaves no room behind: the
//     next request tries again.
//
//   - Exact deltas. Subscribe(version) is answered with ChangesSince(version)
//     and the server's durable version (never the in-memory one: a client
//     counts its changes in it as saved), so the client sends back exactly
//     what the server lacks on disk; what it holds only in memory comes back
//     as a harmless duplicate whose ack waits for the store. Catch-up larger than half a frame (or than codec's op
//     limits) is split with codec.EncodeChunks: changes messages first, then
//     the sync carrying the version — what syncproto.Peer's server role
//     sends, so clients drive one Peer per document against it.
//
//   - Bad input is refused whole with a status or a close code; the
//     document is untouched (crdt.Doc.Apply is atomic) and everyone else is
//     served as before. Malformed frames close the connection with
//     CloseProtocolError; unknown message types are answered with an error
//     and the connection stays open (a newer client).
//
//   - One bad document never takes the process down. A panic on a room
//     goroutine (applying, reading, persisting, or loading the document)
//     fail-stops that document only: the command that panicked, every
//     subscriber and every waiting ack get internal, event streams end,
//     weft_doc_failures_total{doc} counts it and an error log line names
//     the document with the stack. The room then answers everything with
//     internal (a new subscriber too: no reload loop on a poisonous
//     input) until nothing holds it and the janitor unloads it; the next
//     request loads the document again from the store, where nothing
//     unacknowledged was. A panic on a session's goroutines closes that
//     connection with 1011 (CloseInternalError); one in an HTTP handler
//     answers 500 internal; both count in weft_panics_total{where}.
//
// The room implements the server side of the sync protocol itself rather
// than holding a syncproto.Peer per subscriber: it decodes updates on the
// connection's reader goroutine (off the room), checks replica ownership
// before applying, and acks after the store, none of which the Peer does;
// and a Peer per (document, connection) would cost memory on every idle
// connection. Statuses come from syncproto.StatusFor.
//
// # Group commit and broadcast before persist
//
// A room applies every queued update as it arrives, broadcasts the fresh
// changes at once, and keeps them in an unpersisted list. At most one store
// write per room is in flight (in a short-lived goroutine); everything that
// arrives while it runs goes into the next single Append, so a hot document
// costs one fsync per store round trip however many clients type in it, and
// Pebble merges the concurrent fsyncs of different rooms. When the log
// outgrows both the snapshot and SnapshotMinBytes, the next write is a
// snapshot of the whole document instead (it also covers the unpersisted
// changes). Only the export of the document's state (a copy) runs on the
// room goroutine; encoding and compressing it runs with the store write.
//
// Broadcast happens before persist. Measured with BenchmarkFanout (one
// writer, one other subscriber, a store with a 2 ms fsync; 2000 edits, 2
// cores), the other subscriber sees an edit after 76 µs median (p99 0.8 ms)
// instead of 2.4 ms median (p99 9.5 ms) when the broadcast waits for the
// store: fan-out latency no longer includes the disk at all. It loses
// nothing: a change stays with its author until acked, and the author
// resends it after a crash; a subscriber that saw a change the server then
// lost sends it back on its next subscribe. The price is that other
// clients may briefly hold a change that no server has on disk.
//
// Fan-out coalesces without waiting: the updates a room takes from its
// queue in one go (those that arrived while it was busy) reach each
// subscriber as one changes message with all of them, less the
// subscriber's own. When the room keeps up, that is one message per update,
// as before; when it falls behind, frames, writes and the clients' decodes
// and applies stop growing with the backlog. Nothing is held back for a
// later update, and other commands (a newcomer's catch-up, presence) flush
// the pending fan-out first, so they never overtake it.
//
// Where a delivery's CPU goes: a room encodes a fan-out batch once for all
// the subscribers that wrote none of it (each author of part of it gets
// its own encoding, without its changes). A subscriber with nothing
// queued gets the frame at once, written by the room itself (one write(2),
// never blocking; what the socket does not take waits for a writer);
// otherwise its writer sends its frames, with those queued behind them,
// in one writev. The room's write and the session's reads are raw system
// calls (internal/sockio), which do not wake the Go runtime's monitor
// thread at every frame. With documents in memory and the server on one
// core (weft bench converge, 200 clients on 10 documents), a delivery
// costs 11-14 µs of server CPU, about half of it system time, and a CPU
// profile puts over half the server in the write: a 100-byte loopback
// write alone costs the writing thread 5.7-7.6 µs on the development VM
// (BenchmarkLoopbackWrite in bench/), most of it the hypervisor's price
// for re-enabling interrupts. What the server does in user space per
// delivery is the smaller part; see docs/performance.md. Fewer, larger writes do not buy
// much either: a build that held a room's fan-out up to 20 ms wrote 0.3
// times per delivery and still spent nine tenths of the CPU per
// delivery, since on loopback the kernel's cost goes with the frames the
// receiving side takes in more than with the write calls (same document,
// "Holding the fan-out back").
//
// # Sessions
//
// A WebSocket connection has one reader goroutine and at most one writer
// goroutine. The reader decodes frames, checks rights and rate limits,
// decodes change payloads (off the room goroutine) and sends commands to
// rooms. Everyone else hands encoded frames over without blocking: to an
// idle connection the frame is written at once, by the caller, if the
// socket takes it whole; otherwise it goes on a bounded queue, and a full
// queue closes the connection with CloseTooSlow, so a slow client never
// slows a room. The writer is started when a frame is queued and exits
// when the queue is empty (one writes at a time, so frames keep their
// order); server pings come from a timer every PingInterval.
// The first frame must be hello within AuthTimeout; a connection silent for
// PingInterval+PongTimeout is closed with CloseHeartbeatTimeout (browsers
// answer pings automatically; they may also use application ping/pong).
// A client that keeps sending after 64 rate_limited answers in a row is
// closed with CloseRateLimited; one that sends 16 batches refused as
// invalid or too_large (a correct client resends neither) is closed with
// CloseProtocolError.
//
// # Paid before worked
//
// The work and memory a request costs are bounded by what its sender has
// paid for. A change batch's header (codec.Counts) is charged to the rate
// limit before the batch is decoded (decoding allocates per declared op):
// a batch declaring more ops than ChangesBurst is refused with too_large
// (it could never pass), one the bucket cannot pay for now with
// rate_limited. What the header undercounts (multi-character inserts and
// deletes) is charged after decoding, as a debt of at most one burst. The
// WebSocket limit is per connection; POST /v1/docs/{id}/changes has one
// bucket per principal (429 rate_limited). A frame header announcing more
// than MaxFrameBytes is refused (4005) as soon as its length is read.
//
// Size limits are charged on decoded sizes, never on wire bytes (a
// compressed or run-length coded batch can be thousands of times larger
// decoded): an update costs what its changes take in memory
// (decodedSize), a document is the larger of its encoded and in-memory
// sizes, one register value is bounded by MaxValueBytes, and the pending
// buffer by MaxPendingBytes as well as MaxPending changes. What would wait
// is worked out before Apply by an in-order pass over the batch
// (waitingSize, an upper bound) only when the batch could reach the bound.
//
// Catch-up is paced, not bounded: a subscribe's answer (its changes
// messages and sync) does not count against SendQueue. Instead the reader
// hands a subscribe to its room only while fewer than 8 subscribes await
// their room's answer and less than two frames' worth (2 × MaxFrameBytes)
// of answers await writing; otherwise it waits for the flusher, and TCP
// pushes back on the client. A client resubscribing its thousand
// documents at once gets them as fast as it reads, and is never dropped
// as too slow for it; one that stops reading still fills its send queue
// with fan-out and is dropped.
//
// NB: a client dropped as too slow usually has a full socket, so its close
// frame rarely gets through: it sees the connection end (1006) instead of
// 4003. Queued frames are dropped for it; for every other close they are
// written before the close frame (the error that explains an auth
// failure, the final acks of a shutdown).
//
// # Memory
//
// An idle subscribed connection costs about 8 KB of server memory (weft
// bench conns --conns 10000: 7,945-8,281 bytes of RSS growth per
// connection, 3 runs; the usual goroutine-per-connection gorilla server
// needs 24-41 KB, Hocuspocus 35-38 KB). About half of that is live: the
// session and its channel and timer, gorilla's Conn, a 288-byte read
// buffer, the descriptor and poller state; the rest is the collector's
// headroom (the heap grows to twice what is live before a collection).
//
// An idle connection has no goroutine. The handshake runs on the HTTP
// handler goroutine, which then returns, releasing net/http's per-request
// buffers and its deep stack. The reader is a fresh goroutine; after
// ParkIdle without a frame it parks: it arms a one-shot event for the
// socket on the server's epoll instance (park_linux.go) and exits, and
// the poller's one goroutine starts a new reader when bytes arrive (a
// close, Shutdown and the session's timer resume it too). Pongs to the
// server's pings do not keep it awake: between messages the reader takes
// whole pong frames off its buffer itself (guardedConn.takePong), where
// gorilla would otherwise consume them and wait on for a message. While
// parked, the session's one timer checks the heartbeat deadline that a
// read deadline checks otherwise. gorilla reads through guardHijack's
// small buffered reader and borrows write buffers from a pool only while
// writing; an idle connection has no writer goroutine and no queue.
//
// # Auth
//
// Tokens are HS256 JWTs (github.com/golang-jwt/jwt/v5): sub (user id), name,
// color, exp (required) and docs, a list of {pattern, access} where pattern
// uses path.Match syntax and access is "read" or "write". Read-only access
// is enforced by the server: an update is refused with read_only before it
// reaches the room, so nothing changes, nothing is acked ok and nothing is
// broadcast. Origin is checked against AllowedOrigins (requests without
// Origin, i.e. non-browser clients, and same-origin requests pass).
// Insecure mode admits token-less connections as "anonymous" with write
// access, and is logged loudly. With TokenAudience or TokenIssuer set, a
// token must carry that aud or iss. Rights are taken from the token for
// as long as a connection lives, so no connection or event stream
// outlives it: at exp a session gets error(unauthorized) and close 4001,
// a stream ends.
//
// Replica ownership: a replica id belongs to the first principal that
// wrote with it in the room. A session claims only the replica it declared
// in hello (when it first writes changes of that replica); changes of any
// replica already owned by another principal are refused with unauthorized,
// unless the server already holds them (relaying is a harmless no-op).
// Not claiming relayed replicas means a client that relays another user's
// changes (after the server lost them in a crash) cannot take that user's
// replica. HTTP writers claim every replica they write. JSON edits (POST
// .../ops, EditOp) are made by the room as the server's own replica
// (Options.Replica), which nobody can claim: a client's changes of that
// replica are refused unless the server already holds them, so they
// cannot collide with the server's next edit. Ownership is kept
// with the document (Store.Owners, Store.AddOwners): a room loads it with
// the document and hands each new claim to the store before the write of
// the changes that made it, so a claim is durable before any of its
// changes is acked and holds after an idle unload or a restart. In a
// cluster, claims travel with the changes: a server hands its Replicator
// the claims on the replicas of what it applied (and PeerSync returns
// them with a peer's catch-up), and a peer's claims arrive through
// Server.PeerOwners before its changes. A replica without an owner here
// takes the peer's, recorded as a local claim would be; a contradicting
// claim keeps the local owner and is counted and logged. A server's own
// replica goes to its peers claimed for ServerPrincipal, a subject no
// token may carry, so no one can write with it through them. So a server
// that holds a peer's changes of a replica knows its owner, and the owner
// may continue with it through any server. A cluster peer's changes
// (Server.PeerUpdate) are not checked against ownership and claim
// nothing themselves: a peer is a trusted relay of other servers' users,
// which those servers checked.
//
// # Presence
//
// Presence is ephemeral and never persisted. The room fills session, user,
// name and color from the session and its token (clients cannot spoof
// them), drops states whose clock is not newer, relays at most one state
// per session per PresenceInterval (the latest: bursts coalesce), replays
// the current states to a new subscriber, expires a session silent for
// PresenceTTL and announces leaves (unsubscribe, disconnect, expiry).
//
// # Cluster
//
// A server in a cluster reports to a Replicator (SetReplicator;
// cluster.Node implements it, cmd/weft wires it, and this package does
// not import cluster): the room tells it the changes it applied and where
// they came from, the version each store write made durable (stores that
// implement VersionStore also record it with the write), and its
// sessions' presence; with --ack-peers a client's ok waits for
// AwaitPeers. Other servers' changes come in through PeerUpdate: a peer
// is a trusted replica, its changes not checked against replica ownership,
// fanned out and persisted like any update and acked after it is
// durable; the claims on their replicas come first through PeerOwners
// (the Replicator is handed them with every local change it is told of).
// PeerSync answers a peer's subscribe with exactly what it lacks, the
// durable version and the claims on the replicas it sends; PeerPresence
// relays other servers' sessions and replays them to newcomers. See
// replicate.go.
//
// # Event streams
//
// An SSE event's id is the document's version vector after the event,
// encoded as a token (base64url of replica/seq pairs). Resuming with
// Last-Event-ID therefore yields exactly ChangesSince(that version): no gap
// and no repeat, across server restarts, document unloads and other
// servers of a cluster, without any per-room counter to keep. Events are
// "changes" (data: base64 of codec.EncodeChanges bytes) and, after the
// catch-up, one "synced" (data: the version as JSON). A stream that cannot
// keep up is closed; its client resumes from its last id.
//
// A version of more than 64 replicas gets a compact token of some 30
// bytes instead, whatever the replica count (sse.go): an HLC time W that
// no change of the version is stamped after, and a count and an
// order-independent hash of the version. Since HLC times respect causality
// and a replica's times grow with its seqs, the version is the cut "every
// change stamped at or before W" (crdt.Doc.At) unless an older-stamped
// change arrived after the event; resuming rebuilds the cut and checks
// count and hash: a match resumes exactly, a mismatch starts the stream
// over after an event "reset" (never a gap). The room keeps the latest
// change time for this, computed on first need.
//
// Sync frames stay within MaxFrameBytes however many replicas a document
// has: a version vector too large for half a frame goes in version_part
// messages before the sync (and a client's subscribe likewise; a session
// assembles at most syncproto.MaxVersionEntries replicas of parts).
//
// # Lifecycle and memory
//
// Rooms are reference counted (subscribed sessions, event streams, HTTP
// requests). A loaded room costs about 12 KiB besides its document
// (roomOverhead: goroutine stack, command queue, maps), which the memory
// accounting counts, so never-written documents are not free. At most
// MaxLoadedDocs are loaded (beyond: overloaded); one principal holds at
// most MaxDocsPerUser open over all its connections and event streams
// (beyond: too_large), and each connection's subscribes are metered
// (MaxSubscribesPerSec, with a burst of MaxDocsPerConn for a reconnect),
// since each encodes a catch-up on the room goroutine. A janitor asks rooms without references that were unused for
// IdleTimeout to unload, and, when the in-memory size of all loaded documents
// exceeds MemoryBudget, the least recently used rooms without references.
// A room unloads only when nothing is in flight (no unpersisted change, no
// store write, no waiting ack), so an unload never loses data; the next
// request loads the document again.
//
// # Example
//
//	srv, err := syncserver.New(syncserver.Options{Store: store, Secret: key})
//	if err != nil { ... }
//	hs := &http.Server{Addr: "127.0.0.1:7420", Handler: srv.Handler()}
//	go hs.ListenAndServe()
//	select { case <-ctx.Done(): case err := <-srv.Fatal(): ... }
//	srv.Shutdown(shutdownCtx) // then hs.Shutdown, then close the store
//
// # Concurrency
//
// New, Handler and Fatal may be called from any goroutine; Shutdown may be
// called once or more from any goroutine. The Store is called from room
// goroutines (never concurrently for one document, concurrently for
// different ones) and must outlive Shutdown. Options.OnFatal is called at
// most once, from a room goroutine; it must not block.
//
// HAZARD: Shutdown closes hijacked WebSocket connections itself; the
// http.Server's Shutdown does not know about them. Call Server.Shutdown
// first (it also ends event streams, which the http.Server would wait for).
//
// HAZARD: a replica's owner is decided on each server at its first write
// there. Claims travel with changes (PeerOwners), so a server that holds a
// peer's changes of a replica refuses it to anyone but its owner; but if
// two principals write with the same new replica id through two servers
// before either server received the other's first change of it (within
// the relay latency, or during a partition), each server keeps its own
// writer as the owner (both count the conflict,
// weft_peer_owner_conflicts_total, and log it), and if both wrote the
// same seqs each server keeps the change it saw first and drops the other
// as a duplicate: they differ for good, with equal version vectors, so
// anti-entropy does not see it. Honest clients cannot hit this (their
// replica ids are random); a hostile writer must use a replica id before
// its owner's first change reaches that server.
//
// HAZARD: the operations-per-second limit is per WebSocket connection and
// per principal over HTTP: a user with many connections gets as many
// buckets.
//
// HAZARD: path.Match's `*` does not cross '/': a grant for "notes/*" does not
// cover "notes/a/b". Mint one pattern per depth ("notes/*/*") when ids nest.
//
// HAZARD: MemoryBudget only unloads rooms nobody holds; documents with
// subscribers stay loaded however far over budget the server is (their
// number is bounded by MaxDocsPerUser per principal and MaxLoadedDocs in
// all). An unloaded room forgets its pending buffer (never acked, so
// nothing is lost: the clients resync).
package syncserver

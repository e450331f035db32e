// Package syncproto is weft's wire protocol: the messages a client, a server
// and a cluster peer exchange, their msgpack encoding, and the sans-I/O sync
// state machine that all three drive.
//
// # Wire model
//
// Every frame (one binary WebSocket message, one peer-stream record) is one
// msgpack array [type, field, ...]: a small integer Type tag, then the
// message's fields in a fixed order. docs/PROTOCOL.md gives the byte layout
// of each message; testdata/golden holds one encoded example per message,
// checked by TestGolden, for other implementations (the TypeScript client).
// Change payloads inside sync, update and changes are opaque bins in the
// crdt/codec format, decoded only by whoever applies them.
//
// Invariants:
//   - Encode(m) validates m against the rules Decode enforces: every frame
//     Encode produces decodes to an equal message, byte-for-byte
//     deterministic (version vectors sorted by replica id).
//   - Decode treats its input as hostile: every length is checked against
//     the bytes left before anything is allocated (msgpack/v5 v5.4.1 does not
//     cap its own allocations, upstream issue #401, so this package never
//     lets the library allocate from a claimed length), nesting is bounded by
//     MaxDepth, strings are valid UTF-8 within fixed limits. Errors wrap
//     ErrMalformed and name the message and field; an unknown type tag wraps
//     ErrUnknownMessage instead, so a receiver can ignore messages from a
//     newer peer.
//   - Versioning: fields are only ever appended. Decode skips elements after
//     the fields it knows (bounded, like any other value), so an older
//     receiver accepts a newer sender's frames. A change that is not
//     backward compatible bumps ProtocolVersion.
//
// # Sync state machine
//
// A Peer is the sync state of one document with one remote peer, in the
// style of automerge's sync state or etcd raft's RawNode: messages in
// (Receive), messages out (Subscribe, Outgoing, Receive's replies), no I/O,
// no goroutines, no clock. The server runs one per (document, session)
// with RoleServer, a client one per open document with RoleClient, and a
// cluster link one per replicated document with RoleServer at both ends.
//
// Invariants:
//   - A subscribe is answered with exactly ChangesSince(its version),
//     split into changes messages and a final sync carrying our version;
//     the subscriber answers with exactly what that version lacks.
//   - What a Peer believes the peer has only grows between Resets, except
//     that a client falls back to what the server confirmed when a batch is
//     refused. Anything sent on a wrong belief is a harmless duplicate
//     (Apply is idempotent); anything missing shows up as changes pending
//     in the document, and Receive then asks for a resync.
//   - A client is Saved only when the server confirmed (sync version,
//     changes it sent, ok acks) everything the document holds. A sync's
//     version is what the server holds durably (a server Peer whose Doc
//     is a DurableDoc reports DurableVersion), and a client's own changes
//     echoed back in a changes message confirm nothing while their batch
//     awaits its ack.
//
// The rules are specified in docs/PROTOCOL.md, "Sync rules"; the
// transcripts in testdata/peer (datadriven; regenerate with -rewrite) show
// them on two and three peers with drops, duplicates, reordering and a peer
// that restarts empty.
//
// # Example
//
//	p, err := syncproto.NewPeer(doc, "notes/42", syncproto.Options{Role: syncproto.RoleClient})
//	for _, m := range p.Subscribe() { send(m) }
//	for frame := range frames {
//		m, err := syncproto.Decode(frame)
//		...
//		out, err := p.Receive(m)
//		for _, r := range out { send(r) }
//	}
//	// after a local edit:
//	for _, r := range p.Outgoing() { send(r) }
//
// # Concurrency
//
// Encode and Decode are safe for concurrent use; messages are plain values
// and a decoded message never aliases the frame it came from. A Decoder
// (one per connection's reader, not safe for concurrent use) is the
// exception: a changes message it returns is its own and aliases the
// frame, until the next frame. A Peer is not safe for concurrent use: the
// goroutine that owns the document (a room, a client's document loop) owns
// its Peers too, and calls on the document and on its Peers must not
// interleave with other writers.
//
// HAZARD: Receive applies an update to the document before returning its
// ack. The caller must persist doc.ChangesSince(versionBefore) and send the
// ack only when that is durable: the Peer cannot know when it is.
//
// HAZARD: a replica that loses its state (a server restarted on an empty
// disk, a client whose storage was cleared) must come back under a new
// replica id. Its old id's next seqs were spent on changes that others may
// hold; reusing them makes two different changes with one id, and replicas
// diverge silently.
//
// HAZARD: Outgoing advances the belief optimistically. If the caller drops
// what Outgoing returned without sending it (a full queue), it must Reset
// the Peer (and close the connection), or those changes are never resent.
//
// HAZARD: Decode does not apply a frame size cap; the transport must refuse
// an oversized frame (CloseFrameTooLarge) before reading it into memory.
//
// HAZARD: Presence.State is one raw msgpack value, validated only for shape
// and size; receivers decode it with their own limits.
package syncproto

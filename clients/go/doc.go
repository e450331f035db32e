// Package client is the Go client of weft: it keeps a local replica of each
// document an application opens, applies the application's edits to it at
// once (online or offline), and syncs it with a weft server over one
// WebSocket.
//
// # Model
//
// A Client owns one connection (re-established whenever it drops) and any
// number of open Documents multiplexed over it. Each Document holds a
// crdt.Doc. Local edits (Document.Edit, through crdt.Tx: text insert and
// delete, counter add, register set) apply locally, are appended to the
// document's file in Options.Dir (when set), and go to the server as update
// batches. The server acks a batch once it holds it durably; "saved"
// (Document.Saved, WaitSaved) means every local change is acked.
//
// The sync state of a document on a connection is a syncproto.Peer in the
// client role: the same sans-I/O state machine the server and the cluster
// drive. On (re)connect the client subscribes with its version vector; the
// server's Sync reply carries the changes the client lacks and the server's
// version vector, and the Peer then sends exactly what the server lacks. So
// a reconnect after a day offline costs O(missing), a batch lost with a
// connection is resent, and a duplicate is a no-op on both sides. A new
// Peer is made per connection, so batch ids never outlive one.
//
// Invariants:
//   - acked (the highest own seq the server holds durably) only grows; a
//     Document is saved when acked covers its own entry of the version
//     vector.
//   - Batches go out in causal order and end on change boundaries. After
//     a refusal that may succeed later the Peer rewinds to what the server
//     confirmed and the client pauses (growing delay) before resending.
//   - The replica id is stable: Options.Replica, or the id kept in Dir, or
//     a fresh UUID. Two processes never share a Dir (it is flock'ed), since
//     two writers under one replica id would reuse sequence numbers.
//
// Refusals: read_only, invalid, too_large, unauthorized and not_found make
// the document's Err (and WaitSaved) return an error wrapping ErrRejected;
// local edits stay (and in Dir), and are not sent again while the Document
// is open; opening it again retries. Updates are paced by a token bucket at 90% of the change rate the server
// announces in welcome, so a day's backlog flows instead of bouncing;
// rate_limited, overloaded and internal are retried after a growing delay.
// clock_skew (our timestamps too far ahead of the server's clock) makes the
// client wait for the outcome of the batches still in flight, correct its
// wall clock by the lead it measured at welcome, re-stamp the own changes
// the server cannot hold (never sent, or sent only in batches it refused
// whole; restamp.go) and reconnect, losing nothing. A change the server
// may hold is never re-stamped (that would make two versions of it); if it
// was refused too, it waits for the server's clock to catch up.
//
// Reconnection uses exponential backoff with full jitter, capped at 30 s
// (Backoff). Closes the server marks as final (bad token, replica id owned
// by another user, unsupported version) stop the client: Err and
// WaitConnected return an error wrapping ErrTerminal.
//
// # Example
//
//	c, err := client.Dial(ctx, client.Options{URL: "ws://127.0.0.1:7420/v1/ws", Token: tok, Dir: dir})
//	d, err := c.Open("notes/42", client.DocOptions{OnChanges: func(d *client.Document, _ []crdt.Change) { redraw(d) }})
//	err = d.Edit(func(tx *crdt.Tx, doc *crdt.Doc) error { return tx.Insert("body", doc.TextLen("body"), "!") })
//	err = d.WaitSaved(ctx)
//
// # Concurrency
//
// All methods of Client and Document are safe for concurrent use. Each
// connection has exactly one reader goroutine and one writer goroutine (the
// connection loop itself); Close stops both and waits for them. The reader
// applies remote changes and calls DocOptions callbacks with no lock held;
// a slow callback delays every document of the client, never the server.
// Lock order: Document.mu before Client.mu; no lock is held across network
// I/O (file appends happen under the document's lock, by design: the file
// is the document's durable log).
//
// HAZARD: Edit and Read run their function with the document locked;
// calling other methods of the same Document from it deadlocks.
//
// HAZARD: a document read from its file counts every own change in it as
// possibly held by the server (the previous run may have sent it): after a
// restart, changes stamped ahead of the server's clock wait until it
// catches up instead of being re-stamped.
//
// HAZARD: a Document's crdt.Doc may be replaced (after a clock_skew
// re-stamp), so never keep the *crdt.Doc that Read hands out.
package client

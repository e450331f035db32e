// Package storage keeps weft documents durably in an embedded Pebble
// database: per document a snapshot, the log of change batches appended
// since it, and metadata, with every write acknowledged only after Pebble's
// write-ahead log is fsynced.
//
// # Model
//
// The store does not understand documents: a snapshot and a batch are opaque
// bytes (crdt/codec encodes them). For each document id it holds
//
//   - at most one snapshot,
//   - the batches appended since that snapshot, numbered 1, 2, ... in append
//     order (numbers are never reused), and
//   - a DocMeta: created, updated, snapshot bytes, log bytes, batch count,
//   - its version vector, when the writer passes it (AppendVersion,
//     WriteSnapshotVersion; see versions.go), so that Versions lists what
//     every document holds without loading one (cluster anti-entropy):
//     the snapshot's whole, and per batch since only what it raised,
//   - the owners of its replica ids (replica → principal, AddOwners and
//     Owners), which outlive snapshots and never change hands.
//
// Load returns the snapshot and the batches oldest first; replaying the
// batches over the snapshot gives the document. The server (syncserver)
// decides when the log has outgrown the snapshot and calls WriteSnapshot,
// which writes the new snapshot and deletes the whole log in one atomic
// batch. Keys are laid out for ordered scans (see keys.go): a document's data
// is one contiguous range, its batches in append order, and document ids are
// escaped so that no id's keys are a prefix of another's ("a" vs "a/b").
//
// # Invariants
//
//   - Every write (its data and its metadata) is one Pebble batch applied with
//     pebble.Sync: after a crash either all of it is there or none of it.
//   - Append and WriteSnapshot return nil only after the WAL holding the write
//     is synced. Pebble groups the syncs of concurrent writers into one
//     fsync, so many documents commit concurrently at the price of about one
//     fsync each.
//   - After the first failed write the store is fail-stopped: every later
//     call returns an error wrapping ErrFailStopped, Failed() is closed, and
//     the error is logged once. This follows PostgreSQL's "fsyncgate" lesson:
//     after a failed fsync the kernel may have dropped the dirty pages, so a
//     retry that succeeds proves nothing. The process must exit and recover
//     from the disk (`weft serve` exits non-zero).
//   - Bad input (empty or oversized id, batch or snapshot) returns an error
//     wrapping ErrInvalid and writes nothing. An empty snapshot is refused, so
//     an empty in-memory state can never replace a stored document.
//
// # Example
//
//	st, err := storage.Open("weft-data", storage.DefaultOptions())
//	if err != nil { ... }
//	defer st.Close()
//	n, err := st.Append(ctx, "notes/42", codec.EncodeChanges(changes)) // durable once nil
//	if n > snapshotBytes { st.WriteSnapshot(ctx, "notes/42", codec.EncodeSnapshot(doc)) }
//	snap, batches, err := st.Load(ctx, "notes/42")
//
// # Concurrency
//
// All methods are safe for concurrent use. Writes (Append, WriteSnapshot) to
// one document must not overlap: the caller (the document's room goroutine)
// serializes them, and an overlapping write is refused with
// ErrConcurrentUse rather than risking two batches with one number. Writes to
// different documents run in parallel and share fsyncs. Load, Meta and List
// read a consistent point-in-time view. Close waits for calls in progress.
// The store holds no lock across I/O; its one mutex guards the closed flag
// and the set of documents being written.
//
// HAZARD: Pebble reports a failed WAL sync by calling Logger.Fatalf on the
// committing goroutine, and if Fatalf returns it reports success. The
// store's logger adapter panics from Fatalf and Apply recovers that panic
// into the fail-stop error; a Fatalf from a background goroutine (a
// MANIFEST sync during a flush) ends the process, which is the fail-stop
// Pebble requires there.
//
// HAZARD: Pebble panics outright on some WAL errors (closing or creating a
// WAL while rotating it). Only the Fatalf panic above is recovered; any
// other panic ends the process, which is the fail-stop we want.
//
// HAZARD: after a failed sync Pebble's memtable still shows the batch, so
// reads would serve data that may not be on disk. Load, Meta and List are
// refused after a fail-stop too.
//
// HAZARD: Pebble locks the directory. A second Open of a directory in use
// (`weft doc --data` while `weft serve` runs) fails with ErrLocked; use the
// server's HTTP API instead.
package storage

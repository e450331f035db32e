// Package crdt is weft's document model: a replica of one document, made of
// named fields that are CRDTs, edited locally in transactions and merged
// with changes from other replicas in any order.
//
// # Model
//
// A document has fields identified by name and type together (two replicas
// that create "title" with different types concurrently get two fields, not a
// conflict):
//
//   - counter: a PN-counter; every Add is an op with a non-zero delta. The
//     value is the exact sum of the deltas (kept in 128 bits, so it never
//     wraps and does not depend on their order), saturated to int64.
//   - register: a last-writer-wins register holding one msgpack value; the
//     write with the greatest (HLC time, replica id, seq) wins.
//   - text: a sequence CRDT of Unicode scalar values (runes).
//
// Every replica numbers its ops 1, 2, 3, ...: each inserted rune, deleted
// rune, counter add and register write takes one sequence number, so an ID
// (replica, seq) names one op, and a VersionVector (replica → highest seq)
// says exactly which ops a replica holds. A local transaction (Begin …
// Commit) becomes one Change: a contiguous seq range of one replica, stamped
// with one hybrid logical clock time, holding its ops.
//
// Text follows the "YjsMod" integration rule — each inserted run remembers
// its left and right origin, and concurrent inserts between the same origins
// are ordered by scanning and breaking ties by replica id — which has the
// maximal non-interleaving of FugueMax (Weidner & Kleppmann, "The Art of the
// Fugue", 2023): runs typed concurrently at one place never interleave,
// forwards or backwards. Deleted characters stay as tombstones.
//
// # Representation
//
// Nothing is stored per character but one bit. A replica's history is a log
// of spans (runs of ops of one kind on one field: typing "hello" is one span)
// and of time runs (a run of one-op transactions with consecutive HLC times
// is one entry). A text is a two-level blocked list of run-length items
// (leaves of at most 32 items in slots with free ones between them, Fenwick
// trees over the slots' lengths for position lookups) with a sorted, chunked
// index per replica mapping id ranges to leaves, a bitset per replica of the
// ids that are its characters (so validating a reference is a bit test),
// and a cursor that remembers the last position lookup. Typing at the end of
// one's own run grows the item, the index entry and the span in place.
// ChangesSince rebuilds exact changes from the log (EachChangeSince streams
// them); ExportState/FromState give codecs the structure itself, so loading
// a snapshot replays nothing, and At(t) cuts that state to the changes
// stamped ≤ t instead of replaying them.
//
// Costs, with n items and L leaves: position ↔ id lookups are O(log L +
// leaf size); inserting or deleting is that plus, when a leaf splits (one
// split per ~16 new items), O(log L) to take a free slot nearby (shifting at
// most 8 leaves), or O(L) to lay the slots out again when none is near,
// which leaves about L free slots for the next splits.
//
// # Invariants
//
//   - Applying a change twice is a no-op; changes commute; replicas that
//     hold the same ops hold the same document.
//   - A replica's changes apply in seq order; a change whose dependencies
//     (earlier seqs of its replica, characters it references) are missing
//     waits in a bounded pending buffer and is never applied half-way.
//   - Apply is atomic per batch: an invalid change, a clock_skew change or a
//     full pending buffer fails the whole batch and leaves the document
//     exactly as it was. ApplySeq, for a batch read change by change from a
//     source (codec.ChangeSeq over received bytes) so that it never exists
//     as a []Change, is atomic in the same way: what it recorded while
//     reading is taken back.
//   - At(t) includes exactly the changes stamped ≤ t; HLC times respect
//     causality, so that set is causally closed. Apply enforces it: a
//     change stamped no later than its replica's previous change or than
//     a character it names is refused (ErrBackdated). At never fails.
//   - An insert's right origin must be the first character after its left
//     origin among those the insert depends on (ErrOrigins): integrating
//     inserts whose origins contradict the text depended on arrival
//     order. The check runs as the insert is integrated; a batch refused
//     then is taken back by cutting the document's state to what it held
//     before (a pass over the document, paid only by bad input).
//   - A batch is planned in time order, so one pass over it finds every
//     change that can be applied, whatever order it came in.
//
// # Example
//
//	d := crdt.NewDoc(replica, hlc.NewClock(wall, 500*time.Millisecond), crdt.Options{})
//	tx := d.Begin()
//	tx.Insert("body", 0, "hello")
//	tx.Add("likes", 1)
//	tx.Commit()
//	send(d.ChangesSince(peerVersion))
//	err := d.Apply(received...)
//
// # Concurrency
//
// A Doc is not safe for concurrent use: one goroutine owns it (a room, a
// client's document loop). Changes returned by ChangesSince share no memory
// with the Doc; changes passed to Apply or yielded to ApplySeq are not
// retained. A change EachChangeSince yields is valid until the next.
//
// HAZARD: a Doc reuses one Tx; a *Tx must not be used after Commit. Each Tx
// method applies at once (there is no rollback of a whole transaction).
//
// HAZARD: sequence numbers are 32-bit inside a Doc: a replica can make about
// four billion ops per document. Changes beyond that are refused as invalid.
//
// HAZARD: the origin check walks the items between an insert's origins
// (none for honest typing; concurrent inserts otherwise), and when there
// are some it grows the dependency closure of the inserting replica (a
// version vector per replica, at most 32 kept, not counted by MemSize),
// or, when that closure has many other replicas' ops to read and few ops
// are stamped after the gap, searches those instead: a hostile insert
// whose origins lie far apart costs a walk over the items between them,
// as the integration scan already could.
//
// HAZARD: ApplyTrusted, for a document's own stored history, checks
// neither the max clock offset nor the time rule; never give it bytes from
// the network.
//
// HAZARD: FromState checks that a State is internally consistent (every
// index, length and reference), so a corrupt snapshot cannot crash a
// replica; it cannot check that the order of characters is the one the
// history would give. Load snapshots only from trusted storage or peers.
package crdt

// Package codec encodes weft's changes and documents as compact bytes: the
// change batches that travel in sync, update and changes messages (and as
// the body of POST /v1/docs/{id}/changes), and whole-document snapshots.
//
// # Change batches
//
// EncodeChanges writes a batch column by column (docs/PROTOCOL.md, "Change
// encoding", has the byte layout): a format byte, a per-batch table of
// replica UUIDs and one of field names (ops refer to both by index, never by
// value), the change and op counts, then 17 length-prefixed columns of
// varints. Most columns are run-length encoded (runs and literal groups);
// seqs, times and ids are delta-coded so that what typing produces
// (consecutive seqs, the same millisecond, Left = the previous character)
// becomes long runs of one value; inserted text is one UTF-8 string. The
// output is plain bytes; the wire carries it inside a msgpack bin. A body
// of 4 KiB or more is DEFLATE-compressed when that saves an eighth
// (ChangesFormatDeflate): whole histories shrink about twofold more
// (automerge-paper: 114 KB for 259,778 keystrokes, TestTraceHistories).
//
// Ids (insert origins, delete targets) use a per-replica cursor and are
// coded as the distance from it, mixed-radix with the replica index. An
// insert's Right origin is first predicted from its Left and the inserts
// earlier in the batch (see predictor); a correct guess costs a 0 in an RLE
// column. 10,000 random single-character edits (70 % inserts, each its own
// change) take 3.0-3.2 bytes per edit when made in a burst and 5.0-5.2 when
// typed 40-400 ms apart (TestEncodedSize, TestRealDocMerge).
//
// Invariants:
//   - Deterministic: equal inputs give equal bytes, and
//     EncodeChanges(DecodeChanges(b)) == b for every b EncodeChanges made.
//   - DecodeChanges(EncodeChanges(cs)) equals cs for well-formed cs.
//   - DecodeChanges treats its input as hostile: every length is checked
//     against the bytes left before allocating, the declared change and op
//     counts against the columns that carry them (Inspect reports them and
//     the decoded sizes without decoding), counts are capped (MaxOps,
//     MaxChanges), every column must be used up exactly, texts are UTF-8,
//     kinds known, counts non-zero, replicas non-zero and every seq in
//     1..MaxSeq without overflow. Errors wrap ErrCorrupt and say what was
//     wrong. Whether ids exist and fields have the right type is left to
//     crdt.Doc.Apply.
//
// # Example
//
//	b := codec.EncodeChanges(doc.ChangesSince(peerVersion))
//	// or, without holding the delta's changes (a large catch-up):
//	b = codec.EncodeChangeSeq(doc.EachChangeSince(peerVersion))
//	...
//	changes, err := codec.DecodeChanges(b)
//	if err != nil { /* status invalid */ }
//	err = doc.Apply(changes...)
//	// or, without holding the batch's changes (decoded, a keystroke's
//	// change is some 200 bytes; encoded, about 5):
//	err = doc.ApplySeq(codec.ChangeSeq(b))
//
// # Concurrency
//
// All functions are safe for concurrent use, and a ChangeSeq for
// concurrent ranges. Decoded values never alias the input bytes.
//
// HAZARD: run-length columns let a few bytes describe many ops, so decoded
// size is not bounded by input size; it is bounded by MaxOps (40 MiB
// of ops). Senders split large deltas into batches of at most MaxOps ops
// and MaxChanges changes.
//
// HAZARD: a compressed batch inflates to at most MaxRawBatch (16 MiB)
// whatever its size on the wire; the frame cap does not bound that.
//
// NB: the package holds one origin predictor's tables and one encoder's
// scratch across garbage collections (at most 768 KB, for the life of the
// process), so that the next large batch reuses them rather than
// allocating them again (see keptPool).
//
// HAZARD: EncodeChanges panics on a seq above MaxSeq or an unknown op kind:
// it is meant for changes a crdt.Doc produced, not for untrusted values.
package codec

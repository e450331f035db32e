package syncserver

import (
	"context"

	"github.com/weftsync/weft/crdt"
)

// Store keeps documents durably: per document an optional snapshot and the
// change batches appended after it. The server calls it from room goroutines
// only, so calls for one document are never concurrent; calls for different
// documents are. storage.Store (Pebble) is the production implementation;
// MemStore is the in-memory one for tests.
//
// Ownership: byte slices passed in belong to the caller until the call
// returns (the store copies what it keeps); slices returned belong to the
// caller.
type Store interface {
	// Load returns the document's snapshot (nil if none) and the change batches appended after it, oldest first. An unknown document returns (nil, nil, nil).
	Load(ctx context.Context, doc string) (snapshot []byte, batches [][]byte, err error)
	// Append durably appends one batch (codec.EncodeChanges bytes): it returns nil only after the batch is synced to stable storage, and reports the bytes of all batches since the last snapshot. Safe for concurrent use on different documents; the caller serializes calls for one document.
	Append(ctx context.Context, doc string, batch []byte) (logBytes int64, err error)
	// Owners returns the replica owners recorded for the document
	// (replica → principal; see "Replica ownership" in the package doc),
	// nil if none. Ownership outlives snapshots: WriteSnapshot keeps it.
	Owners(ctx context.Context, doc string) (map[crdt.ReplicaID]string, error)
	// AddOwners durably records owners of replicas that have none yet: it returns nil only after they are synced. The server calls it before the Append (or WriteSnapshot) of the changes that made the claims, never concurrently with another write to the document; an owner once recorded never changes.
	AddOwners(ctx context.Context, doc string, owners map[crdt.ReplicaID]string) error
	// WriteSnapshot atomically replaces the document's snapshot (codec.EncodeSnapshot bytes) and deletes all its batches; the caller guarantees the snapshot covers every batch appended so far.
	WriteSnapshot(ctx context.Context, doc string, snapshot []byte) error
}

// DocLister is implemented by stores that can list their documents. With
// one, GET /v1/docs lists the stored documents a token may read; without,
// that endpoint answers 501.
type DocLister interface {
	// ListDocs returns the ids of stored documents that start with prefix,
	// in order, at most limit of them (0: no limit). It may be called
	// concurrently with every other method; the slice is the caller's.
	ListDocs(ctx context.Context, prefix string, limit int) ([]string, error)
}

// DocInfo is what a store tells about one stored document: GET /v1/docs
// lists it beside the id when the store implements DocInfoLister, and
// `weft doc ls` prints it.
type DocInfo struct {
	ID            string `json:"id"`
	Created       string `json:"created"` // RFC 3339, when first written to this store
	Updated       string `json:"updated"` // RFC 3339, when last written
	SnapshotBytes int64  `json:"snapshot_bytes"`
	LogBytes      int64  `json:"log_bytes"` // batches appended since the snapshot
	Batches       int64  `json:"batches"`
}

// DocInfoLister is implemented by stores that can describe their
// documents (storage.Store, through cmd/weft). With one, GET /v1/docs
// answers each id's DocInfo too.
type DocInfoLister interface {
	// ListDocInfo is ListDocs with each document's DocInfo. Same contract.
	ListDocInfo(ctx context.Context, prefix string, limit int) ([]DocInfo, error)
}

package cluster

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"sync"

	"github.com/weftsync/weft/crdt"
)

// digests is the anti-entropy summary of what this node's store holds:
// for every document the hash of its durable version vector, and per
// bucket the XOR of those hashes (docs/PROTOCOL.md section 14). It is kept
// current by every store write (Replicator.Durable) and filled at start
// from the store's recorded versions, so no document is loaded to build
// or compare it.
//
// A document's hash is worked out when a round needs it, not at every
// write: a busy document is written hundreds of times a second, a round
// runs every few seconds, and hashing a vector of many writers (sorted,
// SHA-256) was 1.3% of a busy peer's CPU.
type digests struct {
	n  int // buckets, a power of two
	mu struct {
		sync.Mutex
		docs    map[string]docDigest
		buckets []uint64              // up to date but for stale's documents
		members []map[string]struct{} // per bucket, its documents
		stale   map[string]struct{}   // documents whose h is not v's hash
	}
}

type docDigest struct {
	v crdt.VersionVector
	h uint64 // v's hash, or the hash in buckets when the document is stale (0: none yet)
}

func newDigests(buckets int) *digests {
	d := &digests{n: buckets}
	d.mu.docs = make(map[string]docDigest)
	d.mu.buckets = make([]uint64, buckets)
	d.mu.members = make([]map[string]struct{}, buckets)
	d.mu.stale = make(map[string]struct{})
	return d
}

// versionHash is h(doc) of the spec: SHA-256 over the id, a zero byte and
// the (replica, seq) pairs in replica order, first 8 bytes big-endian.
func versionHash(doc string, v crdt.VersionVector) uint64 {
	keys := make([]crdt.ReplicaID, 0, len(v))
	for r, s := range v {
		if s > 0 {
			keys = append(keys, r)
		}
	}
	slices.SortFunc(keys, crdt.ReplicaID.Compare)
	h := sha256.New()
	h.Write([]byte(doc))
	h.Write([]byte{0})
	var seq [8]byte
	for _, r := range keys {
		h.Write(r[:])
		binary.BigEndian.PutUint64(seq[:], v[r])
		h.Write(seq[:])
	}
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}

// bucketOf is bucket(doc) of the spec.
func bucketOf(doc string, n int) int {
	s := sha256.Sum256([]byte(doc))
	return int(binary.BigEndian.Uint64(s[:8]) & uint64(n-1))
}

// raise records that doc's durable version is at least v, merging it into
// what was recorded (v is kept; the caller gives it up).
func (d *digests) raise(doc string, v crdt.VersionVector) {
	empty := true
	for _, s := range v {
		if s > 0 {
			empty = false
			break
		}
	}
	if empty {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	old, ok := d.mu.docs[doc]
	if ok {
		old.v.Merge(v) // in place: version hands out copies
		v = old.v
	}
	d.mu.docs[doc] = docDigest{v: v, h: old.h}
	d.mu.stale[doc] = struct{}{}
}

// refreshLocked hashes the stale documents' versions into their buckets.
func (d *digests) refreshLocked() {
	for doc := range d.mu.stale {
		dd := d.mu.docs[doc]
		h := versionHash(doc, dd.v)
		b := bucketOf(doc, d.n)
		d.mu.buckets[b] ^= dd.h ^ h // dd.h is 0 for a new document
		d.mu.docs[doc] = docDigest{v: dd.v, h: h}
		if d.mu.members[b] == nil {
			d.mu.members[b] = make(map[string]struct{})
		}
		d.mu.members[b][doc] = struct{}{}
	}
	clear(d.mu.stale)
}

// version returns a copy of doc's recorded version (nil if none).
func (d *digests) version(doc string) crdt.VersionVector {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mu.docs[doc].v.Clone()
}

// snapshot returns a copy of the bucket digests.
func (d *digests) snapshot() []uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.refreshLocked()
	return slices.Clone(d.mu.buckets)
}

// bucket returns bucket b's digest and its documents with their hashes,
// sorted by id.
func (d *digests) bucket(b int) (uint64, []string, []uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.refreshLocked()
	docs := make([]string, 0, len(d.mu.members[b]))
	for doc := range d.mu.members[b] {
		docs = append(docs, doc)
	}
	slices.Sort(docs)
	hashes := make([]uint64, len(docs))
	for i, doc := range docs {
		hashes[i] = d.mu.docs[doc].h
	}
	return d.mu.buckets[b], docs, hashes
}

// count returns the number of documents known.
func (d *digests) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.mu.docs)
}

// differing returns the documents of bucket b that differ from a peer's
// list (docs with hashes): missing on either side or with another hash.
func (d *digests) differing(b int, docs []string, hashes []uint64) []string {
	_, mine, mh := d.bucket(b)
	theirs := make(map[string]uint64, len(docs))
	for i, doc := range docs {
		theirs[doc] = hashes[i]
	}
	var out []string
	for i, doc := range mine {
		if h, ok := theirs[doc]; !ok || h != mh[i] {
			out = append(out, doc)
		}
		delete(theirs, doc)
	}
	for doc := range theirs {
		out = append(out, doc)
	}
	slices.Sort(out)
	return out
}

package syncserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/weftsync/weft/crdt"
)

// ErrStoreFailed is returned by a MemStore after FailAfter was used to make
// it fail, and wrapped by the server's fatal error when any store fails.
var ErrStoreFailed = errors.New("syncserver: store failed")

// MemStore is an in-memory Store for tests and for `weft serve` without a
// data directory. It copies every slice it is given or returns, so callers
// can never alias its state, and it is safe for concurrent use.
//
// "Durable" means "in this process's memory": a MemStore loses everything
// when the process exits.
type MemStore struct {
	mu struct {
		sync.Mutex
		docs map[string]*memDoc
		// failAfter counts successful writes left before every write fails;
		// negative: never fail.
		failAfter int
		appends   int
		snapshots int
	}
}

type memDoc struct {
	snapshot []byte
	batches  [][]byte
	logBytes int64
	owners   map[crdt.ReplicaID]string
}

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore {
	s := &MemStore{}
	s.mu.docs = make(map[string]*memDoc)
	s.mu.failAfter = -1
	return s
}

// Load implements Store.
func (s *MemStore) Load(ctx context.Context, doc string) ([]byte, [][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.mu.docs[doc]
	if !ok {
		return nil, nil, nil
	}
	var batches [][]byte
	for _, b := range d.batches {
		batches = append(batches, bytes.Clone(b))
	}
	return bytes.Clone(d.snapshot), batches, nil
}

// Append implements Store.
func (s *MemStore) Append(ctx context.Context, doc string, batch []byte) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if len(batch) == 0 {
		return 0, fmt.Errorf("syncserver: MemStore.Append %q: empty batch", doc)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writeLocked(); err != nil {
		return 0, err
	}
	d := s.docLocked(doc)
	d.batches = append(d.batches, bytes.Clone(batch))
	d.logBytes += int64(len(batch))
	s.mu.appends++
	return d.logBytes, nil
}

// WriteSnapshot implements Store.
func (s *MemStore) WriteSnapshot(ctx context.Context, doc string, snapshot []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(snapshot) == 0 {
		return fmt.Errorf("syncserver: MemStore.WriteSnapshot %q: empty snapshot", doc)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writeLocked(); err != nil {
		return err
	}
	d := s.docLocked(doc)
	d.snapshot = bytes.Clone(snapshot)
	d.batches = nil
	d.logBytes = 0
	s.mu.snapshots++
	return nil
}

// Owners implements Store.
func (s *MemStore) Owners(ctx context.Context, doc string) (map[crdt.ReplicaID]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.mu.docs[doc]
	if !ok || len(d.owners) == 0 {
		return nil, nil
	}
	return maps.Clone(d.owners), nil
}

// AddOwners implements Store. It counts as a write for FailAfter.
func (s *MemStore) AddOwners(ctx context.Context, doc string, owners map[crdt.ReplicaID]string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for r, p := range owners {
		if p == "" {
			return fmt.Errorf("syncserver: MemStore.AddOwners %q: replica %s without a principal", doc, r)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writeLocked(); err != nil {
		return err
	}
	d := s.docLocked(doc)
	if d.owners == nil {
		d.owners = make(map[crdt.ReplicaID]string, len(owners))
	}
	for r, p := range owners {
		if _, ok := d.owners[r]; !ok {
			d.owners[r] = p
		}
	}
	return nil
}

// FailAfter makes the store accept n more writes and fail every write after
// them with ErrStoreFailed, as a disk whose fsync failed would.
func (s *MemStore) FailAfter(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.failAfter = n
}

// Stats returns the number of successful appends and snapshot writes.
func (s *MemStore) Stats() (appends, snapshots int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.appends, s.mu.snapshots
}

// Docs returns the number of documents the store holds.
func (s *MemStore) Docs() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.mu.docs)
}

func (s *MemStore) writeLocked() error {
	switch {
	case s.mu.failAfter == 0:
		return fmt.Errorf("%w: injected write failure", ErrStoreFailed)
	case s.mu.failAfter > 0:
		s.mu.failAfter--
	}
	return nil
}

func (s *MemStore) docLocked(doc string) *memDoc {
	d, ok := s.mu.docs[doc]
	if !ok {
		d = &memDoc{}
		s.mu.docs[doc] = d
	}
	return d
}

// ListDocs implements DocLister.
func (s *MemStore) ListDocs(ctx context.Context, prefix string, limit int) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	var ids []string
	for id := range s.mu.docs {
		if strings.HasPrefix(id, prefix) {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	slices.Sort(ids)
	if limit > 0 && len(ids) > limit {
		ids = ids[:limit]
	}
	return ids, nil
}

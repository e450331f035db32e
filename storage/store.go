package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftsync/weft/crdt"
)

// Errors. Every error the Store returns wraps one of these or a Pebble error.
var (
	// ErrFailStopped: a write failed (typically an fsync) and the store
	// refuses everything since. An fsync failure cannot be retried safely:
	// the kernel may have dropped the dirty pages it failed to write, so
	// the process must restart and recover from what is on disk.
	ErrFailStopped = errors.New("storage: store is fail-stopped after a write error")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("storage: store is closed")
	// ErrLocked: another process (usually a running `weft serve`) holds
	// the data directory.
	ErrLocked = errors.New("storage: data directory is locked by another process")
	// ErrInvalid: a bad document id, an empty or oversized batch or
	// snapshot. Nothing was written.
	ErrInvalid = errors.New("storage: invalid argument")
	// ErrConcurrentUse: two writes for one document overlapped, which the
	// caller promised never to do. The second was refused, nothing written.
	ErrConcurrentUse = errors.New("storage: concurrent writes to one document")
	// ErrCorrupt: stored bytes the store wrote itself cannot be read back.
	ErrCorrupt = errors.New("storage: corrupt data")
)

// Store keeps documents durably in a Pebble database: per document a
// snapshot, the change batches appended since it, and metadata.
type Store struct {
	db      *pebble.DB
	opts    Options
	log     *slog.Logger
	metrics *metrics

	unregister func()

	// failed holds the first write error; once set it never changes and
	// every later operation is refused.
	failed   atomic.Pointer[error]
	failedCh chan struct{} // closed when failed is set

	mu struct {
		sync.Mutex
		closed bool
		// inflight holds the documents with a write in progress, to catch
		// overlapping writes to one document (the caller's promise).
		inflight map[string]struct{}
		// metas caches the metadata of recently written documents, so an
		// Append needs no read before its write. An entry is read and
		// replaced only by the writer holding the document's inflight
		// claim, and only after its commit succeeded, so it always equals
		// the stored value. At most Options.MetaCacheEntries entries.
		metas map[string]DocMeta
	}
	// ops counts operations using db; Close waits for it.
	ops sync.WaitGroup
	// syncs paces the WAL's fsyncs (Options.WALMinSyncInterval).
	syncs syncPacer
}

// Open opens (creating if needed) the store in dir. It fails with an error
// wrapping ErrLocked when another process holds dir.
func Open(dir string, opts Options) (*Store, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Store{
		opts:     o,
		log:      o.Logger.With("component", "storage", "dir", dir),
		metrics:  newMetrics(),
		failedCh: make(chan struct{}),
	}
	s.mu.inflight = make(map[string]struct{})
	s.mu.metas = make(map[string]DocMeta)

	po := &pebble.Options{
		FS:                 o.FS,
		Logger:             pebbleLogger{s.log},
		CacheSize:          o.CacheBytes,
		MemTableSize:       uint64(o.MemTableBytes),
		FormatMajorVersion: pebble.FormatNewest,
		EventListener:      s.eventListener(),
	}
	if iv := o.WALMinSyncInterval; iv > 0 {
		po.WALMinSyncInterval = s.syncs.waitFunc(iv)
	}
	db, err := pebble.Open(dir, po)
	if err != nil {
		// NB: another process holding the lock gives EAGAIN/EACCES from
		// fcntl; this process holding it gives Pebble's own message.
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) ||
			strings.Contains(err.Error(), "lock held by current process") {
			return nil, fmt.Errorf("%w: %s (is weft serve running on it?): %v", ErrLocked, dir, err)
		}
		return nil, fmt.Errorf("storage: opening %s: %w", dir, err)
	}
	s.db = db
	if o.Registerer != nil {
		disk := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "weft_storage_disk_bytes",
			Help: "Disk space used by the store (Pebble's estimate).",
		}, s.diskBytes)
		unreg, err := s.metrics.register(o.Registerer, disk)
		if err != nil {
			_ = db.Close()
			return nil, err
		}
		s.unregister = unreg
	}
	s.log.Info("storage: opened")
	return s, nil
}

// diskBytes reads Pebble's disk usage for the gauge. NB: Unregister does
// not wait for a scrape in progress, so the scrape counts as an operation
// that Close waits for, and reads nothing once the store is closed.
func (s *Store) diskBytes() float64 {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return 0
	}
	s.ops.Add(1)
	s.mu.Unlock()
	defer s.ops.Done()
	return float64(s.db.Metrics().DiskSpaceUsage())
}

// Close waits for operations in progress, then closes the database. Later
// calls return ErrClosed. After a fail-stop, Close still releases the
// directory lock; its error then reports the original failure.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.mu.closed = true
	s.mu.Unlock()
	s.ops.Wait()
	if s.unregister != nil {
		s.unregister()
	}
	err := s.closeDB()
	if ferr := s.Err(); ferr != nil {
		return errors.Join(ferr, err)
	}
	if err != nil {
		return fmt.Errorf("storage: close: %w", err)
	}
	return nil
}

// closeDB closes Pebble, turning a Fatalf during close (Pebble may find its
// WAL broken after a fail-stop) into an error.
func (s *Store) closeDB() (err error) {
	defer recoverFatal(&err)
	return s.db.Close()
}

// Err returns the error that fail-stopped the store (wrapping
// ErrFailStopped), or nil.
func (s *Store) Err() error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// Failed returns a channel closed when the store fail-stops; `weft serve`
// watches it to exit non-zero.
func (s *Store) Failed() <-chan struct{} { return s.failedCh }

// failStop records the first write error and logs it. It returns the error
// every caller sees: ErrFailStopped wrapping the cause.
func (s *Store) failStop(op, doc string, cause error) error {
	e := fmt.Errorf("%w: %s %q: %w", ErrFailStopped, op, doc, cause)
	if s.failed.CompareAndSwap(nil, &e) {
		s.metrics.failStopped.Set(1)
		s.log.Error("storage: write failed; refusing all further writes (restart to recover from disk)",
			"op", op, "doc", doc, "err", cause)
		close(s.failedCh)
	}
	return e
}

// begin registers an operation; write operations also claim doc. end
// with the same arguments ends it. (Not a returned closure: that cost an
// allocation per operation.)
func (s *Store) begin(doc string, write bool) error {
	if ferr := s.Err(); ferr != nil {
		return ferr
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return ErrClosed
	}
	if write {
		if _, busy := s.mu.inflight[doc]; busy {
			return fmt.Errorf("%w: %q", ErrConcurrentUse, doc)
		}
		s.mu.inflight[doc] = struct{}{}
	}
	s.ops.Add(1)
	return nil
}

// end ends an operation that begin(doc, write) started.
func (s *Store) end(doc string, write bool) {
	if write {
		s.mu.Lock()
		delete(s.mu.inflight, doc)
		s.mu.Unlock()
	}
	s.ops.Done()
}

func (s *Store) checkDoc(doc string) error {
	switch {
	case doc == "":
		return fmt.Errorf("%w: empty document id", ErrInvalid)
	case len(doc) > s.opts.MaxDocIDBytes:
		return fmt.Errorf("%w: document id of %d bytes exceeds %d", ErrInvalid, len(doc), s.opts.MaxDocIDBytes)
	case !utf8.ValidString(doc):
		return fmt.Errorf("%w: document id %q is not UTF-8", ErrInvalid, doc)
	}
	return nil
}

// Load returns doc's snapshot (nil if none) and the batches appended after
// it, oldest first. An unknown document returns (nil, nil, nil). The
// returned slices belong to the caller. Safe for concurrent use. After a
// fail-stop Load is refused too: Pebble may show a batch whose sync failed,
// and serving it would present unsynced data as saved.
func (s *Store) Load(ctx context.Context, doc string) (snapshot []byte, batches [][]byte, err error) {
	if err := s.checkDoc(doc); err != nil {
		return nil, nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if err := s.begin(doc, false); err != nil {
		return nil, nil, err
	}
	defer s.end(doc, false)

	lo, hi := dataSpan(doc)
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, nil, fmt.Errorf("storage: load %q: %w", doc, err)
	}
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		if len(k) <= len(lo) {
			_ = it.Close()
			return nil, nil, fmt.Errorf("%w: key %x under %q", ErrCorrupt, k, doc)
		}
		v, verr := it.ValueAndErr()
		if verr != nil {
			_ = it.Close()
			return nil, nil, fmt.Errorf("storage: load %q: %w", doc, verr)
		}
		switch k[len(lo)] {
		case suffixLog:
			batches = append(batches, bytes.Clone(v))
		case suffixSnapshot:
			snapshot = bytes.Clone(v)
		default:
			_ = it.Close()
			return nil, nil, fmt.Errorf("%w: key %x under %q", ErrCorrupt, k, doc)
		}
	}
	if err := it.Close(); err != nil {
		return nil, nil, fmt.Errorf("storage: load %q: %w", doc, err)
	}
	if err := s.Err(); err != nil {
		return nil, nil, err
	}
	return snapshot, batches, nil
}

// Meta returns doc's metadata; ok is false for an unknown document.
func (s *Store) Meta(ctx context.Context, doc string) (m DocMeta, ok bool, err error) {
	if err := s.checkDoc(doc); err != nil {
		return DocMeta{}, false, err
	}
	if err := ctx.Err(); err != nil {
		return DocMeta{}, false, err
	}
	if err := s.begin(doc, false); err != nil {
		return DocMeta{}, false, err
	}
	defer s.end(doc, false)
	return s.getMeta(doc)
}

func (s *Store) getMeta(doc string) (DocMeta, bool, error) {
	v, closer, err := s.db.Get(metaKey(doc))
	if errors.Is(err, pebble.ErrNotFound) {
		return DocMeta{ID: doc}, false, nil
	}
	if err != nil {
		return DocMeta{}, false, fmt.Errorf("storage: reading metadata of %q: %w", doc, err)
	}
	m, err := decodeMeta(doc, v)
	_ = closer.Close()
	return m, err == nil, err
}

// writerMeta returns doc's metadata for the writer holding doc's claim:
// from the cache when there, else from Pebble.
func (s *Store) writerMeta(doc string) (DocMeta, bool, error) {
	s.mu.Lock()
	m, ok := s.mu.metas[doc]
	s.mu.Unlock()
	if ok {
		return m, true, nil
	}
	return s.getMeta(doc)
}

// cacheMeta records committed metadata. When the cache is full it drops an
// arbitrary entry: a miss costs one Pebble read, so the choice matters
// little, and Go's map order makes it effectively random.
func (s *Store) cacheMeta(m DocMeta) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.mu.metas[m.ID]; !ok && len(s.mu.metas) >= s.opts.MetaCacheEntries {
		for k := range s.mu.metas {
			delete(s.mu.metas, k)
			break
		}
	}
	s.mu.metas[m.ID] = m
}

// List returns the metadata of the documents whose id starts with prefix,
// in id order, starting after the id `after` ("" = from the start), at most
// limit of them (limit ≤ 0: all). Safe for concurrent use.
func (s *Store) List(ctx context.Context, prefix, after string, limit int) ([]DocMeta, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.begin("", false); err != nil {
		return nil, err
	}
	defer s.end("", false)

	lo := appendDocIDPrefix([]byte{tagMeta}, prefix)
	hi := prefixEnd(lo)
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, fmt.Errorf("storage: list: %w", err)
	}
	defer func() { _ = it.Close() }()
	valid := it.First()
	if after != "" {
		// Meta keys are prefix-free, so the first key greater than after's
		// is at or beyond after's key plus a zero byte.
		k := append(metaKey(after), 0)
		switch {
		case bytes.Compare(k, lo) < 0:
			valid = it.First()
		case hi != nil && bytes.Compare(k, hi) >= 0:
			valid = false
		default:
			valid = it.SeekGE(k)
		}
	}
	var out []DocMeta
	for ; valid && (limit <= 0 || len(out) < limit); valid = it.Next() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		doc, rest, err := decodeDocID(it.Key()[1:])
		if err != nil || len(rest) != 0 {
			return nil, fmt.Errorf("%w: metadata key %x", ErrCorrupt, it.Key())
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("storage: list: %w", err)
		}
		m, err := decodeMeta(doc, v)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("storage: list: %w", err)
	}
	return out, nil
}

// Append durably appends one batch to doc's log: it returns nil only after
// the batch is synced to stable storage, and reports the bytes of all
// batches since the last snapshot. The store keeps no reference to batch.
// Safe for concurrent use on different documents; calls for one document
// must not overlap (an overlapping call fails with ErrConcurrentUse). It
// blocks for about one fsync; Pebble groups the syncs of concurrent calls.
// ctx is checked before the write starts; a started write cannot be
// cancelled (it may already be in the WAL).
func (s *Store) Append(ctx context.Context, doc string, batch []byte) (logBytes int64, err error) {
	return s.append(ctx, doc, batch, nil)
}

// append is Append that also records version (versions.go) when it is
// not nil, in the same atomic batch.
func (s *Store) append(ctx context.Context, doc string, batch, version []byte) (logBytes int64, err error) {
	if err := s.checkDoc(doc); err != nil {
		return 0, err
	}
	switch {
	case len(batch) == 0:
		return 0, fmt.Errorf("%w: empty batch for %q", ErrInvalid, doc)
	case len(batch) > s.opts.MaxBatchBytes:
		return 0, fmt.Errorf("%w: batch of %d bytes for %q exceeds %d", ErrInvalid, len(batch), doc, s.opts.MaxBatchBytes)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := s.begin(doc, true); err != nil {
		return 0, err
	}
	defer s.end(doc, true)

	m, existed, err := s.writerMeta(doc)
	if err != nil {
		return 0, err
	}
	now := s.opts.Now()
	if !existed {
		m = DocMeta{ID: doc, Created: now, nextSeq: 1}
	}
	seq := m.nextSeq
	m.nextSeq++
	m.Updated = now
	m.Batches++
	m.LogBytes += int64(len(batch))

	b := s.db.NewBatch()
	defer func() { _ = b.Close() }()
	if err := b.Set(logKey(doc, seq), batch, nil); err != nil {
		return 0, fmt.Errorf("storage: append %q: %w", doc, err)
	}
	var mb [metaMaxBytes]byte
	if err := b.Set(metaKey(doc), appendMeta(mb[:0], &m), nil); err != nil {
		return 0, fmt.Errorf("storage: append %q: %w", doc, err)
	}
	if err := setDelta(b, doc, seq, version); err != nil {
		return 0, fmt.Errorf("storage: append %q: %w", doc, err)
	}
	if err := s.commit("append", doc, b); err != nil {
		return 0, err
	}
	s.cacheMeta(m)
	s.metrics.appendedBytes.Add(float64(len(batch)))
	return m.LogBytes, nil
}

// WriteSnapshot atomically replaces doc's snapshot and deletes all its
// batches; the caller guarantees the snapshot covers every batch appended so
// far. Returns after the write is synced. Same concurrency contract as
// Append.
func (s *Store) WriteSnapshot(ctx context.Context, doc string, snapshot []byte) error {
	return s.writeSnapshot(ctx, doc, snapshot, nil)
}

// writeSnapshot is WriteSnapshot that also records version (versions.go)
// when it is not nil, in the same atomic batch.
func (s *Store) writeSnapshot(ctx context.Context, doc string, snapshot, version []byte) error {
	if err := s.checkDoc(doc); err != nil {
		return err
	}
	switch {
	case len(snapshot) == 0:
		// An empty snapshot would erase a document: refuse it, so that an
		// empty in-memory state can never overwrite a stored one.
		return fmt.Errorf("%w: empty snapshot for %q", ErrInvalid, doc)
	case len(snapshot) > s.opts.MaxSnapshotBytes:
		return fmt.Errorf("%w: snapshot of %d bytes for %q exceeds %d", ErrInvalid, len(snapshot), doc, s.opts.MaxSnapshotBytes)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.begin(doc, true); err != nil {
		return err
	}
	defer s.end(doc, true)

	m, existed, err := s.writerMeta(doc)
	if err != nil {
		return err
	}
	now := s.opts.Now()
	if !existed {
		m = DocMeta{ID: doc, Created: now, nextSeq: 1}
	}
	m.Updated = now
	m.SnapshotBytes = int64(len(snapshot))
	m.LogBytes, m.Batches = 0, 0

	b := s.db.NewBatch()
	defer func() { _ = b.Close() }()
	lo, hi := logSpan(doc)
	if err := b.DeleteRange(lo, hi, nil); err != nil {
		return fmt.Errorf("storage: snapshot %q: %w", doc, err)
	}
	if err := b.Set(snapshotKey(doc), snapshot, nil); err != nil {
		return fmt.Errorf("storage: snapshot %q: %w", doc, err)
	}
	var mb [metaMaxBytes]byte
	if err := b.Set(metaKey(doc), appendMeta(mb[:0], &m), nil); err != nil {
		return fmt.Errorf("storage: snapshot %q: %w", doc, err)
	}
	if err := setVersion(b, doc, version); err != nil {
		return fmt.Errorf("storage: snapshot %q: %w", doc, err)
	}
	if err := s.commit("snapshot", doc, b); err != nil {
		return err
	}
	s.cacheMeta(m)
	s.metrics.snapshots.Inc()
	s.metrics.snapshotBytes.Add(float64(len(snapshot)))
	return nil
}

// MaxOwnerBytes bounds the principal name recorded as a replica's owner.
const MaxOwnerBytes = 1024

// Owners returns the owners recorded for doc's replicas (replica →
// principal), nil if none. Safe for concurrent use; refused after a
// fail-stop, like Load.
func (s *Store) Owners(ctx context.Context, doc string) (map[crdt.ReplicaID]string, error) {
	if err := s.checkDoc(doc); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.begin(doc, false); err != nil {
		return nil, err
	}
	defer s.end(doc, false)
	lo := ownerPrefix(doc)
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, fmt.Errorf("storage: owners of %q: %w", doc, err)
	}
	var out map[crdt.ReplicaID]string
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		v, verr := it.ValueAndErr()
		if verr != nil {
			_ = it.Close()
			return nil, fmt.Errorf("storage: owners of %q: %w", doc, verr)
		}
		if len(k) != len(lo)+16 || len(v) == 0 || len(v) > MaxOwnerBytes || !utf8.Valid(v) {
			_ = it.Close()
			return nil, fmt.Errorf("%w: owner key %x of %q", ErrCorrupt, k, doc)
		}
		if out == nil {
			out = make(map[crdt.ReplicaID]string)
		}
		out[crdt.ReplicaID(k[len(lo):])] = string(v)
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("storage: owners of %q: %w", doc, err)
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// AddOwners durably records owners for replicas of doc that have none: an
// owner once recorded never changes (a claim for an owned replica is
// skipped). Returns after the write is synced. Same concurrency contract
// as Append; a principal that is empty, not UTF-8 or over MaxOwnerBytes
// is refused with ErrInvalid and nothing is written.
func (s *Store) AddOwners(ctx context.Context, doc string, owners map[crdt.ReplicaID]string) error {
	if err := s.checkDoc(doc); err != nil {
		return err
	}
	for r, p := range owners {
		if p == "" || len(p) > MaxOwnerBytes || !utf8.ValidString(p) {
			return fmt.Errorf("%w: owner of replica %s of %q: %d bytes, or not UTF-8", ErrInvalid, r, doc, len(p))
		}
	}
	if len(owners) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.begin(doc, true); err != nil {
		return err
	}
	defer s.end(doc, true)
	b := s.db.NewBatch()
	defer func() { _ = b.Close() }()
	for r, p := range owners {
		k := ownerKey(doc, r)
		_, closer, err := s.db.Get(k)
		if err == nil {
			_ = closer.Close()
			continue // owned already: ownership never changes hands
		}
		if !errors.Is(err, pebble.ErrNotFound) {
			return fmt.Errorf("storage: owners of %q: %w", doc, err)
		}
		if err := b.Set(k, []byte(p), nil); err != nil {
			return fmt.Errorf("storage: owners of %q: %w", doc, err)
		}
	}
	if b.Empty() {
		return nil
	}
	return s.commit("owners", doc, b)
}

// commit applies b with a WAL sync. Any failure fail-stops the store.
func (s *Store) commit(op, doc string, b *pebble.Batch) error {
	start := time.Now()
	if err := s.applySync(b); err != nil {
		return s.failStop(op, doc, err)
	}
	s.metrics.commitSeconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
	return nil
}

// applySync calls Pebble's Apply with Sync. NB: when the WAL sync fails,
// Pebble reports it by calling Logger.Fatalf in this goroutine and, should
// Fatalf return, then reports success. pebbleLogger.Fatalf therefore panics
// with a fatalError, which is recovered here and becomes the error.
func (s *Store) applySync(b *pebble.Batch) (err error) {
	defer recoverFatal(&err)
	s.syncs.commit()
	return s.db.Apply(b, pebble.Sync)
}

// fatalError is the panic value of pebbleLogger.Fatalf.
type fatalError struct {
	msg   string
	cause error // the first error among Fatalf's arguments, if any
}

func (e *fatalError) Error() string { return "pebble: " + e.msg }
func (e *fatalError) Unwrap() error { return e.cause }

// recoverFatal turns a fatalError panic into *err; other panics continue.
func recoverFatal(err *error) {
	r := recover()
	if r == nil {
		return
	}
	if fe, ok := r.(*fatalError); ok {
		*err = fe
		return
	}
	panic(r)
}

// pebbleLogger adapts slog to Pebble's Logger.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l.Enabled(context.Background(), slog.LevelDebug) {
		p.l.Debug("pebble: " + fmt.Sprintf(format, args...))
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error("pebble: " + fmt.Sprintf(format, args...))
}

// Fatalf must not return (Pebble continues as if nothing happened if it
// does). It panics with a *fatalError: the Store recovers it where Pebble
// calls Fatalf on the writer's goroutine (a failed commit); anywhere else
// (a background flush or compaction) the panic ends the process, which is
// the fail-stop Pebble asks for.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	fe := &fatalError{msg: fmt.Sprintf(format, args...)}
	for _, a := range args {
		if e, ok := a.(error); ok {
			fe.cause = e
			break
		}
	}
	p.l.Error("pebble: fatal: " + fe.msg)
	panic(fe)
}

func (s *Store) eventListener() *pebble.EventListener {
	return &pebble.EventListener{
		BackgroundError: func(err error) {
			s.metrics.bgErrors.Inc()
			s.log.Error("storage: pebble background error", "err", err)
		},
		CompactionEnd: func(info pebble.CompactionInfo) {
			if info.Err == nil {
				s.metrics.compactions.Inc()
			}
		},
		FlushEnd: func(info pebble.FlushInfo) {
			if info.Err == nil {
				s.metrics.flushes.Inc()
			}
		},
		DiskSlow: func(info pebble.DiskSlowInfo) {
			s.log.Warn("storage: slow disk operation", "info", info.String())
		},
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			s.log.Warn("storage: pebble write stall", "reason", info.Reason)
		},
		WriteStallEnd: func() {
			s.log.Info("storage: pebble write stall ended")
		},
	}
}

// ListDocs returns the ids of the documents that start with prefix, in order,
// at most limit (0: all): the document listing a server offers its clients.
func (s *Store) ListDocs(ctx context.Context, prefix string, limit int) ([]string, error) {
	metas, err := s.List(ctx, prefix, "", limit)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(metas))
	for i, m := range metas {
		ids[i] = m.ID
	}
	return ids, nil
}

package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Store. The zero value of a field means its default;
// Open never modifies the caller's Options.
type Options struct {
	// FS is the filesystem Pebble runs on. Tests pass vfs.NewMem,
	// vfs.NewCrashableMem or an errorfs wrapper. Default: the OS
	// filesystem (vfs.Default).
	FS vfs.FS
	// Logger receives the store's own events and Pebble's log, Pebble's
	// info lines at Debug level. Default: a logger that discards.
	Logger *slog.Logger
	// Registerer receives the store's Prometheus metrics (names start with
	// weft_storage_). Default: nil, no metrics are registered.
	Registerer prometheus.Registerer
	// Now is the wall clock used for the created/updated metadata.
	// Default: time.Now.
	Now func() time.Time

	// MaxDocIDBytes bounds the length of a document id. Default: 1024.
	MaxDocIDBytes int
	// MaxBatchBytes bounds one appended batch. Default: 16 MiB.
	MaxBatchBytes int
	// MaxSnapshotBytes bounds one snapshot. Default: 512 MiB.
	MaxSnapshotBytes int

	// MetaCacheEntries bounds the in-memory cache of document metadata
	// that spares each Append a read (about 100 bytes plus the id per
	// entry). Default: 65536.
	MetaCacheEntries int

	// WALMinSyncInterval is how long the WAL waits, after an fsync that
	// carried only a few commits, before it starts the next one. Writes
	// arriving meanwhile share that next fsync: under a steady stream of
	// single commits (a cluster peer persisting what its clients and the
	// other peers send) most fsyncs then carry several, and fewer of
	// them cost less CPU on a shared machine. After an fsync that
	// carried many commits (concurrent writers already sharing it) the
	// next starts after 25µs instead, so a burst is not slowed (see
	// walsync.go). Each ack waits at most this much longer, and only
	// when another fsync ended less than this long ago. A negative
	// value disables the wait. Default: 1ms. Largest: 1s.
	WALMinSyncInterval time.Duration

	// CacheBytes is Pebble's block cache size. Default: 64 MiB.
	CacheBytes int64
	// MemTableBytes is Pebble's memtable size: larger means fewer flushes
	// under a steady write load. Default: 32 MiB.
	MemTableBytes int
}

// DefaultOptions returns the options `weft serve` uses.
func DefaultOptions() Options {
	return Options{
		FS:               vfs.Default,
		Logger:           slog.New(slog.DiscardHandler),
		Now:              time.Now,
		MaxDocIDBytes:    1024,
		MaxBatchBytes:    16 << 20,
		MaxSnapshotBytes: 512 << 20,
		CacheBytes:       64 << 20,
		MemTableBytes:    32 << 20,
		MetaCacheEntries: 1 << 16,

		WALMinSyncInterval: time.Millisecond,
	}
}

// LocalOptions returns small, fast options for tests on an in-memory
// filesystem.
func LocalOptions() Options {
	o := DefaultOptions()
	o.FS = vfs.NewMem()
	o.CacheBytes = 4 << 20
	o.MemTableBytes = 4 << 20
	return o
}

// withDefaults returns a copy of o with zero fields filled in and reports
// every invalid field at once.
func (o Options) withDefaults() (Options, error) {
	d := DefaultOptions()
	if o.FS == nil {
		o.FS = d.FS
	}
	if o.Logger == nil {
		o.Logger = d.Logger
	}
	if o.Now == nil {
		o.Now = d.Now
	}
	var errs []error
	bad := func(field string, v any, why string) {
		errs = append(errs, fmt.Errorf("storage: Options.%s = %v: %s", field, v, why))
	}
	fill := func(field string, p *int, def, max int) {
		switch {
		case *p == 0:
			*p = def
		case *p < 0:
			bad(field, *p, "must not be negative")
		case *p > max:
			bad(field, *p, fmt.Sprintf("must be at most %d", max))
		}
	}
	fill("MaxDocIDBytes", &o.MaxDocIDBytes, d.MaxDocIDBytes, 64<<10)
	// Pebble keeps a batch's value in one slice; beyond 1 GiB batches become
	// a memory hazard rather than a feature.
	fill("MaxBatchBytes", &o.MaxBatchBytes, d.MaxBatchBytes, 1<<30)
	fill("MaxSnapshotBytes", &o.MaxSnapshotBytes, d.MaxSnapshotBytes, 1<<30)
	fill("MemTableBytes", &o.MemTableBytes, d.MemTableBytes, 1<<30)
	fill("MetaCacheEntries", &o.MetaCacheEntries, d.MetaCacheEntries, 1<<24)
	switch {
	case o.WALMinSyncInterval == 0:
		o.WALMinSyncInterval = d.WALMinSyncInterval
	case o.WALMinSyncInterval > time.Second:
		bad("WALMinSyncInterval", o.WALMinSyncInterval, "must be at most 1s (every ack waits for it)")
	}
	switch {
	case o.CacheBytes == 0:
		o.CacheBytes = d.CacheBytes
	case o.CacheBytes < 0:
		bad("CacheBytes", o.CacheBytes, "must not be negative")
	}
	if o.MemTableBytes != 0 && o.MemTableBytes < 1<<20 {
		bad("MemTableBytes", o.MemTableBytes, "must be at least 1 MiB")
	}
	return o, errors.Join(errs...)
}

package storage

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/weftsync/weft/crdt"
)

// benchWriters is the number of concurrent writers in the parallel
// benchmarks, as in `weft bench store`.
const benchWriters = 64

// parallelWrites runs benchWriters goroutines that share b.N writes: writer
// w calls writer(w) once (setup, untimed work such as naming its
// document), then the returned write with the write's number i (1..b.N)
// until the writes run out. The benchmark reports acked writes per second.
func parallelWrites(b *testing.B, writer func(w int) func(i int64) error) {
	b.ReportAllocs()
	b.ResetTimer()
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range benchWriters {
		wg.Go(func() {
			write := writer(w)
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				if err := write(i); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "acked/s")
}

// BenchmarkAppend64 measures durable appends by 64 concurrent writers on 64
// documents, each waiting for its ack: the store's group-commit path, with
// and without the WAL's minimum sync interval.
func BenchmarkAppend64(b *testing.B) {
	for _, c := range []struct {
		name string
		iv   time.Duration
	}{{"minsync=off", -1}, {"minsync=default", 0}} {
		b.Run(c.name, func(b *testing.B) {
			o := DefaultOptions()
			o.WALMinSyncInterval = c.iv
			s := openT(b, b.TempDir(), o)
			defer s.Close()
			batch := make([]byte, 70)
			parallelWrites(b, func(w int) func(int64) error {
				doc := fmt.Sprintf("bench/doc-%03d", w)
				return func(int64) error {
					_, err := s.Append(context.Background(), doc, batch)
					return err
				}
			})
		})
	}
}

// BenchmarkPebbleSync64 is the baseline: bare synced Pebble writes of the
// same size by 64 writers, no metadata.
func BenchmarkPebbleSync64(b *testing.B) {
	db, err := pebble.Open(b.TempDir(), &pebble.Options{MemTableSize: 32 << 20, Logger: pebbleLogger{DefaultOptions().Logger}})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	val := make([]byte, 70)
	parallelWrites(b, func(w int) func(int64) error {
		key := make([]byte, 16)
		binary.BigEndian.PutUint64(key, uint64(w))
		return func(i int64) error {
			binary.BigEndian.PutUint64(key[8:], uint64(i))
			return db.Set(key, val, pebble.Sync)
		}
	})
}

// BenchmarkPebbleSync64TwoKeys is the baseline with the store's write
// shape: a batch of a new log key and an overwritten meta key.
func BenchmarkPebbleSync64TwoKeys(b *testing.B) {
	db, err := pebble.Open(b.TempDir(), &pebble.Options{MemTableSize: 32 << 20, Logger: pebbleLogger{DefaultOptions().Logger}})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	val := make([]byte, 70)
	meta := make([]byte, 20)
	parallelWrites(b, func(w int) func(int64) error {
		doc := fmt.Sprintf("bench/doc-%03d", w)
		seq := uint64(0)
		return func(int64) error {
			seq++
			batch := db.NewBatch()
			defer batch.Close()
			_ = batch.Set(logKey(doc, seq), val, nil)
			_ = batch.Set(metaKey(doc), meta, nil)
			return db.Apply(batch, pebble.Sync)
		}
	})
}

// BenchmarkAppendPeer reproduces a cluster peer's store load (`weft bench
// cluster`, 150 clients, 10 documents): 10 rooms, each appending a small
// batch (100-300 bytes) with the one replica it raises, and waiting for
// the ack before its next append. rate=1500 paces them to 1,500 appends a
// second in all, as a peer sees; rate=max lets them go as fast as they
// can. It reports the CPU the whole process spent (user+sys, getrusage:
// Pebble's WAL and flush goroutines included, and the writers' own pacing
// sleeps) per append, the measure to compare on a shared machine, and,
// steadier than CPU, the WAL's fsyncs and file writes per append, besides
// allocations per append. Kernel work done outside the process (ext4's
// journal thread) is not counted.
func BenchmarkAppendPeer(b *testing.B) {
	const docs = 10
	for _, c := range []struct {
		name string
		rate int // appends per second in all; 0: unpaced
	}{{"rate=1500", 1500}, {"rate=max", 0}} {
		b.Run(c.name, func(b *testing.B) {
			o := DefaultOptions()
			var ops opCounter
			o.FS = errorfs.Wrap(o.FS, &ops)
			s := openT(b, b.TempDir(), o)
			defer s.Close()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ReportAllocs()
			cpu0 := processCPU(b)
			b.ResetTimer()
			start := time.Now()
			for w := range docs {
				wg.Go(func() {
					doc := fmt.Sprintf("bench/room-%02d", w)
					rng := rand.New(rand.NewPCG(uint64(w), 1))
					var replica crdt.ReplicaID
					replica[0] = byte(w)
					batch := make([]byte, 300)
					var seq uint64
					var every time.Duration
					if c.rate > 0 {
						every = time.Second * docs / time.Duration(c.rate)
					}
					due := start.Add(time.Duration(w) * every / docs)
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						if every > 0 {
							if d := time.Until(due); d > 0 {
								time.Sleep(d)
							}
							due = due.Add(every)
						}
						seq++
						v := crdt.VersionVector{replica: seq}
						n := 100 + rng.IntN(201)
						if _, err := s.AppendVersion(context.Background(), doc, batch[:n], v); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			cpu := processCPU(b) - cpu0
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/append")
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "acked/s")
			b.ReportMetric(float64(ops.syncs.Load())/float64(b.N), "fsyncs/append")
			b.ReportMetric(float64(ops.writes.Load())/float64(b.N), "writes/append")
		})
	}
}

// processCPU is the user+sys CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// opCounter counts the file syncs and writes a store makes (an errorfs
// injector that injects nothing).
type opCounter struct{ syncs, writes atomic.Int64 }

func (c *opCounter) String() string { return "opCounter" }

func (c *opCounter) MaybeError(op errorfs.Op) error {
	switch op.Kind {
	case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
		c.syncs.Add(1)
	case errorfs.OpFileWrite, errorfs.OpFileWriteAt:
		c.writes.Add(1)
	}
	return nil
}

package storage

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
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

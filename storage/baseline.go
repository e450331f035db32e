package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// MeasureBareSync measures what Pebble alone does on dir's disk: writers
// goroutines each write perWriter synced values of valueBytes (one Set with
// pebble.Sync each, no metadata) into a new database in dir, and it
// returns the acknowledged writes per second. `weft bench store` runs it
// beside the Store so that its result can be read as a ratio measured in
// one run on a shared, noisy machine. dir must not hold a database.
func MeasureBareSync(ctx context.Context, dir string, writers, perWriter, valueBytes int) (float64, error) {
	if writers <= 0 || perWriter <= 0 || valueBytes < 0 {
		return 0, fmt.Errorf("%w: MeasureBareSync(%d writers, %d each, %d bytes)", ErrInvalid, writers, perWriter, valueBytes)
	}
	o := DefaultOptions()
	db, err := pebble.Open(dir, &pebble.Options{
		FS:                 o.FS,
		Logger:             pebbleLogger{o.Logger},
		CacheSize:          o.CacheBytes,
		MemTableSize:       uint64(o.MemTableBytes),
		FormatMajorVersion: pebble.FormatNewest,
	})
	if err != nil {
		return 0, fmt.Errorf("storage: opening %s: %w", dir, err)
	}
	val := make([]byte, valueBytes)
	errs := make([]error, writers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range writers {
		wg.Go(func() {
			key := make([]byte, 16)
			binary.BigEndian.PutUint64(key, uint64(w))
			for i := range perWriter {
				if err := ctx.Err(); err != nil {
					errs[w] = err
					return
				}
				binary.BigEndian.PutUint64(key[8:], uint64(i))
				if err := func() (err error) {
					defer recoverFatal(&err)
					return db.Set(key, val, pebble.Sync)
				}(); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	err = errors.Join(errors.Join(errs...), db.Close())
	if err != nil {
		return 0, fmt.Errorf("storage: bare sync baseline: %w", err)
	}
	return float64(writers*perWriter) / el.Seconds(), nil
}

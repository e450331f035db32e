package syncserver

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/weftsync/weft/crdt/syncproto"
)

// slowDisk models a device whose fsync takes latency: a MemStore whose
// Append returns only after it. (A model of the device, not a wait for an
// event.)
type slowDisk struct {
	*MemStore
	latency time.Duration
}

func (d slowDisk) Append(ctx context.Context, doc string, batch []byte) (int64, error) {
	time.Sleep(d.latency)
	return d.MemStore.Append(ctx, doc, batch)
}

// BenchmarkFanout measures the time from a writer sending an update to
// another subscriber receiving it, with the broadcast before (production)
// or after the store write, on a 2 ms fsync.
//
//	go test -run - -bench Fanout ./syncserver
func BenchmarkFanout(b *testing.B) {
	for _, after := range []bool{false, true} {
		name := "broadcast=before-persist"
		if after {
			name = "broadcast=after-persist"
		}
		b.Run(name, func(b *testing.B) {
			ts := newTestServer(b, func(o *Options) {
				o.Store = slowDisk{NewMemStore(), 2 * time.Millisecond}
				o.MaxChangesPerSec = 1 << 30
				o.ChangesBurst = 1 << 30
			})
			ts.srv.broadcastAfterDurable = after
			w := ts.dial(ts.token("writer"))
			r := ts.dial(ts.token("reader"))
			w.subscribe("bench")
			r.subscribe("bench")
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				payload := w.edit("bench", insert("t", 0, "x"))
				w.batch++
				start := time.Now()
				w.send(&syncproto.Update{Doc: "bench", Batch: w.batch, Changes: payload})
				recvType[*syncproto.Changes](r)
				lat = append(lat, time.Since(start))
				w.waitAck("bench", w.batch)
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

package codec

import (
	"testing"

	"github.com/weftsync/weft/internal/editmix"
)

// deliveryBatches returns n one-change batches of the edit mix of `weft
// bench converge` (editmix.Deliveries, as crdt's BenchmarkApplyDelivery
// uses it), after skip edits of warm-up.
func deliveryBatches(tb testing.TB, skip, n int) [][]byte {
	all, _, err := editmix.Deliveries(skip + n)
	if err != nil {
		tb.Fatal(err)
	}
	msgs := make([][]byte, 0, n)
	for i := range all[skip:] {
		msgs = append(msgs, EncodeChanges(all[skip+i:skip+i+1]))
	}
	return msgs
}

// BenchmarkDecodeDelivery decodes (DecodeChanges) the one-change batches
// of the converge edit mix (see deliveryBatches), one a delivery, as
// every client does for every other editor's edit.
func BenchmarkDecodeDelivery(b *testing.B) {
	msgs := deliveryBatches(b, 4000, 2000)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := decodeBatch(msgs[i%len(msgs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

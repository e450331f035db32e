package client_test

import (
	"testing"
	"time"

	client "github.com/weftsync/weft/clients/go"
	"github.com/weftsync/weft/crdt"
)

// BenchmarkKeystrokeRoundTrip measures one keystroke from an Edit on one
// client to its arrival at another client through a real server on
// loopback (in-memory store): the path `weft bench converge` loads.
func BenchmarkKeystrokeRoundTrip(b *testing.B) {
	ts := startServer(b, nil)
	arrived := make(chan struct{}, 1)
	src := open(b, newClient(b, ts.URL, nil), "bench/ks")
	dst, err := newClient(b, ts.URL, nil).Open("bench/ks", client.DocOptions{
		OnChanges: func(*client.Document, []crdt.Change) {
			select {
			case arrived <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	deadline := time.NewTimer(time.Minute)
	defer deadline.Stop()
	for !src.Synced() || !dst.Synced() {
		select {
		case <-src.Changed():
		case <-dst.Changed():
		case <-time.After(10 * time.Millisecond):
		case <-deadline.C:
			b.Fatal("clients did not sync within a minute")
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := src.Edit(func(tx *crdt.Tx, doc *crdt.Doc) error {
			return tx.Insert("body", doc.TextLen("body"), "k")
		}); err != nil {
			b.Fatal(err)
		}
		select {
		case <-arrived:
		case <-deadline.C:
			b.Fatal("keystroke did not arrive within a minute")
		}
	}
}

package client

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestBackoffWindowDoublesUpToCap(t *testing.T) {
	b := &Backoff{Base: 100 * time.Millisecond, Max: 30 * time.Second, Rand: rand.New(rand.NewPCG(1, 2))}
	want := []time.Duration{100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000}
	for i, w := range want {
		if got := b.Window(); got != w*time.Millisecond {
			t.Fatalf("attempt %d: window %v, want %v", i, got, w*time.Millisecond)
		}
		if d := b.Next(); d < 0 || d > w*time.Millisecond {
			t.Fatalf("attempt %d: delay %v outside [0, %v]", i, d, w*time.Millisecond)
		}
	}
	for range 100 { // many failures must not overflow
		if d := b.Next(); d < 0 || d > 30*time.Second {
			t.Fatalf("delay %v outside [0, 30s] after many failures", d)
		}
	}
	b.Reset()
	if got := b.Window(); got != 100*time.Millisecond {
		t.Fatalf("after Reset: window %v, want 100ms", got)
	}
}

// Full jitter: delays must spread over the whole window, not cluster at its
// top (which is what "equal jitter" or plain exponential backoff would do).
func TestBackoffFullJitterSpreadsOverWindow(t *testing.T) {
	b := &Backoff{Base: time.Second, Max: time.Second, Rand: rand.New(rand.NewPCG(7, 7))}
	var low, high int
	const n = 2000
	for range n {
		d := b.Next()
		if d < 250*time.Millisecond {
			low++
		}
		if d > 750*time.Millisecond {
			high++
		}
	}
	// Uniform on [0,1s]: about n/4 each; allow a wide margin.
	if low < n/8 || high < n/8 {
		t.Fatalf("delays not spread: %d below 250ms, %d above 750ms of %d", low, high, n)
	}
}

func TestBackoffDefaults(t *testing.T) {
	var b Backoff
	if got := b.Window(); got != 250*time.Millisecond {
		t.Fatalf("default base window %v, want 250ms", got)
	}
	for range 20 {
		b.Next()
	}
	if got := b.Window(); got != 30*time.Second {
		t.Fatalf("default cap %v, want 30s", got)
	}
}

func TestOpsBucketPacesAtNinetyPercent(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := newOpsBucket(1000, t0) // 900 units/s, 900 in the bucket
	if w := b.take(900, t0); w != 0 {
		t.Fatalf("full bucket made 900 units wait %v", w)
	}
	if w := b.take(450, t0); w != 500*time.Millisecond {
		t.Fatalf("empty bucket: 450 units wait %v, want 500ms", w)
	}
	// After that wait the bucket is empty again: the next 90 units need
	// another 100ms.
	if w := b.take(90, t0.Add(500*time.Millisecond)); w != 100*time.Millisecond {
		t.Fatalf("wait %v, want 100ms", w)
	}
	// A batch larger than the bucket waits only until the bucket is full.
	b = newOpsBucket(1000, t0)
	b.take(900, t0)
	if w := b.take(5000, t0); w != time.Second {
		t.Fatalf("oversized batch waits %v, want 1s (a full bucket)", w)
	}
	if newOpsBucket(0, t0) != nil {
		t.Fatal("a server without a rate limit got a bucket")
	}
}

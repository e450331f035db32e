package client

import (
	"math/rand/v2"
	"time"
)

// Backoff computes reconnection delays: exponential growth with "full
// jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015):
// the n'th consecutive failure waits a uniformly random duration in
// [0, min(Max, Base·2^n)]. Full jitter spreads a herd of clients that lost
// the same server over the whole window instead of letting them return in
// lock-step waves.
//
// A Backoff is not safe for concurrent use; the client's connection loop owns
// it.
type Backoff struct {
	// Base is the upper bound of the first delay. Default: 250ms.
	Base time.Duration
	// Max caps the window. Default: 30s.
	Max time.Duration
	// Stable is how long a connection must stay up, having answered a
	// sync if a document was open, before the failures are forgotten (the
	// next drop waits at most Base again). Default: 5s.
	Stable time.Duration
	// Rand draws the jitter. Inject a seeded source for reproducible tests.
	// Default: a generator seeded from the runtime's random source.
	Rand *rand.Rand

	attempt int
}

// Next returns the delay before the next attempt and counts a failure.
func (b *Backoff) Next() time.Duration {
	window := b.Window()
	if b.attempt < 62 {
		b.attempt++
	}
	if window <= 0 {
		return 0
	}
	return time.Duration(b.rng().Int64N(int64(window) + 1))
}

// Window returns the upper bound of the delay Next would draw now.
func (b *Backoff) Window() time.Duration {
	base, maxd := b.Base, b.Max
	if base <= 0 {
		base = 250 * time.Millisecond
	}
	if maxd <= 0 {
		maxd = 30 * time.Second
	}
	w := base
	for i := 0; i < b.attempt; i++ {
		if w >= maxd/2 {
			return maxd
		}
		w *= 2
	}
	return min(w, maxd)
}

// skip reports whether a reconnect may go at once: only as the first of a
// row (after 1001, PROTOCOL.md section 5). Either way it counts as one.
func (b *Backoff) skip() bool {
	first := b.attempt == 0
	if first {
		b.attempt++
	}
	return first
}

// Reset forgets past failures; call it after a connection proved stable.
func (b *Backoff) Reset() { b.attempt = 0 }

func (b *Backoff) stable() time.Duration {
	if b.Stable <= 0 {
		return 5 * time.Second
	}
	return b.Stable
}

func (b *Backoff) rng() *rand.Rand {
	if b.Rand == nil {
		b.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return b.Rand
}

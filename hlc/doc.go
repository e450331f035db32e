// Package hlc implements a hybrid logical clock: timestamps that follow
// physical time closely but still respect causality.
//
// # Model
//
// A Timestamp packs wall-clock milliseconds since the Unix epoch into its
// upper 48 bits and a logical counter into its lower 16 bits, so timestamps
// compare as plain uint64 values and are totally ordered. The design follows
// Kulkarni et al., "Logical Physical Clocks and Consistent Snapshots in
// Globally Distributed Databases" (2014), in the packed form CockroachDB uses.
//
// Invariants kept by Clock:
//   - Now never returns a timestamp less than or equal to one it returned, or
//     received through Update, before: even when the wall clock steps back.
//   - If event a happened before event b (a was sent and b's replica received
//     it, or both happened on one replica in that order), then a < b.
//   - A remote timestamp more than MaxOffset ahead of the local wall clock is
//     refused with ErrClockOffset and leaves the clock unchanged, so one
//     replica with a wrong clock cannot drag everyone into the future.
//
// When more than 65,535 events happen in one millisecond the logical counter
// carries into the wall part: the clock runs at most a few milliseconds ahead
// of the wall clock under such bursts, which is harmless.
//
// # Example
//
//	c := hlc.NewClock(hlc.SystemWall, 500*time.Millisecond) // in the I/O shell
//	t := c.Now()
//	if _, err := c.Update(remote); errors.Is(err, hlc.ErrClockOffset) { ... }
//
// # Concurrency
//
// A Clock is not safe for concurrent use; its owner (a document, a room
// goroutine) serialises access. Timestamp is a plain value.
//
// HAZARD: the package itself never reads the wall clock: the Wall function is
// injected. Pure packages pass a manual clock; only the I/O shell (cmd, the
// server, clients) passes SystemWall.
package hlc

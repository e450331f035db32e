package hlc

import (
	"errors"
	"fmt"
	"time"
)

// LogicalBits is the number of low bits of a Timestamp that hold the logical
// counter.
const LogicalBits = 16

const logicalMask = 1<<LogicalBits - 1

// ErrClockOffset is returned by Update when a remote timestamp is further
// ahead of the local wall clock than the clock's MaxOffset allows.
var ErrClockOffset = errors.New("hlc: remote clock too far ahead")

// Timestamp is a hybrid logical clock reading: wall milliseconds in the upper
// 48 bits, a logical counter in the lower 16. The zero Timestamp is before
// every reading of a clock.
type Timestamp uint64

// New returns the timestamp with the given wall milliseconds and logical
// counter. logical is truncated to 16 bits.
func New(wallMillis int64, logical uint16) Timestamp {
	return Timestamp(uint64(wallMillis)<<LogicalBits | uint64(logical))
}

// FromTime returns the greatest timestamp at wall time t: every event that
// happened in t's millisecond or before is ≤ the result. It is what "the
// document as it was at t" compares against.
func FromTime(t time.Time) Timestamp {
	return New(t.UnixMilli(), logicalMask)
}

// WallMillis returns the wall part in milliseconds since the Unix epoch.
func (t Timestamp) WallMillis() int64 { return int64(t >> LogicalBits) }

// Logical returns the logical counter.
func (t Timestamp) Logical() uint16 { return uint16(t & logicalMask) }

// Time returns the wall part as a time.Time in UTC.
func (t Timestamp) Time() time.Time { return time.UnixMilli(t.WallMillis()).UTC() }

// String formats the timestamp as RFC 3339 wall time plus the logical counter,
// e.g. "2021-04-19T06:06:58.219Z+3".
func (t Timestamp) String() string {
	return fmt.Sprintf("%s+%d", t.Time().Format("2006-01-02T15:04:05.000Z07:00"), t.Logical())
}

// Wall reads a wall clock in milliseconds since the Unix epoch.
type Wall func() int64

// ManualWall is a wall clock that moves only when told to; for tests and for
// replaying recorded traces.
type ManualWall struct{ Millis int64 }

// Read returns the current manual time; pass m.Read to NewClock.
func (m *ManualWall) Read() int64 { return m.Millis }

// Clock is a hybrid logical clock. The zero value is not usable; use NewClock.
type Clock struct {
	wall      Wall
	maxOffset int64 // milliseconds; 0 disables the check
	last      Timestamp
}

// NewClock returns a clock reading wall, refusing remote timestamps more than
// maxOffset ahead of it (0 disables the check).
func NewClock(wall Wall, maxOffset time.Duration) *Clock {
	if wall == nil {
		panic("hlc: NewClock with nil wall clock")
	}
	return &Clock{wall: wall, maxOffset: maxOffset.Milliseconds()}
}

// MaxOffset returns the largest lead of a remote timestamp over the local
// wall clock that Update accepts.
func (c *Clock) MaxOffset() time.Duration { return time.Duration(c.maxOffset) * time.Millisecond }

// Last returns the greatest timestamp the clock has issued or seen.
func (c *Clock) Last() Timestamp { return c.last }

// Now returns a timestamp for a local event, greater than every timestamp the
// clock has issued or seen.
func (c *Clock) Now() Timestamp {
	return c.NowN(1)
}

// NowN reserves n consecutive timestamps and returns the first; the clock's
// Last is then the first plus n-1. n < 1 is treated as 1.
func (c *Clock) NowN(n int) Timestamp {
	if n < 1 {
		n = 1
	}
	t := New(c.wall(), 0)
	if t <= c.last {
		t = c.last + 1
	}
	c.last = t + Timestamp(n-1)
	return t
}

// Update folds a timestamp received from another replica into the clock, so
// that later local events are ordered after it, and returns the clock's new
// Last. A remote timestamp more than MaxOffset ahead of the wall clock is
// refused with an error wrapping ErrClockOffset and leaves the clock
// unchanged.
func (c *Clock) Update(remote Timestamp) (Timestamp, error) {
	if err := c.Check(remote); err != nil {
		return c.last, err
	}
	if remote > c.last {
		c.last = remote
	}
	return c.last, nil
}

// Witness folds in a timestamp from trusted history (the replica's own
// stored state) without the MaxOffset check: later local events are ordered
// after it even if it is ahead of the wall clock.
func (c *Clock) Witness(t Timestamp) {
	if t > c.last {
		c.last = t
	}
}

// Check reports whether Update would accept remote, without changing the
// clock.
func (c *Clock) Check(remote Timestamp) error {
	if c.maxOffset > 0 {
		wall := c.wall()
		if ahead := remote.WallMillis() - wall; ahead > c.maxOffset {
			return fmt.Errorf("%w: %s is %dms ahead of local wall clock (max offset %dms)",
				ErrClockOffset, remote, ahead, c.maxOffset)
		}
	}
	return nil
}

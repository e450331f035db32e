package hlc

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

func TestNowMonotonicWhenWallStepsBack(t *testing.T) {
	w := &ManualWall{Millis: 1000}
	c := NewClock(w.Read, time.Second)
	a := c.Now()
	w.Millis = 500 // NTP stepped the clock back
	b := c.Now()
	if b <= a {
		t.Fatalf("Now went backwards: %v then %v", a, b)
	}
	if b.WallMillis() != 1000 || b.Logical() != 1 {
		t.Fatalf("want 1000+1, got %v", b)
	}
	w.Millis = 2000
	if d := c.Now(); d != New(2000, 0) {
		t.Fatalf("want wall to take over again, got %v", d)
	}
}

func TestUpdateRespectsCausality(t *testing.T) {
	w := &ManualWall{Millis: 1000}
	c := NewClock(w.Read, time.Second)
	remote := New(1500, 7)
	got, err := c.Update(remote)
	if err != nil || got != remote {
		t.Fatalf("Update = %v, %v", got, err)
	}
	if n := c.Now(); n <= remote {
		t.Fatalf("local event after receive not ordered after it: %v <= %v", n, remote)
	}
}

func TestUpdateRefusesFarFuture(t *testing.T) {
	w := &ManualWall{Millis: 1000}
	c := NewClock(w.Read, 500*time.Millisecond)
	before := c.Now()
	_, err := c.Update(New(1501, 0))
	if !errors.Is(err, ErrClockOffset) {
		t.Fatalf("want ErrClockOffset, got %v", err)
	}
	if c.Last() != before {
		t.Fatalf("refused update changed the clock: %v -> %v", before, c.Last())
	}
	if _, err := c.Update(New(1500, 0)); err != nil {
		t.Fatalf("timestamp exactly MaxOffset ahead refused: %v", err)
	}
}

func TestLogicalCarries(t *testing.T) {
	w := &ManualWall{Millis: 10}
	c := NewClock(w.Read, 0)
	var prev Timestamp
	for i := 0; i < 70000; i++ {
		n := c.Now()
		if n <= prev {
			t.Fatalf("not increasing at %d", i)
		}
		prev = n
	}
	if prev.WallMillis() != 11 {
		t.Fatalf("logical overflow should carry into wall: %v", prev)
	}
}

func TestNowNReserves(t *testing.T) {
	w := &ManualWall{Millis: 10}
	c := NewClock(w.Read, 0)
	a := c.NowN(5)
	if c.Last() != a+4 {
		t.Fatalf("NowN(5) reserved %v..%v", a, c.Last())
	}
	if b := c.Now(); b != a+5 {
		t.Fatalf("next after reservation = %v, want %v", b, a+5)
	}
}

// Merge laws: receiving timestamps in any order, any number of times, leaves
// the clock at their maximum.
func TestUpdateIsJoin(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 200; iter++ {
		ts := make([]Timestamp, 1+rng.IntN(8))
		var max Timestamp
		for i := range ts {
			ts[i] = New(int64(rng.IntN(100)), uint16(rng.IntN(4)))
			max = maxTS(max, ts[i])
		}
		for perm := 0; perm < 4; perm++ {
			c := NewClock((&ManualWall{}).Read, 0)
			rng.Shuffle(len(ts), func(i, j int) { ts[i], ts[j] = ts[j], ts[i] })
			for _, x := range ts {
				c.Update(x)
				if rng.IntN(2) == 0 {
					c.Update(x) // idempotent
				}
			}
			if c.Last() != max {
				t.Fatalf("join of %v = %v, want %v", ts, c.Last(), max)
			}
		}
	}
}

func maxTS(a, b Timestamp) Timestamp {
	if a > b {
		return a
	}
	return b
}

func TestFromTimeIncludesWholeMillisecond(t *testing.T) {
	tm := time.UnixMilli(123456)
	if New(123456, 65535) > FromTime(tm) || New(123457, 0) <= FromTime(tm) {
		t.Fatal("FromTime bounds wrong")
	}
	if s := New(0, 3).String(); s != "1970-01-01T00:00:00.000Z+3" {
		t.Fatalf("String = %q", s)
	}
}

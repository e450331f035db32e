//go:build race

package codec

// raceEnabled: the race detector slows the quadratic list model of the size
// test by ~10x; sizes do not depend on it, so that test runs without -race.
const raceEnabled = true

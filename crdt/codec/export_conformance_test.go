package codec

// RaceEnabled lets external tests (conformance_test.go) skip long replays
// under the race detector, as TestTraceHistories does.
const RaceEnabled = raceEnabled

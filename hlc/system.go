package hlc

import "time"

// SystemWall reads the system clock. Only I/O shells (the server, clients,
// commands) pass it to NewClock; the pure packages never call it, and the
// dependency test (internal/depcheck) keeps this the one place in hlc that
// reads the wall clock.
func SystemWall() int64 { return time.Now().UnixMilli() }

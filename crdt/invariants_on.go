//go:build invariants

package crdt

// invariants turns on structural checks after every edit and Apply (slow;
// `go test -tags invariants`).
const invariants = true

//go:build !invariants

package crdt

const invariants = false

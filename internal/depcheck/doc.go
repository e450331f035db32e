// Package depcheck holds the test that enforces the dependency direction of
// DESIGN.md: hlc ← crdt ← crdt/codec ← crdt/syncproto ← {storage, cluster,
// syncserver, clients/go} ← cmd, the pure core's ban on I/O, wall-clock time
// and global randomness, and which package may import each I/O library.
package depcheck

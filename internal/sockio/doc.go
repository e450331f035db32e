// Package sockio reads and writes non-blocking sockets with raw system
// calls: read(2) and write(2) run without the Go scheduler's syscall
// bookkeeping (entersyscall/exitsyscall), and waiting for readiness is
// left to the runtime's network poller as before.
//
// Why: the bookkeeping is cheap, but entersyscall also wakes the runtime's
// monitor thread (sysmon) whenever it is in its deep sleep, which it
// enters each time every P of the process goes idle. A woken sysmon
// restarts polling every 20 µs and backs off only after some fifty
// rounds. A server or client that is idle between frames thus re-arms it
// at nearly every frame, and each of its rounds is a nanosleep and a
// context switch, which on a paravirtualized VM (the machine
// docs/performance.md describes) costs a call into the hypervisor. On a
// three-peer cluster in memory at 60 clients, sysmon accounted for about
// a fifth of each peer's CPU. Reading and writing the sockets through
// this package cut the peers' nanosleep calls from 26-37k to 4-4.5k per
// 8 s, and the peers' and their clients' CPU by about a quarter
// (docs/performance.md, "Socket system calls without waking the
// runtime's monitor"). With Pebble on disk, Pebble's own system calls
// still wake it.
//
// The invariant that makes raw calls safe: the file descriptor is
// non-blocking (every socket of the net package is), so read and write
// return at once with data, EAGAIN or an error, and never hold their P
// for longer than the copy takes. A blocking descriptor must never be
// given to Read or Write here. Waiting (EAGAIN) goes through
// syscall.RawConn, which parks the goroutine on the network poller and
// honours the connection's deadlines exactly as net.Conn does.
//
// Wrap gives a net.Conn whose Read and Write do this (the Go client's
// connection, the peer links); NewReader gives a lighter reader for a
// connection only one goroutine reads, whose writes go elsewhere (the
// server's sessions, which write through Write in their own RawConn
// callback or through net's writev). Neither allocates per call.
//
// On systems other than Linux, Wrap returns the connection unchanged,
// NewReader returns nil, and Read and Write are the plain system calls.
package sockio

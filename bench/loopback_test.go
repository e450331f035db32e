package bench

import (
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// BenchmarkLoopbackWrite measures what one delivery costs the kernel
// before weft does anything: one write(2) of a 100-byte message to one of
// 60 loopback TCP connections whose readers drain them, which is what a
// server pays at least once per subscriber per fan-out frame. It reports
// the writing thread's own CPU time per write (getrusage RUSAGE_THREAD,
// user and system), which is the floor under bench converge's server
// "CPU per delivery". On loopback the sender's write also runs the
// receiver's TCP input path, so most of it is system time.
//
// "back-to-back" writes without pause, so readers find several messages
// per wakeup: a lower bound. "fanout-10ms" writes one message to each of
// the 60 connections, then sleeps 10 ms (about 5,400 writes/s, the rate of
// bench converge --clients 60 --docs 6 --rate 10), so every write wakes a
// sleeping reader, as a server's deliveries do.
//
//	go test ./bench -run '^$' -bench LoopbackWrite -benchtime 20000x -count 3
func BenchmarkLoopbackWrite(b *testing.B) {
	b.Run("back-to-back", func(b *testing.B) { loopbackWrite(b, 0) })
	b.Run("fanout-10ms", func(b *testing.B) { loopbackWrite(b, 10*time.Millisecond) })
}

func loopbackWrite(b *testing.B, pause time.Duration) {
	const conns, size = 60, 100
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var ws []net.Conn
	done := make(chan struct{}, conns)
	for range conns {
		w, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		r, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		ws = append(ws, w)
		go func() {
			io.Copy(io.Discard, r)
			r.Close()
			done <- struct{}{}
		}()
	}
	defer func() {
		for _, w := range ws {
			w.Close()
		}
		for range conns {
			<-done
		}
	}()
	msg := make([]byte, size)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	u0, s0 := threadCPU(b)
	i := 0
	for b.Loop() {
		if _, err := ws[i%conns].Write(msg); err != nil {
			b.Fatal(err)
		}
		i++
		if pause > 0 && i%conns == 0 {
			time.Sleep(pause)
		}
	}
	u1, s1 := threadCPU(b)
	b.ReportMetric(float64(u1-u0)/float64(i), "user-ns/write")
	b.ReportMetric(float64(s1-s0)/float64(i), "sys-ns/write")
	b.ReportMetric(float64(u1-u0+s1-s0)/float64(i), "cpu-ns/write")
}

// threadCPU returns the calling OS thread's user and system time.
func threadCPU(b *testing.B) (user, sys time.Duration) {
	const rusageThread = 1 // RUSAGE_THREAD (Linux)
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

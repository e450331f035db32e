package cluster

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftsync/weft/crdt/syncproto"
)

// TestPeerConnKeepsFrames: frames sent by several goroutines at once
// arrive whole and, per sender, in order, while the receiver at first
// reads nothing (the socket fills, so direct writes leave rests to the
// writer and later frames queue behind them) and then reads slowly.
func TestPeerConnKeepsFrames(t *testing.T) {
	c, other := tcpPair(t)
	// A small send buffer, so that the socket fills whatever the
	// system's defaults. (Not a small receive buffer: on loopback, whose
	// segments are 64 KiB, a receiver that cannot open a window of one
	// segment leaves the sender to zero-window probes.)
	if err := c.(*net.TCPConn).SetWriteBuffer(8 << 10); err != nil {
		t.Fatal(err)
	}
	const senders, frames = 4, 400
	pc := newPeerConn(c, bufio.NewReader(c), bufio.NewWriter(c), senders*frames, 0, nil)
	defer pc.wait()
	if pc.raw == nil {
		t.Fatal("a TCP connection has no raw conn: direct writes are not tested")
	}
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := range frames {
				// Large enough that the socket buffers fill well before
				// the last frame: 4 × 400 × 2-8 KB.
				b := make([]byte, 2048+(i%4)*2048)
				binary.BigEndian.PutUint32(b, uint32(s))
				binary.BigEndian.PutUint32(b[4:], uint32(i))
				for k := 8; k < len(b); k++ {
					b[k] = byte(s*31 + i + k)
				}
				if !pc.send(b) {
					t.Errorf("sender %d: frame %d refused", s, i)
					return
				}
			}
		})
	}
	// Read nothing until the socket is full and frames wait for the
	// writer.
	eventually(t, "frames queued behind a full socket", func() bool {
		pc.mu.Lock()
		defer pc.mu.Unlock()
		return len(pc.mu.queue) > 0
	})
	next := make([]int, senders)
	r := bufio.NewReader(other)
	if err := other.SetReadDeadline(time.Now().Add(waitFor)); err != nil {
		t.Fatal(err)
	}
	for got := 0; got < senders*frames; got++ {
		b, err := readFrame(r, 1<<20)
		if err != nil {
			t.Fatalf("after %d frames: %v", got, err)
		}
		if err := checkFrame(b, next); err != nil {
			t.Fatalf("frame %d: %v", got, err)
		}
	}
	wg.Wait()
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	other, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); other.Close() })
	return c, other
}

// TestPeerConnHoldsLaterFrames: a frame sent with sendLater on a quiet
// connection goes at once; on a busy one it waits (an hour here, so only
// a send can take it) and then goes out ahead of the next frame sent, in
// order; with a short hold such frames go out by themselves; sent while
// a write is in progress, they queue behind it.
func TestPeerConnHoldsLaterFrames(t *testing.T) {
	frame := func(s, i int) []byte {
		b := make([]byte, 2048+(i%4)*2048)
		binary.BigEndian.PutUint32(b, uint32(s))
		binary.BigEndian.PutUint32(b[4:], uint32(i))
		for k := 8; k < len(b); k++ {
			b[k] = byte(s*31 + i + k)
		}
		return b
	}
	expect := func(t *testing.T, r *bufio.Reader, other net.Conn, next []int, want ...[2]int) {
		t.Helper()
		if err := other.SetReadDeadline(time.Now().Add(waitFor)); err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			b, err := readFrame(r, 1<<20)
			if err != nil {
				t.Fatalf("want sender %d frame %d: %v", w[0], w[1], err)
			}
			if err := checkFrame(b, next); err != nil {
				t.Fatal(err)
			}
			if s := int(binary.BigEndian.Uint32(b)); s != w[0] {
				t.Fatalf("got a frame of sender %d, want sender %d frame %d", s, w[0], w[1])
			}
		}
	}

	t.Run("at once on a quiet connection", func(t *testing.T) {
		c, other := tcpPair(t)
		pc := newPeerConn(c, bufio.NewReader(c), bufio.NewWriter(c), 64, time.Hour, nil)
		defer pc.wait()
		if !pc.sendLater(frame(0, 0)) {
			t.Fatal("frame refused")
		}
		expect(t, bufio.NewReader(other), other, make([]int, 1), [2]int{0, 0})
	})

	t.Run("taken by a send", func(t *testing.T) {
		c, other := tcpPair(t)
		pc := newPeerConn(c, bufio.NewReader(c), bufio.NewWriter(c), 64, time.Hour, nil)
		defer pc.wait()
		// A write: for the next hour the connection is busy.
		if !pc.send(frame(1, 0)) {
			t.Fatal("send refused")
		}
		for i := range 3 {
			if !pc.sendLater(frame(0, i)) {
				t.Fatalf("frame %d refused", i)
			}
		}
		pc.mu.Lock()
		held, writing := len(pc.mu.held), pc.mu.writing
		pc.mu.Unlock()
		if want := 3*4 + 2048 + 4096 + 6144; held != want || writing {
			t.Fatalf("held %d bytes (writing %v), want %d held and nothing written", held, writing, want)
		}
		if !pc.send(frame(1, 1)) {
			t.Fatal("send refused")
		}
		next := make([]int, 2)
		r := bufio.NewReader(other)
		expect(t, r, other, next, [2]int{1, 0}, [2]int{0, 0}, [2]int{0, 1}, [2]int{0, 2}, [2]int{1, 1})
		pc.mu.Lock()
		held = len(pc.mu.held)
		pc.mu.Unlock()
		if held != 0 {
			t.Fatalf("%d bytes still held after a send", held)
		}
	})

	t.Run("flushed after the hold", func(t *testing.T) {
		c, other := tcpPair(t)
		pc := newPeerConn(c, bufio.NewReader(c), bufio.NewWriter(c), 64, time.Millisecond, nil)
		defer pc.wait()
		next := make([]int, 1)
		r := bufio.NewReader(other)
		for i := range 5 {
			pc.sendLater(frame(0, i))
		}
		expect(t, r, other, next, [2]int{0, 0}, [2]int{0, 1}, [2]int{0, 2}, [2]int{0, 3}, [2]int{0, 4})
		// Again, after the first flush ran.
		pc.sendLater(frame(0, 5))
		expect(t, r, other, next, [2]int{0, 5})
	})

	t.Run("behind a write in progress", func(t *testing.T) {
		c, other := tcpPair(t)
		if err := c.(*net.TCPConn).SetWriteBuffer(8 << 10); err != nil {
			t.Fatal(err)
		}
		pc := newPeerConn(c, bufio.NewReader(c), bufio.NewWriter(c), 4096, time.Hour, nil)
		defer pc.wait()
		// Fill the socket so that frames wait for the writer.
		sent, queued := 0, false
		for ; !queued && sent < 4000; sent++ {
			if !pc.send(frame(0, sent)) {
				t.Fatalf("frame %d refused", sent)
			}
			pc.mu.Lock()
			queued = len(pc.mu.queue) > 0
			pc.mu.Unlock()
		}
		if !queued {
			t.Fatalf("nothing queued after %d frames to an unread socket", sent)
		}
		pc.sendLater(frame(1, 0))
		pc.mu.Lock()
		held := len(pc.mu.held)
		pc.mu.Unlock()
		if held != 0 {
			t.Fatalf("%d bytes held while a write was in progress", held)
		}
		next := make([]int, 2)
		r := bufio.NewReader(other)
		var want [][2]int
		for i := range sent {
			want = append(want, [2]int{0, i})
		}
		// Whatever the hour's hold, the frame arrives behind the others.
		expect(t, r, other, next, append(want, [2]int{1, 0})...)
	})
}

func checkFrame(b []byte, next []int) error {
	if len(b) < 8 {
		return fmt.Errorf("%d bytes", len(b))
	}
	s, i := int(binary.BigEndian.Uint32(b)), int(binary.BigEndian.Uint32(b[4:]))
	if s >= len(next) || i != next[s] {
		return fmt.Errorf("sender %d frame %d, want frame %d", s, i, next[min(s, len(next)-1)])
	}
	if want := 2048 + (i%4)*2048; len(b) != want {
		return fmt.Errorf("sender %d frame %d: %d bytes, want %d", s, i, len(b), want)
	}
	for k := 8; k < len(b); k++ {
		if b[k] != byte(s*31+i+k) {
			return fmt.Errorf("sender %d frame %d: byte %d corrupt", s, i, k)
		}
	}
	next[s]++
	return nil
}

// BenchmarkPeerConnAcks sends ack-sized frames the way an acceptor does
// when a group commit makes several updates durable at once (bursts of
// 8), to a reader that drains them on loopback: "send" writes each at
// once, "sendLater" holds them as acks are held (AckDelay's default).
// It reports write(2) calls per frame from /proc/self/io where readable.
func BenchmarkPeerConnAcks(b *testing.B) {
	for _, tc := range []struct {
		name string
		hold time.Duration
	}{{"send", 0}, {"sendLater", 2 * time.Millisecond}} {
		b.Run(tc.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			drained := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					drained <- err
					return
				}
				defer c.Close()
				_, err = io.Copy(io.Discard, c)
				drained <- err
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			pc := newPeerConn(c, bufio.NewReader(c), bufio.NewWriter(c), 1<<16, tc.hold, nil)
			frame, err := syncproto.Encode(&syncproto.Ack{Doc: "doc-0001", Batch: 1 << 40, Status: syncproto.StatusOK})
			if err != nil {
				b.Fatal(err)
			}
			w0 := syscw()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if tc.hold > 0 {
					pc.sendLater(frame)
				} else {
					pc.send(frame)
				}
				if i%8 == 7 {
					runtime.Gosched() // between two group commits
				}
			}
			b.StopTimer()
			if w0 >= 0 {
				b.ReportMetric(float64(syscw()-w0)/float64(b.N), "writes/frame")
			}
			pc.wait()
			<-drained
		})
	}
}

// syscw returns this process's write-family system calls so far, or -1.
func syscw() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

// TestAckDelayOption: zero takes the default, a negative delay means
// none, and the caller's copy is left alone.
func TestAckDelayOption(t *testing.T) {
	for _, tc := range []struct{ in, want time.Duration }{
		{0, DefaultOptions().AckDelay},
		{-1, 0},
		{5 * time.Millisecond, 5 * time.Millisecond},
	} {
		in := Options{AckDelay: tc.in}
		o, _ := in.withDefaults() // the missing key, server and address are not what this checks
		if o.AckDelay != tc.want || in.AckDelay != tc.in {
			t.Errorf("AckDelay %v: got %v (caller's now %v), want %v", tc.in, o.AckDelay, in.AckDelay, tc.want)
		}
	}
}

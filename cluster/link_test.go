package cluster

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// TestPeerConnKeepsFrames: frames sent by several goroutines at once
// arrive whole and, per sender, in order, while the receiver at first
// reads nothing (the socket fills, so direct writes leave rests to the
// writer and later frames queue behind them) and then reads slowly.
func TestPeerConnKeepsFrames(t *testing.T) {
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
	defer other.Close()
	// A small send buffer, so that the socket fills whatever the
	// system's defaults. (Not a small receive buffer: on loopback, whose
	// segments are 64 KiB, a receiver that cannot open a window of one
	// segment leaves the sender to zero-window probes.)
	if err := c.(*net.TCPConn).SetWriteBuffer(8 << 10); err != nil {
		t.Fatal(err)
	}
	const senders, frames = 4, 400
	pc := newPeerConn(c, bufio.NewReader(c), bufio.NewWriter(c), senders*frames, nil)
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

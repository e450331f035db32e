package syncserver

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/weftsync/weft/crdt/syncproto"
)

// A frame whose header announces 64 GiB is refused with 4005 as soon as
// the header arrives: the payload is never sent, and the heartbeat (which
// would close with 4007) is far away.
func TestHugeFrameHeaderRefusedBeforePayload(t *testing.T) {
	for _, masked := range []bool{true, false} {
		ts := newTestServer(t, func(o *Options) {
			o.PingInterval = time.Minute
			o.PongTimeout = time.Minute
		})
		wc := ts.dial(ts.token("u"))
		// Another frame first, so the guard has to follow the framing.
		wc.send(&syncproto.Ping{Nonce: 7})
		if p, ok := wc.recv().(*syncproto.Pong); !ok || p.Nonce != 7 {
			t.Fatalf("want pong 7, got %#v", p)
		}
		hdr := []byte{0x82, 127}
		if masked {
			hdr[1] |= 0x80
		}
		hdr = binary.BigEndian.AppendUint64(hdr, 64<<30)
		// Without the masking key: the length alone must be enough.
		if _, err := wc.c.NetConn().Write(hdr); err != nil {
			t.Fatal(err)
		}
		if code := wc.expectClose(); code != int(syncproto.CloseFrameTooLarge) {
			t.Fatalf("masked=%v: close code %d, want %d", masked, code, syncproto.CloseFrameTooLarge)
		}
		if got := ts.counter("weft_limit_hits_total", "limit", "frame"); got != 1 {
			t.Fatalf("frame limit hits = %v, want 1", got)
		}
	}
}

// The guard follows frames split across reads at every byte.
func TestGuardedConnFollowsFraming(t *testing.T) {
	var stream []byte
	frame := func(op byte, n int, masked bool) {
		b := []byte{0x80 | op, 0}
		switch {
		case n < 126:
			b[1] = byte(n)
		case n <= 0xffff:
			b[1] = 126
			b = binary.BigEndian.AppendUint16(b, uint16(n))
		default:
			b[1] = 127
			b = binary.BigEndian.AppendUint64(b, uint64(n))
		}
		if masked {
			b[1] |= 0x80
			b = append(b, 1, 2, 3, 4)
		}
		stream = append(stream, b...)
		stream = append(stream, make([]byte, n)...)
	}
	frame(0x2, 10, true)
	frame(0x9, 125, true)
	frame(0x2, 300, false)
	frame(0x0, 70000, true)
	frame(0x2, 100000, true) // exactly the limit
	bad := len(stream)
	frame(0x2, 100001, true)
	for _, step := range []int{1, 3, 7, 4096, len(stream)} {
		g := &guardedConn{limit: 100000}
		at := -1
		for i := 0; i < len(stream); i += step {
			chunk := stream[i:min(i+step, len(stream))]
			if k, ok := g.feed(chunk); !ok {
				at = i + k
				break
			}
		}
		// Refused in the read that completes the length (its last byte is
		// bad+9), at the header's first byte or that read's start.
		if want := max(bad, (bad+9)/step*step); at != want {
			t.Fatalf("step %d: refused at %d, want %d (header at %d)", step, at, want, bad)
		}
	}
}

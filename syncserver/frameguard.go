package syncserver

import (
	"bufio"
	"net"
	"net/http"

	"github.com/weftsync/weft/internal/sockio"
)

// A frame header announces its payload length before the payload: a
// frame above MaxFrameBytes is refused as soon as its header is read
// (PROTOCOL.md §1), not after waiting for (or reading) its payload. gorilla
// only offers that check through SetReadLimit, which answers with its own
// close 1009 frame (written around our flusher) instead of 4005; so the
// session reads through guardedConn, which follows the framing of the byte
// stream (RFC 6455 §5.2) and fails the read at the first oversized header.

// guardHijack makes the WebSocket upgrade hijack a guardedConn.
type guardHijack struct {
	http.ResponseWriter
	limit int64
}

func (g guardHijack) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(g.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	gc := &guardedConn{Conn: c, raw: sockio.NewReader(c), limit: g.limit}
	if brw.Reader.Buffered() > 0 {
		return gc, brw, nil // gorilla refuses: data before the handshake completed
	}
	// gorilla reads through a reader it is handed when it is larger than
	// 256 bytes and Upgrader.ReadBufferSize is 0: ours is small, and the
	// session can ask it whether a frame is already buffered (see waitData).
	gc.br = bufio.NewReaderSize(gc, readBufferSize)
	return gc, bufio.NewReadWriter(gc.br, brw.Writer), nil
}

// readBufferSize is the read buffer of a WebSocket connection: a
// keystroke's frame and its header fit; larger payloads are read past it,
// straight into their destination. gorilla takes a reader only above 256
// bytes, and 288 is the allocator's next size class: every idle
// connection holds one, so 224 bytes fewer than 512 is about 2% of what
// one costs.
const readBufferSize = 288

// waitData blocks until the connection has bytes to read, in a shallow
// call, so that an idle connection's reader goroutine waits with little
// of its stack in use and the collector can shrink the stack. It reads
// nothing that gorilla does not then read: the byte lands in br.
func (g *guardedConn) waitData() error {
	if g.br == nil || g.br.Buffered() > 0 {
		return nil
	}
	_, err := g.br.Peek(1)
	return err
}

// takePong consumes a whole pong frame at the head of the read buffer and
// reports whether it did. The reader calls it between messages, where the
// stream is at a frame boundary and gorilla holds nothing of it, so
// gorilla never sees the frame: an idle client answering the server's
// pings does not keep a reader goroutine (see session.idle). The payload
// (the ping's, echoed) is not needed. Anything else, and a pong that is
// not whole yet, is left for gorilla, which checks it.
func (g *guardedConn) takePong() bool {
	n := g.br.Buffered()
	if n < 2 {
		return false
	}
	h, err := g.br.Peek(2)
	if err != nil || h[0] != 0x80|0x0a || h[1]&0x80 == 0 {
		return false // not a final, unfragmented, masked pong
	}
	size := 2 + 4 + int(h[1]&0x7f) // header, masking key, payload
	if h[1]&0x7f > 125 || n < size {
		return false
	}
	_, err = g.br.Discard(size)
	return err == nil
}

// guardedConn is a server-side WebSocket connection whose reads stop
// before a frame header announcing more than limit payload bytes; the read
// after the bytes that precede that header fails with errFrameTooLarge.
// Writes go to the wrapped Conn (the session writes to it directly, for
// writev). Only the reader goroutine calls Read.
type guardedConn struct {
	net.Conn
	raw   *sockio.Reader // reads Conn with raw calls; nil when it is not a socket
	limit int64
	br    *bufio.Reader // what gorilla reads through (nil in tests of feed)

	err    error // sticky: the oversized header was found
	hdr    [14]byte
	state  int    // header bytes of the current frame seen so far
	lenEnd int    // where the header's length ends (2, 4 or 10)
	end    int    // where the header ends (lenEnd, plus 4 when masked)
	length uint64 // the current frame's payload length
	skip   uint64 // payload bytes left in the current frame
}

func (g *guardedConn) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	var n int
	var err error
	if g.raw != nil {
		n, err = g.raw.Read(p)
	} else {
		n, err = g.Conn.Read(p)
	}
	if k, ok := g.feed(p[:n]); !ok {
		g.err = errFrameTooLarge
		if k == 0 {
			return 0, g.err
		}
		return k, nil // the bytes before the header; the next read fails
	}
	return n, err
}

// feed follows the framing through b. It returns false, with the offset of
// the first byte of the oversized frame's header, when a data frame
// announces more than limit bytes: as soon as its length is complete,
// before its masking key. Header bytes are looked at one by one (at most 14
// per frame); payloads are skipped by arithmetic.
func (g *guardedConn) feed(b []byte) (int, bool) {
	for i := 0; i < len(b); {
		if g.skip > 0 {
			n := min(uint64(len(b)-i), g.skip)
			g.skip -= n
			i += int(n)
			continue
		}
		g.hdr[g.state] = b[i]
		g.state++
		i++
		if g.state == 2 {
			g.lenEnd = 2
			switch g.hdr[1] & 0x7f {
			case 126:
				g.lenEnd = 4
			case 127:
				g.lenEnd = 10
			}
			g.end = g.lenEnd
			if g.hdr[1]&0x80 != 0 {
				g.end += 4 // masking key
			}
		}
		if g.state == g.lenEnd && g.state >= 2 {
			var length uint64
			switch l := g.hdr[1] & 0x7f; l {
			case 126, 127:
				for _, c := range g.hdr[2:g.lenEnd] {
					length = length<<8 | uint64(c)
				}
			default:
				length = uint64(l)
			}
			// Control frames (opcode ≥ 8) are at most 125 bytes; gorilla
			// refuses longer ones itself.
			if g.hdr[0]&0x08 == 0 && length > uint64(g.limit) {
				return max(i-g.state, 0), false // the header may have begun in an earlier read
			}
			g.length = length
		}
		if g.state >= 2 && g.state == g.end {
			g.state, g.skip = 0, g.length
		}
	}
	return len(b), true
}

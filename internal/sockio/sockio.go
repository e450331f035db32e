package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// SyscallConn returns c's raw connection when c is a socket of the net
// package (it implements syscall.Conn), else nil: for callers that make
// their own calls on the descriptor with Read and Write.
func SyscallConn(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// rawConnOf is SyscallConn where this system has raw calls, else nil.
func rawConnOf(c net.Conn) syscall.RawConn {
	if !supported {
		return nil
	}
	return SyscallConn(c)
}

// Reader reads a socket as net.Conn's Read does, with raw read(2) calls.
// One goroutine at a time may call Read (Conn adds a lock for more).
type Reader struct {
	c  net.Conn
	rc syscall.RawConn
	// The raw connection's callback is bound once (a closure per call
	// would cost allocations on every frame) and works on these.
	p   []byte
	n   int
	err error
	fn  func(uintptr) bool
}

// NewReader returns a Reader of c, or nil when c is not a socket with raw
// calls on this system (then read c itself).
func NewReader(c net.Conn) *Reader {
	rc := rawConnOf(c)
	if rc == nil {
		return nil
	}
	r := &Reader{c: c, rc: rc}
	r.fn = r.readFD
	return r
}

// Read reads at least one byte, returns io.EOF at the end of the stream,
// and honours the connection's read deadline.
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.p, r.n, r.err = p, 0, nil
	err := r.rc.Read(r.fn)
	n, serr := r.n, r.err
	r.p, r.err = nil, nil
	switch {
	case err != nil:
		return 0, opError(r.c, "read", err)
	case serr != nil:
		return 0, opError(r.c, "read", os.NewSyscallError("read", serr))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (r *Reader) readFD(fd uintptr) bool {
	r.n, r.err = Read(fd, r.p)
	return r.err != syscall.EAGAIN
}

// Conn is a socket connection whose Read and Write use this package's
// raw system calls. Its other methods are the wrapped connection's.
type Conn struct {
	net.Conn
	rmu sync.Mutex // net.Conn allows concurrent calls
	r   Reader

	wmu     sync.Mutex
	wp      []byte
	wn      int
	werr    error
	writeFn func(uintptr) bool
}

// Wrap returns c with raw reads and writes when c is a socket of the net
// package on Linux, else c itself.
func Wrap(c net.Conn) net.Conn {
	if _, ok := c.(*Conn); ok {
		return c
	}
	rc := rawConnOf(c)
	if rc == nil {
		return c
	}
	w := &Conn{Conn: c, r: Reader{c: c, rc: rc}}
	w.r.fn, w.writeFn = w.r.readFD, w.writeFD
	return w
}

// SyscallConn returns the wrapped socket's raw connection.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.r.rc, nil }

// Read reads as net.Conn's Read does: at least one byte, io.EOF at the
// end of the stream, and the connection's read deadline honoured.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.r.Read(p)
}

// Write writes all of p as net.Conn's Write does, waiting while the
// socket is full and honouring the connection's write deadline.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wp, c.wn, c.werr = p, 0, nil
	err := c.r.rc.Write(c.writeFn)
	n, serr := c.wn, c.werr
	c.wp, c.werr = nil, nil
	switch {
	case err != nil:
		return n, opError(c.Conn, "write", err)
	case serr != nil:
		return n, opError(c.Conn, "write", serr)
	}
	return n, nil
}

func (c *Conn) writeFD(fd uintptr) bool {
	for c.wn < len(c.wp) {
		m, err := Write(fd, c.wp[c.wn:])
		switch {
		case err == syscall.EAGAIN:
			return false
		case err != nil:
			c.werr = os.NewSyscallError("write", err)
			return true
		case m == 0:
			c.werr = io.ErrUnexpectedEOF
			return true
		}
		c.wn += m
	}
	return true
}

// opError reports err as net.Conn would: a *net.OpError naming op and c's
// addresses. The raw connection's own errors (a deadline, a closed
// connection) already are one, for "raw-read" or "raw-write".
func opError(c net.Conn, op string, err error) error {
	if oe := (*net.OpError)(nil); errors.As(err, &oe) {
		e := *oe
		e.Op = op
		return &e
	}
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

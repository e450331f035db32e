package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Conn is a socket connection whose Read and Write use this package's
// raw system calls. Its other methods are the wrapped connection's.
type Conn struct {
	net.Conn
	rc syscall.RawConn

	// The raw connection's callbacks are bound once (a closure per call
	// would cost allocations on every frame) and work on these, each
	// side under its lock: net.Conn allows concurrent calls.
	rmu    sync.Mutex
	rp     []byte
	rn     int
	rerr   error
	readFn func(uintptr) bool

	wmu     sync.Mutex
	wp      []byte
	wn      int
	werr    error
	writeFn func(uintptr) bool
}

// Wrap returns c with raw reads and writes when c is a socket of the net
// package on Linux (it implements syscall.Conn), else c itself.
func Wrap(c net.Conn) net.Conn {
	if !supported {
		return c
	}
	if _, ok := c.(*Conn); ok {
		return c
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	w := &Conn{Conn: c, rc: rc}
	w.readFn, w.writeFn = w.readFD, w.writeFD
	return w
}

// SyscallConn returns the wrapped socket's raw connection.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

// Read reads as net.Conn's Read does: at least one byte, io.EOF at the
// end of the stream, and the connection's read deadline honoured.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rp, c.rn, c.rerr = p, 0, nil
	err := c.rc.Read(c.readFn)
	n, serr := c.rn, c.rerr
	c.rp, c.rerr = nil, nil
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case serr != nil:
		return 0, c.opError("read", os.NewSyscallError("read", serr))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *Conn) readFD(fd uintptr) bool {
	c.rn, c.rerr = Read(fd, c.rp)
	return c.rerr != syscall.EAGAIN
}

// Write writes all of p as net.Conn's Write does, waiting while the
// socket is full and honouring the connection's write deadline.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wp, c.wn, c.werr = p, 0, nil
	err := c.rc.Write(c.writeFn)
	n, serr := c.wn, c.werr
	c.wp, c.werr = nil, nil
	switch {
	case err != nil:
		return n, c.opError("write", err)
	case serr != nil:
		return n, c.opError("write", serr)
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

// opError reports err as net.Conn would: a *net.OpError naming op and the
// connection's addresses. The raw connection's own errors (a deadline, a
// closed connection) already are one, for "raw-read" or "raw-write".
func (c *Conn) opError(op string, err error) error {
	if oe := (*net.OpError)(nil); errors.As(err, &oe) {
		e := *oe
		e.Op = op
		return &e
	}
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

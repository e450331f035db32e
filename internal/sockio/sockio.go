package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// Conn is a socket connection whose Read and Write use this package's
// raw system calls. Its other methods are the wrapped connection's.
type Conn struct {
	net.Conn
	rc syscall.RawConn
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
	return &Conn{Conn: c, rc: rc}
}

// SyscallConn returns the wrapped socket's raw connection.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

// Read reads as net.Conn's Read does: at least one byte, io.EOF at the
// end of the stream, and the connection's read deadline honoured.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var serr error
	err := c.rc.Read(func(fd uintptr) bool {
		n, serr = Read(fd, p)
		return serr != syscall.EAGAIN
	})
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

// Write writes all of p as net.Conn's Write does, waiting while the
// socket is full and honouring the connection's write deadline.
func (c *Conn) Write(p []byte) (int, error) {
	var n int
	var serr error
	err := c.rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			m, err := Write(fd, p[n:])
			switch {
			case err == syscall.EAGAIN:
				return false
			case err != nil:
				serr = os.NewSyscallError("write", err)
				return true
			case m == 0:
				serr = io.ErrUnexpectedEOF
				return true
			}
			n += m
		}
		return true
	})
	switch {
	case err != nil:
		return n, c.opError("write", err)
	case serr != nil:
		return n, c.opError("write", serr)
	}
	return n, nil
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

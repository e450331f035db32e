package sockio

import (
	"syscall"
	"unsafe"
)

const supported = true

// Read is read(2) on the non-blocking descriptor fd, retried on EINTR,
// without entering the scheduler's syscall state (see the package doc).
// It returns syscall.EAGAIN when nothing is there to read.
func Read(fd uintptr, p []byte) (int, error) { return raw(syscall.SYS_READ, fd, p) }

// Write is write(2) on the non-blocking descriptor fd, retried on EINTR,
// without entering the scheduler's syscall state. It returns
// syscall.EAGAIN when the socket takes nothing more now.
func Write(fd uintptr, p []byte) (int, error) { return raw(syscall.SYS_WRITE, fd, p) }

// raw makes system call trap (read or write) on fd and p.
func raw(trap, fd uintptr, p []byte) (int, error) {
	for {
		n, _, e := syscall.RawSyscall(trap, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
		switch e {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			continue
		}
		return 0, e
	}
}

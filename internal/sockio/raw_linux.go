package sockio

import (
	"syscall"
	"unsafe"
)

const supported = true

// Read is read(2) on the non-blocking descriptor fd, retried on EINTR,
// without entering the scheduler's syscall state (see the package doc).
// It returns syscall.EAGAIN when nothing is there to read.
func Read(fd uintptr, p []byte) (int, error) {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
		switch e {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			continue
		}
		return 0, e
	}
}

// Write is write(2) on the non-blocking descriptor fd, retried on EINTR,
// without entering the scheduler's syscall state. It returns
// syscall.EAGAIN when the socket takes nothing more now.
func Write(fd uintptr, p []byte) (int, error) {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
		switch e {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			continue
		}
		return 0, e
	}
}

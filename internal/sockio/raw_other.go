//go:build !linux

package sockio

import "syscall"

const supported = false

// Read is read(2) on fd, retried on EINTR.
func Read(fd uintptr, p []byte) (int, error) { return retry(syscall.Read, fd, p) }

// Write is write(2) on fd, retried on EINTR.
func Write(fd uintptr, p []byte) (int, error) { return retry(syscall.Write, fd, p) }

func retry(call func(int, []byte) (int, error), fd uintptr, p []byte) (int, error) {
	for {
		n, err := call(int(fd), p)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		return n, nil
	}
}

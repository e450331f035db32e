//go:build linux

package syncserver

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// poller waits for the next bytes of the connections whose reader parked
// (see session.park): one epoll instance and one goroutine for the whole
// server, instead of a goroutine blocked in a read, with its stack, per
// idle connection. The Go runtime's own poller keeps the sockets too (a
// socket may sit in several epoll sets); this one only says when a parked
// reader should run again, and the reader then reads through the runtime
// as usual.
//
// Registrations are one-shot (EPOLLONESHOT): an event disarms the socket
// until its reader parks again, so a reader is resumed once per park. An
// event carries the session's id, never its descriptor: a closed socket
// leaves every epoll set by itself, and its number may be reused by a
// newer connection with a new id.
type poller struct {
	epfd   int
	wakefd int // an eventfd that ends run (close)
	done   chan struct{}

	mu   sync.Mutex
	byID map[int32]*session
	next int32
	err  error // set by fail: parking is off

	log Logger
}

func newPoller(log Logger) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("syncserver: epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("syncserver: eventfd: %w", err)
	}
	// Id 0 is the wake-up; sessions get ids from 1.
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		unix.Close(wakefd)
		unix.Close(epfd)
		return nil, fmt.Errorf("syncserver: epoll_ctl: %w", err)
	}
	p := &poller{epfd: epfd, wakefd: wakefd, done: make(chan struct{}), byID: make(map[int32]*session), log: log}
	go p.run()
	return p, nil
}

func (p *poller) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			// Nothing can be resumed from here on: every parked reader
			// runs again now, and none parks any more.
			p.fail(fmt.Errorf("syncserver: epoll_wait: %w", err))
			return
		}
		for _, ev := range events[:n] {
			if ev.Fd == 0 {
				return // close
			}
			p.mu.Lock()
			ss := p.byID[ev.Fd]
			p.mu.Unlock()
			if ss != nil {
				ss.unpark()
			}
		}
	}
}

// fail stops parking for good: watch refuses from now on, and every
// parked reader is resumed (it then waits in a read, as without a poller).
func (p *poller) fail(err error) {
	p.mu.Lock()
	p.err = err
	parked := make([]*session, 0, len(p.byID))
	for _, ss := range p.byID {
		parked = append(parked, ss)
	}
	p.mu.Unlock()
	p.log.Error("idle connections can no longer park; resuming their readers", "err", err, "connections", len(parked))
	for _, ss := range parked {
		ss.unpark()
	}
}

// watch arms one readable event for ss's socket (EPOLLONESHOT), giving
// ss an id the first time. It is called by a reader about to park, with
// ss.parked already set, so that the event finds it parked.
func (p *poller) watch(ss *session) error {
	p.mu.Lock()
	if p.err != nil {
		p.mu.Unlock()
		return p.err
	}
	id, op := ss.pollID, unix.EPOLL_CTL_MOD
	if id == 0 {
		op = unix.EPOLL_CTL_ADD
		for {
			p.next++
			if p.next <= 0 {
				p.next = 1 // wrapped: ids stay positive and unique
			}
			if p.byID[p.next] == nil {
				break
			}
		}
		id = p.next
		ss.pollID = id
		p.byID[id] = ss
	}
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: id}
	var cerr error
	// Control holds the descriptor open for the call: it cannot be closed
	// and reused under us.
	err := ss.raw.Control(func(fd uintptr) { cerr = unix.EpollCtl(p.epfd, op, int(fd), &ev) })
	if err == nil {
		err = cerr
	}
	return err
}

// forget drops ss (its connection has ended).
func (p *poller) forget(ss *session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ss.pollID != 0 && p.byID[ss.pollID] == ss {
		delete(p.byID, ss.pollID)
	}
}

// close stops the poller's goroutine and releases its descriptors.
func (p *poller) close() {
	var one [8]byte
	one[0] = 1 // eventfd counters are host-endian; any non-zero value wakes
	if _, err := unix.Write(p.wakefd, one[:]); err == nil {
		<-p.done
	}
	unix.Close(p.wakefd)
	unix.Close(p.epfd)
}

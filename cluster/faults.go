package cluster

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Faults cuts a node off from the others, for tests and benchmarks: while
// isolated, its gossip packets are dropped both ways, its gossip and peer
// dials fail, incoming connections are closed at once, and the peer links
// it had are closed. The others see exactly what a network partition
// shows them. The zero value is ready to use and not isolated.
type Faults struct {
	isolated atomic.Bool
	mu       sync.Mutex
	conns    map[net.Conn]struct{} // open peer-link connections, closed on isolation
}

// errIsolated is what dials fail with while a node is isolated.
var errIsolated = errors.New("cluster: isolated by fault injection")

// Isolate cuts the node off (on) or heals it (off).
func (f *Faults) Isolate(on bool) {
	f.isolated.Store(on)
	if !on {
		return
	}
	f.mu.Lock()
	conns := f.conns
	f.conns = nil
	f.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

// Isolated reports whether the node is cut off.
func (f *Faults) Isolated() bool { return f != nil && f.isolated.Load() }

// track registers a peer-link connection to close on isolation; the
// returned func forgets it. On a nil Faults both do nothing.
func (f *Faults) track(c net.Conn) (forget func()) {
	if f == nil {
		return func() {}
	}
	f.mu.Lock()
	if f.conns == nil {
		f.conns = make(map[net.Conn]struct{})
	}
	f.conns[c] = struct{}{}
	f.mu.Unlock()
	if f.Isolated() {
		c.Close()
	}
	return func() {
		f.mu.Lock()
		delete(f.conns, c)
		f.mu.Unlock()
	}
}

// faultTransport wraps memberlist's NetTransport with Faults.
type faultTransport struct {
	*memberlist.NetTransport
	f       *Faults
	packets chan *memberlist.Packet
	streams chan net.Conn
	stop    chan struct{}
	wg      sync.WaitGroup
}

func newFaultTransport(nt *memberlist.NetTransport, f *Faults) *faultTransport {
	t := &faultTransport{NetTransport: nt, f: f, packets: make(chan *memberlist.Packet), streams: make(chan net.Conn), stop: make(chan struct{})}
	t.wg.Add(2)
	go func() {
		defer t.wg.Done()
		for {
			select {
			case p := <-nt.PacketCh():
				if f.Isolated() {
					continue
				}
				select {
				case t.packets <- p:
				case <-t.stop:
					return
				}
			case <-t.stop:
				return
			}
		}
	}()
	go func() {
		defer t.wg.Done()
		for {
			select {
			case c := <-nt.StreamCh():
				if f.Isolated() {
					c.Close()
					continue
				}
				select {
				case t.streams <- c:
				case <-t.stop:
					c.Close()
					return
				}
			case <-t.stop:
				return
			}
		}
	}()
	return t
}

func (t *faultTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *faultTransport) StreamCh() <-chan net.Conn           { return t.streams }

func (t *faultTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.f.Isolated() {
		return time.Now(), nil // lost on the wire
	}
	return t.NetTransport.WriteTo(b, addr)
}

func (t *faultTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *faultTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.f.Isolated() {
		return nil, errIsolated
	}
	return t.NetTransport.DialTimeout(addr, timeout)
}

func (t *faultTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

func (t *faultTransport) Shutdown() error {
	err := t.NetTransport.Shutdown()
	close(t.stop)
	t.wg.Wait()
	return err
}

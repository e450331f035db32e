//go:build !linux

package syncserver

import "errors"

// poller exists on Linux only (park_linux.go); elsewhere idle readers stay
// blocked in a read, as they do with Options.ParkIdle < 0.
type poller struct{}

func newPoller(Logger) (*poller, error) {
	return nil, errors.New("syncserver: parking idle readers needs Linux")
}

func (p *poller) watch(*session) error { return errors.New("syncserver: no poller") }
func (p *poller) forget(*session)      {}
func (p *poller) close()               {}

// Package tcpproxy is a TCP proxy for tests that a test can partition: put
// it between a client and a server (a gateway instance and its Consul agent)
// and Partition makes the network between them go silent, as a real
// partition does, while everything else keeps working.
//
// A partition holds traffic rather than closing connections: bytes already
// in flight wait at the proxy, new connections are accepted but not passed
// on, and nothing is refused or reset, so a client learns of the partition
// only through its own timeouts, exactly as it would on a real network.
// Heal lets everything held through again (TCP would retransmit it), unless
// the client gave up meanwhile.
package tcpproxy

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Proxy forwards connections from its loopback listener to a target address.
// Its methods are safe from any goroutine.
type Proxy struct {
	target string
	ln     net.Listener

	mu     sync.Mutex
	open   chan struct{} // closed while traffic flows; replaced by Partition
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Start listens on a free loopback port and forwards every connection to
// target (host:port).
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, ln: ln, open: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	close(p.open)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listening address, host:port: give it to the client.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Partition stops all traffic through the proxy until Heal: nothing is
// lost or refused, only held.
func (p *Proxy) Partition() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
		p.open = make(chan struct{})
	default: // already partitioned
	}
}

// Heal lets traffic through again, what was held first.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
}

// Partitioned reports whether traffic is held.
func (p *Proxy) Partitioned() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
		return false
	default:
		return true
	}
}

// Close stops listening, closes every connection and waits for the proxy's
// goroutines. It is idempotent.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	_ = p.ln.Close()
	for c := range p.conns {
		_ = c.Close()
	}
	select {
	case <-p.open:
	default:
		close(p.open) // release goroutines waiting for a heal
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// gate returns the channel that is closed while traffic may flow.
func (p *Proxy) gate() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}

// wait blocks until traffic may flow; false once the proxy is closed.
func (p *Proxy) wait() bool {
	<-p.gate()
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.closed
}

// track registers c so that Close closes it; false once the proxy is closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			_ = c.Close()
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve connects client to the target once traffic may flow (a partition
// holds a new connection too), then copies both ways.
func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client)
	if !p.wait() {
		return
	}
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return // the client sees its connection closed, as with a dead target
	}
	if !p.track(server) {
		_ = server.Close()
		return
	}
	defer p.untrack(server)
	ended := make(chan bool, 2) // true: the side closed cleanly (EOF)
	go func() { ended <- p.copy(server, client) }()
	go func() { ended <- p.copy(client, server) }()
	if clean := <-ended; !clean {
		// An error (reset, the proxy closing): the whole connection goes.
		_ = client.Close()
		_ = server.Close()
	}
	<-ended
}

// copy forwards src to dst, holding each chunk while partitioned, and
// reports whether src ended cleanly; then dst is half-closed, as the TCP
// connection would be.
func (p *Proxy) copy(dst, src net.Conn) (clean bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.wait() {
				return false
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return false
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			return true
		case err != nil:
			return false
		}
	}
}

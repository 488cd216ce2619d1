package testenv

import (
	"net"
	"sync"
	"testing"
)

// Proxy passes TCP connections from a loopback port (Addr) to a target
// address, so that a test can cut one process off from one server while
// everything else still reaches it. Cut is a network partition without
// resets: connections stay open and new ones are accepted, but no byte
// passes either way, and a side that closes is not told to the other.
// Heal lets what was held go through, in order, and passes bytes again.
type Proxy struct {
	Addr   string
	target string
	ln     net.Listener

	mu    sync.Mutex
	cut   bool
	moved *sync.Cond // signalled when cut changes or the proxy closes
	done  bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// StartProxy listens on a free loopback port and passes its connections to
// target until the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.moved = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Cut stops every byte from passing, on open connections and new ones.
func (p *Proxy) Cut() { p.set(true) }

// Heal passes bytes again, first those held while cut.
func (p *Proxy) Heal() { p.set(false) }

func (p *Proxy) set(cut bool) {
	p.mu.Lock()
	p.cut = cut
	p.mu.Unlock()
	p.moved.Broadcast()
}

// pass waits while the proxy is cut; false once it is closed.
func (p *Proxy) pass() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.cut && !p.done {
		p.moved.Wait()
	}
	return !p.done
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(client)
		}()
	}
}

// serve connects to the target once bytes may pass (a connect during a
// cut hangs, as a SYN into a partition does) and copies both ways.
func (p *Proxy) serve(client net.Conn) {
	if !p.track(client) || !p.pass() {
		client.Close()
		return
	}
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(server) {
		client.Close()
		server.Close()
		return
	}
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			client.Close()
			server.Close()
			p.mu.Lock()
			delete(p.conns, client)
			delete(p.conns, server)
			p.mu.Unlock()
		})
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.copy(server, client, closeBoth) }()
	go func() { defer wg.Done(); p.copy(client, server, closeBoth) }()
	wg.Wait()
}

// copy moves bytes from src to dst, each chunk only while not cut; an end
// of src (close or error) is passed on the same way, by closing both.
func (p *Proxy) copy(dst, src net.Conn, closeBoth func()) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if !p.pass() {
			closeBoth()
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				closeBoth()
				return
			}
		}
		if err != nil {
			closeBoth()
			return
		}
	}
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) close() {
	p.mu.Lock()
	p.done = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.moved.Broadcast()
	p.ln.Close()
	p.wg.Wait()
}

package ws

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// Sockets with one write at a time. The fan-out reader writes to an idle
// socket itself, with a write that must never wait (deliver.go), and what
// the socket does not take of it is left to the writer as a tail. Two
// rules keep that safe, and both need to see every write to the socket,
// the websocket library's own included (it writes the close frame of a
// client that broke the protocol, from the reader goroutine):
//   - the fan-out reader does not wait for another write: while one holds
//     the socket (the library's, waiting up to its write wait on a full
//     buffer), it queues instead of writing;
//   - nothing is written inside a tail: until the writer has written it,
//     any other write waits.
//
// So the gateway's listener wraps each accepted connection (Listener), and
// every write but the writer's and the fan-out reader's goes through
// sock.Write. A connection from another listener has no sock, and then
// every write takes the queue.

// Listener wraps ln so that each TCP connection it accepts is a sock.
func Listener(ln net.Listener) net.Listener { return sockListener{ln} }

type sockListener struct{ net.Listener }

func (l sockListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nc, nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nc, nil
	}
	return &sock{TCPConn: tc, raw: raw}, nil
}

// errSockBroken is returned by writes after the writer's own write failed:
// part of a frame may be out, so nothing more can follow it.
var errSockBroken = errors.New("websocket: socket write failed before")

// sock is an accepted connection whose writes do not interleave.
type sock struct {
	*net.TCPConn
	raw syscall.RawConn

	mu sync.Mutex // held by each write
	// tail is closed once the tail (the rest of a write taken in part) is
	// out, or will never be; nil when there is none.
	tail   chan struct{}
	broken bool
	// waiting counts the writes waiting for the tail (tests read it).
	waiting atomic.Int32
}

// Write is every write but the writer's and the fan-out reader's: the
// HTTP response before the upgrade, and the library's control frames. It
// waits for a pending tail to be written first.
func (s *sock) Write(p []byte) (int, error) {
	s.mu.Lock()
	for s.tail != nil {
		t := s.tail
		s.waiting.Add(1)
		s.mu.Unlock()
		<-t
		s.mu.Lock()
		s.waiting.Add(-1)
	}
	defer s.mu.Unlock()
	if s.broken {
		return 0, errSockBroken
	}
	return s.TCPConn.Write(p)
}

// writeOwn is the writer's write. The tail, when there is one, is always
// at the head of what the writer writes first, so once writeOwn returns
// the tail is out (or the socket broken): it releases Write's waiters.
func (s *sock) writeOwn(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken {
		return 0, errSockBroken
	}
	n, err := s.TCPConn.Write(p)
	if err != nil {
		s.broken = true
	}
	s.endTail()
	return n, err
}

// tryWrite writes p with one write that waits neither for the socket's
// buffer nor for another write: n is what the socket took, 0 when it took
// nothing or another write holds the socket. When it took only part, the
// caller must queue the rest as the tail and have the writer write it.
func (s *sock) tryWrite(p []byte) (n int, err error) {
	if !s.mu.TryLock() {
		return 0, nil
	}
	defer s.mu.Unlock()
	if s.broken || s.tail != nil {
		return 0, nil // the writer has the socket; the queue goes there
	}
	var werr error
	err = s.raw.Write(func(fd uintptr) bool {
		for {
			n, werr = syscall.Write(int(fd), p)
			if !errors.Is(werr, syscall.EINTR) {
				return true // done, whatever happened: never wait here
			}
		}
	})
	if n < 0 {
		n = 0
	}
	switch {
	case err != nil:
		return 0, err
	case errors.Is(werr, syscall.EAGAIN):
		return 0, nil
	case werr != nil:
		s.broken = true
		return 0, werr
	}
	if n > 0 && n < len(p) {
		s.tail = make(chan struct{})
	}
	return n, nil
}

// endTail releases the waiters of a pending tail. It is called with s.mu
// held, by the writer's write and when the connection ends (the tail is
// then dropped with the queue).
func (s *sock) endTail() {
	if s.tail != nil {
		close(s.tail)
		s.tail = nil
	}
}

// dropTail gives up a pending tail: the socket is broken, since part of
// a frame is out and the rest never will be.
func (s *sock) dropTail() {
	s.mu.Lock()
	if s.tail != nil {
		s.broken = true
		s.endTail()
	}
	s.mu.Unlock()
}

// drop marks the socket finished: a pending tail will not be written.
func (s *sock) drop() {
	s.mu.Lock()
	s.broken = true
	s.endTail()
	s.mu.Unlock()
}

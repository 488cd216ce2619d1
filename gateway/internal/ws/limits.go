package ws

import (
	"errors"
	"sync"
	"time"
)

// Errors of connLimiter.acquire.
var (
	errNodeFull = errors.New("gateway connection limit reached")
	errUserFull = errors.New("user connection limit reached")
)

// connLimiter counts this gateway's WebSocket connections, in total and per
// user, so that one user (or a flood of handshakes) cannot take every socket,
// file descriptor and goroutine of the process. A handshake reserves a slot
// before the upgrade; the connection releases it when it ends.
type connLimiter struct {
	maxTotal, maxPerUser int

	mu      sync.Mutex
	total   int
	perUser map[int64]int
}

func newConnLimiter(maxTotal, maxPerUser int) *connLimiter {
	return &connLimiter{maxTotal: maxTotal, maxPerUser: maxPerUser, perUser: map[int64]int{}}
}

// full reports whether the gateway has no free slot at all: a cheap check
// made before the handshake spends work on the token and the room.
func (l *connLimiter) full() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total >= l.maxTotal
}

// acquire reserves a slot for user, or fails with errNodeFull or
// errUserFull.
func (l *connLimiter) acquire(user int64) (*slot, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.maxTotal {
		return nil, errNodeFull
	}
	if l.perUser[user] >= l.maxPerUser {
		return nil, errUserFull
	}
	l.total++
	l.perUser[user]++
	return &slot{l: l, user: user}, nil
}

func (l *connLimiter) release(user int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if n := l.perUser[user] - 1; n > 0 {
		l.perUser[user] = n
	} else {
		delete(l.perUser, user)
	}
}

// counts returns the connections counted in total and for user.
func (l *connLimiter) counts(user int64) (total, ofUser int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total, l.perUser[user]
}

// slot is one reserved connection. It is released exactly once: by the
// connection when it ends, or, when the upgraded connection never starts
// (the handshake answer could not be written), by the timer armed with
// expireUnclaimed.
type slot struct {
	l    *connLimiter
	user int64

	mu      sync.Mutex
	claimed bool
	done    bool
	timer   *time.Timer
}

// expireUnclaimed releases the slot after d unless claim is called first.
func (s *slot) expireUnclaimed(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.timer = time.AfterFunc(d, func() {
		s.mu.Lock()
		expire := !s.claimed && !s.done
		if expire {
			s.done = true
		}
		s.mu.Unlock()
		if expire {
			s.l.release(s.user)
		}
	})
}

// claim hands the slot to the connection that started; it reports false
// when the slot already expired.
func (s *slot) claim() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return false
	}
	s.claimed = true
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil // an open socket keeps its slot; the timer is done
	}
	return true
}

// release frees the slot; later calls do nothing.
func (s *slot) release() {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return
	}
	s.done = true
	if s.timer != nil {
		s.timer.Stop()
	}
	s.mu.Unlock()
	s.l.release(s.user)
}

package ws

import "sync"

// frameQueue is a connection's bounded queue of outgoing frames. Unlike a
// buffered channel it holds memory only for the frames in it: an idle
// connection (most of them, most of the time) keeps no buffer, where a
// channel of 256 frames would keep 10 KB.
type frameQueue struct {
	mu     sync.Mutex
	frames []frame
	max    int
	// ready holds a token while frames wait; the writer waits on it.
	ready chan struct{}
}

func newFrameQueue(max int) *frameQueue {
	return &frameQueue{max: max, ready: make(chan struct{}, 1)}
}

// push adds f unless the queue is full; it never blocks.
func (q *frameQueue) push(f frame) bool {
	q.mu.Lock()
	if len(q.frames) >= q.max {
		q.mu.Unlock()
		return false
	}
	q.frames = append(q.frames, f)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// take removes and returns every queued frame (nil when empty), in order.
// The returned slice is the caller's: the queue starts a new one.
func (q *frameQueue) take() []frame {
	q.mu.Lock()
	fs := q.frames
	q.frames = nil
	q.mu.Unlock()
	return fs
}

package ws

import (
	"encoding/binary"
	"net"
	"sync"
	"time"
)

// Coalesced writes. A writer takes every frame already queued for its
// connection and writes them with one write to the socket instead of one
// per frame. Frames are built here (server frames are never
// masked and compression is off): a FIN text frame header, then the
// payload. Writes to a socket never interleave: the writer and the
// fan-out reader take turns (writing), and the library's own close frames
// take the socket's lock and wait for a pending tail (sock.go).

const (
	// maxBatchFrames and maxBatchBytes bound one coalesced write.
	maxBatchFrames = 128
	maxBatchBytes  = 64 << 10
)

// batches recycles batches with their buffers, so an idle connection
// holds none and a write allocates nothing: a batch (and its accept-time
// slice) allocated per write cost a heap allocation and, in the short-lived
// writer goroutine, a stack growth (about a tenth of a gateway's CPU in the
// fanout workload).
var batches = sync.Pool{New: func() any {
	return &batch{buf: make([]byte, 0, 8<<10), born: make([]int64, 0, 16)}
}}

// appendTextFrame appends payload as one final, unmasked text frame.
func appendTextFrame(b, payload []byte) []byte {
	n := len(payload)
	b = append(b, 0x81) // FIN, text
	switch {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xFFFF:
		b = append(b, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// appendControlFrame appends a final, unmasked control frame of type op
// (a pong) with payload, which the library keeps within 125 bytes.
func appendControlFrame(b []byte, op int, payload string) []byte {
	b = append(b, 0x80|byte(op), byte(len(payload)))
	return append(b, payload...)
}

// batch collects the frames of one writer wakeup.
type batch struct {
	c      *conn
	buf    []byte
	frames int // data frames
	ctl    int // prebuilt control frames (pings)
	// born are the accept times of the message frames in buf, observed as
	// delivered once the write succeeds.
	born []int64
}

func (c *conn) newBatch() *batch {
	b := batches.Get().(*batch)
	b.c = c
	return b
}

// put appends one text frame and writes the batch out once it is full.
func (b *batch) put(data []byte, born int64) error {
	b.buf = appendTextFrame(b.buf, data)
	b.frames++
	if born != 0 {
		b.born = append(b.born, born)
	}
	return b.flushIfFull()
}

// putRaw appends a prebuilt frame (a control frame) and writes the batch
// out once it is full.
func (b *batch) putRaw(frame []byte) error {
	b.buf = append(b.buf, frame...)
	b.ctl++
	return b.flushIfFull()
}

func (b *batch) flushIfFull() error {
	if b.full() {
		return b.flush()
	}
	return nil
}

// full reports whether the batch should be written before taking more.
func (b *batch) full() bool {
	return b.frames+b.ctl >= maxBatchFrames || len(b.buf) >= maxBatchBytes
}

// flush writes what the batch holds with one write.
func (b *batch) flush() error {
	if b.frames+b.ctl == 0 {
		return nil
	}
	c := b.c
	nc := c.ws.NetConn()
	c.armWriteDeadline(nc)
	var err error
	if c.sock != nil {
		_, err = c.sock.writeOwn(b.buf) // the writer's write (sock.go)
	} else {
		_, err = nc.Write(b.buf)
	}
	b.buf = b.buf[:0]
	if err != nil {
		b.frames, b.ctl = 0, 0
		b.born = b.born[:0]
		return err
	}
	b.sent()
	return nil
}

// armWriteDeadline moves the socket's write deadline on once less than
// half of WriteTimeout is left, not for every write: re-arming the
// socket's timer was a few % of a gateway's CPU under load. A write that
// makes no progress still fails, after between half of WriteTimeout and
// all of it. It is called by the holder of writing.
func (c *conn) armWriteDeadline(nc net.Conn) {
	if now := time.Now(); c.writeDeadline.Sub(now) < c.srv.cfg.WriteTimeout/2 {
		c.writeDeadline = now.Add(c.srv.cfg.WriteTimeout)
		_ = nc.SetWriteDeadline(c.writeDeadline)
	}
}

// sent counts the batch's frames as written and observes their delivery
// latency, then empties the batch's counts.
func (b *batch) sent() {
	m := b.c.srv.m
	m.FramesOut.Add(float64(b.frames))
	for _, born := range b.born {
		m.DeliveryLatency.Observe(max(time.Since(time.Unix(0, born)), 0).Seconds())
	}
	b.frames, b.ctl = 0, 0
	b.born = b.born[:0]
}

// release returns the batch to the pool (one with a large buffer is
// dropped).
func (b *batch) release() {
	b.c = nil
	if cap(b.buf) <= 2*maxBatchBytes { // born holds at most maxBatchFrames
		b.buf, b.born = b.buf[:0], b.born[:0]
		b.frames, b.ctl = 0, 0
		batches.Put(b)
	}
}

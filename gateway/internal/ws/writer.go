package ws

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"time"

	"github.com/fasthttp/websocket"

	"rooms/shared/message"
)

// The write side of a connection has no goroutine of its own while the
// connection is idle. A frame queued to an idle connection starts a writer
// goroutine, which writes everything queued, coalesced (batchwrite.go), and
// ends when the queue is empty; a requested close starts one too, which
// writes the close frame and closes the socket. At most one writer runs per
// connection (conn.writing), so the socket's frames go out in queue order
// and conn.last needs no lock of its own: it belongs to whoever holds
// writing.

// pingFrame is a server ping with no payload, written as is.
var pingFrame = []byte{0x89, 0x00}

// enqueue queues f without ever blocking: a full queue means the client is
// too slow and it is closed with 4008.
func (c *conn) enqueue(f frame) {
	if !c.push(f, true) {
		c.close(CloseTooSlow, "too slow")
	}
}

// push queues f, starting a writer if none runs. It reports false when
// bounded is set and the queue already holds SendQueue frames. Frames
// queued after the connection has finished are dropped.
func (c *conn) push(f frame, bounded bool) bool {
	c.mu.Lock()
	if c.finished {
		c.mu.Unlock()
		return true
	}
	fit, start := c.queue([]frame{f}, bounded)
	c.mu.Unlock()
	if start {
		go c.writer()
	}
	return fit
}

// queue appends fs to the queue, up to SendQueue frames when bounded, and
// claims the writes. It reports whether all of fs fit, and whether the
// caller must start a writer. c.mu is held. A full queue means a writer
// holds the writes already (frames are queued only while writing is held,
// and a writer ends only with the queue empty), so claiming them then
// changes nothing.
func (c *conn) queue(fs []frame, bounded bool) (fit, start bool) {
	fit = true
	for _, f := range fs {
		if bounded && len(c.frames) >= c.srv.cfg.SendQueue {
			fit = false
			break
		}
		c.frames = append(c.frames, f)
	}
	return fit, c.claimWrites()
}

// close asks for a close frame with code (0: none) and the end of the
// connection, counted by code. Only the first call counts.
func (c *conn) close(code int, text string) {
	if c.shut(code, text) && code != 0 {
		c.srv.m.Closed(code)
	}
}

// shut asks for a close frame with code (0: none) and the end of the
// connection without counting it (the echo of a client's close). It
// reports whether this was the first call; only that one counts.
func (c *conn) shut(code int, text string) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	c.closed = true
	c.closeCode, c.closeText = code, text
	start := c.claimWrites()
	c.mu.Unlock()
	if start {
		go c.writer()
	}
	return true
}

// claimWrites marks the writes taken and reports whether no writer held
// them, in which case the caller starts one. c.mu is held.
func (c *conn) claimWrites() bool {
	start := !c.writing
	c.writing = true
	return start
}

// isClosed reports whether close was called.
func (c *conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// releaseWrites ends the hold the connection's start has on its writes
// (see start): a writer takes over when frames or a close are pending.
func (c *conn) releaseWrites() {
	c.mu.Lock()
	pending := c.closed || len(c.frames) > 0
	if !pending {
		c.writing = false
	}
	c.mu.Unlock()
	if pending {
		go c.writer()
	}
}

// writer writes what is queued until the queue is empty, or the close once
// one is asked for (a pending close wins over queued frames).
func (c *conn) writer() {
	// A panic here (a bug) ends only this connection: it is logged and the
	// client gets 1011 before the socket closes.
	defer func() {
		if r := recover(); r != nil {
			c.log().Error("websocket writer panic", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			c.close(CloseInternal, "internal error")
			if c.sock != nil {
				c.sock.dropTail() // the close frame must not wait for it
			}
			_ = c.ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(CloseInternal, "internal error"), time.Now().Add(time.Second))
			c.endWrites()
		}
	}()
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			c.writeClose()
			c.endWrites()
			return
		}
		fs := c.frames
		c.frames = nil
		if len(fs) == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		if err := c.writeFrames(fs); err != nil {
			c.log().Debug("websocket write failed", "error", err)
			c.close(0, "")
		}
	}
}

// endWrites closes the socket, which also ends the reader, and marks the
// connection finished. It runs once, by the writer that handled the close.
func (c *conn) endWrites() {
	c.endOnce.Do(func() {
		_ = c.netConn().Close()
		if c.sock != nil {
			c.sock.drop() // a queued tail is dropped with the queue
		}
		c.mu.Lock()
		c.finished = true
		c.frames = nil
		c.mu.Unlock()
		close(c.writerDone)
	})
}

// netConn is the connection's socket. The handshake's wrapper is
// unwrapped, so that closing it always closes the socket (fasthttp's
// wrapper ignores Close unless the server keeps hijacked connections).
func (c *conn) netConn() net.Conn {
	nc := c.ws.NetConn()
	if u, ok := nc.(interface{ UnsafeConn() net.Conn }); ok {
		return u.UnsafeConn()
	}
	return nc
}

// writeFrames writes fs, coalesced into as few socket writes as a batch's
// bounds allow, skipping message frames the connection already has and
// first repairing a gap before a later one from PostgreSQL, so that each
// seq reaches the client once and in order.
func (c *conn) writeFrames(fs []frame) error {
	b := c.newBatch()
	defer b.release()
	for _, f := range fs {
		ok, err := c.addFrame(b, f)
		if err != nil {
			return err
		}
		if !ok {
			// A gap could not be repaired: the connection is closing;
			// what came before the gap still goes out.
			break
		}
	}
	return b.flush()
}

// addFrame adds f to b unless the connection already has it; a message
// frame after a gap first has the missing seqs added from the store. It
// reports false when the gap could not be repaired (the connection is then
// closed with 4008 so its client resumes), and the error of a socket write
// (a batch is written out whenever it is full).
func (c *conn) addFrame(b *batch, f frame) (bool, error) {
	switch {
	case f.raw:
		return true, b.putRaw(f.data)
	case f.seq == 0:
		return true, b.put(f.data, 0)
	case f.seq <= c.last:
		return true, nil
	case f.seq > c.last+1:
		msgs, gapErr := c.repair(f.seq)
		for _, m := range msgs {
			if err := b.put(encodeMessage(m, c.v2), 0); err != nil {
				return false, err
			}
			c.last = m.Seq
		}
		if gapErr != nil {
			c.log().Warn("connection gap repair failed", "after_seq", c.last, "seq", f.seq, "error", gapErr)
			c.close(CloseTooSlow, "missed messages, resume")
			return false, nil
		}
	}
	if err := b.put(f.data, f.born); err != nil {
		return false, err
	}
	c.last = f.seq
	return true, nil
}

var errGap = errors.New("gap too large or not stored")

// repair reads the stored messages between c.last and before. It returns
// those that follow c.last without a hole, and an error unless they reach
// before-1.
func (c *conn) repair(before int64) ([]message.Message, error) {
	n := before - c.last - 1
	if n > int64(c.srv.cfg.MaxReplay) {
		return nil, errGap
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msgs, err := c.srv.deps.Store.MessagesAfter(ctx, c.roomID, c.last, int(n))
	if err != nil {
		return nil, err
	}
	for i, m := range msgs {
		if m.Seq != c.last+1+int64(i) {
			return msgs[:i], errGap
		}
	}
	if int64(len(msgs)) != n {
		return msgs, errGap
	}
	return msgs, nil
}

// writeClose sends the close frame and gives the client a moment to answer
// it, so that the close code reaches the client before the TCP connection
// ends.
func (c *conn) writeClose() {
	c.mu.Lock()
	code, text := c.closeCode, c.closeText
	var queued []frame
	// A drain's close comes after what is queued (the acks Drain waited
	// for); other closes skip the queue (a too slow client's is long),
	// but not a tail: the close frame must not land inside a frame.
	switch {
	case code == CloseGoingAway:
		queued, c.frames = c.frames, nil
	case len(c.frames) > 0 && c.frames[0].tail:
		queued, c.frames = c.frames[:1:1], nil
	}
	c.mu.Unlock()
	if code == 0 {
		return
	}
	if len(queued) > 0 {
		if err := c.writeFrames(queued); err != nil {
			return
		}
	}
	_ = c.ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(code, text), time.Now().Add(c.srv.cfg.WriteTimeout))
	select {
	case <-c.readerDone:
	case <-time.After(2 * time.Second):
	}
}

// ping queues a ping and arms the next one.
func (c *conn) ping() {
	c.push(frame{raw: true, data: pingFrame}, false)
	c.mu.Lock()
	if !c.finished { // start made the timer while holding mu
		c.pingTimer.Reset(c.srv.cfg.PingInterval)
	}
	c.mu.Unlock()
}

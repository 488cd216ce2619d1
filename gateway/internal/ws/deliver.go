package ws

// Fan-out writes without a goroutine. The fan-out reader hands each
// connection its share of a stream read (deliver). When the connection has
// no writer running and nothing queued, the reader writes the frames
// itself, with one non-blocking write to the socket, instead of starting a
// writer goroutine per socket and delivery: that start and its end were
// about a tenth of a gateway's CPU in the fanout workload. Everything else
// (a busy connection, a gap to repair from PostgreSQL, a full socket
// buffer) takes the queue and the writer as before, so the reader never
// waits for a client. This is done with one P only (Server.inline): with
// more, the writers of a big room's sockets run on all of them at once.
//
// A non-blocking write can take only part of the bytes. The rest is
// queued first, as a tail, and the writer sends it before anything else,
// the close frame included (writeClose). Nothing else may write to the
// socket until the tail is out, so the replies the websocket library would
// write itself from the reader goroutine (the pong to a client's ping, the
// echo of a client's close) go through the queue too (readLoop). The
// library's remaining writes, the close frames of a client that broke the
// protocol, go through the socket's own lock (sock.go): they wait for the
// tail, and the reader does not wait for them, but queues.

// deliver writes fs to the connection, or queues them. fs is not kept.
func (c *conn) deliver(fs []frame) {
	c.mu.Lock()
	if c.finished {
		c.mu.Unlock()
		return
	}
	if !c.srv.inline || c.writing || c.closed || len(c.frames) > 0 || c.sock == nil || !c.writable(fs) {
		fit, start := c.queue(fs, true)
		c.mu.Unlock()
		if start {
			go c.writer()
		}
		if !fit {
			c.close(CloseTooSlow, "too slow")
		}
		return
	}
	c.writing = true
	c.mu.Unlock()
	c.writeNow(fs)
	c.releaseWrites()
}

// writable reports whether fs can be written without the store: no gap
// before a message frame, and within one batch's bounds. c.mu is held and
// no writer runs, so c.last is stable.
func (c *conn) writable(fs []frame) bool {
	if len(fs) >= maxBatchFrames {
		return false
	}
	last, size := c.last, 0
	for _, f := range fs {
		size += len(f.data) + 10 // the largest frame header
		if f.seq == 0 || f.seq <= last {
			continue
		}
		if f.seq > last+1 {
			return false
		}
		last = f.seq
	}
	return size < maxBatchBytes
}

// writeNow writes fs with one non-blocking write. What the socket does
// not take is queued first: all of fs when it took nothing, else the rest
// of the bytes as a tail. The caller holds writing and releases it after.
func (c *conn) writeNow(fs []frame) {
	last := c.last
	b := c.newBatch()
	defer b.release()
	for _, f := range fs {
		// Within writable's bounds the batch never fills, so addFrame
		// writes nothing, and no gap sends it to the store.
		if _, err := c.addFrame(b, f); err != nil {
			c.log().Debug("websocket write failed", "error", err)
			c.close(0, "")
			return
		}
	}
	if b.frames == 0 {
		return // the connection's first frames had them all
	}
	n, err := c.tryWrite(b.buf)
	switch {
	case err != nil:
		c.log().Debug("websocket write failed", "error", err)
		c.close(0, "")
	case n == len(b.buf):
		b.sent()
	case n == 0:
		c.last = last
		c.mu.Lock()
		c.frames = append(append(make([]frame, 0, len(fs)+len(c.frames)), fs...), c.frames...)
		c.mu.Unlock()
	default:
		tail := frame{raw: true, tail: true, data: append([]byte(nil), b.buf[n:]...)}
		c.mu.Lock()
		c.frames = append(append(make([]frame, 0, 1+len(c.frames)), tail), c.frames...)
		c.mu.Unlock()
		// The frames count as delivered once part of them is out: the
		// rest is the first thing the writer sends.
		b.sent()
	}
}

// tryWrite writes buf with one write that waits neither for the socket
// nor for another write (sock.tryWrite). The caller holds writing.
func (c *conn) tryWrite(buf []byte) (n int, err error) {
	c.armWriteDeadline(c.sock)
	return c.sock.tryWrite(buf)
}

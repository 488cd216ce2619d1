package ws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/gofiber/contrib/websocket"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"rooms/gateway/internal/auth"
	"rooms/gateway/internal/presence"
	"rooms/gateway/internal/produce"
	"rooms/shared/message"
	"rooms/shared/tracing"
)

// frame is one queued outgoing text frame. seq is the message's seq for
// message frames (0 for every other frame); the writer uses it to skip what
// the connection already has and to repair a gap. born is the message's
// accept time (its time_created) in Unix nanoseconds, for the delivery
// latency metric (0: not measured).
type frame struct {
	seq  int64
	born int64
	data []byte
}

// acceptedAt returns m's time_created in Unix nanoseconds, 0 when it does
// not parse.
func acceptedAt(m message.Message) int64 {
	t, err := time.Parse(message.TimeLayout, m.TimeCreated)
	if err != nil {
		return 0
	}
	return t.UnixNano()
}

// conn is one open WebSocket.
type conn struct {
	srv    *Server
	ws     *websocket.Conn
	id     string
	roomID int64
	claims auth.Claims
	userID string
	v2     bool
	logger *slog.Logger

	queue *frameQueue

	closeOnce sync.Once
	closing   chan struct{} // closed by close
	closeCode int           // written once before closing is closed
	closeText string

	readerDone chan struct{} // closed when the reader loop has ended
	done       chan struct{} // closed when the handler has cleaned up

	// last is the highest seq written; owned by the writer goroutine.
	last int64

	rateRefusals int // consecutive refused sends; reader goroutine only
	lastTyping   time.Time
}

// enqueue queues f without ever blocking: a full queue means the client is
// too slow and it is closed with 4008.
func (c *conn) enqueue(f frame) {
	if !c.queue.push(f) {
		c.close(CloseTooSlow, "too slow")
	}
}

// close asks the writer to send a close frame with code (0: none) and end
// the connection. Only the first call counts.
func (c *conn) close(code int, text string) {
	c.closeOnce.Do(func() {
		if code != 0 {
			c.srv.m.Closed(code)
		}
		c.closeCode, c.closeText = code, text
		close(c.closing)
	})
}

func (c *conn) presenceConn() presence.Conn {
	return presence.Conn{RoomID: c.roomID, ConnID: c.id, UserID: c.userID, Nickname: c.claims.Nickname}
}

// serve runs one upgraded connection: register for live delivery, read the
// room's state, start the writer with the first frames, then read client
// frames until the connection ends.
func (s *Server) serve(ws *websocket.Conn) {
	sess, _ := ws.Locals(sessionKey).(*session)
	if sess == nil {
		return
	}
	if sess.slot != nil {
		defer sess.slot.release()
		if !sess.slot.claim() {
			// The slot expired before the connection started: it is no
			// longer counted, so it must not stay open.
			_ = ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(CloseTryAgainLater, "try again later"), time.Now().Add(time.Second))
			return
		}
	}
	c := &conn{
		srv: s, ws: ws, id: uuid.NewString(), roomID: sess.roomID, claims: sess.claims,
		userID: strconv.FormatInt(sess.claims.UserID, 10), v2: ws.Subprotocol() == Subprotocol,
		queue: newFrameQueue(s.cfg.SendQueue), closing: make(chan struct{}),
		readerDone: make(chan struct{}), done: make(chan struct{}),
	}
	c.logger = s.logger.With("conn_id", c.id, "room_id", c.roomID, "user_id", c.userID, "v2", c.v2)
	defer close(c.done)
	open := s.m.ConnsLegacy
	if c.v2 {
		open = s.m.ConnsV2
	}
	open.Inc()
	defer open.Dec()

	// Register first, then read the room's state: every message stored
	// after that read is delivered live to this connection, and the writer
	// skips live messages the first frames already cover.
	s.hub.add(c)
	defer s.hub.remove(c)
	if s.draining.Load() {
		c.close(CloseGoingAway, "server draining")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	initial, last, err := s.initialFrames(ctx, c, sess.sinceSeq)
	cancel()
	if err != nil {
		c.logger.Error("websocket initial state", "error", err)
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1011, "unavailable"), time.Now().Add(time.Second))
		return
	}

	pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
	if _, err := s.presence.Join(pctx, c.presenceConn()); err != nil {
		c.logger.Warn("presence join failed", "error", err)
	}
	pcancel()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := s.presence.Leave(ctx, c.presenceConn()); err != nil {
			c.logger.Warn("presence leave failed", "error", err)
		}
	}()

	var expiry *time.Timer
	if !c.claims.ExpiresAt.IsZero() {
		expiry = time.AfterFunc(time.Until(c.claims.ExpiresAt), func() { c.close(CloseTokenExpired, "token expired") })
		defer expiry.Stop()
	}

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeLoop(initial, last)
	}()
	c.readLoopContained()
	close(c.readerDone)
	c.close(0, "")
	<-writerDone
}

// initialFrames reads the room's state after registration and returns the
// frames to send first and the last seq they cover.
func (s *Server) initialFrames(ctx context.Context, c *conn, since int64) ([][]byte, int64, error) {
	if !c.v2 {
		msgs, err := s.deps.Store.LatestMessages(ctx, c.roomID, s.cfg.History)
		if err != nil {
			return nil, 0, err
		}
		var last int64
		if n := len(msgs); n > 0 {
			last = msgs[n-1].Seq
		}
		return [][]byte{encodeLegacyHistory(msgs)}, last, nil
	}
	room, err := s.deps.Store.Room(ctx, c.roomID)
	if err != nil {
		return nil, 0, err
	}
	w := welcomeFrame{
		Type: "welcome", RoomID: strconv.FormatInt(c.roomID, 10), UserID: c.userID,
		Nickname: c.claims.Nickname, LastSeq: room.LastSeq, Recovered: true,
	}
	if since < 0 || since == room.LastSeq {
		return [][]byte{mustJSON(w)}, room.LastSeq, nil
	}
	if since > room.LastSeq || room.LastSeq-since > int64(s.cfg.MaxReplay) {
		w.Recovered = false
		return [][]byte{mustJSON(w)}, room.LastSeq, nil
	}
	msgs, err := s.deps.Store.MessagesAfter(ctx, c.roomID, since, int(room.LastSeq-since))
	if err != nil {
		return nil, 0, err
	}
	frames := [][]byte{mustJSON(w)}
	next := since + 1
	for _, m := range msgs {
		if m.Seq != next {
			break
		}
		frames = append(frames, encodeV2Message(m))
		next++
	}
	if next-1 != room.LastSeq {
		// The store did not return every seq it claims to have: do not
		// pretend to have recovered.
		w.Recovered = false
		return [][]byte{mustJSON(w)}, room.LastSeq, nil
	}
	return frames, room.LastSeq, nil
}

// writeLoop is the only writer of the socket: first frames, then the queue,
// pings, and finally the close frame.
func (c *conn) writeLoop(initial [][]byte, last int64) {
	cfg := c.srv.cfg
	defer c.ws.Close()
	// A panic here (a bug) ends only this connection: it is logged and the
	// client gets 1011 before the socket closes (deferred above, so it runs
	// after this).
	defer func() {
		if r := recover(); r != nil {
			c.logger.Error("websocket writer panic", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			c.close(CloseInternal, "internal error")
			_ = c.ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(CloseInternal, "internal error"), time.Now().Add(time.Second))
		}
	}()
	if err := c.writeInitial(initial); err != nil {
		c.close(0, "")
		return
	}
	c.last = last
	ping := time.NewTicker(cfg.PingInterval)
	defer ping.Stop()
	for {
		// A pending close wins over queued frames.
		select {
		case <-c.closing:
			c.writeClose()
			return
		default:
		}
		select {
		case <-c.closing:
			c.writeClose()
			return
		case <-c.queue.ready:
			if err := c.writeQueued(); err != nil {
				c.close(0, "")
				c.logger.Debug("websocket write failed", "error", err)
			}
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(cfg.WriteTimeout)); err != nil {
				c.close(0, "")
			}
		}
	}
}

func (c *conn) write(b []byte) error {
	_ = c.ws.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		return err
	}
	c.srv.m.FramesOut.Inc()
	return nil
}

// writeInitial writes the first frames, coalesced.
func (c *conn) writeInitial(initial [][]byte) error {
	b := c.newBatch()
	defer b.release()
	for _, data := range initial {
		b.add(data, 0)
		if b.full() {
			if err := b.flush(); err != nil {
				return err
			}
		}
	}
	return b.flush()
}

// writeQueued writes every queued frame, coalesced into as few socket
// writes as a batch's bounds allow, skipping message frames the connection
// already has and first repairing a gap before a later one from
// PostgreSQL, so that each seq reaches the client once and in order.
func (c *conn) writeQueued() error {
	b := c.newBatch()
	defer b.release()
	for {
		fs := c.queue.take()
		if len(fs) == 0 {
			return b.flush()
		}
		if ok, err := c.addAll(b, fs); err != nil {
			return err
		} else if !ok {
			// A gap could not be repaired: the connection is closing;
			// what came before the gap still goes out.
			return b.flush()
		}
		select {
		case <-c.closing:
			return b.flush()
		default:
		}
	}
}

// flushQueue writes what is queued now, coalesced, within one
// WriteTimeout (the connection is closing).
func (c *conn) flushQueue() error {
	b := c.newBatch()
	defer b.release()
	if _, err := c.addAll(b, c.queue.take()); err != nil {
		return err
	}
	return b.flush()
}

// addAll adds fs to b in order, writing b out whenever it is full. It
// reports false when a gap could not be repaired (see addFrame); the frames
// after it are dropped.
func (c *conn) addAll(b *batch, fs []frame) (bool, error) {
	for _, f := range fs {
		if !c.addFrame(b, f) {
			return false, nil
		}
		if b.full() {
			if err := b.flush(); err != nil {
				return true, err
			}
		}
	}
	return true, nil
}

// addFrame adds f to b unless the connection already has it; a message
// frame after a gap first flushes b and writes the missing seqs. It
// reports false when the gap could not be repaired (the connection is then
// closed with 4008 so its client resumes).
func (c *conn) addFrame(b *batch, f frame) bool {
	if f.seq == 0 {
		b.add(f.data, 0)
		return true
	}
	if f.seq <= c.last {
		return true
	}
	if f.seq > c.last+1 {
		err := b.flush()
		if err == nil {
			err = c.repair(f.seq)
		}
		if err != nil {
			c.logger.Warn("connection gap repair failed", "after_seq", c.last, "seq", f.seq, "error", err)
			c.close(CloseTooSlow, "missed messages, resume")
			return false
		}
	}
	b.add(f.data, f.born)
	c.last = f.seq
	return true
}

var errGap = errors.New("gap too large or not stored")

func (c *conn) repair(before int64) error {
	n := before - c.last - 1
	if n > int64(c.srv.cfg.MaxReplay) {
		return errGap
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msgs, err := c.srv.deps.Store.MessagesAfter(ctx, c.roomID, c.last, int(n))
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if m.Seq != c.last+1 {
			return errGap
		}
		b := encodeLegacyMessage(m)
		if c.v2 {
			b = encodeV2Message(m)
		}
		if err := c.write(b); err != nil {
			return err
		}
		c.last = m.Seq
	}
	if c.last != before-1 {
		return errGap
	}
	return nil
}

// writeClose sends the close frame and gives the client a moment to answer
// it, so that the close code reaches the client before the TCP connection
// ends.
func (c *conn) writeClose() {
	if c.closeCode == 0 {
		return
	}
	// A drain's close comes after what is queued (the acks Drain waited
	// for); other closes skip the queue (a too slow client's is long).
	if c.closeCode == CloseGoingAway {
		_ = c.flushQueue()
	}
	_ = c.ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(c.closeCode, c.closeText), time.Now().Add(c.srv.cfg.WriteTimeout))
	select {
	case <-c.readerDone:
	case <-time.After(2 * time.Second):
	}
}

// readLoop reads client frames until the connection fails or closes.
func (c *conn) readLoop() {
	cfg := c.srv.cfg
	c.ws.SetReadLimit(cfg.ReadLimit)
	_ = c.ws.SetReadDeadline(time.Now().Add(cfg.PongTimeout))
	c.ws.SetPongHandler(func(string) error {
		return c.ws.SetReadDeadline(time.Now().Add(cfg.PongTimeout))
	})
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				c.close(CloseTooBig, "frame too large")
			}
			return
		}
		// Any frame proves the peer is alive.
		_ = c.ws.SetReadDeadline(time.Now().Add(cfg.PongTimeout))
		c.srv.m.FramesIn.Inc()
		select {
		case <-c.closing:
			return
		default:
		}
		c.handle(data)
	}
}

// readLoopContained runs readLoop; a panic in it (a bug) ends only this
// connection, with 1011, and is logged.
func (c *conn) readLoopContained() {
	defer func() {
		if r := recover(); r != nil {
			c.logger.Error("websocket reader panic", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			c.close(CloseInternal, "internal error")
		}
	}()
	c.readLoop()
}

// handle acts on one client frame of either protocol.
func (c *conn) handle(data []byte) {
	parse := parseLegacy
	if c.v2 {
		parse = parseV2
	}
	req, rerr := parse(data, c.srv.cfg.MaxContent)
	if rerr != nil {
		c.srv.m.FailedInvalid.Inc()
		c.enqueue(frame{data: encodeError(rerr.Code, rerr.Message, rerr.ClientMsgID)})
		return
	}
	switch req.Type {
	case "send":
		c.send(req.Content, req.ClientMsgID)
	case "typing":
		// At most one typing event per second per connection reaches Redis.
		if now := time.Now(); now.Sub(c.lastTyping) >= time.Second {
			c.lastTyping = now
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := c.srv.presence.Typing(ctx, c.presenceConn()); err != nil {
				c.logger.Warn("publish typing failed", "error", err)
			}
			cancel()
		}
	case "ping":
		c.enqueue(frame{data: pongBytes})
	}
}

// send applies the per-user rate limit to validated content, stamps and
// produces the message. In v2 the ack (or error) is queued when the
// delivery report arrives; legacy clients see their message when it is
// fanned out, and errors as error frames.
func (c *conn) send(content, clientMsgID string) {
	cfg := c.srv.cfg
	// Counted before the draining flag is read, and Drain sets the flag
	// before it reads the count: a send either sees the drain and is
	// refused, or Drain waits for its delivery report.
	inflight := &c.srv.inflight
	inflight.Add(1)
	accepted := false
	defer func() {
		if !accepted {
			inflight.Add(-1)
		}
	}()
	if c.srv.draining.Load() {
		c.srv.m.FailedBusy.Inc()
		c.enqueue(frame{data: encodeError(message.CodeUnavail, "server draining, retry", clientMsgID)})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	ok, _, err := c.srv.deps.Limiter.Allow(ctx, "send:user:"+c.userID, cfg.SendLimit)
	cancel()
	if err != nil {
		// Fail open: a rate-limit store outage must not stop the chat.
		c.logger.Warn("send rate limit check failed", "error", err)
		ok = true
	}
	if !ok {
		c.srv.m.RateLimitedSend.Inc()
		c.srv.m.FailedRateLimited.Inc()
		c.rateRefusals++
		if c.rateRefusals >= cfg.RateLimitClose {
			c.close(CloseRateLimited, "rate limited")
			return
		}
		c.enqueue(frame{data: encodeError(message.CodeRate, "sending too fast", clientMsgID)})
		return
	}
	c.rateRefusals = 0

	mt := c.srv.m
	id, err := uuid.NewV7()
	if err != nil {
		mt.FailedBusy.Inc()
		c.enqueue(frame{data: encodeError(message.CodeUnavail, "try again", clientMsgID)})
		return
	}
	start := time.Now()
	m := message.Message{
		ID: id.String(), RoomID: strconv.FormatInt(c.roomID, 10), UserID: c.userID,
		Nickname: c.claims.Nickname, Content: content,
		TimeCreated: message.FormatTime(start), ClientMsgID: clientMsgID,
	}
	v2 := c.v2
	// rooms.send lasts from the accepted send to its delivery report.
	sctx, span := c.srv.tracer.Start(context.Background(), "rooms.send", trace.WithSpanKind(trace.SpanKindProducer))
	traceAttr := tracing.LogAttr(span)
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("rooms.room_id", m.RoomID), attribute.String("rooms.message_id", m.ID),
			attribute.String("rooms.client_msg_id", clientMsgID), attribute.Bool("rooms.v2", v2),
			attribute.String("rooms.conn_id", c.id),
		)
	}
	deliver := func(err error) {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
		if err == nil {
			mt.Acked.Inc()
			mt.AckLatency.Observe(time.Since(start).Seconds())
		} else {
			mt.FailedUnconfirmed.Inc()
		}
		switch {
		case err == nil && v2:
			c.enqueue(frame{data: encodeAck(clientMsgID)})
		case err != nil:
			c.enqueue(frame{data: encodeError(message.CodeUnavail, "message not confirmed, retry", clientMsgID)})
		}
		inflight.Add(-1)
	}
	if cs, ok := c.srv.deps.Producer.(contextSender); ok {
		err = cs.SendContext(sctx, m, deliver)
	} else {
		err = c.srv.deps.Producer.Send(m, deliver)
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		span.End()
	}
	if err == nil {
		accepted = true // deliver ends it
		mt.Accepted.Inc()
	} else {
		mt.FailedBusy.Inc()
		if !errors.Is(err, produce.ErrQueueFull) && !errors.Is(err, produce.ErrUnavailable) {
			c.logger.Error("produce message", "error", err, traceAttr)
		}
		c.enqueue(frame{data: encodeError(message.CodeUnavail, "service busy, retry", clientMsgID)})
	}
}

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

	"github.com/fasthttp/websocket"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"rooms/gateway/internal/auth"
	"rooms/gateway/internal/presence"
	"rooms/gateway/internal/produce"
	"rooms/shared/message"
	"rooms/shared/tracing"
)

// frame is one queued outgoing frame. seq is the message's seq for message
// frames (0 for every other frame); the writer uses it to skip what the
// connection already has and to repair a gap. born is the message's accept
// time (its time_created) in Unix nanoseconds, for the delivery latency
// metric (0: not measured). raw frames are written as they are (pings,
// pongs); the others are the payloads of text frames. A tail is the rest
// of a write the socket took only part of (deliver.go): it is always first
// in the queue and goes out before anything else.
type frame struct {
	seq  int64
	born int64
	data []byte
	raw  bool
	tail bool
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

// conn is one open WebSocket. An idle one has a single goroutine, its
// reader; writes start a writer goroutine only while there is something to
// write (writer.go). Its state is kept small: a gateway holds thousands.
type conn struct {
	srv    *Server
	ws     *websocket.Conn
	id     string
	roomID int64
	claims auth.Claims
	userID string
	v2     bool
	slot   *slot
	// sock is the socket for writes that do not wait (deliver.go); nil
	// when the connection did not come from Listener, and then every
	// write takes the queue.
	sock *sock

	// mu guards the fields below it up to last.
	mu     sync.Mutex
	frames []frame // queued, in order
	// writing is held by the running writer, or by start until the first
	// frames are written.
	writing   bool
	closed    bool // close was called
	closeCode int
	closeText string
	finished  bool // the socket is closed; nothing more is queued
	pingTimer *time.Timer

	// last is the highest seq written and writeDeadline the socket's write
	// deadline; both belong to the holder of writing.
	last          int64
	writeDeadline time.Time

	endOnce    sync.Once
	readerDone chan struct{} // closed when the reader loop has ended
	writerDone chan struct{} // closed when the socket is closed (endWrites)
	done       chan struct{} // closed when the connection has cleaned up

	expiry       *time.Timer
	joined       bool // presence joined; start, then the reader goroutine
	rateRefusals int  // consecutive refused sends; reader goroutine only
	lastTyping   time.Time
}

// log is the connection's logger (made when something is logged, which
// is rare: a connection does not keep one).
func (c *conn) log() *slog.Logger {
	return c.srv.logger.With("conn_id", c.id, "room_id", c.roomID, "user_id", c.userID, "v2", c.v2)
}

func (c *conn) presenceConn() presence.Conn {
	return presence.Conn{RoomID: c.roomID, ConnID: c.id, UserID: c.userID, Nickname: c.claims.Nickname}
}

// start runs an upgraded connection's first steps in the handshake's
// goroutine: register for live delivery, read the room's state, join
// presence, write the first frames. It then hands the connection to a reader
// goroutine of its own (run) and returns, so that the handshake's goroutine
// and the HTTP request it kept end; when the server does not keep hijacked
// connections (keep false) it runs the reader itself instead.
func (s *Server) start(ws *websocket.Conn, sess *session, keep bool) {
	// The subprotocol is read first: the library's copy refers to the
	// handshake response, which is reused once this goroutine ends.
	v2 := ws.Subprotocol() == Subprotocol
	if sess.slot != nil && !sess.slot.claim() {
		// The slot expired before the connection started: it is no
		// longer counted, so it must not stay open.
		_ = ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(CloseTryAgainLater, "try again later"), time.Now().Add(time.Second))
		_ = ws.NetConn().Close()
		return
	}
	c := &conn{
		srv: s, ws: ws, id: uuid.NewString(), roomID: sess.roomID, claims: sess.claims,
		userID: strconv.FormatInt(sess.claims.UserID, 10), v2: v2, slot: sess.slot,
		writing:    true, // until the first frames are out
		readerDone: make(chan struct{}), writerDone: make(chan struct{}), done: make(chan struct{}),
	}
	c.sock, _ = c.netConn().(*sock)
	s.openGauge(v2).Inc()
	handedOff := false
	defer func() {
		if handedOff {
			return
		}
		// A panic in these first steps (a bug) ends only this connection,
		// with 1011.
		if r := recover(); r != nil {
			c.log().Error("websocket start panic", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			_ = ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(CloseInternal, "internal error"), time.Now().Add(time.Second))
		}
		c.endWrites()
		c.cleanup()
	}()

	// Register first, then read the room's state: every message stored
	// after that read is delivered live to this connection, and the writer
	// skips live messages the first frames already cover.
	s.hub.add(c)
	if s.draining.Load() {
		c.close(CloseGoingAway, "server draining")
	} else if s.aside.Load() {
		c.close(CloseGoingAway, "cannot deliver: reconnect")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	initial, last, err := s.initialFrames(ctx, c, sess.sinceSeq)
	cancel()
	if err != nil {
		c.log().Error("websocket initial state", "error", err)
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1011, "unavailable"), time.Now().Add(time.Second))
		return
	}

	pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
	if _, err := s.presence.Join(pctx, c.presenceConn()); err != nil {
		c.log().Warn("presence join failed", "error", err)
	}
	pcancel()
	c.joined = true

	if err := c.writeFrames(initial); err != nil {
		return
	}
	c.last = last

	if !c.claims.ExpiresAt.IsZero() {
		c.expiry = time.AfterFunc(time.Until(c.claims.ExpiresAt), func() { c.close(CloseTokenExpired, "token expired") })
	}
	c.mu.Lock()
	c.pingTimer = time.AfterFunc(s.cfg.PingInterval, c.ping)
	c.mu.Unlock()
	c.releaseWrites()

	handedOff = true
	if keep {
		go c.run()
	} else {
		c.run()
	}
}

func (s *Server) openGauge(v2 bool) prometheus.Gauge {
	if v2 {
		return s.m.ConnsV2
	}
	return s.m.ConnsLegacy
}

// run reads client frames until the connection ends, then cleans up.
func (c *conn) run() {
	defer c.cleanup()
	c.readLoopContained()
	close(c.readerDone)
	c.close(0, "")
	<-c.writerDone
}

// cleanup undoes start once the socket is closed: presence, timers,
// registration, gauges, the connection's slot.
func (c *conn) cleanup() {
	defer close(c.done)
	defer func() {
		if r := recover(); r != nil {
			c.log().Error("websocket cleanup panic", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	c.mu.Lock()
	if c.pingTimer != nil {
		c.pingTimer.Stop()
	}
	c.mu.Unlock()
	if c.expiry != nil {
		c.expiry.Stop()
	}
	if c.joined {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := c.srv.presence.Leave(ctx, c.presenceConn()); err != nil {
			c.log().Warn("presence leave failed", "error", err)
		}
		cancel()
	}
	c.srv.hub.remove(c)
	c.srv.openGauge(c.v2).Dec()
	if c.slot != nil {
		c.slot.release()
	}
}

// initialFrames reads the room's state after registration and returns the
// frames to send first and the last seq they cover. Their seq is left 0:
// they are written as they are, before the skip and repair of live frames
// apply.
func (s *Server) initialFrames(ctx context.Context, c *conn, since int64) ([]frame, int64, error) {
	if !c.v2 {
		msgs, err := s.deps.Store.LatestMessages(ctx, c.roomID, s.cfg.History)
		if err != nil {
			return nil, 0, err
		}
		var last int64
		if n := len(msgs); n > 0 {
			last = msgs[n-1].Seq
		}
		return []frame{{data: encodeLegacyHistory(msgs)}}, last, nil
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
		return []frame{{data: mustJSON(w)}}, room.LastSeq, nil
	}
	if since > room.LastSeq || room.LastSeq-since > int64(s.cfg.MaxReplay) {
		w.Recovered = false
		return []frame{{data: mustJSON(w)}}, room.LastSeq, nil
	}
	msgs, err := s.deps.Store.MessagesAfter(ctx, c.roomID, since, int(room.LastSeq-since))
	if err != nil {
		return nil, 0, err
	}
	frames := []frame{{data: mustJSON(w)}}
	next := since + 1
	for _, m := range msgs {
		if m.Seq != next {
			break
		}
		frames = append(frames, frame{data: encodeV2Message(m)})
		next++
	}
	if next-1 != room.LastSeq {
		// The store did not return every seq it claims to have: do not
		// pretend to have recovered.
		w.Recovered = false
		return []frame{{data: mustJSON(w)}}, room.LastSeq, nil
	}
	return frames, room.LastSeq, nil
}

// readLoop reads client frames until the connection fails or closes.
func (c *conn) readLoop() {
	cfg := c.srv.cfg
	c.ws.SetReadLimit(cfg.ReadLimit)
	_ = c.ws.SetReadDeadline(time.Now().Add(cfg.PongTimeout))
	c.ws.SetPongHandler(func(string) error {
		return c.ws.SetReadDeadline(time.Now().Add(cfg.PongTimeout))
	})
	// The pong to a client's ping and the echo of its close are queued,
	// not written by the library: a tail may be waiting (deliver.go).
	c.ws.SetPingHandler(func(data string) error {
		c.enqueue(frame{raw: true, data: appendControlFrame(nil, websocket.PongMessage, data)})
		return nil
	})
	c.ws.SetCloseHandler(func(code int, _ string) error {
		c.shut(code, "")
		return nil
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
		if c.isClosed() {
			return
		}
		c.handle(data)
	}
}

// readLoopContained runs readLoop; a panic in it (a bug) ends only this
// connection, with 1011, and is logged.
func (c *conn) readLoopContained() {
	defer func() {
		if r := recover(); r != nil {
			c.log().Error("websocket reader panic", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
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
				c.log().Warn("publish typing failed", "error", err)
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
	c.srv.inflight.Add(1)
	accepted := false
	defer func() {
		if !accepted {
			c.srv.sendSettled()
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
		c.log().Warn("send rate limit check failed", "error", err)
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
		c.srv.sendSettled()
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
			c.log().Error("produce message", "error", err, traceAttr)
		}
		c.enqueue(frame{data: encodeError(message.CodeUnavail, "service busy, retry", clientMsgID)})
	}
}

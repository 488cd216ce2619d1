// Package ws serves the chat WebSocket endpoint, GET /api/chat/rooms/{id},
// in both protocols of API.md: the legacy one (no subprotocol) and
// rooms.v2 (acks, seqs, resume).
//
// A Server owns this gateway's sockets. Its handler authenticates and
// checks the request before the upgrade; after it, each connection has one
// goroutine, its reader, and a bounded queue of outgoing frames that a
// writer goroutine drains only while there is something to write (see
// writer.go). Nothing ever waits on a slow client: when its queue is full,
// the connection is closed with 4008 and the client resumes with
// since_seq. The Fiber app serving Upgrade should set its fasthttp
// server's KeepHijackedConns (httpapi does), so that the handshake's
// goroutine and request state are let go once a socket is open. Live
// messages come from the fan-out reader (package fanout), which the Server
// runs, through a sharded hub that encodes each message once per protocol.
//
// Close codes: 1001 draining, 1008 policy, 1009 frame over 16 KiB, 4001
// token expired or login revoked, 4008 too slow, 4029 sustained rate-limit
// abuse (RateLimitClose consecutive refused sends).
package ws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/trace"

	"rooms/gateway/internal/auth"
	"rooms/gateway/internal/fanout"
	"rooms/gateway/internal/metrics"
	"rooms/gateway/internal/presence"
	"rooms/gateway/internal/produce"
	"rooms/gateway/internal/ratelimit"
	"rooms/gateway/internal/store"
	"rooms/shared/message"
	"rooms/shared/tracing"
)

// Authenticator checks access tokens and redeems one-time tickets.
type Authenticator interface {
	ParseAccess(token string) (auth.Claims, error)
	RedeemTicket(ctx context.Context, ticket string) (auth.Claims, error)
}

// Store reads rooms and stored messages.
type Store interface {
	Room(ctx context.Context, id int64) (store.Room, error)
	MessagesAfter(ctx context.Context, roomID, afterSeq int64, limit int) ([]message.Message, error)
	LatestMessages(ctx context.Context, roomID int64, limit int) ([]message.Message, error)
}

// Limiter is the per-user send rate limiter shared by every gateway
// (ratelimit.Leased in production: it is asked once per message).
type Limiter interface {
	Allow(ctx context.Context, key string, limit ratelimit.Limit) (ok bool, retryAfter time.Duration, err error)
}

// Producer sends messages to the intake log (see package produce).
type Producer interface {
	Send(m message.Message, done produce.Callback) error
}

// Config tunes the Server; zero values mean the defaults in brackets.
type Config struct {
	// GatewayID identifies this instance in presence entries (required,
	// unique per running process, no '|').
	GatewayID string
	// RedisPrefix is the prefix of every Redis key ("rooms:").
	RedisPrefix string
	// AllowedOrigins are the accepted Origin header values, exact match;
	// "*" accepts any. A request without Origin is always accepted.
	AllowedOrigins []string
	// MaxContent is the content limit in characters (2000).
	MaxContent int
	// SendQueue is the per-connection queue of outgoing frames (256).
	SendQueue int
	// ReadLimit is the largest client frame in bytes (16 KiB).
	ReadLimit int64
	// PingInterval (25 s) and PongTimeout (60 s) detect dead peers.
	PingInterval time.Duration
	PongTimeout  time.Duration
	// WriteTimeout bounds a socket write (10 s): one that makes no
	// progress fails after between half of it and all of it.
	WriteTimeout time.Duration
	// SendLimit is the per-user send rate across all of the user's
	// connections on every gateway (20/s, burst 40). Rate 0 disables it.
	SendLimit ratelimit.Limit
	// RateLimitClose closes a connection with 4029 after this many refused
	// sends in a row (50).
	RateLimitClose int
	// DrainParallel bounds how many sockets Drain closes at once (64).
	DrainParallel int
	// DrainAckWait bounds how long Drain waits for the delivery reports of
	// sends accepted before it began, so their acks go out before the
	// sockets close (5 s).
	DrainAckWait time.Duration
	// MaxReplay is the most messages replayed on resume (1000).
	MaxReplay int
	// History is the size of the legacy first frame (100).
	History int
	// MaxConns bounds this gateway's open WebSockets (20000); a handshake
	// over it is refused with 503 unavailable.
	MaxConns int
	// MaxConnsPerUser bounds one user's open WebSockets on this gateway
	// (20); a handshake over it is refused with 429 rate_limited.
	MaxConnsPerUser int
	// StepAsideAfter: when the fan-out reader has failed to read Redis for
	// this long (checked once a second) while another gateway reports
	// reading it (Deps.Peers), this gateway can deliver nothing to its
	// sockets and another can, so it closes them with 1001 and refuses
	// handshakes with 503 until it reads again or no other gateway reports
	// reading any more; the clients reconnect (with since_seq) to a gateway
	// that delivers. When no gateway reads Redis, stepping aside would only
	// stop the sends, which still reach Kafka. Zero: never.
	StepAsideAfter time.Duration
}

func (c Config) withDefaults() Config {
	if c.RedisPrefix == "" {
		c.RedisPrefix = "rooms:"
	}
	if c.MaxContent <= 0 {
		c.MaxContent = message.DefaultMaxContent
	}
	if c.SendQueue <= 0 {
		c.SendQueue = 256
	}
	if c.ReadLimit <= 0 {
		c.ReadLimit = 16 << 10
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = 60 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.SendLimit == (ratelimit.Limit{}) {
		c.SendLimit = ratelimit.Limit{Rate: 20, Burst: 40, Period: time.Second}
	}
	if c.RateLimitClose <= 0 {
		c.RateLimitClose = 50
	}
	if c.DrainParallel <= 0 {
		c.DrainParallel = 64
	}
	if c.DrainAckWait <= 0 {
		c.DrainAckWait = 5 * time.Second
	}
	if c.MaxReplay <= 0 {
		c.MaxReplay = 1000
	}
	if c.History <= 0 {
		c.History = 100
	}
	if c.MaxConns <= 0 {
		c.MaxConns = 20000
	}
	if c.MaxConnsPerUser <= 0 {
		c.MaxConnsPerUser = 20
	}
	return c
}

// Deps are the Server's collaborators.
type Deps struct {
	Auth     Authenticator
	Store    Store
	Limiter  Limiter
	Producer Producer
	Redis    redis.UniversalClient
	// Metrics are the gateway's metrics (nil: counted nowhere).
	Metrics *metrics.Gateway
	// Tracer makes the rooms.send and rooms.deliver spans (nil: a no-op
	// provider, no spans).
	Tracer trace.TracerProvider
	// Peers carries the gateways' reports that their fan-out reader reads
	// (store.Store, over PostgreSQL's NOTIFY). A gateway steps aside only
	// while another one reports reading; nil: it never steps aside.
	Peers Peers
}

// Peers lets gateways tell each other that their fan-out reader reads
// Redis (see Config.StepAsideAfter).
type Peers interface {
	NotifyFanoutOK(ctx context.Context, gatewayID string) error
	ListenFanoutOK(ctx context.Context, log *slog.Logger, fn func(gatewayID string))
}

// contextSender is a Producer that carries a span's trace context in the
// record (produce.Producer.SendContext).
type contextSender interface {
	SendContext(ctx context.Context, m message.Message, done produce.Callback) error
}

// Server is this gateway's WebSocket endpoint.
type Server struct {
	cfg      Config
	deps     Deps
	logger   *slog.Logger
	hub      *hub
	reader   *fanout.Reader
	presence *presence.Registry
	upgrader websocket.FastHTTPUpgrader
	limits   *connLimiter
	m        *metrics.WS
	tracer   trace.Tracer

	draining atomic.Bool
	// aside is set while the gateway has stepped aside (StepAsideAfter).
	aside atomic.Bool
	// inflight counts accepted sends whose delivery report has not been
	// handled yet (see conn.send and Drain).
	inflight atomic.Int64
	// settled receives a token when inflight falls to 0 during a drain
	// (sendSettled), so that Drain waits without polling.
	settled chan struct{}
	// inline lets the fan-out reader write to idle sockets itself
	// (deliver.go). It is on with one P only: with more, writer
	// goroutines write a big room's sockets on all of them at once, where
	// the fan-out reader, a single goroutine, would write them one after
	// the other.
	inline bool
}

// New returns a Server. Call Run to start its background work and mount
// Upgrade on the WebSocket route.
func New(cfg Config, deps Deps, logger *slog.Logger) *Server {
	cfg = cfg.withDefaults()
	if deps.Metrics == nil {
		deps.Metrics = metrics.Discard()
	}
	deps.Tracer = tracing.OrNoop(deps.Tracer)
	s := &Server{cfg: cfg, deps: deps, logger: logger, limits: newConnLimiter(cfg.MaxConns, cfg.MaxConnsPerUser), m: deps.Metrics.WS,
		settled: make(chan struct{}, 1), inline: runtime.GOMAXPROCS(0) == 1}
	s.tracer = deps.Tracer.Tracer("rooms/gateway/ws")
	s.presence = presence.NewRegistry(deps.Redis, cfg.RedisPrefix, cfg.GatewayID, logger)
	// The hub and the reader refer to each other: the reader delivers to the
	// hub, the hub tracks rooms in the reader.
	s.hub = newHub(nil)
	s.reader = fanout.New(deps.Redis, cfg.RedisPrefix, deps.Store, s.hub, logger, fanout.Options{Metrics: deps.Metrics.Fanout, Tracer: deps.Tracer})
	s.hub.tracker = s.reader
	s.upgrader = websocket.FastHTTPUpgrader{
		Subprotocols: []string{Subprotocol},
		// Client frames are small chat messages; a larger frame is read
		// past the buffer (bufio reads big reads directly). Every open
		// socket holds this buffer.
		ReadBufferSize: 1024,
		// The library writes only close frames (writeClose, and a
		// client's protocol error), each with a buffer of its own; every
		// other frame is written by the connection's batch
		// (batchwrite.go, deliver.go). The pool still matters:
		// without one the library gives every socket a write buffer of
		// its own up front.
		WriteBufferSize: 4096,
		WriteBufferPool: &writeBuffers,
		// Upgrade has checked the origin against AllowedOrigins.
		CheckOrigin: func(*fasthttp.RequestCtx) bool { return true },
	}
	return s
}

// Ready reports whether the Server accepts connections and its fan-out
// reader reads Redis (for /readyz).
func (s *Server) Ready() bool { return !s.draining.Load() && s.reader.Ready() }

// Run runs the fan-out reader, the presence refresher and the revocation
// subscriber until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); _ = s.reader.Run(ctx) }()
	go func() { defer wg.Done(); s.watchFanout(ctx) }()
	go func() { defer wg.Done(); _ = s.presence.Run(ctx) }()
	go func() { defer wg.Done(); s.revocations(ctx) }()
	wg.Wait()
	return nil
}

// peerFresh is how recent another gateway's report of reading Redis must
// be for this one to stay aside; healthy gateways report once a second.
const peerFresh = 5 * time.Second

// watchFanout steps the gateway aside when it has not read Redis (its
// fan-out reader failing, or a PING) for StepAsideAfter while another
// gateway reports reading, and back once it reads again or no other
// gateway reports reading (see Config). While it reads, it reports so to
// the other gateways.
func (s *Server) watchFanout(ctx context.Context) {
	if s.cfg.StepAsideAfter <= 0 || s.deps.Peers == nil {
		return
	}
	var peerAt atomic.Int64 // UnixNano of the latest report of another gateway
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.deps.Peers.ListenFanoutOK(ctx, s.logger, func(id string) {
			if id != s.cfg.GatewayID {
				peerAt.Store(time.Now().UnixNano())
			}
		})
	}()
	defer wg.Wait()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var since time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// The reader alone notices a cut late: its blocked XREAD fails only
		// when go-redis gives up on it, its block time plus 10 s after it
		// began. A PING a second notices within one.
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		pingErr := s.deps.Redis.Ping(pctx).Err()
		cancel()
		if ctx.Err() != nil {
			return
		}
		if s.reader.Ready() && pingErr == nil {
			since = time.Time{}
			nctx, cancel := context.WithTimeout(ctx, time.Second)
			if err := s.deps.Peers.NotifyFanoutOK(nctx, s.cfg.GatewayID); err != nil && ctx.Err() == nil {
				s.logger.Debug("report fan-out reading", "error", err)
			}
			cancel()
			if s.aside.CompareAndSwap(true, false) {
				s.logger.Info("fan-out reads Redis again: accepting WebSockets")
			}
			continue
		}
		if since.IsZero() {
			since = time.Now()
		}
		peerReads := time.Since(time.Unix(0, peerAt.Load())) < peerFresh
		switch {
		case s.aside.Load() && !peerReads:
			s.aside.Store(false)
			s.logger.Warn("no other gateway reports reading Redis: taking WebSockets again, though this one cannot deliver yet")
		case !s.aside.Load() && peerReads && pingErr != nil && time.Since(since) >= s.cfg.StepAsideAfter:
			// With the PING answered, the reader may only be waiting out
			// its backoff after an outage its peers have already
			// recovered from: no reason to send the clients away.
			s.aside.Store(true)
			conns := s.hub.all()
			s.logger.Warn("fan-out cannot read Redis and another gateway can: closing this gateway's WebSockets so that their clients reconnect to one that delivers",
				"unreadable_for", time.Since(since).Round(time.Millisecond).String(), "sockets", len(conns))
			for _, c := range conns {
				c.close(CloseGoingAway, "cannot deliver: reconnect")
			}
		}
	}
}

// revocations closes, with 4001, the sockets of every login whose family
// id is published on auth.RevokedChannel. go-redis resubscribes by itself
// after a connection loss.
func (s *Server) revocations(ctx context.Context) {
	sub := s.deps.Redis.Subscribe(ctx, auth.RevokedChannel(s.cfg.RedisPrefix))
	defer sub.Close()
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			for _, c := range s.hub.all() {
				if c.claims.FamilyID != "" && c.claims.FamilyID == m.Payload {
					c.close(CloseTokenExpired, "login revoked")
				}
			}
		}
	}
}

// Drain stops accepting connections and sends, then closes every socket
// with 1001, at most DrainParallel at a time, waiting for their handlers to
// finish until ctx ends. A connection that registers while Drain runs sees
// the draining flag and closes itself with 1001.
//
// Sends accepted before the drain began are answered first: Drain waits
// (at most DrainAckWait) until their delivery reports have queued the acks
// (or errors), and a socket closing with 1001 writes what is queued before
// its close frame. Sends read after the drain began are refused with
// unavailable (retry on the next connection). A send left without an
// answer (its socket closed first, or the wait ran out) may be retried with
// the same client_msg_id: a retry of a stored message is acked without
// storing it twice.
func (s *Server) Drain(ctx context.Context) error {
	s.draining.Store(true)
	s.waitInflight(ctx)
	sem := make(chan struct{}, s.cfg.DrainParallel)
	var wg sync.WaitGroup
	for _, c := range s.hub.all() {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return fmt.Errorf("drain websockets: %w", ctx.Err())
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c.close(CloseGoingAway, "server draining")
			select {
			case <-c.done:
			case <-ctx.Done():
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("drain websockets: %w", err)
	}
	return nil
}

// waitInflight waits until no accepted send awaits its delivery report, at
// most DrainAckWait or until ctx ends.
func (s *Server) waitInflight(ctx context.Context) {
	if s.inflight.Load() == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DrainAckWait)
	defer cancel()
	// draining is set, so every fall to 0 from here on leaves a token in
	// settled; one left from before only makes the loop look again.
	for s.inflight.Load() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-s.settled:
		}
	}
}

// sendSettled ends the count of one send (refused, failed, or its delivery
// report handled) and wakes a waiting Drain when none is left.
func (s *Server) sendSettled() {
	if s.inflight.Add(-1) == 0 && s.draining.Load() {
		select {
		case s.settled <- struct{}{}:
		default: // a token is already there
		}
	}
}

// session is what the pre-upgrade checks hand to the connection.
type session struct {
	claims   auth.Claims
	roomID   int64
	sinceSeq int64 // -1 when absent
	slot     *slot // this connection's place under the connection limits
}

// unclaimedSlotTimeout releases the connection slot of a handshake whose
// upgraded connection never starts (its answer could not be written).
const unclaimedSlotTimeout = 30 * time.Second

// retryAfterConns is the Retry-After, in seconds, of a handshake refused by
// a connection limit.
const retryAfterConns = "5"

func apiError(c *fiber.Ctx, status int, code, msg string) error {
	return c.Status(status).JSON(fiber.Map{"code": code, "message": msg})
}

// Upgrade returns the handler of GET /api/chat/rooms/:id for WebSocket
// upgrade requests. It answers refused handshakes with the API's error JSON
// (401, 403, 404, 400 for a bad since_seq, 503 while draining, when a
// dependency fails or the gateway has MaxConns sockets, 429 when the user
// has MaxConnsPerUser) and upgrades the rest, negotiating rooms.v2.
func (s *Server) Upgrade() fiber.Handler {
	return func(c *fiber.Ctx) error {
		if s.draining.Load() {
			return apiError(c, fiber.StatusServiceUnavailable, "unavailable", "server is draining")
		}
		if s.aside.Load() {
			return apiError(c, fiber.StatusServiceUnavailable, "unavailable", "server cannot deliver messages right now")
		}
		if s.limits.full() {
			c.Set(fiber.HeaderRetryAfter, retryAfterConns)
			return apiError(c, fiber.StatusServiceUnavailable, "unavailable", "too many connections on this server")
		}
		if origin := c.Get(fiber.HeaderOrigin); origin != "" && !s.originAllowed(origin) {
			return apiError(c, fiber.StatusForbidden, "forbidden_origin", "origin not allowed")
		}
		claims, err := s.authenticate(c)
		if err != nil {
			if !errors.Is(err, auth.ErrInvalidToken) && !errors.Is(err, auth.ErrInvalidTicket) {
				// The ticket could not be looked up (Redis did not
				// answer): the client's credentials may be fine.
				s.logger.Warn("websocket ticket lookup", "error", err)
				return apiError(c, fiber.StatusServiceUnavailable, "unavailable", "service unavailable")
			}
			return apiError(c, fiber.StatusUnauthorized, "unauthorized", "missing or invalid access token")
		}
		roomID, err := strconv.ParseInt(c.Params("id"), 10, 64)
		if err != nil || roomID <= 0 {
			return apiError(c, fiber.StatusNotFound, "not_found", "room not found")
		}
		if _, err := s.deps.Store.Room(c.UserContext(), roomID); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return apiError(c, fiber.StatusNotFound, "not_found", "room not found")
			}
			s.logger.Error("websocket room lookup", "room_id", roomID, "error", err)
			return apiError(c, fiber.StatusServiceUnavailable, "unavailable", "service unavailable")
		}
		since := int64(-1)
		if v := c.Query("since_seq"); v != "" {
			since, err = strconv.ParseInt(v, 10, 64)
			if err != nil || since < 0 {
				return apiError(c, fiber.StatusBadRequest, "validation_failed", "since_seq must be a non-negative integer")
			}
		}
		sl, err := s.limits.acquire(claims.UserID)
		switch {
		case errors.Is(err, errNodeFull):
			c.Set(fiber.HeaderRetryAfter, retryAfterConns)
			return apiError(c, fiber.StatusServiceUnavailable, "unavailable", "too many connections on this server")
		case errors.Is(err, errUserFull):
			c.Set(fiber.HeaderRetryAfter, retryAfterConns)
			return apiError(c, fiber.StatusTooManyRequests, "rate_limited", "too many open connections for this user")
		}
		sess := &session{claims: claims, roomID: roomID, sinceSeq: since, slot: sl}
		keep := c.App().Server().KeepHijackedConns
		err = s.upgrader.Upgrade(c.Context(), func(wc *websocket.Conn) { s.start(wc, sess, keep) })
		if !c.Context().Hijacked() {
			// Not upgraded: the connection will never start.
			sl.release()
		} else {
			sl.expireUnclaimed(unclaimedSlotTimeout)
		}
		if err != nil {
			return fiber.ErrUpgradeRequired
		}
		return nil
	}
}

// writeBuffers is the pool the websocket library borrows write buffers from.
var writeBuffers sync.Pool

func (s *Server) originAllowed(origin string) bool {
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

// authenticate takes the token from the Authorization header, the
// access_token query parameter ("Bearer <jwt>" or the bare jwt) or a
// one-time ticket, in that order.
func (s *Server) authenticate(c *fiber.Ctx) (auth.Claims, error) {
	if h := c.Get(fiber.HeaderAuthorization); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return auth.Claims{}, auth.ErrInvalidToken
		}
		return s.deps.Auth.ParseAccess(strings.TrimSpace(tok))
	}
	if q := c.Query("access_token"); q != "" {
		tok, _ := strings.CutPrefix(q, "Bearer ")
		return s.deps.Auth.ParseAccess(strings.TrimSpace(tok))
	}
	if t := c.Query("ticket"); t != "" {
		return s.deps.Auth.RedeemTicket(c.UserContext(), t)
	}
	return auth.Claims{}, auth.ErrInvalidToken
}

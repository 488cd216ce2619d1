// Package httpapi serves the gateway's REST API (API.md: Auth, Rooms,
// Operations) on Fiber. Every error is answered as {"code","message"} by
// one error handler (errors.go), the only place that decides statuses.
//
// The WebSocket side plugs in through Options: RoomUpgrade serves
// GET /api/chat/rooms/:id when the request is a WebSocket upgrade (the same
// path answers the REST GET otherwise), and Routes registers further routes.
package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/recover"
	"github.com/gofiber/fiber/v2/utils"
	"github.com/redis/go-redis/v9"

	"rooms/gateway/internal/auth"
	"rooms/gateway/internal/metrics"
	"rooms/gateway/internal/ratelimit"
	"rooms/gateway/internal/store"
)

// BodyLimit is the largest accepted request body.
const BodyLimit = 64 << 10

// readLimit is the largest body the server reads at all. Bodies between
// BodyLimit and readLimit are read and answered 413 by limitBody: when
// fasthttp itself refuses a body it answers and closes the connection
// without reading the rest, so a client still sending sees a broken pipe
// instead of the 413. Bodies over readLimit get that treatment.
const readLimit = 1 << 20

// Options configures a Server.
type Options struct {
	Auth    *auth.Auth
	Store   *store.Store
	Redis   redis.Cmdable
	Prefix  string // Redis key prefix
	Limiter *ratelimit.Limiter

	// NicknameLimit and IPLimit bound login and register attempts per
	// nickname (lower-cased) and per client IP. A zero Rate disables one.
	NicknameLimit, IPLimit ratelimit.Limit

	// TrustedProxies lists IPs or CIDRs whose X-Real-IP / X-Forwarded-For
	// headers are believed for the client IP.
	TrustedProxies []string

	ReadTimeout, IdleTimeout time.Duration
	// RequestTimeout bounds the PostgreSQL and Redis calls of one request
	// (the context handlers get from c.UserContext()); a request still
	// waiting on them past it is answered 503 unavailable. Zero: unbounded.
	RequestTimeout time.Duration

	// RoomUpgrade, when set, serves GET /api/chat/rooms/:id requests that
	// are WebSocket upgrades; it is tried before the REST handler.
	RoomUpgrade fiber.Handler
	// Routes, when set, is called with the /api group to add routes.
	Routes func(api fiber.Router)
	// Ready, when set, is asked by /readyz after PostgreSQL and Redis; a
	// non-nil error (its text is logged, never answered) means not ready.
	Ready func() error

	Logger *slog.Logger
	// Metrics counts requests and refused login/register attempts (nil:
	// counted nowhere).
	Metrics *metrics.HTTP
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Server is the HTTP API.
type Server struct {
	o        Options
	app      *fiber.App
	log      *slog.Logger
	trusted  []*net.IPNet
	draining atomic.Bool
}

// New builds the Fiber app and its routes.
func New(o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Metrics == nil {
		o.Metrics = metrics.Discard().HTTP
	}
	s := &Server{o: o, log: o.Logger}
	for _, p := range o.TrustedProxies {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		n, err := parseNet(p)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: %w", p, err)
		}
		s.trusted = append(s.trusted, n)
	}
	s.app = fiber.New(fiber.Config{
		AppName:               "rooms-gateway",
		DisableStartupMessage: true,
		BodyLimit:             readLimit,
		// Room for long Authorization headers, so an oversized token is
		// answered 401 by the token check rather than 431.
		ReadBufferSize: 16 << 10,
		// Hand the read buffer back once a request is read, rather than
		// keep it for the connection's life: a WebSocket takes over its
		// connection after the upgrade request and otherwise holds those
		// 16 KiB as long as it is open, which would be most of an idle
		// socket's memory.
		ReduceMemoryUsage: true,
		ReadTimeout:       o.ReadTimeout,
		IdleTimeout:       o.IdleTimeout,
		ErrorHandler:      errorHandler(o.Logger),
	})
	// An upgraded WebSocket is handed to a goroutine of its own (package
	// ws) and the handshake's goroutine ends, letting go of the request and
	// its buffers; fasthttp must then leave the connection open.
	s.app.Server().KeepHijackedConns = true
	s.app.Use(recover.New(recover.Config{
		EnableStackTrace: true,
		StackTraceHandler: func(c *fiber.Ctx, e any) {
			s.log.Error("panic in handler", "method", c.Method(), "path", c.Path(),
				"request_id", RequestID(c), "panic", fmt.Sprint(e))
		},
	}))
	s.app.Use(requestID)
	s.app.Use(s.logRequests)
	s.app.Use(limitBody)
	s.app.Use(s.deadline)
	s.routes()
	return s, nil
}

func parseNet(s string) (*net.IPNet, error) {
	if strings.Contains(s, "/") {
		_, n, err := net.ParseCIDR(s)
		return n, err
	}
	ip := net.ParseIP(s)
	if ip == nil {
		return nil, errors.New("not an IP address or CIDR")
	}
	bits := 128
	if ip4 := ip.To4(); ip4 != nil {
		ip, bits = ip4, 32
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}, nil
}

func (s *Server) routes() {
	a := s.app
	a.Get("/healthz", s.healthz)
	a.Get("/readyz", s.readyz)

	api := a.Group("/api")
	api.Get("/healthz", s.healthz)
	api.Get("/readyz", s.readyz)

	api.Post("/user/register", s.register)
	api.Post("/user/login", s.login)
	api.Post("/user/refresh", s.refresh)
	api.Post("/user/logout", s.logout)
	api.Get("/user/me", s.RequireAuth, s.me)
	api.Post("/user/ws-ticket", s.RequireAuth, s.wsTicket)

	api.Post("/chat/rooms", s.RequireAuth, s.createRoom)
	api.Get("/chat/rooms", s.RequireAuth, s.listRooms)
	api.Get("/chat/rooms/:id", s.upgradeOr(s.RequireAuth), s.getRoom)
	api.Get("/chat/rooms/:id/clients", s.RequireAuth, s.roomClients)
	api.Get("/chat/rooms/:id/messages", s.RequireAuth, s.roomMessages)

	if s.o.Routes != nil {
		s.o.Routes(api)
	}
}

// upgradeOr hands WebSocket upgrade requests to Options.RoomUpgrade and
// everything else to next.
func (s *Server) upgradeOr(next fiber.Handler) fiber.Handler {
	return func(c *fiber.Ctx) error {
		if s.o.RoomUpgrade != nil && websocket.FastHTTPIsWebSocketUpgrade(c.Context()) {
			return s.o.RoomUpgrade(c)
		}
		return next(c)
	}
}

// App returns the Fiber app, for tests and for adding middleware.
func (s *Server) App() *fiber.App { return s.app }

// Serve serves HTTP on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if t := s.app.Config().ReadTimeout; t > 0 {
		ln = firstByteDeadline{Listener: ln, timeout: t}
	}
	if err := s.app.Listener(ln); err != nil {
		return fmt.Errorf("serve http: %w", err)
	}
	return nil
}

// Shutdown stops accepting connections and waits for open requests until
// ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.app.ShutdownWithContext(ctx); err != nil {
		return fmt.Errorf("shutdown http: %w", err)
	}
	return nil
}

// SetDraining marks the server as draining: /readyz answers 503 from then on.
func (s *Server) SetDraining(v bool) { s.draining.Store(v) }

// Draining reports whether SetDraining(true) was called.
func (s *Server) Draining() bool { return s.draining.Load() }

// logRequests counts each request in the metrics and logs it at debug
// level. Only the path is logged, never the query string, which may carry
// tokens or tickets.
func (s *Server) logRequests(c *fiber.Ctx) error {
	start := time.Now()
	err := c.Next()
	status := c.Response().StatusCode()
	if err != nil {
		e, _ := errorFor(err)
		status = statusOf[e.Kind]
	}
	d := time.Since(start)
	// The route template, never the raw path (bounded label values); a
	// request no route matched is still on a middleware's route.
	route := "unmatched"
	if r := c.Route(); r != nil && r.Method != "USE" {
		route = r.Path
	}
	s.o.Metrics.Request(methodLabel(c.Method()), route, status, d)
	if s.log.Enabled(c.UserContext(), slog.LevelDebug) {
		s.log.Debug("request", "method", c.Method(), "path", c.Path(), "status", status,
			"duration_ms", d.Milliseconds(), "ip", s.ClientIP(c), "request_id", RequestID(c))
	}
	return err
}

// methodLabel is the metrics label of an HTTP method: a constant string,
// never the request's own bytes. Fiber's c.Method() points into the
// connection's request buffer, which the next request on it (or, with
// ReduceMemoryUsage, another connection) overwrites, and a label value is
// kept for the life of the process: a POST's label once turned into "GETT".
// Unknown methods share one label, so a client cannot mint label values.
func methodLabel(m string) string {
	for _, known := range labelledMethods {
		if m == known {
			return known
		}
	}
	return "OTHER"
}

var labelledMethods = []string{
	fiber.MethodGet, fiber.MethodHead, fiber.MethodPost, fiber.MethodPut,
	fiber.MethodPatch, fiber.MethodDelete, fiber.MethodOptions,
}

const requestIDKey = "rooms.request_id"

// requestID gives each request an id: the client's X-Request-ID when it is
// a short token (1–64 letters, digits, '-', '_', '.'), a new one otherwise.
// It is answered in X-Request-ID and logged as request_id.
func requestID(c *fiber.Ctx) error {
	id := c.Get(fiber.HeaderXRequestID)
	if validRequestID(id) {
		id = utils.CopyString(id)
	} else {
		id = utils.UUIDv4()
	}
	c.Set(fiber.HeaderXRequestID, id)
	c.Locals(requestIDKey, id)
	return c.Next()
}

func validRequestID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch b := id[i]; {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9', b == '-', b == '_', b == '.':
		default:
			return false
		}
	}
	return true
}

// RequestID returns the id requestID gave this request ("" outside it).
func RequestID(c *fiber.Ctx) string {
	id, _ := c.Locals(requestIDKey).(string)
	return id
}

// limitBody answers 413 for a body over BodyLimit.
func limitBody(c *fiber.Ctx) error {
	if len(c.Request().Body()) > BodyLimit {
		return NewError(KindTooLarge, "request body is larger than 64 KiB")
	}
	return c.Next()
}

// deadline gives the request's context (c.UserContext()) the deadline
// RequestTimeout. fasthttp never cancels a handler's context, not even when
// the client goes away, so without it a request whose query waits on a
// database that stopped answering would hold its connection and goroutine
// until the kernel gave up on the database connection, minutes later.
func (s *Server) deadline(c *fiber.Ctx) error {
	if s.o.RequestTimeout <= 0 {
		return c.Next()
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), s.o.RequestTimeout)
	defer cancel()
	c.SetUserContext(ctx)
	return c.Next()
}

// ClientIP returns the client's IP address. X-Real-IP, then the rightmost
// untrusted X-Forwarded-For entry, are believed only when the connection
// comes from a trusted proxy.
func (s *Server) ClientIP(c *fiber.Ctx) string {
	remote := c.Context().RemoteIP()
	if !s.isTrusted(remote) {
		return remote.String()
	}
	if ip := net.ParseIP(strings.TrimSpace(c.Get("X-Real-IP"))); ip != nil {
		return ip.String()
	}
	if xff := c.Get(fiber.HeaderXForwardedFor); xff != "" {
		parts := strings.Split(xff, ",")
		for i := len(parts) - 1; i >= 0; i-- {
			ip := net.ParseIP(strings.TrimSpace(parts[i]))
			if ip == nil {
				break
			}
			if !s.isTrusted(ip) || i == 0 {
				return ip.String()
			}
		}
	}
	return remote.String()
}

func (s *Server) isTrusted(ip net.IP) bool {
	for _, n := range s.trusted {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

const claimsKey = "rooms.claims"

// RequireAuth is middleware that accepts only requests with a valid
// "Authorization: Bearer <access token>" and stores its claims for ClaimsOf.
func (s *Server) RequireAuth(c *fiber.Ctx) error {
	h := c.Get(fiber.HeaderAuthorization)
	const bearer = "bearer "
	if len(h) <= len(bearer) || !strings.EqualFold(h[:len(bearer)], bearer) {
		return auth.ErrInvalidToken
	}
	claims, err := s.o.Auth.ParseAccess(strings.TrimSpace(h[len(bearer):]))
	if err != nil {
		return err
	}
	c.Locals(claimsKey, claims)
	return c.Next()
}

// ClaimsOf returns the claims RequireAuth stored for this request.
func ClaimsOf(c *fiber.Ctx) auth.Claims {
	claims, _ := c.Locals(claimsKey).(auth.Claims)
	return claims
}

func (s *Server) healthz(c *fiber.Ctx) error {
	return c.JSON(fiber.Map{"status": "ok"})
}

func (s *Server) readyz(c *fiber.Ctx) error {
	if s.Draining() {
		return NewError(KindUnavailable, "server is draining")
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), 2*time.Second)
	defer cancel()
	if err := s.o.Store.Ping(ctx); err != nil {
		s.log.Warn("not ready", "dependency", "postgres", "err", err)
		return NewError(KindUnavailable, "database unavailable")
	}
	if err := s.o.Redis.Ping(ctx).Err(); err != nil {
		s.log.Warn("not ready", "dependency", "redis", "err", err)
		return NewError(KindUnavailable, "redis unavailable")
	}
	if s.o.Ready != nil {
		if err := s.o.Ready(); err != nil {
			s.log.Warn("not ready", "err", err)
			return NewError(KindUnavailable, "a dependency is unavailable")
		}
	}
	return c.JSON(fiber.Map{"status": "ready"})
}

// firstByteDeadline gives every accepted connection a read deadline of
// the read timeout. With ReduceMemoryUsage fasthttp waits for a new
// connection's first byte with no deadline (it sets the read timeout once a
// request starts), so without this a client that connects and sends nothing
// would hold its connection forever; the first request's own deadline
// replaces this one.
type firstByteDeadline struct {
	net.Listener
	timeout time.Duration
}

func (l firstByteDeadline) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if err := c.SetReadDeadline(time.Now().Add(l.timeout)); err != nil {
			_ = c.Close() // already gone; take the next one
			continue
		}
		return c, nil
	}
}

// Package app wires the gateway together: it parses the configuration,
// connects to PostgreSQL and Redis, builds the components and serves HTTP
// until its context is cancelled, then drains and shuts down under one
// deadline.
//
// New is the one place where components are built and connected; further
// components (Kafka producer, fan-out reader, WebSocket hub) are added there
// and handed to httpapi.Options.
package app

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"rooms/gateway/internal/auth"
	"rooms/gateway/internal/httpapi"
	"rooms/gateway/internal/metrics"
	"rooms/gateway/internal/produce"
	"rooms/gateway/internal/ratelimit"
	"rooms/gateway/internal/store"
	"rooms/gateway/internal/ws"
	"rooms/shared/admin"
	"rooms/shared/config"
	"rooms/shared/logging"
	"rooms/shared/tracing"
)

// App is a built gateway, ready to Serve.
type App struct {
	Config Config
	Log    *slog.Logger
	Pool   *pgxpool.Pool
	// Replica is the pool of DATABASE_REPLICA_URL (nil when unset).
	Replica *pgxpool.Pool
	Redis   *redis.Client
	Store   *store.Store
	Auth    *auth.Auth
	// Limiter holds rate-limit state in Redis, shared by all gateways.
	Limiter *ratelimit.Limiter
	// Producer hands accepted messages to Kafka.
	Producer *produce.Producer
	// WS serves both WebSocket protocols and fans messages out to them.
	WS   *ws.Server
	HTTP *httpapi.Server
	// Registry holds this process's metrics: Metrics, the Go runtime's and
	// the process's. Admin serves it with /healthz and pprof.
	Registry *prometheus.Registry
	Metrics  *metrics.Gateway
	Admin    http.Handler
	// Tracing is the TracerProvider handed to the components: OTLP when
	// the standard OTEL_* environment asks for it, otherwise a no-op one.
	Tracing *tracing.Provider

	background, shutdown []namedFunc
}

// connectTimeout bounds the initial connection checks.
const connectTimeout = 10 * time.Second

// sendLeaseTTL is how long the gateway keeps send-limit tokens it leased
// from Redis (SEND_BURST/8 at a time) and has not spent yet. With 1 s, a
// user sending fewer than a lease's worth a second (the benchmark's chat
// sends 2 a second each) let every lease expire after a token or two and
// cost one Redis script call per message or so; the life changes neither
// bound of the limit (see ratelimit.Leased).
const sendLeaseTTL = 10 * time.Second

// New connects to the dependencies and builds every component. It fails
// when PostgreSQL or Redis does not answer. Close releases what it opened.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*App, error) {
	a := &App{Config: cfg, Log: log}
	a.Registry = admin.NewRegistry()
	a.Metrics = metrics.New(a.Registry)
	a.Admin = admin.Handler(a.Registry, log)
	a.Tracing = tracing.Noop()
	ok := false
	defer func() {
		if !ok {
			a.Close()
		}
	}()

	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()

	pgcfg, err := pgxpool.ParseConfig(cfg.Postgres.URL)
	if err != nil {
		return nil, errors.New("parse DATABASE_URL: invalid connection string")
	}
	pgcfg.MaxConns = cfg.Postgres.MaxConns
	// A token refresh locks its login's tokens for a few round trips.
	config.PostgresSessionDefaults(pgcfg.ConnConfig.RuntimeParams)
	if a.Pool, err = pgxpool.NewWithConfig(cctx, pgcfg); err != nil {
		return nil, fmt.Errorf("postgres pool: %w", err)
	}
	if err := a.Pool.Ping(cctx); err != nil {
		return nil, fmt.Errorf("postgres at %s is unreachable: %w", pgcfg.ConnConfig.Host, err)
	}

	a.Redis = redis.NewClient(&redis.Options{Addr: cfg.Redis.Addr, Password: cfg.Redis.Password, DB: cfg.Redis.DB})
	if err := a.Redis.Ping(cctx).Err(); err != nil {
		return nil, fmt.Errorf("redis at %s is unreachable: %w", cfg.Redis.Addr, err)
	}

	var storeOpts []store.Option
	if cfg.ReplicaURL != "" {
		rcfg, err := pgxpool.ParseConfig(cfg.ReplicaURL)
		if err != nil {
			return nil, errors.New("parse DATABASE_REPLICA_URL: invalid connection string")
		}
		rcfg.MaxConns = cfg.Postgres.MaxConns
		// Not pinged: the pool connects on first use, and a replica that
		// is down only sends history reads to the primary until the
		// background check finds it healthy.
		if a.Replica, err = pgxpool.NewWithConfig(ctx, rcfg); err != nil {
			return nil, fmt.Errorf("postgres replica pool: %w", err)
		}
		storeOpts = append(storeOpts, store.WithReplica(a.Replica, store.ReplicaOptions{
			MaxLag: cfg.ReplicaMaxLag, Logger: log.With("replica", rcfg.ConnConfig.Host),
		}))
	}
	a.Store = store.New(a.Pool, storeOpts...)
	if a.Replica != nil {
		a.Background("postgres replica check", a.Store.RunReplicaChecks)
	}
	if a.Auth, err = auth.New(cctx, auth.Options{
		Store: a.Store, Redis: a.Redis, Prefix: cfg.Redis.Prefix, Secret: []byte(cfg.JWTSecret),
		AccessTTL: cfg.AccessTTL, RefreshTTL: cfg.RefreshTTL, TicketTTL: cfg.TicketTTL,
		HashConcurrency: cfg.HashConcurrency,
	}); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}

	a.Limiter = ratelimit.New(a.Redis, cfg.Redis.Prefix)

	if err := produce.EnsureTopic(cctx, cfg.Kafka.Brokers, cfg.Kafka.Topic, cfg.Kafka.Partitions, cfg.Kafka.Replication); err != nil {
		return nil, fmt.Errorf("kafka topic %s: %w", cfg.Kafka.Topic, err)
	}
	if a.Producer, err = produce.New(produce.Config{
		Brokers: cfg.Kafka.Brokers, Topic: cfg.Kafka.Topic, Linger: cfg.KafkaLinger, Compression: cfg.KafkaCompression,
		MessageTimeout: cfg.KafkaMessageTimeout, QueueMax: cfg.KafkaQueueMax,
		Metrics: a.Metrics.Produce,
	}, log); err != nil {
		return nil, fmt.Errorf("kafka producer: %w", err)
	}
	a.Metrics.Produce.QueueDepth(a.Producer.Len)
	if a.Tracing, err = tracing.New(ctx, os.Getenv, "gateway"); err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	sendLimit := ratelimit.Limit{Rate: cfg.SendRate, Burst: cfg.SendBurst, Period: time.Second}
	a.WS = ws.New(ws.Config{
		// A fresh suffix per process keeps the presence entries of a
		// restarted instance apart from the stale ones of its predecessor.
		GatewayID:       cfg.GatewayID + "-" + rand.Text()[:6],
		RedisPrefix:     cfg.Redis.Prefix,
		AllowedOrigins:  List(cfg.AllowedOrigins),
		MaxContent:      cfg.MaxContent,
		SendLimit:       sendLimit,
		MaxConns:        cfg.WSMaxConns,
		MaxConnsPerUser: cfg.WSMaxConnsPerUser,
		StepAsideAfter:  cfg.StepAsideAfter,
	}, ws.Deps{Auth: a.Auth, Store: a.Store, Limiter: ratelimit.NewLeased(a.Limiter, sendLeaseTTL), Producer: a.Producer, Redis: a.Redis, Metrics: a.Metrics, Tracer: a.Tracing, Peers: a.Store}, log)
	a.Background("websocket", a.WS.Run)
	a.OnShutdown("websocket drain", a.WS.Drain)
	a.OnShutdown("kafka producer flush", a.Producer.Close)
	// After the producer's flush, so the last sends' spans are ended.
	a.OnShutdown("trace flush", a.Tracing.Shutdown)

	if a.HTTP, err = httpapi.New(httpapi.Options{
		RoomUpgrade: a.WS.Upgrade(),
		Ready: func() error {
			if !a.Producer.Ready() {
				return errors.New("kafka producer not ready")
			}
			if !a.WS.Ready() {
				return errors.New("fan-out reader not ready")
			}
			return nil
		},
		Auth: a.Auth, Store: a.Store, Redis: a.Redis, Prefix: cfg.Redis.Prefix,
		Limiter:        a.Limiter,
		NicknameLimit:  ratelimit.PerMinute(cfg.AuthRateLimit),
		IPLimit:        ratelimit.PerMinute(cfg.AuthRateLimitIP),
		TrustedProxies: List(cfg.TrustedProxies),
		ReadTimeout:    cfg.HTTPReadTimeout,
		IdleTimeout:    cfg.HTTPIdleTimeout,
		RequestTimeout: cfg.HTTPRequestTimeout,
		Logger:         log,
		Metrics:        a.Metrics.HTTP,
	}); err != nil {
		return nil, fmt.Errorf("http api: %w", err)
	}
	ok = true
	return a, nil
}

// Background registers fn to run for the life of Serve: it gets a context
// that is cancelled when shutdown begins, and Serve waits for it to return
// (within the shutdown deadline). An error from fn before shutdown stops
// the gateway. Call it before Serve.
func (a *App) Background(name string, fn func(ctx context.Context) error) {
	a.background = append(a.background, namedFunc{name, fn})
}

// OnShutdown registers fn to run when shutdown begins, after the server is
// marked draining and before the HTTP server stops (for example to close
// WebSockets with 1001). Hooks run in registration order and share the
// shutdown deadline. Call it before Serve.
func (a *App) OnShutdown(name string, fn func(ctx context.Context) error) {
	a.shutdown = append(a.shutdown, namedFunc{name, fn})
}

type namedFunc struct {
	name string
	fn   func(ctx context.Context) error
}

// Serve serves HTTP on ln and runs the Background functions until ctx is
// cancelled (or one of them fails). Then it marks the server draining, runs
// the OnShutdown hooks, stops the HTTP server and waits for the Background
// functions, all within Config.Shutdown.Timeout. It returns nil after a
// clean shutdown.
func (a *App) Serve(ctx context.Context, ln net.Listener) error {
	a.Log.Info("http listening", "addr", ln.Addr().String())
	httpc := make(chan error, 1)
	// Each accepted socket keeps its writes apart (ws.Listener): the
	// WebSocket fan-out writes to idle sockets without waiting.
	go func() { httpc <- a.HTTP.Serve(ws.Listener(ln)) }()

	bctx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()
	var wg sync.WaitGroup
	failed := make(chan error, len(a.background))
	for _, b := range a.background {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.fn(bctx); err != nil && bctx.Err() == nil {
				failed <- fmt.Errorf("%s: %w", b.name, err)
			}
		}()
	}

	var cause error
	select {
	case err := <-httpc:
		cause = fmt.Errorf("http server stopped: %w", err)
		httpc <- nil
	case err := <-failed:
		cause = err
	case <-ctx.Done():
	}
	if cause != nil {
		a.Log.Error("stopping after a failure", "err", cause)
	}
	a.Log.Info("shutting down", "timeout", a.Config.Shutdown.Timeout.String())
	a.HTTP.SetDraining(true)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.Config.Shutdown.Timeout)
	defer cancel()
	var errs []error
	if cause != nil {
		errs = append(errs, cause)
	}
	for _, h := range a.shutdown {
		if err := h.fn(sctx); err != nil {
			errs = append(errs, fmt.Errorf("shutdown %s: %w", h.name, err))
		}
	}
	if err := a.HTTP.Shutdown(sctx); err != nil {
		errs = append(errs, err)
	}
	// A shutdown that raced with the start of serving finds no listener to
	// close; closing ln here makes a late start return at once.
	_ = ln.Close()
	select {
	case err := <-httpc:
		if err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	case <-sctx.Done():
		errs = append(errs, errors.New("http server did not stop within the shutdown timeout"))
	}
	stopBackground()
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-sctx.Done():
		errs = append(errs, errors.New("background tasks did not stop within the shutdown timeout"))
	}
	return errors.Join(errs...)
}

// Close releases the connections New opened.
func (a *App) Close() {
	if a.Producer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), a.Config.Shutdown.Timeout)
		_ = a.Producer.Close(ctx)
		cancel()
	}
	if a.Tracing != nil {
		ctx, cancel := context.WithTimeout(context.Background(), a.Config.Shutdown.Timeout)
		_ = a.Tracing.Shutdown(ctx) // a no-op after the shutdown hook
		cancel()
	}
	if a.Redis != nil {
		_ = a.Redis.Close()
	}
	if a.Pool != nil {
		a.Pool.Close()
	}
	if a.Replica != nil {
		a.Replica.Close()
	}
}

// Run is the whole gateway program: it parses the configuration from
// getenv, logs it (secrets masked) to stdout, builds the App and serves on
// HTTP_ADDR until ctx is cancelled.
func Run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := ParseConfig(getenv)
	if err != nil {
		return err
	}
	log := logging.New(stdout, cfg.Log.Level, "gateway")
	log.Info("starting", "gateway_id", cfg.GatewayID, "gomaxprocs", runtime.GOMAXPROCS(0), "config", config.Redacted(cfg))
	if cfg.JWTSecret == DevJWTSecret {
		log.Warn("JWT_SECRET is the development default; set a secret of your own outside local development")
	}

	a, err := New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer a.Close()

	if cfg.AdminAddr != "" {
		aln, err := net.Listen("tcp", cfg.AdminAddr)
		if err != nil {
			return fmt.Errorf("listen on ADMIN_ADDR %s: %w", cfg.AdminAddr, err)
		}
		// Served until the end of shutdown, so a scrape sees the drain.
		a.Background("admin server", func(ctx context.Context) error {
			return admin.Serve(ctx, aln, a.Admin, log)
		})
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
	}
	if err := a.Serve(ctx, ln); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

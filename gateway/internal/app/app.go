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
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"rooms/gateway/internal/auth"
	"rooms/gateway/internal/httpapi"
	"rooms/gateway/internal/ratelimit"
	"rooms/gateway/internal/store"
	"rooms/shared/config"
	"rooms/shared/logging"
)

// App is a built gateway, ready to Serve.
type App struct {
	Config Config
	Log    *slog.Logger
	Pool   *pgxpool.Pool
	Redis  *redis.Client
	Store  *store.Store
	Auth   *auth.Auth
	// Limiter holds rate-limit state in Redis, shared by all gateways.
	Limiter *ratelimit.Limiter
	HTTP    *httpapi.Server
}

// connectTimeout bounds the initial connection checks.
const connectTimeout = 10 * time.Second

// New connects to the dependencies and builds every component. It fails
// when PostgreSQL or Redis does not answer. Close releases what it opened.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*App, error) {
	a := &App{Config: cfg, Log: log}
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

	a.Store = store.New(a.Pool)
	if a.Auth, err = auth.New(cctx, auth.Options{
		Store: a.Store, Redis: a.Redis, Prefix: cfg.Redis.Prefix, Secret: []byte(cfg.JWTSecret),
		AccessTTL: cfg.AccessTTL, RefreshTTL: cfg.RefreshTTL, TicketTTL: cfg.TicketTTL,
		HashConcurrency: cfg.HashConcurrency,
	}); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}

	a.Limiter = ratelimit.New(a.Redis, cfg.Redis.Prefix)

	// Components of the WebSocket side (producer, fan-out reader, hub) are
	// built here and plugged in through httpapi.Options.RoomUpgrade and
	// httpapi.Options.Routes.
	if a.HTTP, err = httpapi.New(httpapi.Options{
		Auth: a.Auth, Store: a.Store, Redis: a.Redis, Prefix: cfg.Redis.Prefix,
		Limiter:        a.Limiter,
		NicknameLimit:  ratelimit.PerMinute(cfg.AuthRateLimit),
		IPLimit:        ratelimit.PerMinute(cfg.AuthRateLimitIP),
		TrustedProxies: List(cfg.TrustedProxies),
		ReadTimeout:    cfg.HTTPReadTimeout,
		IdleTimeout:    cfg.HTTPIdleTimeout,
		Logger:         log,
	}); err != nil {
		return nil, fmt.Errorf("http api: %w", err)
	}
	ok = true
	return a, nil
}

// Serve serves HTTP on ln until ctx is cancelled, then marks the server
// draining and shuts it down within Config.Shutdown.Timeout. It returns nil
// after a clean shutdown.
func (a *App) Serve(ctx context.Context, ln net.Listener) error {
	a.Log.Info("http listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- a.HTTP.Serve(ln) }()

	select {
	case err := <-errc:
		return fmt.Errorf("http server stopped: %w", err)
	case <-ctx.Done():
	}
	a.Log.Info("shutting down", "timeout", a.Config.Shutdown.Timeout.String())
	a.HTTP.SetDraining(true)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.Config.Shutdown.Timeout)
	defer cancel()
	if err := a.HTTP.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; err != nil {
		return err
	}
	return nil
}

// Close releases the connections New opened.
func (a *App) Close() {
	if a.Redis != nil {
		_ = a.Redis.Close()
	}
	if a.Pool != nil {
		a.Pool.Close()
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
	log.Info("starting", "gateway_id", cfg.GatewayID, "config", config.Redacted(cfg))
	if cfg.JWTSecret == DevJWTSecret {
		log.Warn("JWT_SECRET is the development default; set a secret of your own outside local development")
	}

	a, err := New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer a.Close()

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

package app

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"rooms/gateway/internal/auth"
	"rooms/gateway/internal/produce"
	"rooms/shared/config"
)

// DevJWTSecret is the default signing secret, fit only for local
// development; set JWT_SECRET everywhere else.
const DevJWTSecret = "dev-only-insecure-jwt-secret-change-me-0123456789"

// Config is the gateway's whole configuration, parsed once from the
// environment. Every default works for the local stack.
type Config struct {
	config.Postgres
	config.Redis
	config.Kafka
	config.Log
	config.Shutdown

	// ReplicaURL names a hot standby of DATABASE_URL that history reads
	// use while it answers and keeps up; empty: every read uses the primary.
	ReplicaURL string `env:"DATABASE_REPLICA_URL" secret:"url"`
	// ReplicaMaxLag is the largest replication lag at which history reads
	// still use the replica.
	ReplicaMaxLag time.Duration `env:"DATABASE_REPLICA_MAX_LAG" envDefault:"1s"`

	HTTPAddr string `env:"HTTP_ADDR" envDefault:"127.0.0.1:8081"`
	// AdminAddr is the operations listener: /metrics, /healthz and
	// /debug/pprof (package admin), e.g. 127.0.0.1:9101. Keep it off the
	// public network. Unset, there is none: a fixed default port would
	// make every second gateway or worker on one machine (tests next to
	// the local stack) fail to start.
	AdminAddr string `env:"ADMIN_ADDR"`
	// GatewayID names this instance in presence entries; default hostname-pid.
	GatewayID string `env:"GATEWAY_ID"`

	JWTSecret  string        `env:"JWT_SECRET" envDefault:"dev-only-insecure-jwt-secret-change-me-0123456789" secret:"true"`
	AccessTTL  time.Duration `env:"ACCESS_TTL" envDefault:"15m"`
	RefreshTTL time.Duration `env:"REFRESH_TTL" envDefault:"720h"`
	TicketTTL  time.Duration `env:"TICKET_TTL" envDefault:"30s"`

	// HashConcurrency bounds concurrent argon2id hashes (19 MiB each).
	HashConcurrency int `env:"HASH_CONCURRENCY" envDefault:"2"`
	// AuthRateLimit is login/register attempts per minute per nickname;
	// AuthRateLimitIP the same per client IP. 0 disables a limit.
	AuthRateLimit   int `env:"AUTH_RATE_LIMIT" envDefault:"10"`
	AuthRateLimitIP int `env:"AUTH_RATE_LIMIT_IP" envDefault:"30"`
	// TrustedProxies lists IPs/CIDRs whose X-Real-IP / X-Forwarded-For
	// headers are believed for the client IP.
	TrustedProxies string `env:"TRUSTED_PROXIES" envDefault:"127.0.0.1"`
	// AllowedOrigins lists the Origins accepted on WebSocket handshakes.
	AllowedOrigins string `env:"ALLOWED_ORIGINS" envDefault:"http://localhost:8080,http://127.0.0.1:8080"`
	MaxContent     int    `env:"MAX_CONTENT" envDefault:"2000"`

	// SendRate and SendBurst bound the messages one user may send per
	// second across all of their connections on every gateway.
	SendRate  int `env:"SEND_RATE" envDefault:"20"`
	SendBurst int `env:"SEND_BURST" envDefault:"40"`
	// KafkaLinger is the producer's linger (at most a few ms: it is added
	// to every message's latency).
	KafkaLinger time.Duration `env:"KAFKA_LINGER" envDefault:"5ms"`
	// KafkaCompression is the producer's compression codec, one of
	// produce.Compressions.
	KafkaCompression string `env:"KAFKA_COMPRESSION" envDefault:"lz4"`
	// KafkaMessageTimeout bounds how long a message waits for Kafka before
	// its sender gets error "unavailable" (outcome unknown).
	KafkaMessageTimeout time.Duration `env:"KAFKA_MESSAGE_TIMEOUT" envDefault:"30s"`
	// KafkaQueueMax bounds the messages the producer holds locally; when
	// it is full, sends are refused with "unavailable" (backpressure).
	KafkaQueueMax int `env:"KAFKA_QUEUE_MAX" envDefault:"100000"`

	// WSMaxConns bounds this gateway's open WebSockets; WSMaxConnsPerUser
	// one user's open WebSockets on this gateway.
	WSMaxConns        int `env:"WS_MAX_CONNS" envDefault:"20000"`
	WSMaxConnsPerUser int `env:"WS_MAX_CONNS_PER_USER" envDefault:"20"`

	// StepAsideAfter is how long the fan-out reader may fail to read Redis
	// before the gateway closes its WebSockets (1001) and refuses new ones
	// (503) until it reads again, so their clients move to a gateway that
	// delivers (ws.Config.StepAsideAfter); 0: never.
	StepAsideAfter time.Duration `env:"STEP_ASIDE_AFTER" envDefault:"60s"`

	HTTPReadTimeout time.Duration `env:"HTTP_READ_TIMEOUT" envDefault:"15s"`
	HTTPIdleTimeout time.Duration `env:"HTTP_IDLE_TIMEOUT" envDefault:"120s"`
	// HTTPRequestTimeout bounds the PostgreSQL and Redis calls of one REST
	// request or WebSocket handshake; past it the request is answered 503
	// unavailable instead of waiting on a database that stopped answering.
	HTTPRequestTimeout time.Duration `env:"HTTP_REQUEST_TIMEOUT" envDefault:"10s"`
}

// ParseConfig parses and checks the configuration.
func ParseConfig(getenv func(string) string) (Config, error) {
	cfg, err := config.Parse[Config](getenv)
	if err != nil {
		return cfg, err
	}
	if cfg.GatewayID == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "gateway"
		}
		cfg.GatewayID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	var c config.Checks
	c.Shared(cfg.Postgres, cfg.Kafka, cfg.Log, cfg.Shutdown)
	// The secret's value is never printed, only its length.
	c.Want(len(cfg.JWTSecret) >= auth.MinSecretLen, "JWT_SECRET", fmt.Sprintf("(%d bytes)", len(cfg.JWTSecret)), fmt.Sprintf("at least %d bytes", auth.MinSecretLen))
	c.Want(cfg.AccessTTL > 0, "ACCESS_TTL", cfg.AccessTTL, "positive")
	c.Want(cfg.RefreshTTL > 0, "REFRESH_TTL", cfg.RefreshTTL, "positive")
	c.Want(cfg.TicketTTL > 0, "TICKET_TTL", cfg.TicketTTL, "positive")
	c.Want(cfg.HashConcurrency >= 1, "HASH_CONCURRENCY", cfg.HashConcurrency, "at least 1")
	c.Want(cfg.AuthRateLimit >= 0, "AUTH_RATE_LIMIT", cfg.AuthRateLimit, "0 (no limit) or more")
	c.Want(cfg.AuthRateLimitIP >= 0, "AUTH_RATE_LIMIT_IP", cfg.AuthRateLimitIP, "0 (no limit) or more")
	c.Want(cfg.SendRate >= 0, "SEND_RATE", cfg.SendRate, "0 (no limit) or more")
	c.Want(cfg.SendBurst >= 0, "SEND_BURST", cfg.SendBurst, "0 or more")
	c.Want(slices.Contains(produce.Compressions, cfg.KafkaCompression), "KAFKA_COMPRESSION", cfg.KafkaCompression, "one of "+strings.Join(produce.Compressions, ", "))
	c.Want(cfg.KafkaLinger >= 0, "KAFKA_LINGER", cfg.KafkaLinger, "0 or positive")
	c.Want(cfg.KafkaMessageTimeout > 0, "KAFKA_MESSAGE_TIMEOUT", cfg.KafkaMessageTimeout, "positive")
	c.Want(cfg.KafkaQueueMax >= 1, "KAFKA_QUEUE_MAX", cfg.KafkaQueueMax, "at least 1")
	c.Want(cfg.WSMaxConns >= 1, "WS_MAX_CONNS", cfg.WSMaxConns, "at least 1")
	c.Want(cfg.WSMaxConnsPerUser >= 1, "WS_MAX_CONNS_PER_USER", cfg.WSMaxConnsPerUser, "at least 1")
	c.Want(cfg.ReplicaMaxLag > 0, "DATABASE_REPLICA_MAX_LAG", cfg.ReplicaMaxLag, "positive")
	c.Want(cfg.HTTPReadTimeout >= 0, "HTTP_READ_TIMEOUT", cfg.HTTPReadTimeout, "0 or positive")
	c.Want(cfg.HTTPIdleTimeout >= 0, "HTTP_IDLE_TIMEOUT", cfg.HTTPIdleTimeout, "0 or positive")
	c.Want(cfg.HTTPRequestTimeout > 0, "HTTP_REQUEST_TIMEOUT", cfg.HTTPRequestTimeout, "positive")
	c.Want(cfg.StepAsideAfter >= 0, "STEP_ASIDE_AFTER", cfg.StepAsideAfter, "0 (never) or positive")
	c.Want(cfg.MaxContent >= 1, "MAX_CONTENT", cfg.MaxContent, "at least 1")
	c.Want(!strings.Contains(cfg.GatewayID, "|"), "GATEWAY_ID", cfg.GatewayID, "free of '|'")
	if err := c.Err(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// List splits a comma-separated setting into its trimmed, non-empty items.
func List(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

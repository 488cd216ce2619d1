package app_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"rooms/gateway/internal/app"
	"rooms/shared/config"
	"rooms/shared/testenv"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseConfig(t *testing.T) {
	cfg, err := app.ParseConfig(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != "127.0.0.1:8081" || cfg.AccessTTL != 15*time.Minute || cfg.RefreshTTL != 720*time.Hour ||
		cfg.TicketTTL != 30*time.Second || cfg.HashConcurrency != 2 || cfg.MaxContent != 2000 ||
		cfg.TrustedProxies != "127.0.0.1" || cfg.GatewayID == "" || cfg.JWTSecret != app.DevJWTSecret ||
		cfg.KafkaCompression != "lz4" {
		t.Fatalf("defaults: %+v", cfg)
	}
	// Each bad setting is refused with an error that names it.
	bad := []map[string]string{
		{"JWT_SECRET": "short"},
		{"ACCESS_TTL": "0s"},
		{"ACCESS_TTL": "soon"},
		{"HASH_CONCURRENCY": "0"},
		{"AUTH_RATE_LIMIT": "-1"},
		{"GATEWAY_ID": "a|b"},
		{"KAFKA_COMPRESSION": "brotli"},
		{"KAFKA_LINGER": "-1ms"},
		{"KAFKA_PARTITIONS": "0"},
		{"KAFKA_MESSAGE_TIMEOUT": "0s"},
		{"KAFKA_QUEUE_MAX": "0"},
		{"KAFKA_BROKERS": " "},
		{"PG_MAX_CONNS": "-1"},
		{"LOG_LEVEL": "verbose"},
		{"SHUTDOWN_TIMEOUT": "0s"},
		{"SEND_RATE": "-1"},
		{"WS_MAX_CONNS": "0"},
		{"MAX_CONTENT": "0"},
		{"HTTP_READ_TIMEOUT": "-1s"},
		{"HTTP_REQUEST_TIMEOUT": "0s"},
		{"STEP_ASIDE_AFTER": "-1s"},
	}
	for _, m := range bad {
		_, err := app.ParseConfig(env(m))
		for k := range m {
			if err == nil || !strings.Contains(err.Error(), k) {
				t.Errorf("%v: err %v, want an error naming %s", m, err, k)
			}
		}
	}
	// Every bad setting is named in one error, and a secret never is
	// printed.
	_, err = app.ParseConfig(env(map[string]string{"JWT_SECRET": "short-secret", "HTTP_REQUEST_TIMEOUT": "0s", "WS_MAX_CONNS": "0"}))
	if err == nil || strings.Contains(err.Error(), "short-secret") {
		t.Fatalf("err %v: want every bad setting named, the secret not printed", err)
	}
	for _, k := range []string{"JWT_SECRET=(12 bytes)", "HTTP_REQUEST_TIMEOUT=0s", "WS_MAX_CONNS=0"} {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("err %v: want it to name %s", err, k)
		}
	}
	if got := app.List(" a, ,b ,"); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("List = %q", got)
	}
}

func TestRunFailsClearlyWithoutDependencies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := app.Run(ctx, env(map[string]string{
		"DATABASE_URL": "postgres://rooms:secretpw@127.0.0.1:1/rooms?sslmode=disable",
	}), &out)
	if err == nil || !strings.Contains(err.Error(), "postgres") || strings.Contains(err.Error(), "secretpw") {
		t.Fatalf("Run = %v", err)
	}
	if strings.Contains(out.String(), "secretpw") || strings.Contains(out.String(), app.DevJWTSecret) {
		t.Fatalf("secret logged: %s", out.String())
	}
}

func TestServeReadinessAndShutdown(t *testing.T) {
	db := testenv.Postgres(t)
	_, prefix := testenv.Redis(t)
	broker := testenv.Kafka(t)
	cfg, err := app.ParseConfig(env(map[string]string{
		"DATABASE_URL": db.DSN, "REDIS_ADDR": testenv.RedisAddr(), "REDIS_PREFIX": prefix,
		"KAFKA_BROKERS": broker.ListenAddrs()[0], "KAFKA_PARTITIONS": "2",
	}))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := app.New(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	// A session left idle inside a transaction (a refresh's, by a gateway
	// frozen or cut off) is ended by the server.
	var idle string
	if err := a.Pool.QueryRow(ctx, `SHOW idle_in_transaction_session_timeout`).Scan(&idle); err != nil {
		t.Fatal(err)
	}
	if idle != config.IdleInTransactionTimeout {
		t.Errorf("idle_in_transaction_session_timeout = %q, want %s", idle, config.IdleInTransactionTimeout)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		order []string
	)
	note := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
	a.Background("ticker", func(ctx context.Context) error {
		note("background started")
		<-ctx.Done()
		note("background stopped")
		return ctx.Err()
	})
	a.OnShutdown("hook", func(context.Context) error {
		if !a.HTTP.Draining() {
			t.Error("hook ran before draining was marked")
		}
		note("hook")
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()
	base := "http://" + ln.Addr().String()
	status := func(path string) int {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Ready once the fan-out reader has found its starting positions.
	for deadline := time.Now().Add(30 * time.Second); status("/readyz") != 200; {
		if time.Now().After(deadline) {
			t.Fatalf("readyz = %d", status("/readyz"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.HTTP.SetDraining(true)
	if s := status("/readyz"); s != 503 {
		t.Fatalf("readyz while draining = %d", s)
	}
	a.HTTP.SetDraining(false)
	_ = a.Redis.Close() // a dependency that does not answer
	if s := status("/readyz"); s != 503 {
		t.Fatalf("readyz without redis = %d", s)
	}
	if s := status("/healthz"); s != 200 {
		t.Fatalf("healthz = %d", s)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Serve did not return after cancel")
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(order, ",") != "background started,hook,background stopped" {
		t.Fatalf("order = %q", order)
	}
}

func TestBackgroundFailureStops(t *testing.T) {
	db := testenv.Postgres(t)
	_, prefix := testenv.Redis(t)
	broker := testenv.Kafka(t)
	cfg, err := app.ParseConfig(env(map[string]string{
		"DATABASE_URL": db.DSN, "REDIS_ADDR": testenv.RedisAddr(), "REDIS_PREFIX": prefix,
		"KAFKA_BROKERS": broker.ListenAddrs()[0], "KAFKA_PARTITIONS": "2",
	}))
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	a.Background("failing", func(context.Context) error { return boom })
	done := make(chan error, 1)
	go func() { done <- a.Serve(context.Background(), ln) }()
	select {
	case err := <-done:
		if !errors.Is(err, boom) {
			t.Fatalf("Serve = %v, want boom", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Serve did not stop after a background failure")
	}
}

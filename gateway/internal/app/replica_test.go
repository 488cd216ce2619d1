package app_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"rooms/gateway/internal/app"
	"rooms/shared/config"
	"rooms/shared/testenv"
)

func TestParseConfigReplica(t *testing.T) {
	cfg, err := app.ParseConfig(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ReplicaURL != "" || cfg.ReplicaMaxLag != time.Second {
		t.Fatalf("replica defaults: %q %s", cfg.ReplicaURL, cfg.ReplicaMaxLag)
	}
	for _, lag := range []string{"0s", "-1s", "soon"} {
		if _, err := app.ParseConfig(env(map[string]string{"DATABASE_REPLICA_MAX_LAG": lag})); err == nil {
			t.Errorf("DATABASE_REPLICA_MAX_LAG=%s accepted", lag)
		}
	}
	cfg, err = app.ParseConfig(env(map[string]string{
		"DATABASE_REPLICA_URL": "postgres://rooms:secretpw@replica:5432/rooms", "DATABASE_REPLICA_MAX_LAG": "250ms",
	}))
	if err != nil || cfg.ReplicaMaxLag != 250*time.Millisecond {
		t.Fatalf("replica settings: %+v %v", cfg, err)
	}
	if s := fmt.Sprint(config.Redacted(cfg)["DATABASE_REPLICA_URL"]); strings.Contains(s, "secretpw") || !strings.Contains(s, "replica:5432") {
		t.Fatalf("DATABASE_REPLICA_URL logged as %q", s)
	}
}

// TestReplicaDownAtStart: a replica that does not answer does not stop the
// gateway from starting or being ready; history reads use the primary and
// the background check logs why.
func TestReplicaDownAtStart(t *testing.T) {
	db := testenv.Postgres(t)
	_, prefix := testenv.Redis(t)
	broker := testenv.Kafka(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l.Addr().String() // nothing listens there once closed
	l.Close()
	cfg, err := app.ParseConfig(env(map[string]string{
		"DATABASE_URL": db.DSN, "REDIS_ADDR": testenv.RedisAddr(), "REDIS_PREFIX": prefix,
		"KAFKA_BROKERS": broker.ListenAddrs()[0], "KAFKA_PARTITIONS": "2",
		"DATABASE_REPLICA_URL": "postgres://rooms:secretpw@" + down + "/rooms?sslmode=disable&connect_timeout=2",
	}))
	if err != nil {
		t.Fatal(err)
	}
	var logs testenv.Output
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := app.New(ctx, cfg, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("New with a replica that is down = %v", err)
	}
	defer a.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()

	ready := func() bool {
		resp, err := http.Get("http://" + ln.Addr().String() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	for deadline := time.Now().Add(30 * time.Second); !ready() || !strings.Contains(logs.String(), "postgres replica unhealthy"); {
		if time.Now().After(deadline) {
			t.Fatalf("want ready and the replica reported unhealthy; logs:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if a.Store.ReplicaHealthy() {
		t.Fatal("a replica that is down is healthy")
	}
	room, err := a.Store.CreateRoom(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if msgs, err := a.Store.LatestMessages(ctx, room.ID, 10); err != nil || len(msgs) != 0 {
		t.Fatalf("history read without the replica: %v %v", msgs, err)
	}
	if strings.Contains(logs.String(), "secretpw") {
		t.Fatalf("replica password logged:\n%s", logs.String())
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
}

package ratelimit_test

import (
	"context"
	"testing"

	"rooms/gateway/internal/ratelimit"
	"rooms/shared/testenv"
)

func TestAllow(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	l := ratelimit.New(rdb, prefix)
	ctx := context.Background()
	limit := ratelimit.PerMinute(2)
	for i, want := range []bool{true, true, false, false} {
		ok, retry, err := l.Allow(ctx, "login:nick:bob", limit)
		if err != nil {
			t.Fatal(err)
		}
		if ok != want {
			t.Fatalf("attempt %d: ok = %v, want %v", i+1, ok, want)
		}
		if !ok && retry <= 0 {
			t.Fatalf("attempt %d: retryAfter = %v", i+1, retry)
		}
	}
	// Another key has its own budget.
	if ok, _, err := l.Allow(ctx, "login:nick:carol", limit); err != nil || !ok {
		t.Fatalf("other key: %v %v", ok, err)
	}
	// A zero limit allows everything without touching Redis.
	for range 5 {
		if ok, _, err := l.Allow(ctx, "unlimited", ratelimit.Limit{}); err != nil || !ok {
			t.Fatalf("zero limit: %v %v", ok, err)
		}
	}
	// State lives under the prefix.
	if n, err := rdb.Exists(ctx, prefix+"rl:login:nick:bob").Result(); err != nil || n != 1 {
		t.Fatalf("key under prefix: %d %v", n, err)
	}
	if n, _ := rdb.Exists(ctx, "rate:login:nick:bob").Result(); n != 0 {
		t.Fatal("key outside the prefix")
	}
}

func TestAllowRedisDown(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	l := ratelimit.New(rdb, prefix)
	_ = rdb.Close()
	if ok, _, err := l.Allow(context.Background(), "k", ratelimit.PerSecond(1)); err == nil || ok {
		t.Fatalf("closed client: ok=%v err=%v, want an error", ok, err)
	}
}
